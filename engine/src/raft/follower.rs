//! What followers and candidates do: accept the leader's log, heartbeats and snapshots,
//! count votes, and campaign when told to by TimeoutNow.

use super::consensus::{CampaignKind, Raft, Role, new_message};
use super::errors::{MessageDefect, Result};
use super::log_unstable::{snapshot_index, snapshot_term};
use super::proto::{Message, MessageType};
use super::storage::Storage;

impl<S: Storage> Raft<S> {
    pub(super) fn step_follower(&mut self, message: Message) -> Result<()> {
        match message.msg_type() {
            MessageType::Append | MessageType::Heartbeat | MessageType::Snapshot => {
                self.heard_from_leader(message.from);
                self.handle_leader_message(message)
            }
            MessageType::TimeoutNow => {
                if !self.timeout_now_is_stale(&message) {
                    self.hup(CampaignKind::Transfer);
                }
                Ok(())
            }
            // Late answers to a campaign or to a leadership we no longer hold.
            _ => Ok(()),
        }
    }

    /// Whether a TimeoutNow comes from a transfer its leader has abandoned since: the
    /// leader sent it with the index its log then ended at, and this replica holds an
    /// entry of the same term after that index, which only that leader, leading on,
    /// can have appended. Campaigning on it could depose a leader whose lease is back.
    fn timeout_now_is_stale(&self, message: &Message) -> bool {
        message.index != 0 && self.log.last_index() > message.index && self.log.last_term() == message.term
    }

    pub(super) fn step_candidate(&mut self, message: Message) -> Result<()> {
        match message.msg_type() {
            MessageType::Append | MessageType::Heartbeat | MessageType::Snapshot => {
                // A leader of our term exists: it won, we did not.
                self.become_follower(message.term, message.from);
                self.heard_from_leader(message.from);
                self.handle_leader_message(message)
            }
            MessageType::RequestPreVoteResponse if self.role == Role::PreCandidate => {
                self.tracker.record_vote(message.from, !message.reject);
                self.tally_and_act();
                Ok(())
            }
            MessageType::RequestVoteResponse if self.role == Role::Candidate => {
                self.tracker.record_vote(message.from, !message.reject);
                self.tally_and_act();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn handle_leader_message(&mut self, message: Message) -> Result<()> {
        match message.msg_type() {
            MessageType::Append => {
                validate_append(&message)?;
                self.handle_append(message);
                Ok(())
            }
            MessageType::Heartbeat => self.handle_heartbeat(&message),
            _ => self.handle_snapshot(message),
        }
    }

    fn handle_append(&mut self, message: Message) {
        let mut response = new_message(message.from, MessageType::AppendResponse);
        if message.index < self.log.committed {
            response.index = self.log.committed;
            self.send(response);
            return;
        }
        let appended =
            self.log.maybe_append(message.index, message.log_term, message.commit, &message.entries);
        match appended {
            Some(last_new) => response.index = last_new,
            None => {
                // Tell the leader where our log might match so that it can skip a whole
                // conflicting term per round trip instead of one entry.
                let hint_index = message.index.min(self.log.last_index());
                let (hint_index, hint_term) = self.log.find_conflict_by_term(hint_index, message.log_term);
                response.index = message.index;
                response.reject = true;
                response.reject_hint = hint_index;
                response.log_term = hint_term;
            }
        }
        self.send(response);
    }

    fn handle_heartbeat(&mut self, message: &Message) -> Result<()> {
        if message.commit > self.log.last_index() {
            let (commit, last_index) = (message.commit, self.log.last_index());
            return Err(MessageDefect::HeartbeatCommitsUnheld { commit, last_index }.into());
        }
        self.log.commit_to(message.commit);
        let mut response = new_message(message.from, MessageType::HeartbeatResponse);
        response.heartbeat_round = message.heartbeat_round;
        self.send(response);
        Ok(())
    }

    fn handle_snapshot(&mut self, message: Message) -> Result<()> {
        let Some(snapshot) = message.snapshot else {
            return Err(MessageDefect::NoSnapshot.into());
        };
        let (index, term) = (snapshot_index(&snapshot), snapshot_term(&snapshot));
        let has_conf_state = snapshot.metadata.as_ref().is_some_and(|m| m.conf_state.is_some());
        if !has_conf_state || index == 0 || index == u64::MAX || term == 0 || term > message.term {
            let message_term = message.term;
            return Err(MessageDefect::MalformedSnapshot { index, term, message_term, has_conf_state }.into());
        }
        let mut response = new_message(message.from, MessageType::AppendResponse);
        if index <= self.log.committed {
            response.index = self.log.committed;
        } else {
            if self.log.match_term(index, term) {
                // We already hold the snapshot's last entry: just commit up to it.
                self.log.commit_to(index);
            } else {
                self.restore(snapshot);
            }
            // Entries we hold after the snapshot's may be a deposed leader's: acknowledge
            // only what is known to match the leader's log.
            response.index = index;
        }
        self.send(response);
        Ok(())
    }
}

/// Rejects an append whose entries could not come from a correct leader: they must follow
/// `index` contiguously, with terms that never decrease, start at or after `log_term`
/// and never exceed the message's term.
fn validate_append(message: &Message) -> Result<()> {
    let mut expected_index = message.index.checked_add(1);
    let mut previous_term = message.log_term;
    for entry in &message.entries {
        if Some(entry.index) != expected_index || entry.term < previous_term || entry.term > message.term {
            return Err(MessageDefect::EntriesOutOfOrder {
                index: message.index,
                log_term: message.log_term,
                entry_index: entry.index,
                entry_term: entry.term,
                message_term: message.term,
            }
            .into());
        }
        expected_index = entry.index.checked_add(1);
        previous_term = entry.term;
    }
    Ok(())
}
