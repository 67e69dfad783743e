//! The one-phase commit's guard: a leader takes a one-phase prewrite (commit records
//! written at once, at a commit timestamp the client took from the oracle before
//! sending) only when no read could have seen the keys without it at or above that
//! timestamp.
//!
//! Two-phase commit needs no such guard: its locks are in place before its commit
//! timestamp exists, so any reader with a later timestamp meets them. A one-phase
//! commit has no locks. A reader at `read_ts > commit_ts` that reads the key before
//! the commit applies would see the old value, and a later reader at the same
//! timestamp the new one: a snapshot that changes. Three rules rule that out (TiKV
//! keeps the same invariant with its `max_ts`):
//!
//! - **Reads raise a watermark.** The leader records the highest timestamp of a
//!   snapshot read it accepted (`max_read_ts`), and refuses a one-phase prewrite whose
//!   commit timestamp is not above it (`ONE_PHASE_READ_ABOVE`).
//! - **A new leader syncs first.** Reads its predecessors accepted are not in its
//!   watermark. So a leader takes one-phase prewrites only after it has received, in
//!   its current term, a timestamp from the oracle requested after it was elected: every
//!   read a predecessor served carried an older timestamp (it was taken before that
//!   read reached a leader whose leadership was then still confirmed, hence before this
//!   election), and the watermark is raised to it. Until then it refuses with
//!   `ONE_PHASE_NOT_SYNCED` and asks the oracle (the worker sends the request).
//! - **Reads wait for one-phase commits in flight.** A read accepted after a one-phase
//!   prewrite was proposed, at or above its commit timestamp, is served only once the
//!   prewrite's entry has applied.
//!
//! A commit timestamp at or below the watermark is not refused at once: the leader
//! re-times the commit with a spare timestamp above the watermark when the store has
//! one (`spare_timestamps.rs` says why that is as good as the client's), and the
//! command goes into the log with it; the client learns the timestamp from the
//! answer. Resolving change feeds raises watermarks every few tens of milliseconds, so
//! without this a one-phase commit that took longer than that would fail and commit
//! again in two phases.
//!
//! A refused prewrite is answered at once and writes nothing; the client commits in two
//! phases instead. The guard is leader state only: nothing here is replicated.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::metrics::METRICS;
use crate::proto::command::{OnePhaseRefusal, RaftCommand, TxnResult, WriteResult, write};
use crate::raft::OpaqueError;
use crate::store::peer::Peer;
use crate::store::spare_timestamps::SpareTimestamps;
use crate::timestamp::Timestamp;

/// A leader's knowledge of the reads its one-phase commits must stay above.
#[derive(Debug, Default)]
pub(in crate::store) struct OnePhaseGuard {
    /// The store's spare timestamps; none when the store cannot reach the oracle at
    /// all (then every one-phase commit is refused).
    spare_timestamps: Option<Arc<SpareTimestamps>>,
    /// The highest timestamp of a snapshot read accepted here (raised by syncs too).
    max_read_ts: Timestamp,
    /// The term in which the watermark was synced with the oracle.
    synced_term: Option<u64>,
    /// The term a sync was asked for and not answered yet.
    requested_term: Option<u64>,
    /// A sync the worker must ask the oracle for (the term asking).
    sync_wanted: Option<u64>,
    /// One-phase prewrites proposed and not applied yet: log index, commit timestamp.
    in_flight: BTreeMap<u64, Timestamp>,
}

impl OnePhaseGuard {
    pub(in crate::store) fn new(spare_timestamps: Option<Arc<SpareTimestamps>>) -> OnePhaseGuard {
        OnePhaseGuard { spare_timestamps, ..OnePhaseGuard::default() }
    }
}

/// The lowest one-phase commit timestamp among a command's writes (a client groups
/// the one-phase commits in flight for a region into one command), if it has any:
/// the command is taken or refused as a whole, by its lowest.
pub(super) fn one_phase_commit_ts(command: &RaftCommand) -> Option<Timestamp> {
    command
        .writes
        .iter()
        .filter_map(|write| match &write.kind {
            Some(write::Kind::Prewrite(prewrite)) if prewrite.one_phase_commit_ts != 0 => {
                Some(Timestamp::from_u64(prewrite.one_phase_commit_ts))
            }
            _ => None,
        })
        .min()
}

