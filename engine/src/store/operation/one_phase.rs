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
//!   snapshot read it accepted, per key for point reads (`store/read_watermark.rs`),
//!   and refuses a one-phase prewrite whose commit timestamp is not above the
//!   watermark of every key it writes (`ONE_PHASE_READ_ABOVE`).
//! - **A new leader syncs first.** Reads its predecessors accepted are not in its
//!   watermark. So a leader takes one-phase prewrites only after it has received, in
//!   its current term, a timestamp from the oracle requested after it was elected: every
//!   read a predecessor served carried an older timestamp (it was taken before that
//!   read reached a leader whose leadership was then still confirmed, hence before this
//!   election), and the watermark is raised to it. Until then it refuses with
//!   `ONE_PHASE_NOT_SYNCED` and asks the oracle (the worker sends the request).
//! - **Reads wait for one-phase commits in flight.** A read accepted after a one-phase
//!   prewrite was proposed, at or above its commit timestamp, is served only once the
//!   prewrite's entry has applied: a scan waits for every such prewrite, a point read
//!   for those that may write its key.
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
use crate::proto::command::{OnePhaseRefusal, Prewrite, RaftCommand, TxnResult, WriteResult, write};
use crate::raft::OpaqueError;
use crate::store::peer::Peer;
use crate::store::read_watermark::{KeySlots, ReadWatermark};
use crate::store::spare_timestamps::SpareTimestamps;
use crate::timestamp::Timestamp;

/// A leader's knowledge of the reads its one-phase commits must stay above.
#[derive(Debug, Default)]
pub(in crate::store) struct OnePhaseGuard {
    /// The store's spare timestamps; none when the store cannot reach the oracle at
    /// all (then every one-phase commit is refused).
    spare_timestamps: Option<Arc<SpareTimestamps>>,
    /// The highest timestamps of the snapshot reads accepted here (raised by syncs and
    /// change feeds' promises too).
    watermark: ReadWatermark,
    /// The term in which the watermark was synced with the oracle.
    synced_term: Option<u64>,
    /// The term a sync was asked for and not answered yet.
    requested_term: Option<u64>,
    /// A sync the worker must ask the oracle for (the term asking).
    sync_wanted: Option<u64>,
    /// One-phase prewrites proposed and not applied yet, by log index: the command's
    /// lowest commit timestamp and the slots of the keys its one-phase commits write.
    in_flight: BTreeMap<u64, (Timestamp, KeySlots)>,
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
    one_phase_prewrites(command).map(|prewrite| Timestamp::from_u64(prewrite.one_phase_commit_ts)).min()
}

/// The prewrites of `command` that commit in one phase.
fn one_phase_prewrites(command: &RaftCommand) -> impl Iterator<Item = &Prewrite> {
    command.writes.iter().filter_map(|write| match &write.kind {
        Some(write::Kind::Prewrite(prewrite)) if prewrite.one_phase_commit_ts != 0 => Some(prewrite),
        _ => None,
    })
}

/// The keys `prewrite` writes.
fn keys_of(prewrite: &Prewrite) -> impl Iterator<Item = &[u8]> {
    prewrite.mutations.iter().map(|mutation| mutation.key.as_slice())
}

/// The transactions of `command` whose one-phase commit timestamp is at or below the
/// watermark of a key they write: start timestamp, and the highest such watermark (a
/// transaction's writes in one command share their timestamps).
fn late_transactions(command: &RaftCommand, watermark: &ReadWatermark) -> BTreeMap<u64, Timestamp> {
    let mut late: BTreeMap<u64, Timestamp> = BTreeMap::new();
    for prewrite in one_phase_prewrites(command) {
        let above = watermark.of_keys(keys_of(prewrite));
        if prewrite.one_phase_commit_ts <= above.as_u64() {
            let highest = late.entry(prewrite.start_ts).or_default();
            *highest = (*highest).max(above);
        }
    }
    late
}

/// Whether every one-phase commit of `command` lands above the watermark of each key
/// it writes.
fn all_above(command: &RaftCommand, watermark: &ReadWatermark) -> bool {
    late_transactions(command, watermark).is_empty()
}

