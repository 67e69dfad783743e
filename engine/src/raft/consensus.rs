//! The Raft state machine: terms, roles, elections and the dispatch of every message.
//!
//! This file owns what is common to all roles (term rules, votes, ticks, membership
//! switches); `leader.rs` and `follower.rs` hold what one role does with a message, and
//! `read_index.rs` the linearizable read path. The state machine never performs I/O: it
//! appends to the unstable log and queues messages, and [`RawNode`](super::RawNode)
//! hands both to the application in a [`Ready`](super::Ready).

use prost::Message as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::failpoint::{self, points};

use super::confchange;
use super::config::{Config, LeaseClock};
use super::errors::{ConfigError, Error, MessageDefect, Result, StorageError, TransferRefusal};
use super::log::RaftLog;
use super::proto::{ConfChange, Entry, EntryType, HardState, Message, MessageType, Snapshot};
use super::read_index::{ReadState, Reads};
use super::storage::Storage;
use super::tracker::{ProgressTracker, TrackerConfig};

/// The role a replica plays in its current term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Asking whether it could win before raising the term (PreVote, §9.6).
    PreCandidate,
    Candidate,
    Leader,
}

/// A log position: where a proposal landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    pub index: u64,
    pub term: u64,
}

/// Why a replica campaigns, which decides how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CampaignKind {
    /// The PreVote round (§9.6): asks whether the replica could win before it raises its
    /// term.
    PreElection,
    /// An election on the replica's own initiative (its election timeout, or the
    /// application asking): preceded by a PreVote round when [`Config::pre_vote`] is on.
    Election,
    /// Ordered by the leader through TimeoutNow: skips PreVote and is not ignored by
    /// voters that heard from the leader recently.
    Transfer,
}

pub(crate) struct Raft<S: Storage> {
    pub(super) id: u64,
    pub(super) term: u64,
    /// Whom this replica voted for in `term`, or 0.
    pub(super) vote: u64,
    /// The leader of `term` as far as this replica knows, or 0.
    pub(super) leader_id: u64,
    pub(super) role: Role,
    pub(super) log: RaftLog<S>,
    pub(super) tracker: ProgressTracker,
    pub(super) config: Config,
    /// Messages that may be sent before the current Ready is persisted.
    pub(super) messages: Vec<Message>,
    /// Messages that may only be sent once the current Ready is persisted.
    pub(super) messages_after_persist: Vec<Message>,
    pub(super) read_states: Vec<ReadState>,
    pub(super) dropped_reads: Vec<Vec<u8>>,
    pub(super) reads: Reads,
    pub(super) election_elapsed: u64,
    heartbeat_elapsed: u64,
    randomized_election_timeout: u64,
    /// Index of the last membership change appended; no other may be proposed before it
    /// is applied.
    pub(super) pending_conf_index: u64,
    pub(super) lead_transferee: Option<u64>,
    /// Ticks since this replica started: elections and the voters' side of the lease
    /// (`last_leader_contact`) are measured on it.
    pub(super) clock: u64,
    /// The reading of the [`LeaseClock`] the leader lease is measured on: the tick count,
    /// or the application's latest reading of its monotonic clock. Never goes back.
    pub(super) lease_now: u64,
    /// The clock reading when this replica last heard from a leader of its term. While
    /// less than an election timeout ago, it neither grants votes nor raises its term for
    /// a campaign (§4.2.3): the leader's lease rests on this. It survives term changes
    /// caused by other messages. At start-up it reads 0 unless the group is new: a
    /// restarted replica may have acknowledged a lease it no longer remembers.
    last_leader_contact: Option<u64>,
    rng: ChaCha8Rng,
}

