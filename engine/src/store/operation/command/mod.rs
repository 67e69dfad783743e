//! Commands: proposing them and applying their committed entries.
//!
//! - Propose: the leader checks a command against its region (epoch, range, limits)
//!   and hands it to Raft; the caller's [`Responder`] waits in `proposals` with the
//!   entry's log position. Each kind checks itself: `write.rs`, `split.rs`,
//!   `conf_change.rs`.
//! - Apply: committed entries are applied in log order into the round's one batch; a
//!   command refused at apply (its epoch went stale while it waited) is refused the same
//!   way on every replica and changes nothing.
//! - After apply: once the batch is written, the worker answers the proposals (the
//!   answers are closures collected here) and carries out the side effects (start the
//!   peer a split created, destroy a removed peer).

mod conf_change;
mod split;
mod write;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use prost::Message as _;

use crate::log_limit::LogLimit;
use crate::metrics::METRICS;
use crate::proto::command::{AdminCommand, RaftCommand, WriteResult, admin_command};
use crate::proto::metadata::Region;
use crate::raft::LogPosition;
use crate::raft::proto::{Entry, EntryType};
use crate::storage::ApplyBatch;
use crate::storage::{Engine, EngineError};

use crate::store::errors::{EntryKind, StoreError};
use crate::store::peer::Peer;
use crate::store::responder::Responder;

/// A command waiting for its entry to be applied.
pub(in crate::store) struct Proposal {
    index: u64,
    term: u64,
    proposed_at: Instant,
    respond: Responder<Vec<WriteResult>>,
}

/// Slow proposals under load would write a line each: a few per ten seconds.
static SLOW_PROPOSALS: LogLimit = LogLimit::new(5, Duration::from_secs(10));

/// What is known of a proposal's phases when its entry is applied.
struct SlowProposal {
    region_id: u64,
    index: u64,
    threshold: Duration,
    /// When its committed entry reached the apply phase.
    applying_since: Instant,
}

impl SlowProposal {
    /// Logs the proposal's phases if its answer comes later than the threshold.
    fn log_if_slow(&self, proposed_at: Instant) {
        let total = proposed_at.elapsed();
        if total < self.threshold {
            return;
        }
        let Some(admitted) = SLOW_PROPOSALS.admit() else { return };
        let commit_wait = self.applying_since.saturating_duration_since(proposed_at);
        tracing::warn!(
            region_id = self.region_id,
            index = self.index,
            total_ms = total.as_millis() as u64,
            commit_wait_ms = commit_wait.as_millis() as u64,
            apply_ms = total.saturating_sub(commit_wait).as_millis() as u64,
            suppressed_before = admitted.suppressed_before,
            "slow proposal"
        );
    }
}

/// What became of a command the leader accepted.
pub(super) enum Proposed {
    /// It is in the log at this position; the answer comes once it applies.
    InLog(LogPosition),
    /// Answered without being proposed (a one-phase prewrite the leader refused).
    Answered(Vec<WriteResult>),
}

/// What applying one entry tells its proposer. A disk failure is not among them: it
/// stops the node (the caller's `EngineError`).
pub(super) enum Applied {
    /// The command took effect; one result per write (none for admin commands).
    Done(Vec<WriteResult>),
    /// The command was refused, identically on every replica, and changed nothing.
    Refused(StoreError),
}

impl Applied {
    fn into_answer(self) -> Result<Vec<WriteResult>, StoreError> {
        match self {
            Applied::Done(results) => Ok(results),
            Applied::Refused(error) => Err(error),
        }
    }
}

/// What applying entries asks the worker to do once the apply batch is written.
pub enum SideEffect {
    /// A split created this region; the store must start a peer for it.
    SplitCreated { region: Region, parent_was_leader: bool },
    /// This peer left the region's configuration; destroy it.
    Destroy,
    /// The region's garbage-collection fence rose to `fence_ts`: the round's batch is
    /// written with a sync, then the compaction filter may collect up to it here.
    FenceRaised { fence_ts: u64 },
    /// What the round's transactional commands did, for the region's change feed once
    /// the batch is written.
    FeedChanges(Vec<crate::feed::Change>),
}

impl Peer {
    /// Proposes a command; the answer comes once it is applied (or at once, for one
    /// the leader answers without proposing it).
    pub(crate) fn propose(&mut self, command: RaftCommand, respond: Responder<Vec<WriteResult>>) {
        self.wake();
        match self.try_propose(command) {
            Ok(Proposed::InLog(position)) => {
                METRICS.proposals.increment(1);
                let (index, term) = (position.index, position.term);
                self.proposals.push_back(Proposal { index, term, proposed_at: Instant::now(), respond });
            }
            Ok(Proposed::Answered(results)) => respond.send(Ok(results)),
            Err(error) => respond.send(Err(error)),
        }
    }