/// The slots of the keys the one-phase commits of `command` write.
fn one_phase_key_slots(command: &RaftCommand) -> KeySlots {
    KeySlots::of(one_phase_prewrites(command).flat_map(keys_of))
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
    /// `key`: the one key read, for a point read (else every key counts as read).
    pub(super) fn observe_snapshot_read(&mut self, read_ts: Timestamp, key: Option<&[u8]>) -> u64 {
        match key {
            Some(key) => self.one_phase.watermark.raise_key(key, read_ts),
            None => self.raise_one_phase_watermark(read_ts),
        }
        self.forget_applied_one_phase();
        self.one_phase
            .in_flight
            .iter()
            .filter(|(_, (commit_ts, _))| *commit_ts <= read_ts)
            .filter(|(_, (_, slots))| key.is_none_or(|key| slots.may_hold(key)))
            .map(|(index, _)| *index)
            .max()
            .unwrap_or(0)
    }

    /// Raises the watermark one-phase commits must stay above to `timestamp`: a snapshot
    /// read accepted at it, or a change feed's promise that nothing commits at or below it.
    pub(super) fn raise_one_phase_watermark(&mut self, timestamp: Timestamp) {
        self.one_phase.watermark.raise_floor(timestamp);
    }

    /// The lowest commit timestamp among the one-phase prewrites proposed and not yet
    /// applied.
    pub(super) fn lowest_one_phase_in_flight(&mut self) -> Option<Timestamp> {
        self.forget_applied_one_phase();
        self.one_phase.in_flight.values().map(|(commit_ts, _)| *commit_ts).min()
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
        let late = late_transactions(command, &guard.watermark);
        if late.is_empty() {
            return Ok(None);
        }
        let above = late.values().copied().max().unwrap_or(lowest);
        let Some(spares) = spare_timestamps.take_above(above, late.len()) else {
            METRICS.one_phase_refused.increment(1);
            return Err(OnePhaseRefusal::OnePhaseReadAbove);
        };
        let mut retimed = command.clone();
        retime(&mut retimed, &late.keys().copied().collect(), &spares);
        assert!(
            all_above(&retimed, &guard.watermark),
            "invariant: a re-timed command's one-phase commits all land above their keys' watermarks"
        );
        METRICS.one_phase_retimed.increment(late.len() as u64);
        Ok(Some(retimed))
    }

    /// Records `command`, with one-phase prewrites at `commit_ts` at the lowest,
    /// proposed at `index`.
    pub(super) fn one_phase_proposed(&mut self, index: u64, commit_ts: Timestamp, command: &RaftCommand) {
        self.one_phase.in_flight.insert(index, (commit_ts, one_phase_key_slots(command)));
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
        // Only a timestamp asked for in the current term proves anything about this
        // term's predecessors (and is above every read they served).
        let in_this_term = term == self.term() && self.is_leader();
        let region_id = self.region_id;
        let guard = &mut self.one_phase;
        if guard.requested_term == Some(term) {
            guard.requested_term = None;
        }
        match answer {
            Ok(timestamp) if in_this_term => {
                guard.watermark.raise_floor_above_every_read(timestamp);
                guard.synced_term = Some(term);
            }
            Ok(timestamp) => {
                guard.watermark.raise_floor(timestamp);
            }
            Err(error) => {
                tracing::info!(region_id, term, %error, "no timestamp for one-phase commits yet");
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
        let mut watermark = ReadWatermark::default();
        watermark.raise_floor(Timestamp::from_u64(100));
        let late = late_transactions(&command, &watermark);
        assert_eq!(late.keys().copied().collect::<Vec<_>>(), [10, 20]);
        assert!(late.values().all(|above| *above == Timestamp::from_u64(100)));
        retime(
            &mut command,
            &late.keys().copied().collect(),
            &[Timestamp::from_u64(201), Timestamp::from_u64(202)],
        );
        assert_eq!(commit_timestamps(&command), vec![(10, 201), (20, 202), (10, 201), (30, 150), (40, 0)]);
        assert_eq!(one_phase_commit_ts(&command), Some(Timestamp::from_u64(150)));
    }
}
