//! The application's handle on a Raft replica: inputs in, [`Ready`] batches out.
//!
//! # The persistence contract
//!
//! Drive a replica in a loop: feed it ticks, messages and proposals; when
//! [`RawNode::has_ready`] says so, take a [`Ready`] and handle it in this order:
//!
//! 1. Send [`Ready::messages`]. They come from a leader whose term is already durable
//!    and may leave before anything in this Ready is durable (§10.2.1: a leader writes
//!    its log in parallel with replicating it; it counts its own copy towards a commit
//!    only once durable). A Ready that changes the term or vote has none.
//! 2. Install [`Ready::snapshot`] if present, then append [`Ready::entries`] (replacing
//!    any stored entries from the first one's index on) and store [`Ready::hard_state`],
//!    durably (sync if [`Ready::must_sync`]).
//! 3. Only then send [`Ready::persisted_messages`]: votes and append acknowledgements
//!    promise durable state.
//! 4. Apply [`Ready::committed_entries`] (calling [`RawNode::apply_conf_change`] for
//!    membership entries). They are committed and durable here.
//! 5. Serve [`Ready::read_states`] once applied up to their index, and fail the reads in
//!    [`Ready::dropped_reads`] (leadership was lost before they were confirmed).
//! 6. Call [`RawNode::advance`].
//!
//! A crash anywhere in this sequence is safe: whatever was not yet durable is simply
//! lost, and nothing that depended on it was sent.
//!
//! # What the application may read and touch
//!
//! The replica's state stays inside: the application reads a copy of it through
//! [`RawNode::status`], the membership through [`RawNode::conf_state`], the leader's view
//! of each replica through [`RawNode::progress`] and a log position's term through
//! [`RawNode::entry_term`]. The one thing it reaches into is the storage
//! ([`RawNode::storage_mut`]), because step 2 above persists through it; it must only
//! write what a Ready hands it there (or compact entries it has applied), never rewrite
//! what the core already relies on.

use super::config::{Config, ReadMode};
use super::consensus::{CampaignKind, LogPosition, Raft, Role};
use super::errors::Result;
use super::proto::{ConfChange, ConfState, Entry, HardState, Message, Snapshot};
use super::read_index::ReadState;
use super::storage::Storage;
use super::tracker::Progress;

/// Volatile state worth reporting when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    pub leader_id: u64,
    pub role: Role,
}

/// A copy of a replica's state, taken by [`RawNode::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub id: u64,
    pub term: u64,
    /// Whom this replica voted for in `term`, or 0.
    pub vote: u64,
    /// The leader of `term` as far as this replica knows, or 0.
    pub leader_id: u64,
    pub role: Role,
    /// The highest index known to be committed.
    pub commit_index: u64,
    /// The highest index handed out for application and confirmed by [`RawNode::advance`].
    pub applied_index: u64,
    /// The highest index durable on this replica.
    pub persisted_index: u64,
    /// The first index still in the log (earlier entries are compacted into a snapshot).
    pub first_index: u64,
    /// The last index in the log, durable or not.
    pub last_index: u64,
    /// On a leader handing its leadership over: the replica it goes to.
    pub lead_transferee: Option<u64>,
}

/// Everything the application must do for the replica since the last [`Ready`].
#[derive(Debug, Default)]
pub struct Ready {
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub committed_entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    pub read_states: Vec<ReadState>,
    pub dropped_reads: Vec<Vec<u8>>,
    pub must_sync: bool,
}

/// What a handed-out Ready promised, to be confirmed by `advance`.
#[derive(Debug)]
struct InFlightReady {
    last_entry: Option<(u64, u64)>,
    snapshot: Option<Snapshot>,
    applied_to: Option<u64>,
    hard_state: Option<HardState>,
}

pub struct RawNode<S: Storage> {
    /// Visible within the core (its tests read it); the application reads a copy through
    /// [`RawNode::status`].
    pub(super) raft: Raft<S>,
    previous_soft_state: SoftState,
    previous_hard_state: HardState,
    in_flight: Option<InFlightReady>,
    /// Bound on the encoded size of committed entries in one Ready.
    max_committed_size: u64,
}

