//! Linearizable reads without writing the log (§6.4 of the thesis).
//!
//! ReadIndex: the leader notes its commit index, then confirms it is still the leader by
//! one heartbeat round acknowledged by a quorum; once the application has applied up to
//! that index, reading its state machine is linearizable. Reads that arrive before the
//! next round share it, so many reads cost one round. A leader that has not yet
//! committed an entry of its own term does not know the true commit index, so reads wait
//! until its no-op entry commits.
//!
//! Lease: a quorum acknowledged round `r`, sent at tick `t`, means no other leader can be
//! elected before `t + election_ticks` on any voter's clock (each of those voters ignores
//! campaigns for an election timeout after hearing from us, CheckQuorum). So until
//! `t + election_ticks - max_clock_drift_ticks` on our clock the leader answers reads at
//! once. This assumes clocks drift apart by at most `max_clock_drift_ticks` per election
//! timeout.
//!
//! A leader transfer suspends the lease: its target campaigns on TimeoutNow without
//! waiting, and voters do not ignore that campaign. A transfer that is abandoned (its
//! TimeoutNow lost, or its target unable to campaign) leaves the TimeoutNow possibly
//! still on its way, so the lease comes back only once an entry the leader appends at
//! the abandonment commits. This rests on the leader appending nothing while it
//! transfers (it refuses proposals then), so the TimeoutNow's index is where the
//! target's log ended. A target that holds the new entry ignores the TimeoutNow as
//! stale. One that does not campaigns with an older log: before the entry commits,
//! each voter it wins over refuses the entry (its term is higher), so the entry never
//! commits and the lease stays suspended; after, a quorum holds a newer log, and the
//! campaign cannot win. The lease then comes back with the expiry its acknowledged
//! rounds gave it: only transfer campaigns were ever allowed past it. Without this the
//! lease would stay suspended for the rest of the term, and with it every reader of
//! leases (change feeds publish resolved timestamps only under one, the driver's
//! oracle answers only under one).
//!
//! "Our clock" is the [`LeaseClock`](super::LeaseClock): in a real process the
//! application's monotonic clock, not the tick count, since a paused process stops
//! ticking while the others elect a new leader. A round is dated with the latest reading
//! before it was sent (never later than the truth), and a read is checked against a
//! reading taken after it arrived: the moment of that reading, within the lease, is the
//! read's linearization point.

use std::collections::VecDeque;

use crate::failpoint::{self, points};

use super::config::ReadMode;
use super::consensus::{Raft, Role};
use super::errors::{Error, Result};
use super::storage::Storage;

/// A confirmed read: once the application has applied `index`, it may serve the read
/// identified by `context`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    pub index: u64,
    pub context: Vec<u8>,
}

#[derive(Debug)]
struct PendingRead {
    context: Vec<u8>,
    index: u64,
    /// The first heartbeat round started after the read arrived.
    round: u64,
}

/// The leader's read bookkeeping for its current term.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    waiting_for_commit: Vec<(Vec<u8>, ReadMode)>,
    pending: VecDeque<PendingRead>,
    /// Heartbeat rounds started and the lease clock's reading each was sent at, oldest
    /// first.
    round_sent_at: VecDeque<(u64, u64)>,
    pub heartbeat_round: u64,
    /// On the [`LeaseClock`](super::LeaseClock), like the dates in `round_sent_at`.
    lease_expires_at: u64,
    lease_suspension: LeaseSuspension,
    broadcast_needed: bool,
}

/// Whether a leader transfer suspends the lease (see the module docs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum LeaseSuspension {
    #[default]
    None,
    /// A TimeoutNow went out and the transfer has not ended.
    Transferring,
    /// The transfer was abandoned: the lease is back once the entry at this index,
    /// appended at the abandonment, commits.
    UntilCommitted(u64),
}

impl Reads {
    pub(crate) fn start_round(&mut self, lease_now: u64) -> u64 {
        self.heartbeat_round += 1;
        self.round_sent_at.push_back((self.heartbeat_round, lease_now));
        self.broadcast_needed = false;
        self.heartbeat_round
    }

    /// A TimeoutNow is going out: the lease means nothing until the transfer ends.
    pub(crate) fn suspend_lease_for_transfer(&mut self) {
        self.lease_suspension = LeaseSuspension::Transferring;
    }

    /// Whether a TimeoutNow went out in a transfer that has not ended.
    pub(crate) fn transfer_suspends_lease(&self) -> bool {
        self.lease_suspension == LeaseSuspension::Transferring
    }

    /// The transfer was abandoned: the lease is back once `index` commits.
    pub(crate) fn suspend_lease_until_committed(&mut self, index: u64) {
        assert!(
            self.transfer_suspends_lease(),
            "invariant: only a transfer that told its target to campaign is abandoned so"
        );
        self.lease_suspension = LeaseSuspension::UntilCommitted(index);
    }

    /// The leader's commit index is now `committed`.
    pub(crate) fn on_commit(&mut self, committed: u64) {
        if let LeaseSuspension::UntilCommitted(index) = self.lease_suspension
            && committed >= index
        {
            self.lease_suspension = LeaseSuspension::None;
        }
    }

