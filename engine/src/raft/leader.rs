//! What the leader does: replicate the log with pipelining and flow control, commit by
//! quorum, heartbeat, and hand leadership over.

use crate::failpoint::{self, points};

use super::consensus::{Raft, new_message};
use super::errors::{Result, StorageError};
use super::log::fail_stop;
use super::log_unstable::snapshot_index;
use super::proto::{Entry, Message, MessageType};
use super::storage::Storage;
use super::tracker::ProgressState;

impl<S: Storage> Raft<S> {
    pub(super) fn step_leader(&mut self, message: Message) -> Result<()> {
        if !self.tracker.progress.contains_key(&message.from) {
            // Not (or no longer) a member: nothing to track.
            return Ok(());
        }
        match message.msg_type() {
            MessageType::AppendResponse => self.handle_append_response(&message),
            MessageType::HeartbeatResponse => self.handle_heartbeat_response(&message),
            // Another leader in our term cannot exist; vote responses arrive late after
            // we already won. Neither needs an answer.
            _ => {}
        }
        Ok(())
    }

    /// Commits the highest index durable on a quorum, if it is from this term (§5.4.2).
    pub(super) fn maybe_commit(&mut self) -> bool {
        let quorum_index = self.tracker.committed_index();
        if quorum_index > self.log.committed
            && quorum_index <= self.log.last_index()
            && failpoint::hit(points::RAFT_COMMIT_PREVIOUS_TERM_ENTRIES)
        {
            // The known bug of Figure 8, armed only by tests: commit by counting replicas
            // whatever the entry's term.
            self.log.commit_to(quorum_index);
            self.on_commit_advanced();
            return true;
        }
        if self.log.maybe_commit(quorum_index, self.term) {
            self.on_commit_advanced();
            return true;
        }
        false
    }

    fn handle_append_response(&mut self, message: &Message) {
        let from = message.from;
        let last_index = self.log.last_index();
        let Some(pr) = self.tracker.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        if message.reject {
            // Fast backtracking: jump over the whole term the follower's hint names.
            let mut next_probe = message.reject_hint.min(last_index);
            if message.log_term > 0 {
                next_probe = self.log.find_conflict_by_term(message.reject_hint, message.log_term).0;
            }
            let Some(pr) = self.tracker.progress.get_mut(&from) else { return };
            if pr.maybe_decrease_to(message.index, next_probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.maybe_send_append(from, true);
            }
            return;
        }
        if message.index > last_index {
            // An acknowledgement of entries we never had: ignore it rather than believe it.
            return;
        }
        let was_paused = pr.is_paused();
        if !pr.maybe_update(message.index) {
            if pr.state == ProgressState::Probe && message.index == pr.matched {
                // An empty probe answered at what we knew it holds: the logs match there.
                pr.become_replicate();
                self.maybe_send_append(from, true);
            }
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.matched >= pr.pending_snapshot => {
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.inflights.free_to(message.index),
        }
        let matched = pr.matched;
        if self.maybe_commit() {
            self.broadcast_append();
        } else if was_paused {
            self.maybe_send_append(from, true);
        }
        while self.maybe_send_append(from, false) {}
        if self.lead_transferee == Some(from) && matched == self.log.last_index() {
            self.send_timeout_now(from);
        }
    }

    fn handle_heartbeat_response(&mut self, message: &Message) {
        let from = message.from;
        let round = self.reads.heartbeat_round;
        let last_index = self.log.last_index();
        let Some(pr) = self.tracker.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            // The follower is alive but the window is full: appends in it may be lost,
            // and nothing else would ever free it. Let one more through; if there was a
            // gap the follower rejects it and we fall back to probing from its match.
            pr.inflights.free_first();
        }
        if message.heartbeat_round <= round {
            pr.acked_round = pr.acked_round.max(message.heartbeat_round);
        }
        if pr.matched < last_index {
            self.maybe_send_append(from, true);
        }
        self.advance_reads();
    }