impl<S: Storage> RawNode<S> {
    pub fn new(config: Config, storage: S) -> Result<RawNode<S>> {
        let max_committed_size = config.max_size_per_msg.saturating_mul(4);
        let raft = Raft::new(config, storage)?;
        let previous_soft_state = SoftState { leader_id: raft.leader_id, role: raft.role };
        let previous_hard_state = raft.hard_state();
        Ok(RawNode { raft, previous_soft_state, previous_hard_state, in_flight: None, max_committed_size })
    }

    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Hands over a reading of the application's monotonic clock, on which the leader
    /// lease is measured when the configuration says [`LeaseClock::Observed`]: before
    /// every tick, and after a read arrived but before [`RawNode::read_index`] is asked
    /// for it. Readings must not go back (one that does is ignored).
    ///
    /// [`LeaseClock::Observed`]: super::LeaseClock::Observed
    pub fn observe_time(&mut self, now: u64) {
        self.raft.observe_time(now);
    }

    /// Campaigns now (used to elect a first leader without waiting for a timeout).
    pub(crate) fn campaign(&mut self) {
        self.raft.hup(CampaignKind::Election);
    }

    pub fn step(&mut self, message: Message) -> Result<()> {
        self.raft.step(message)
    }

    pub fn propose(&mut self, data: Vec<u8>) -> Result<LogPosition> {
        self.raft.propose(data)
    }

    pub fn propose_conf_change(&mut self, change: &ConfChange) -> Result<LogPosition> {
        self.raft.propose_conf_change(change)
    }

    pub fn apply_conf_change(&mut self, change: &ConfChange) -> Result<ConfState> {
        self.raft.apply_conf_change(change)
    }

    pub fn transfer_leader(&mut self, target: u64) -> Result<()> {
        self.raft.transfer_leader(target)
    }

    pub fn read_index(&mut self, context: Vec<u8>, mode: ReadMode) -> Result<()> {
        self.raft.read_index(context, mode)
    }

    /// When this leader's lease ends, on the [`LeaseClock`](super::LeaseClock): until
    /// then no other replica can be elected (see `read_index`). None unless it leads
    /// under a lease; a lease counted in ticks is only meaningful to this node.
    pub fn leader_lease_expires_at(&self) -> Option<u64> {
        self.raft.lease_expires_at()
    }

    /// Ends the leader's lease. A replica that stops ticking (a hibernating region) must
    /// call this: with a lease counted in ticks its clock stops with it, so the lease
    /// would seem to hold for as long as it sleeps; and acknowledgements arriving while
    /// it sleeps must not renew it.
    pub(crate) fn expire_lease(&mut self) {
        self.raft.reads.expire_lease();
    }

    /// The index of the snapshot this replica accepted from its leader and has not
    /// installed yet, if any.
    pub(crate) fn pending_snapshot_index(&self) -> Option<u64> {
        self.raft.log.unstable.snapshot.as_ref().map(super::log_unstable::snapshot_index)
    }