    fn lease_suspended(&self) -> bool {
        self.lease_suspension != LeaseSuspension::None
    }

    /// Ends the current lease; the next quorum-acknowledged heartbeat round starts a new
    /// one.
    pub(crate) fn expire_lease(&mut self) {
        self.lease_expires_at = 0;
        // Acknowledgements of rounds already sent must not renew it either.
        self.round_sent_at.clear();
    }

    pub(crate) fn broadcast_needed(&self) -> bool {
        self.broadcast_needed
    }
}

impl<S: Storage> Raft<S> {
    /// Requests a linearizable read identified by `context`; the answer comes as a
    /// [`ReadState`] in a later Ready, or the context comes back in `dropped_reads` if
    /// this replica loses leadership first.
    pub(crate) fn read_index(&mut self, context: Vec<u8>, mode: ReadMode) -> Result<()> {
        if self.role != Role::Leader {
            let leader_hint = (self.leader_id != 0).then_some(self.leader_id);
            return Err(Error::NotLeader { leader_hint });
        }
        if mode == ReadMode::Lease && !self.config.check_quorum {
            return Err(Error::LeaseReadWithoutCheckQuorum);
        }
        if self.log.term_or_zero(self.log.committed) != self.term {
            self.reads.waiting_for_commit.push((context, mode));
            return Ok(());
        }
        self.serve_read(context, mode);
        Ok(())
    }

    fn serve_read(&mut self, context: Vec<u8>, mode: ReadMode) {
        let index = self.log.committed;
        let only_voter = self.tracker.config.voters.ids().into_iter().eq([self.id]);
        let immediate = only_voter
            || (mode == ReadMode::Lease && self.lease_valid())
            || failpoint::hit(points::RAFT_READ_INDEX_WITHOUT_QUORUM);
        if immediate {
            self.read_states.push(ReadState { index, context });
            return;
        }
        let round = self.reads.heartbeat_round + 1;
        self.reads.pending.push_back(PendingRead { context, index, round });
        self.reads.broadcast_needed = true;
    }

    /// When this replica's leader lease ends, on the [`LeaseClock`](super::LeaseClock),
    /// if it leads under one: no other replica can become leader before then. None while
    /// it follows, transfers its leadership (and after an abandoned transfer until its
    /// entry commits), or has no quorum-acknowledged round yet.
    pub(crate) fn lease_expires_at(&self) -> Option<u64> {
        let holds =
            self.role == Role::Leader && !self.transfer_blocks_lease() && self.reads.lease_expires_at > 0;
        holds.then_some(self.reads.lease_expires_at)
    }

    fn lease_valid(&self) -> bool {
        !self.transfer_blocks_lease() && self.lease_now < self.reads.lease_expires_at
    }

    /// Whether a leader transfer keeps the lease from counting: one in progress, or one
    /// abandoned whose entry has not committed yet (see the module docs).
    fn transfer_blocks_lease(&self) -> bool {
        self.lead_transferee.is_some() || self.reads.lease_suspended()
    }

    /// Called when the commit index advanced on the leader.
    pub(super) fn on_commit_advanced(&mut self) {
        self.reads.on_commit(self.log.committed);
        if self.reads.waiting_for_commit.is_empty() || self.log.term_or_zero(self.log.committed) != self.term
        {
            return;
        }
        for (context, mode) in std::mem::take(&mut self.reads.waiting_for_commit) {
            self.serve_read(context, mode);
        }
    }

    /// Releases the reads, and extends the lease, that the quorum-acknowledged heartbeat
    /// round now covers.
    pub(super) fn advance_reads(&mut self) {
        let confirmed = self.tracker.quorum_acked_round();
        while self.reads.round_sent_at.front().is_some_and(|&(round, _)| round < confirmed) {
            self.reads.round_sent_at.pop_front();
        }
        if let Some(&(round, sent_at)) = self.reads.round_sent_at.front()
            && round == confirmed
        {
            self.reads.lease_expires_at =
                self.reads.lease_expires_at.max(sent_at.saturating_add(self.config.lease_length()));
        }
        while self.reads.pending.front().is_some_and(|read| read.round <= confirmed) {
            if let Some(read) = self.reads.pending.pop_front() {
                self.read_states
                    .push(super::read_index::ReadState { index: read.index, context: read.context });
            }
        }
    }

    /// Sends the heartbeat round that reads queued since the last Ready wait for.
    pub(super) fn flush_read_broadcast(&mut self) {
        if self.role == Role::Leader && self.reads.broadcast_needed() {
            self.broadcast_heartbeat();
        }
    }

    /// Leadership is lost: every read not yet confirmed goes back to the application.
    pub(super) fn drop_pending_reads(&mut self) {
        let reads = std::mem::take(&mut self.reads);
        self.dropped_reads.extend(reads.waiting_for_commit.into_iter().map(|(context, _)| context));
        self.dropped_reads.extend(reads.pending.into_iter().map(|read| read.context));
    }
}
