//! What the leader knows about one follower's log, and how it paces replication to it.
//!
//! A follower is in one of three modes (§10.2 of the thesis, as etcd names them):
//! probe (we do not know where its log matches: one append per heartbeat until it
//! answers), replicate (we know: stream appends optimistically, bounded by the inflight
//! window) and snapshot (it needs a snapshot; nothing else is sent until it lands).

use super::inflights::Inflights;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot,
}

#[derive(Debug, Clone)]
pub struct Progress {
    /// Highest index known to be durable in the follower's log and matching ours.
    pub matched: u64,
    /// Next index to send.
    pub next_index: u64,
    pub state: ProgressState,
    /// In snapshot mode: the index of the snapshot sent.
    pub pending_snapshot: u64,
    /// Heard from since the last CheckQuorum round.
    pub recent_active: bool,
    /// In probe mode: an append is out and unanswered; wait for a heartbeat response.
    pub probe_sent: bool,
    pub inflights: Inflights,
    pub is_learner: bool,
    /// Highest heartbeat round this follower acknowledged in the current term.
    pub acked_round: u64,
}

impl Progress {
    pub(crate) fn new(next_index: u64, max_inflight: usize, is_learner: bool) -> Progress {
        Progress {
            matched: 0,
            next_index,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            recent_active: false,
            probe_sent: false,
            inflights: Inflights::new(max_inflight),
            is_learner,
            acked_round: 0,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub(crate) fn become_probe(&mut self) {
        // After a snapshot, the follower holds at least the snapshot's entries.
        let floor = if self.state == ProgressState::Snapshot { self.pending_snapshot } else { 0 };
        self.reset_state(ProgressState::Probe);
        self.next_index = (self.matched + 1).max(floor + 1);
    }

    pub(crate) fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_index = self.matched + 1;
    }

    pub(crate) fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// The follower acknowledged entries up to `index`; returns whether that was news.
    pub(crate) fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// The follower rejected an append at `rejected`; `match_hint` is where its log may
    /// match. Returns false when the rejection is stale (an answer to an older append).
    pub(crate) fn maybe_decrease_to(&mut self, rejected: u64, match_hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next_index = self.matched + 1;
            return true;
        }
        if self.next_index == 0 || self.next_index - 1 != rejected {
            return false;
        }
        self.next_index = rejected.min(match_hint.saturating_add(1)).max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    /// Whether sending another append would exceed this follower's pacing.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Records an append carrying entries up to `last_index` (or none).
    pub(crate) fn sent_append(&mut self, last_index: Option<u64>) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last_index {
                    self.next_index = last + 1;
                    self.inflights.add(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {
                panic!("invariant: no append is sent to a follower waiting for a snapshot")
            }
        }
    }
}