    /// Sends the probe again to every follower whose last probe is still unanswered, once
    /// per election timeout (a follower on a dead store gets one small message per
    /// region that often, not one per heartbeat). A probe is normally released by the
    /// answer to it or to a heartbeat; a replica that does not exist yet (its store
    /// creates it from an append, not from a heartbeat) answers neither, so a lost first
    /// append would otherwise leave it paused for good.
    pub(super) fn probe_again_where_unanswered(&mut self) {
        let unanswered: Vec<u64> = self
            .tracker
            .progress
            .iter()
            .filter(|(id, pr)| **id != self.id && pr.state == ProgressState::Probe && pr.probe_sent)
            .map(|(&id, _)| id)
            .collect();
        for id in unanswered {
            self.send_empty_probe(id);
        }
    }

    /// An append without entries from the follower's next index: enough to find where
    /// its log matches ours (and for its store to create it), and cheap to repeat to a
    /// follower that may be down. A compacted log sends a snapshot instead, when the
    /// follower is known to be alive.
    ///
    /// A follower that has not answered lately gets no snapshot, and may never answer:
    /// a replica its store has not created yet hears nothing but appends and snapshots
    /// (heartbeats to it are dropped), so it can never become recently active by itself.
    /// When its next index is compacted away, it is probed at the start of the log
    /// instead (the last compacted index, whose term is kept): that append creates it,
    /// its refusal makes it recently active, and the snapshot follows the refusal.
    fn send_empty_probe(&mut self, to: u64) {
        let Some(pr) = self.tracker.progress.get_mut(&to) else { return };
        pr.probe_sent = false;
        let recently_active = pr.recent_active;
        let prev_index = pr.next_index - 1;
        match self.log.term(prev_index) {
            Ok(prev_term) => self.send_append(to, prev_index, prev_term, Vec::new()),
            Err(_) if recently_active => {
                self.send_snapshot(to);
            }
            Err(_) => self.send_probe_at_log_start(to),
        }
    }

    /// An empty append anchored at the last compacted index, for a silent follower whose
    /// next index is compacted away (see [`Self::send_empty_probe`]). Its next index
    /// moves to the log's first index, so that the refusal is taken as an answer to this
    /// probe; nothing the follower holds can be lost by that, as its match is below.
    fn send_probe_at_log_start(&mut self, to: u64) {
        let anchor = self.log.first_index() - 1;
        let Ok(anchor_term) = self.log.term(anchor) else {
            panic!("invariant: the term of the last compacted index ({anchor}) is kept with the log")
        };
        let Some(pr) = self.tracker.progress.get_mut(&to) else { return };
        assert!(
            pr.matched < anchor + 1,
            "invariant: a follower whose next index is compacted matched below it"
        );
        pr.next_index = anchor + 1;
        self.send_append(to, anchor, anchor_term, Vec::new());
    }

    /// Sends one append to every other member.
    pub(super) fn broadcast_append(&mut self) {
        let peers: Vec<u64> = self.tracker.progress.keys().copied().filter(|&id| id != self.id).collect();
        for id in peers {
            self.maybe_send_append(id, true);
        }
    }

    /// Sends the next append (or a snapshot) to `to`, unless its pacing forbids it or there
    /// is nothing to send and `send_if_empty` is false. Returns whether something was sent.
    pub(super) fn maybe_send_append(&mut self, to: u64, send_if_empty: bool) -> bool {
        let Some(pr) = self.tracker.progress.get(&to) else { return false };
        if pr.is_paused() {
            return false;
        }
        let prev_index = pr.next_index - 1;
        let prev_term = self.log.term(prev_index);
        let entries = self.log.entries(pr.next_index, Some(self.config.max_size_per_msg));
        let (Ok(prev_term), Ok(entries)) = (prev_term, entries) else {
            return self.send_snapshot(to);
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        self.send_append(to, prev_index, prev_term, entries);
        true
    }

    /// Sends `entries` after `(prev_index, prev_term)` to `to`, with the commit index,
    /// and records them in its progress.
    fn send_append(&mut self, to: u64, prev_index: u64, prev_term: u64, entries: Vec<Entry>) {
        let last = entries.last().map(|entry| entry.index);
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.sent_append(last);
        }
        let mut message = new_message(to, MessageType::Append);
        message.index = prev_index;
        message.log_term = prev_term;
        message.entries = entries;
        message.commit = self.log.committed;
        self.send(message);
    }

