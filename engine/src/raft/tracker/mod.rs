//! The membership configuration and, on the leader, every replica's progress.
//!
//! The tracker owns the answer to "who decides": it holds the (possibly joint) voter
//! configuration and the learners, and computes from the per-replica progress the quorum
//! commit index, election results, quorum activity and confirmed heartbeat rounds.

mod inflights;
mod progress;

use std::collections::{BTreeMap, BTreeSet};

pub use progress::{Progress, ProgressState};

use super::proto::ConfState;
use super::quorum::{JointConfig, MajorityConfig, VoteResult};

/// The membership configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrackerConfig {
    pub voters: JointConfig,
    /// Non-voting members that receive the log. Never overlaps a voter set.
    pub learners: BTreeSet<u64>,
    /// Outgoing voters that become learners when the joint configuration is left.
    pub learners_next: BTreeSet<u64>,
    pub auto_leave: bool,
}

impl TrackerConfig {
    pub(crate) fn from_conf_state(conf_state: &ConfState) -> TrackerConfig {
        TrackerConfig {
            voters: JointConfig {
                incoming: MajorityConfig::new(conf_state.voters.iter().copied()),
                outgoing: MajorityConfig::new(conf_state.voters_outgoing.iter().copied()),
            },
            learners: conf_state.learners.iter().copied().collect(),
            learners_next: conf_state.learners_next.iter().copied().collect(),
            auto_leave: conf_state.auto_leave,
        }
    }

    pub(crate) fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.ids().iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            voters_outgoing: self.voters.outgoing.ids().iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
            auto_leave: self.auto_leave,
        }
    }

    /// Every member: voters of both halves and learners.
    pub(crate) fn all_ids(&self) -> BTreeSet<u64> {
        let mut ids = self.voters.ids();
        ids.extend(self.learners.iter().copied());
        ids.extend(self.learners_next.iter().copied());
        ids
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ProgressTracker {
    pub config: TrackerConfig,
    pub progress: BTreeMap<u64, Progress>,
    votes: BTreeMap<u64, bool>,
    pub max_inflight: usize,
}

impl ProgressTracker {
    pub(crate) fn new(max_inflight: usize) -> ProgressTracker {
        ProgressTracker {
            config: TrackerConfig::default(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            max_inflight,
        }
    }

    pub(crate) fn is_voter(&self, id: u64) -> bool {
        self.config.voters.contains(id)
    }

    /// Replaces the configuration and the progress map (after a membership change or a
    /// snapshot).
    pub(crate) fn switch_to(&mut self, config: TrackerConfig, progress: BTreeMap<u64, Progress>) {
        self.config = config;
        self.progress = progress;
    }

    /// Fresh progress for every member, as a new leader starts with (§5.3: next index is
    /// one past the leader's last entry).
    pub(crate) fn reset_progress(&mut self, last_index: u64) {
        let ids = self.config.all_ids();
        let learners = &self.config.learners;
        self.progress = ids
            .into_iter()
            .map(|id| (id, Progress::new(last_index + 1, self.max_inflight, learners.contains(&id))))
            .collect();
    }

    /// The highest index durable on a quorum.
    pub(crate) fn committed_index(&self) -> u64 {
        self.config.voters.committed_index(|id| self.progress.get(&id).map(|pr| pr.matched))
    }

    /// The highest heartbeat round acknowledged by a quorum.
    pub(crate) fn quorum_acked_round(&self) -> u64 {
        self.config.voters.committed_index(|id| self.progress.get(&id).map(|pr| pr.acked_round))
    }

    /// Whether a quorum was heard from since the last check.
    pub(crate) fn quorum_active(&self) -> bool {
        let active = |id| self.progress.get(&id).map(|pr| pr.recent_active);
        self.config.voters.vote_result(active) == VoteResult::Won
    }

    pub(crate) fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records a vote; only the first answer of each voter counts.
    pub(crate) fn record_vote(&mut self, id: u64, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    pub(crate) fn tally_votes(&self) -> VoteResult {
        self.config.voters.vote_result(|id| self.votes.get(&id).copied())
    }
}