    pub fn report_snapshot(&mut self, to: u64, success: bool) {
        self.raft.report_snapshot(to, success);
    }

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState { leader_id: self.raft.leader_id, role: self.raft.role }
    }

    /// A copy of the replica's state now.
    pub fn status(&self) -> Status {
        let raft = &self.raft;
        Status {
            id: raft.id,
            term: raft.term,
            vote: raft.vote,
            leader_id: raft.leader_id,
            role: raft.role,
            commit_index: raft.log.committed,
            applied_index: raft.log.applied,
            persisted_index: raft.log.persisted,
            first_index: raft.log.first_index(),
            last_index: raft.log.last_index(),
            lead_transferee: raft.lead_transferee(),
        }
    }

    /// The membership configuration in effect (the last one applied).
    pub fn conf_state(&self) -> ConfState {
        self.raft.tracker.config.to_conf_state()
    }

    /// The term of the entry at `index` in this replica's log, durable or not; `None`
    /// when the entry is compacted or not there yet.
    pub fn entry_term(&self, index: u64) -> Option<u64> {
        self.raft.log.term(index).ok()
    }

    /// What this replica knows of every member's log, by replica id. Only a leader keeps
    /// it current; elsewhere it is what the last reset left.
    pub(crate) fn progress(&self) -> impl Iterator<Item = (u64, &Progress)> {
        self.raft.tracker.progress.iter().map(|(&id, progress)| (id, progress))
    }

    /// The storage the replica reads its log from.
    pub(crate) fn storage(&self) -> &S {
        &self.raft.log.storage
    }

    /// The storage, for persisting a Ready as the contract above says and for compacting
    /// applied entries.
    pub(crate) fn storage_mut(&mut self) -> &mut S {
        &mut self.raft.log.storage
    }

    pub fn has_ready(&self) -> bool {
        if self.in_flight.is_some() {
            return false;
        }
        let raft = &self.raft;
        self.soft_state() != self.previous_soft_state
            || raft.hard_state() != self.previous_hard_state
            || raft.log.unstable.snapshot.is_some()
            || !raft.log.unstable_entries().is_empty()
            || raft.log.has_next_committed_entries()
            || !raft.messages.is_empty()
            || !raft.messages_after_persist.is_empty()
            || !raft.read_states.is_empty()
            || !raft.dropped_reads.is_empty()
            || (raft.role == Role::Leader && raft.reads.broadcast_needed())
    }

    /// Takes the next batch of work. Must be followed by [`RawNode::advance`] before the
    /// next call.
    pub fn ready(&mut self) -> Ready {
        assert!(self.in_flight.is_none(), "invariant: ready() called again before advance()");
        self.raft.flush_read_broadcast();
        let soft_state = self.soft_state_changed();
        let hard_state = Some(self.raft.hard_state()).filter(|hs| *hs != self.previous_hard_state);
        let snapshot = self.raft.log.unstable.snapshot.clone();
        let entries = self.raft.log.unstable_entries().to_vec();
        let committed_entries = self.raft.log.next_committed_entries(Some(self.max_committed_size));
        let term_or_vote_changed = hard_state.as_ref().is_some_and(|hs| {
            hs.term != self.previous_hard_state.term || hs.vote != self.previous_hard_state.vote
        });
        let must_sync = snapshot.is_some() || !entries.is_empty() || term_or_vote_changed;
        let mut messages = std::mem::take(&mut self.raft.messages);
        let mut persisted_messages = std::mem::take(&mut self.raft.messages_after_persist);
        if term_or_vote_changed {
            // A leader elected within this Ready (a lone voter wins at once) must not
            // speak in a term that is not yet durable: after a crash it could be elected
            // for the same term again and send different entries under it.
            messages.append(&mut persisted_messages);
            persisted_messages = messages;
            messages = Vec::new();
        }
        self.in_flight = Some(InFlightReady {
            last_entry: entries.last().map(|e| (e.index, e.term)),
            snapshot: snapshot.clone(),
            applied_to: committed_entries.last().map(|e| e.index),
            hard_state,
        });
        if let Some(soft) = soft_state {
            self.previous_soft_state = soft;
        }
        Ready {
            soft_state,
            hard_state,
            snapshot,
            entries,
            committed_entries,
            messages,
            persisted_messages,
            read_states: std::mem::take(&mut self.raft.read_states),
            dropped_reads: std::mem::take(&mut self.raft.dropped_reads),
            must_sync,
        }
    }

    fn soft_state_changed(&self) -> Option<SoftState> {
        Some(self.soft_state()).filter(|soft| *soft != self.previous_soft_state)
    }

    /// Confirms that the last [`Ready`] was handled as the contract requires.
    pub fn advance(&mut self) {
        let Some(done) = self.in_flight.take() else {
            panic!("invariant: advance() called without a Ready in flight");
        };
        if let Some(hard_state) = done.hard_state {
            self.previous_hard_state = hard_state;
        }
        if let Some(snapshot) = &done.snapshot {
            self.raft.log.stable_snapshot_to(snapshot);
        }
        if let Some((index, term)) = done.last_entry {
            self.raft.on_persisted(index, term);
        }
        if let Some(applied) = done.applied_to {
            self.raft.log.applied_to(applied);
        }
        self.raft.maybe_auto_leave();
    }
}