    fn send_snapshot(&mut self, to: u64) -> bool {
        let Some(pr) = self.tracker.progress.get(&to) else { return false };
        if !pr.recent_active {
            // Do not ship a whole snapshot to a replica that may be down.
            return false;
        }
        let snapshot = match self.log.snapshot(pr.matched) {
            Ok(snapshot) => snapshot,
            Err(StorageError::SnapshotTemporarilyUnavailable) => return false,
            Err(error) => fail_stop(error),
        };
        let index = snapshot_index(&snapshot);
        assert!(index > 0, "invariant: a compacted log always has a snapshot to send");
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.become_snapshot(index);
        }
        let mut message = new_message(to, MessageType::Snapshot);
        message.snapshot = Some(snapshot);
        self.send(message);
        true
    }

    /// Starts a heartbeat round: every member hears from us, and the round number they
    /// echo confirms our leadership for reads and dates our lease.
    pub(super) fn broadcast_heartbeat(&mut self) {
        let round = self.reads.start_round(self.lease_now);
        let id = self.id;
        if let Some(own) = self.tracker.progress.get_mut(&id) {
            own.acked_round = round;
        }
        let peers: Vec<(u64, u64)> = self
            .tracker
            .progress
            .iter()
            .filter(|(peer, _)| **peer != id)
            .map(|(&peer, pr)| (peer, pr.matched))
            .collect();
        for (peer, matched) in peers {
            let mut message = new_message(peer, MessageType::Heartbeat);
            // A follower may only commit what it is known to hold in our log; its
            // entries beyond `matched` may still be a deposed leader's.
            message.commit = matched.min(self.log.committed);
            message.heartbeat_round = round;
            self.send(message);
        }
        // A group whose only voter is us confirms every round at once.
        self.advance_reads();
    }

    pub(super) fn send_timeout_now(&mut self, to: u64) {
        // The target campaigns at once and voters will not ignore it, so our lease means
        // nothing until the transfer ends (`read_index.rs`).
        self.reads.suspend_lease_for_transfer();
        let mut message = new_message(to, MessageType::TimeoutNow);
        // What the target's log ends at now: one that holds more of this term by the
        // time the message arrives knows the transfer was abandoned.
        message.index = self.log.last_index();
        self.send(message);
    }

    /// A transfer ended with this replica still leading (abandoned after an election
    /// timeout, or its target left the voters). A TimeoutNow that went out may still
    /// arrive, so the lease stays suspended until an entry appended now commits (see
    /// `read_index.rs`): an idle region would otherwise lead without a lease for the
    /// rest of the term.
    pub(super) fn abandon_transfer(&mut self) {
        self.lead_transferee = None;
        if self.reads.transfer_suspends_lease() {
            let position = self.append_entry(Entry::default());
            self.reads.suspend_lease_until_committed(position.index);
            self.broadcast_append();
        }
    }

    /// The application finished (or failed) sending a snapshot to `to`.
    pub(crate) fn report_snapshot(&mut self, to: u64, success: bool) {
        let Some(pr) = self.tracker.progress.get_mut(&to) else { return };
        if pr.state != ProgressState::Snapshot {
            return;
        }
        if !success {
            pr.pending_snapshot = 0;
        }
        pr.become_probe();
        // Wait for a heartbeat response before probing, so a failing link is not flooded.
        pr.probe_sent = true;
    }
}