impl<S: Storage> Raft<S> {
    pub(crate) fn new(config: Config, storage: S) -> Result<Raft<S>> {
        config.validate()?;
        let state = storage.initial_state()?;
        let mut log = RaftLog::new(storage);
        let hard_state = state.hard_state;
        if hard_state.commit > log.last_index() {
            let last_index = log.last_index();
            return Err(StorageError::CommitBeyondLog { commit: hard_state.commit, last_index }.into());
        }
        log.commit_to(hard_state.commit);
        if config.applied > log.committed {
            return Err(ConfigError::AppliedBeyondCommit {
                applied: config.applied,
                committed: log.committed,
            }
            .into());
        }
        if config.applied > log.applied {
            log.applied_to(config.applied);
        }
        let mut tracker = ProgressTracker::new(config.max_inflight_msgs);
        tracker.config = TrackerConfig::from_conf_state(&state.conf_state);
        tracker.reset_progress(log.last_index());
        let mut raft = Raft {
            id: config.id,
            term: hard_state.term,
            vote: hard_state.vote,
            leader_id: 0,
            role: Role::Follower,
            log,
            tracker,
            messages: Vec::new(),
            messages_after_persist: Vec::new(),
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            reads: Reads::default(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_ticks,
            pending_conf_index: 0,
            lead_transferee: None,
            clock: 0,
            lease_now: 0,
            last_leader_contact: (!config.new_group).then_some(0),
            rng: ChaCha8Rng::seed_from_u64(config.random_seed),
            config,
        };
        raft.become_follower(hard_state.term, 0);
        Ok(raft)
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }

    /// The replica leadership is being handed to, if a transfer is under way.
    pub(crate) fn lead_transferee(&self) -> Option<u64> {
        self.lead_transferee
    }

    /// Whether this replica may campaign: it must be a voter.
    pub(crate) fn promotable(&self) -> bool {
        self.tracker.is_voter(self.id)
    }

    /// Queues a message. Only a leader's messages may leave before the Ready that
    /// produced them is persisted: they carry nothing this replica has promised (it
    /// counts its own log towards a commit only once the log is durable, and
    /// [`RawNode::ready`](super::RawNode::ready) holds them back while the term itself is
    /// not yet durable). Everything a follower or candidate says (votes, append
    /// acknowledgements) promises durable state, so it waits.
    pub(super) fn send(&mut self, mut message: Message) {
        message.from = self.id;
        if message.term == 0 {
            message.term = self.term;
        }
        if self.role == Role::Leader {
            self.messages.push(message);
        } else {
            self.messages_after_persist.push(message);
        }
    }

    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = 0;
        }
        if self.role == Role::Leader {
            self.drop_pending_reads();
        }
        self.leader_id = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_timeout = self.draw_election_timeout();
        self.lead_transferee = None;
        self.tracker.reset_votes();
        self.tracker.reset_progress(self.log.last_index());
        self.pending_conf_index = 0;
    }

    /// An election timeout drawn from `[election_ticks, 2 * election_ticks)`. Drawn as a
    /// `u32` while the range fits one, as `rand` draws a `usize` range: a seed then keeps
    /// drawing the timeouts it drew when ticks were counted in `usize`, so recorded
    /// simulator seeds still replay what they were recorded for.
    fn draw_election_timeout(&mut self) -> u64 {
        let low = self.config.election_ticks;
        let high = 2 * low;
        match (u32::try_from(low), u32::try_from(high)) {
            (Ok(low), Ok(high)) => u64::from(self.rng.random_range(low..high)),
            _ => self.rng.random_range(low..high),
        }
    }

    pub(super) fn become_follower(&mut self, term: u64, leader_id: u64) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader_id = leader_id;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "invariant: a leader never campaigns");
        // PreVote changes no persistent state: the term and vote stay as they are.
        self.role = Role::PreCandidate;
        self.tracker.reset_votes();
        self.leader_id = 0;
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "invariant: a leader never campaigns");
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    pub(super) fn become_leader(&mut self) {
        assert_ne!(self.role, Role::Follower, "invariant: only a candidate becomes leader");
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader_id = self.id;
        self.reads = Reads::default();
        let persisted = self.log.persisted;
        if let Some(own) = self.tracker.progress.get_mut(&self.id) {
            own.maybe_update(persisted);
            own.become_replicate();
        }
        // Any membership change in the log may still be unapplied: allow no new one
        // until everything up to here is applied.
        self.pending_conf_index = self.log.last_index();
        // A no-op entry of the new term: committing it commits everything before it
        // (§5.4.2), and it is what ReadIndex waits for (§6.4).
        self.append_entry(Entry::default());
    }

    /// Advances the logical clock by one tick.
    pub(crate) fn tick(&mut self) {
        self.clock += 1;
        if self.config.lease_clock == LeaseClock::Ticks {
            self.lease_now += 1;
        }
        if self.role == Role::Leader {
            self.tick_leader();
            return;
        }
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.hup(CampaignKind::Election);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                if let Some(own) = self.tracker.progress.get_mut(&self.id) {
                    own.recent_active = true;
                }
                if !self.tracker.quorum_active() {
                    self.become_follower(self.term, 0);
                    return;
                }
                let id = self.id;
                for (&peer, pr) in self.tracker.progress.iter_mut() {
                    pr.recent_active = peer == id;
                }
            }
            // A transfer that has not finished within an election timeout is abandoned.
            if self.lead_transferee.is_some() {
                self.abandon_transfer();
            }
            self.probe_again_where_unanswered();
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Campaigns now, if this replica may. Outside a leader transfer, a replica that heard
    /// from a leader within an election timeout does not campaign: a leader may be
    /// serving reads on a lease that counts on it. A [`CampaignKind::Election`] starts
    /// with a PreVote round when the configuration asks for one.
    pub(super) fn hup(&mut self, kind: CampaignKind) {
        if self.role == Role::Leader || !self.promotable() || self.has_unapplied_conf_changes() {
            return;
        }
        if kind != CampaignKind::Transfer && self.in_leader_lease() {
            return;
        }
        let kind = match kind {
            CampaignKind::Election if self.config.pre_vote => CampaignKind::PreElection,
            kind => kind,
        };
        self.campaign(kind);
    }

    /// A replica that campaigned on a configuration that a committed but unapplied entry
    /// is about to change could count the wrong voters.
    fn has_unapplied_conf_changes(&self) -> bool {
        if self.log.applied >= self.log.committed {
            return false;
        }
        match self.log.slice(self.log.applied + 1, self.log.committed + 1, None) {
            Ok(entries) => entries.iter().any(|e| e.entry_type() == EntryType::ConfChange),
            // Compacted entries were applied through a snapshot; be conservative.
            Err(_) => true,
        }
    }

    fn campaign(&mut self, kind: CampaignKind) {
        let (message_type, term) = if kind == CampaignKind::PreElection {
            self.become_pre_candidate();
            (MessageType::RequestPreVote, self.term + 1)
        } else {
            self.become_candidate();
            (MessageType::RequestVote, self.term)
        };
        self.tracker.record_vote(self.id, true);
        if self.tally_and_act() {
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for id in self.tracker.config.voters.ids() {
            if id == self.id {
                continue;
            }
            let mut message = new_message(id, message_type);
            message.term = term;
            message.index = last_index;
            message.log_term = last_term;
            message.leader_transfer = kind == CampaignKind::Transfer;
            self.send(message);
        }
    }

    /// Counts the votes so far and acts on a decision; returns whether one was reached.
    pub(super) fn tally_and_act(&mut self) -> bool {
        match self.tracker.tally_votes() {
            super::quorum::VoteResult::Won => {
                if self.role == Role::PreCandidate {
                    self.campaign(CampaignKind::Election);
                } else {
                    self.become_leader();
                    self.broadcast_append();
                }
                true
            }
            super::quorum::VoteResult::Lost => {
                // A lost PreVote leaves the term unchanged, a lost vote keeps the new one.
                self.become_follower(self.term, 0);
                true
            }
            super::quorum::VoteResult::Pending => false,
        }
    }

    /// Processes one message from another replica.
    pub(crate) fn step(&mut self, message: Message) -> Result<()> {
        if message.from == 0 || message.term == 0 {
            let (message_type, from, term) = (message.msg_type, message.from, message.term);
            return Err(MessageDefect::NoSenderOrTerm { message_type, from, term }.into());
        }
        if message.to != self.id {
            return Err(MessageDefect::WrongRecipient { to: message.to, id: self.id }.into());
        }
        let Ok(message_type) = MessageType::try_from(message.msg_type) else {
            let (message_type, from) = (message.msg_type, message.from);
            return Err(MessageDefect::UnknownType { message_type, from }.into());
        };
        let is_vote_request = matches!(message_type, MessageType::RequestVote | MessageType::RequestPreVote);
        if is_vote_request && message.term >= self.term && !message.leader_transfer && self.in_leader_lease()
        {
            // §4.2.3: within an election timeout of hearing from a leader, a replica
            // neither raises its term for a campaign nor grants a vote, whatever its term
            // has become since; the leader's lease rests on this.
            return Ok(());
        }
        if message.term > self.term {
            match message_type {
                MessageType::RequestPreVote => {}
                MessageType::RequestPreVoteResponse if !message.reject => {}
                MessageType::Append | MessageType::Heartbeat | MessageType::Snapshot => {
                    self.become_follower(message.term, message.from)
                }
                MessageType::RequestVote => {
                    // Figure 2: the election timer restarts on hearing from the leader
                    // or granting a vote (handle_vote_request does), not because a
                    // candidate's term is higher. Were it restarted here, candidates
                    // with stale logs, campaigning in turn, could keep the replica
                    // whose log would win from ever campaigning.
                    let elapsed = self.election_elapsed;
                    self.become_follower(message.term, 0);
                    self.election_elapsed = elapsed;
                }
                _ => self.become_follower(message.term, 0),
            }
        } else if message.term < self.term {
            self.answer_stale_message(&message);
            return Ok(());
        }
        match message_type {
            MessageType::RequestVote | MessageType::RequestPreVote => {
                self.handle_vote_request(&message);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(message),
                Role::Candidate | Role::PreCandidate => self.step_candidate(message),
                Role::Follower => self.step_follower(message),
            },
        }
    }

    /// Whether a leader's lease may rest on this replica: it is the leader, or heard from
    /// one less than an election timeout ago.
    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && (self.role == Role::Leader
                || self
                    .last_leader_contact
                    .is_some_and(|contact| self.clock.saturating_sub(contact) < self.config.election_ticks))
    }

    /// The application's monotonic clock reads `now` (ignored unless the lease is
    /// measured on it; a reading that goes back is ignored too).
    pub(crate) fn observe_time(&mut self, now: u64) {
        if matches!(self.config.lease_clock, LeaseClock::Observed { .. }) {
            self.lease_now = self.lease_now.max(now);
        }
    }

    /// Records that the leader of our term spoke to us.
    pub(super) fn heard_from_leader(&mut self, leader_id: u64) {
        self.election_elapsed = 0;
        self.leader_id = leader_id;
        self.last_leader_contact = Some(self.clock);
    }

    fn answer_stale_message(&mut self, message: &Message) {
        let message_type = message.msg_type();
        if (self.config.check_quorum || self.config.pre_vote)
            && matches!(message_type, MessageType::Append | MessageType::Heartbeat)
        {
            // A deposed leader that cannot reach us otherwise learns the new term from
            // this answer. Without it, a partitioned replica with a high term could be
            // ignored forever once PreVote keeps it from raising terms elsewhere.
            self.send(new_message(message.from, MessageType::AppendResponse));
        } else if message_type == MessageType::RequestPreVote {
            let mut reject = new_message(message.from, MessageType::RequestPreVoteResponse);
            reject.reject = true;
            self.send(reject);
        }
    }

    fn handle_vote_request(&mut self, message: &Message) {
        let pre_vote = message.msg_type() == MessageType::RequestPreVote;
        let response_type =
            if pre_vote { MessageType::RequestPreVoteResponse } else { MessageType::RequestVoteResponse };
        // We may vote for a candidate we already voted for, or for anyone if we have not
        // voted and know no leader in this term; a PreVote for a later term is always
        // considered.
        let can_vote = self.vote == message.from
            || (self.vote == 0 && self.leader_id == 0)
            || (pre_vote && message.term > self.term)
            || failpoint::hit(points::RAFT_GRANT_EVERY_VOTE);
        let mut response = new_message(message.from, response_type);
        if can_vote && self.log.is_up_to_date(message.index, message.log_term) {
            response.term = message.term;
            if !pre_vote {
                self.election_elapsed = 0;
                self.vote = message.from;
            }
        } else {
            response.reject = true;
        }
        self.send(response);
    }

    pub(super) fn append_entry(&mut self, mut entry: Entry) -> LogPosition {
        let index = self.log.last_index() + 1;
        entry.index = index;
        entry.term = self.term;
        self.log.append(&[entry]);
        LogPosition { index, term: self.term }
    }

    fn ensure_leader(&self) -> Result<()> {
        if self.role != Role::Leader {
            let leader_hint = (self.leader_id != 0).then_some(self.leader_id);
            return Err(Error::NotLeader { leader_hint });
        }
        if let Some(transferee) = self.lead_transferee {
            return Err(Error::LeaderTransferInProgress { transferee });
        }
        Ok(())
    }

    /// Appends an application command to the log.
    pub(crate) fn propose(&mut self, data: Vec<u8>) -> Result<LogPosition> {
        self.ensure_leader()?;
        let position =
            self.append_entry(Entry { entry_type: EntryType::Normal as i32, data, ..Default::default() });
        self.broadcast_append();
        Ok(position)
    }

    /// Appends a membership change, after checking it against the current configuration.
    pub(crate) fn propose_conf_change(&mut self, change: &ConfChange) -> Result<LogPosition> {
        self.ensure_leader()?;
        let user_change_while_joint = !change.changes.is_empty() && self.tracker.config.voters.is_joint();
        if self.pending_conf_index > self.log.applied || user_change_while_joint {
            return Err(Error::ConfChangeInProgress);
        }
        confchange::apply(&self.tracker, change, self.log.last_index())?;
        let entry = Entry {
            entry_type: EntryType::ConfChange as i32,
            data: change.encode_to_vec(),
            ..Default::default()
        };
        let position = self.append_entry(entry);
        self.pending_conf_index = position.index;
        self.broadcast_append();
        Ok(position)
    }

    /// Leaves a joint configuration on the leader's own initiative, once the entry that
    /// entered it is applied.
    pub(super) fn maybe_auto_leave(&mut self) {
        let config = &self.tracker.config;
        if self.role == Role::Leader
            && config.voters.is_joint()
            && config.auto_leave
            && self.log.applied >= self.pending_conf_index
        {
            let leave = ConfChange::default();
            if let Err(error) = self.propose_conf_change(&leave) {
                // Only a transfer in progress can refuse it; the next advance retries.
                debug_assert!(matches!(error, Error::LeaderTransferInProgress { .. }), "{error}");
            }
        }
    }

    /// Applies a committed membership change; returns the new configuration.
    pub(crate) fn apply_conf_change(&mut self, change: &ConfChange) -> Result<super::proto::ConfState> {
        let changed = confchange::apply(&self.tracker, change, self.log.last_index())?;
        self.tracker.switch_to(changed.config, changed.progress);
        if self.role == Role::Leader {
            if !self.tracker.is_voter(self.id) {
                // The leader was removed (or demoted): it stops leading; the remaining
                // voters elect a leader when their election timers fire.
                self.become_follower(self.term, 0);
            } else {
                // Not while a TimeoutNow is out (a transfer waits for applied membership
                // changes, and refuses new ones), but the transfer may be catching its
                // target up.
                if self.lead_transferee.is_some_and(|t| !self.tracker.config.voters.incoming.contains(t)) {
                    self.abandon_transfer();
                }
                if self.maybe_commit() {
                    self.broadcast_append();
                } else {
                    let peers: Vec<u64> = self.tracker.progress.keys().copied().collect();
                    for id in peers {
                        if id != self.id {
                            self.maybe_send_append(id, false);
                        }
                    }
                }
            }
        }
        Ok(self.tracker.config.to_conf_state())
    }

    /// Installs a snapshot's configuration and log position (follower side).
    pub(super) fn restore(&mut self, snapshot: Snapshot) {
        let conf_state = snapshot.metadata.as_ref().and_then(|m| m.conf_state.clone()).unwrap_or_default();
        self.log.restore(snapshot);
        self.tracker.config = TrackerConfig::from_conf_state(&conf_state);
        self.tracker.reset_progress(self.log.last_index());
    }

    /// Entries up to `(index, term)` are durable.
    pub(super) fn on_persisted(&mut self, index: u64, term: u64) {
        self.log.stable_to(index, term);
        if self.role != Role::Leader {
            return;
        }
        let persisted = self.log.persisted;
        let updated = self.tracker.progress.get_mut(&self.id).is_some_and(|own| own.maybe_update(persisted));
        if updated && self.maybe_commit() {
            self.broadcast_append();
        }
    }

    /// Starts handing leadership to `target`.
    pub(crate) fn transfer_leader(&mut self, target: u64) -> Result<()> {
        if self.role != Role::Leader {
            let leader_hint = (self.leader_id != 0).then_some(self.leader_id);
            return Err(Error::NotLeader { leader_hint });
        }
        if target == self.id {
            return Err(Error::TransferRefused { target, reason: TransferRefusal::AlreadyLeader });
        }
        if self.pending_conf_index > self.log.applied || self.tracker.config.voters.is_joint() {
            return Err(Error::ConfChangeInProgress);
        }
        if !self.tracker.config.voters.incoming.contains(target) {
            return Err(Error::TransferRefused { target, reason: TransferRefusal::NotAVoter });
        }
        if self.lead_transferee == Some(target) {
            return Ok(());
        }
        self.lead_transferee = Some(target);
        // The transfer must finish within an election timeout.
        self.election_elapsed = 0;
        let caught_up =
            self.tracker.progress.get(&target).is_some_and(|pr| pr.matched == self.log.last_index());
        if caught_up {
            self.send_timeout_now(target);
        } else {
            self.maybe_send_append(target, true);
        }
        Ok(())
    }
}

pub(super) fn new_message(to: u64, message_type: MessageType) -> Message {
    Message { to, msg_type: message_type as i32, ..Default::default() }
}