/// The start timestamps of the transactions of `command` whose one-phase commit
/// timestamp is at or below `watermark` (a transaction's writes in one command share
/// their timestamps).
fn late_transactions(command: &RaftCommand, watermark: Timestamp) -> BTreeSet<u64> {
    command
        .writes
        .iter()
        .filter_map(|write| match &write.kind {
            Some(write::Kind::Prewrite(prewrite))
                if prewrite.one_phase_commit_ts != 0
                    && prewrite.one_phase_commit_ts <= watermark.as_u64() =>
            {
                Some(prewrite.start_ts)
            }
            _ => None,
        })
        .collect()
}

/// Gives each `late` transaction of `command` one of `spares` as its one-phase commit
/// timestamp, in place.
fn retime(command: &mut RaftCommand, late: &BTreeSet<u64>, spares: &[Timestamp]) {
    assert_eq!(late.len(), spares.len(), "invariant: one spare timestamp per late transaction");
    let new_commit_ts: BTreeMap<u64, u64> =
        late.iter().copied().zip(spares.iter().map(|spare| spare.as_u64())).collect();
    for write in &mut command.writes {
        if let Some(write::Kind::Prewrite(prewrite)) = &mut write.kind
            && prewrite.one_phase_commit_ts != 0
            && let Some(commit_ts) = new_commit_ts.get(&prewrite.start_ts)
        {
            prewrite.one_phase_commit_ts = *commit_ts;
        }
    }
}

/// The answer to a refused command of one-phase prewrites, one result per write.
pub(super) fn refused(command: &RaftCommand, refusal: OnePhaseRefusal) -> Vec<WriteResult> {
    let result = WriteResult {
        succeeded: false,
        previous: None,
        txn: Some(TxnResult { one_phase_refused: refusal as i32, ..TxnResult::default() }),
    };
    vec![result; command.writes.len()]
}

impl Peer {
    /// Notes a snapshot read at `read_ts` accepted now; answers the log index the read
    /// must see applied first (a one-phase commit in flight at or below its timestamp).
    pub(super) fn observe_snapshot_read(&mut self, read_ts: Timestamp) -> u64 {
        self.raise_one_phase_watermark(read_ts);
        self.forget_applied_one_phase();
        self.one_phase
            .in_flight
            .iter()
            .filter(|(_, commit_ts)| **commit_ts <= read_ts)
            .map(|(index, _)| *index)
            .max()
            .unwrap_or(0)
    }

    /// Raises the watermark one-phase commits must stay above to `timestamp`: a snapshot
    /// read accepted at it, or a change feed's promise that nothing commits at or below it.
    pub(super) fn raise_one_phase_watermark(&mut self, timestamp: Timestamp) {
        self.one_phase.max_read_ts = self.one_phase.max_read_ts.max(timestamp);
    }

    /// The lowest commit timestamp among the one-phase prewrites proposed and not yet
    /// applied.
    pub(super) fn lowest_one_phase_in_flight(&mut self) -> Option<Timestamp> {
        self.forget_applied_one_phase();
        self.one_phase.in_flight.values().min().copied()
    }

    /// Drops the one-phase prewrites that have applied from those in flight.
    fn forget_applied_one_phase(&mut self) {
        let applied = self.applied_index();
        self.one_phase.in_flight.retain(|index, _| *index > applied);
    }