    /// Proposes `command`; where it went if the leader took it.
    fn try_propose(&mut self, command: RaftCommand) -> Result<Proposed, StoreError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        match &command.admin {
            Some(AdminCommand { kind: Some(admin_command::Kind::ChangePeer(change)) }) => {
                self.propose_conf_change(&command, change).map(Proposed::InLog)
            }
            Some(_) => self.propose_admin(&command).map(Proposed::InLog),
            None => self.propose_writes(&command),
        }
    }

    /// Maps a refusal of the Raft core to what the client can act on.
    pub(super) fn raft_refusal(&self, error: crate::raft::Error) -> StoreError {
        match error {
            crate::raft::Error::NotLeader { .. } => self.not_leader(),
            other => StoreError::Raft(other),
        }
    }

    /// Applies committed entries into `batch`; answers to send after the batch is written
    /// go to `answers`, work for the worker to `effects`.
    pub(crate) fn apply_entries(
        &mut self,
        engine: &Engine,
        entries: &[Entry],
        batch: &mut ApplyBatch,
        answers: &mut Vec<Box<dyn FnOnce() + Send>>,
        effects: &mut Vec<SideEffect>,
    ) -> Result<(), EngineError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return Ok(()) };
        assert_eq!(
            first.index,
            self.applied_index() + 1,
            "invariant: region {} applies its log in order, each entry once",
            self.region_id
        );
        self.begin_feed_capture(batch);
        for entry in entries {
            let applied = match entry.entry_type() {
                EntryType::ConfChange => self.apply_conf_change(entry, batch, effects)?,
                EntryType::Normal if entry.data.is_empty() => Applied::Done(Vec::new()),
                EntryType::Normal => self.apply_command(engine, entry, batch, effects)?,
            };
            self.answer_proposal(entry, applied.into_answer(), answers);
        }
        self.end_feed_capture(batch, effects);
        self.applied_term = last.term;
        self.raw.storage_mut().set_applied(last.index, &mut batch.batch)
    }

    fn apply_command(
        &mut self,
        engine: &Engine,
        entry: &Entry,
        batch: &mut ApplyBatch,
        effects: &mut Vec<SideEffect>,
    ) -> Result<Applied, EngineError> {
        let command = match RaftCommand::decode(entry.data.as_slice()) {
            Ok(command) => command,
            Err(source) => {
                let (index, expected) = (entry.index, EntryKind::Command);
                return Ok(Applied::Refused(StoreError::MalformedEntry { index, expected, source }));
            }
        };
        match &command.admin {
            Some(AdminCommand { kind: Some(admin_command::Kind::Split(split)) }) => {
                self.apply_split(engine, &command, split, batch, effects)
            }
            _ => self.apply_writes(engine, &command, batch, effects),
        }
    }

    /// Answers the proposals up to `entry`: the one at its position gets `result`, any
    /// other was overtaken by another leader's entry.
    fn answer_proposal(
        &mut self,
        entry: &Entry,
        result: Result<Vec<WriteResult>, StoreError>,
        answers: &mut Vec<Box<dyn FnOnce() + Send>>,
    ) {
        while let Some(proposal) = self.proposals.front() {
            if proposal.index > entry.index {
                break;
            }
            let Some(proposal) = self.proposals.pop_front() else { break };
            let outcome = if proposal.index == entry.index && proposal.term == entry.term {
                METRICS.commit_duration.record(proposal.proposed_at.elapsed());
                result.clone()
            } else {
                // Another leader's entry took this index: ours was never committed.
                Err(StoreError::ProposalDropped)
            };
            let slow = SlowProposal {
                region_id: self.region_id,
                index: proposal.index,
                threshold: self.slow_proposal_threshold,
                applying_since: Instant::now(),
            };
            answers.push(Box::new(move || {
                slow.log_if_slow(proposal.proposed_at);
                proposal.respond.send(outcome);
            }));
        }
        // A committed entry of term T means every later committed entry has a term of at
        // least T (Log Matching): a proposal of an earlier term can never commit.
        let (stale, live): (VecDeque<Proposal>, VecDeque<Proposal>) =
            std::mem::take(&mut self.proposals).into_iter().partition(|p| p.term < entry.term);
        self.proposals = live;
        for proposal in stale {
            answers.push(Box::new(move || {
                proposal.respond.send(Err(StoreError::ProposalDropped));
            }));
        }
    }

    /// Fails every proposal waiting on this peer with `error`.
    pub(in crate::store) fn fail_proposals(&mut self, error: &StoreError) {
        for proposal in self.proposals.drain(..) {
            proposal.respond.send(Err(error.clone()));
        }
    }
}