    /// Whether this leader may propose `command` now, and as what if it has one-phase
    /// prewrites: unchanged (`None`), re-timed with spare timestamps (`Some`, see the
    /// module docs), or refused.
    pub(super) fn admit_one_phase(
        &mut self,
        command: &RaftCommand,
    ) -> Result<Option<RaftCommand>, OnePhaseRefusal> {
        let Some(lowest) = one_phase_commit_ts(command) else { return Ok(None) };
        let Some(spare_timestamps) = self.one_phase.spare_timestamps.clone() else {
            return Err(OnePhaseRefusal::OnePhaseUnsupported);
        };
        let term = self.term();
        let guard = &mut self.one_phase;
        if guard.synced_term != Some(term) {
            if guard.requested_term != Some(term) {
                guard.requested_term = Some(term);
                guard.sync_wanted = Some(term);
            }
            return Err(OnePhaseRefusal::OnePhaseNotSynced);
        }
        let watermark = guard.max_read_ts;
        if lowest > watermark {
            return Ok(None);
        }
        let late = late_transactions(command, watermark);
        let Some(spares) = spare_timestamps.take_above(watermark, late.len()) else {
            METRICS.one_phase_refused.increment(1);
            return Err(OnePhaseRefusal::OnePhaseReadAbove);
        };
        let mut retimed = command.clone();
        retime(&mut retimed, &late, &spares);
        assert!(
            one_phase_commit_ts(&retimed).is_some_and(|lowest| lowest > watermark),
            "invariant: a re-timed command's one-phase commits all land above the watermark"
        );
        METRICS.one_phase_retimed.increment(late.len() as u64);
        Ok(Some(retimed))
    }

    /// Records a one-phase prewrite proposed at `index`.
    pub(super) fn one_phase_proposed(&mut self, index: u64, commit_ts: Timestamp) {
        self.one_phase.in_flight.insert(index, commit_ts);
    }

    /// Forgets the one-phase commits in flight (leadership changed: their entries may
    /// never be applied, and a read must not wait for them).
    pub(in crate::store) fn forget_one_phase_in_flight(&mut self) {
        self.one_phase.in_flight.clear();
    }

    /// The term for which the worker must ask the oracle for a timestamp, if any.
    pub(crate) fn take_one_phase_sync(&mut self) -> Option<u64> {
        self.one_phase.sync_wanted.take()
    }

    /// The oracle's answer to the sync asked for in `term`.
    pub(crate) fn on_one_phase_sync(&mut self, term: u64, answer: Result<Timestamp, OpaqueError>) {
        let guard = &mut self.one_phase;
        if guard.requested_term == Some(term) {
            guard.requested_term = None;
        }
        match answer {
            Ok(timestamp) => {
                guard.max_read_ts = guard.max_read_ts.max(timestamp);
                // Only a timestamp asked for in the current term proves anything about
                // this term's predecessors.
                if term == self.term() && self.is_leader() {
                    self.one_phase.synced_term = Some(term);
                }
            }
            Err(error) => {
                tracing::info!(region_id = self.region_id, term, %error, "no timestamp for one-phase commits yet");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::command::{Prewrite, Write};

    fn one_phase(start_ts: u64, commit_ts: u64) -> Write {
        let prewrite = Prewrite { start_ts, one_phase_commit_ts: commit_ts, ..Prewrite::default() };
        Write { kind: Some(write::Kind::Prewrite(prewrite)) }
    }

    fn commit_timestamps(command: &RaftCommand) -> Vec<(u64, u64)> {
        let prewrites = command.writes.iter().filter_map(|write| match &write.kind {
            Some(write::Kind::Prewrite(prewrite)) => Some((prewrite.start_ts, prewrite.one_phase_commit_ts)),
            _ => None,
        });
        prewrites.collect()
    }

    #[test]
    fn each_late_transaction_gets_a_spare_of_its_own_and_the_others_keep_theirs() {
        // Transaction 10 has two writes in the command, 20 one, 30 commits above the
        // watermark of 100, and 40 is a two-phase prewrite.
        let writes = vec![
            one_phase(10, 90),
            one_phase(20, 100),
            one_phase(10, 90),
            one_phase(30, 150),
            one_phase(40, 0),
        ];
        let mut command = RaftCommand { writes, ..RaftCommand::default() };
        let late = late_transactions(&command, Timestamp::from_u64(100));
        assert_eq!(late, BTreeSet::from([10, 20]));
        retime(&mut command, &late, &[Timestamp::from_u64(201), Timestamp::from_u64(202)]);
        assert_eq!(commit_timestamps(&command), vec![(10, 201), (20, 202), (10, 201), (30, 150), (40, 0)]);
        assert_eq!(one_phase_commit_ts(&command), Some(Timestamp::from_u64(150)));
    }
}
