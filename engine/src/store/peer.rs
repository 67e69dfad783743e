//! One replica of one region on this store (a peer): its Raft node, its region
//! descriptor, the requests waiting on it, and what the rest of the store may ask of it.
//!
//! A peer is owned by exactly one raft worker and never shared, so nothing here locks.
//! This file holds the peer's state and its accessors; what a peer does is organised by
//! operation in [`super::operation`] (proposing and applying commands, reads,
//! hibernation, snapshots, log truncation, destruction). Nothing outside the peer
//! reaches into its Raft node: the worker drives it through the methods here.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::proto::metadata::{self, Region};
use crate::raft::proto::Message;
use crate::raft::{Config, LeaseClock, Progress, RawNode, Ready, Role, SoftState, Status};
use crate::storage::{Engine, PeerStorage};

use super::StoreConfig;
use super::errors::StoreError;
use super::operation::{OnePhaseGuard, PendingRead, Proposal};
use super::ranges::RegionRanges;
use super::report::Traffic;
use super::spare_timestamps::SpareTimestamps;

pub(crate) struct Peer {
    pub region_id: u64,
    pub peer_id: u64,
    pub store_id: u64,
    pub(in crate::store) raw: RawNode<PeerStorage>,
    pub region: Region,
    /// Store of every peer id this region has had, for addressing messages.
    pub(in crate::store) known_peers: HashMap<u64, metadata::Peer>,
    pub(in crate::store) proposals: VecDeque<Proposal>,
    pub(in crate::store) reads: HashMap<u64, PendingRead>,
    pub(in crate::store) confirmed_reads: Vec<(u64, u64)>,
    pub(in crate::store) next_read_id: u64,
    pub hibernating: bool,
    /// The store's map of region ranges, kept current with this peer's.
    pub(in crate::store) ranges: RegionRanges,
    /// Followers waiting for a snapshot, and the tick it was first seen in flight.
    pub(in crate::store) snapshots_in_flight: HashMap<u64, u64>,
    /// Data was written since the last split check.
    pub(in crate::store) written_since_split_check: bool,
    /// Keys and bytes found by the last size check.
    pub(in crate::store) size: (u64, u64),
    pub(in crate::store) traffic: Traffic,
    pub(in crate::store) idle_ticks: u64,
    /// Ticks since this replica last heard from its leader (0 while it leads).
    pub(in crate::store) leaderless_ticks: u64,
    pub(in crate::store) ticks: u64,
    /// The role the last Ready reported, for logging changes of leadership (the Raft
    /// core has already changed role by the time a Ready tells of it).
    pub(in crate::store) reported_role: Role,
    /// Proposals answered later than this after they were proposed are logged.
    pub(in crate::store) slow_proposal_threshold: std::time::Duration,
    /// What one-phase commits must stay above (leader state, see `one_phase.rs`).
    pub(in crate::store) one_phase: OnePhaseGuard,
    /// The change feed of the region while this replica leads it and has watchers.
    pub(in crate::store) feed: Option<crate::feed::RegionFeed>,
    /// The term of the last entry applied (zero until one is, after a start).
    pub(in crate::store) applied_term: u64,
    /// The garbage-collection fence the compaction filter was told of (durable here).
    gc_fence_published: u64,
    pub destroyed: bool,
}

pub(crate) fn raft_config(config: &StoreConfig, peer_id: u64, applied: u64, new_group: bool) -> Config {
    let mut raft = Config::new(peer_id);
    raft.election_ticks = config.election_ticks;
    raft.heartbeat_ticks = config.heartbeat_ticks;
    raft.applied = applied;
    raft.new_group = new_group;
    raft.random_seed = peer_id ^ config.store_id.rotate_left(32);
    // Leases on the store's monotonic clock: a paused process stops ticking.
    raft.lease_clock = LeaseClock::Observed { tick_length: config.tick_length_micros() };
    raft
}

impl Peer {
    /// Opens the peer of `region_id` from what the store persisted.
    pub(crate) fn open(
        engine: &Engine,
        config: &StoreConfig,
        ranges: &RegionRanges,
        spare_timestamps: &Arc<SpareTimestamps>,
        region_id: u64,
        new_group: bool,
    ) -> Result<Peer, StoreError> {
        let storage = PeerStorage::open(engine, region_id)?;
        let region = storage.region();
        let peer_id = storage.peer_id();
        let applied = storage.apply_state().applied_index;
        let gc_fence_published = storage.txn_fence();
        let raw = RawNode::new(raft_config(config, peer_id, applied, new_group), storage)
            .map_err(StoreError::Raft)?;
        let mut peer = Peer {
            region_id,
            peer_id,
            store_id: config.store_id,
            raw,
            region: Region::default(),
            known_peers: HashMap::new(),
            proposals: VecDeque::new(),
            reads: HashMap::new(),
            confirmed_reads: Vec::new(),
            next_read_id: 1,
            hibernating: false,
            ranges: ranges.clone(),
            snapshots_in_flight: HashMap::new(),
            // Measured once after the peer starts, so that its reports carry a size.
            written_since_split_check: true,
            size: (0, 0),
            traffic: Traffic::default(),
            idle_ticks: 0,
            leaderless_ticks: 0,
            ticks: 0,
            reported_role: Role::Follower,
            slow_proposal_threshold: config.slow_proposal_threshold,
            one_phase: OnePhaseGuard::new(config.timestamps.is_some().then(|| spare_timestamps.clone())),
            feed: None,
            applied_term: 0,
            gc_fence_published,
            destroyed: false,
        };
        // A peer created empty is not in its region's descriptor yet, but must still sign
        // its messages.
        peer.known_peers.insert(peer_id, metadata::Peer { id: peer_id, store_id: config.store_id, role: 0 });
        peer.set_region(region);
        Ok(peer)
    }

    /// Adopts a descriptor installed from outside the apply path (a snapshot). The
    /// snapshot's fence is not durable yet: the compaction filter keeps the lower of
    /// the two until the region's next fence command (a crash now would bring back the
    /// old data, which a higher fence may not have been allowed to collect).
    pub(crate) fn refresh_region(&mut self, region: Region) {
        self.gc_fence_published = self.gc_fence_published.min(self.raw.storage().txn_fence());
        self.set_region(region);
    }

    pub(in crate::store) fn set_region(&mut self, region: Region) {
        for peer in &region.peers {
            self.known_peers.insert(peer.id, *peer);
        }
        self.ranges.set(&region);
        self.raw.storage().engine().gc().set_region_fence(&region, self.gc_fence_published);
        self.region = region;
    }

    /// Tells the compaction filter that this replica's fence rose to `fence_ts`, now
    /// that it is durable.
    pub(in crate::store) fn publish_gc_fence(&mut self, fence_ts: u64) {
        self.gc_fence_published = self.gc_fence_published.max(fence_ts);
        self.raw.storage().engine().gc().set_region_fence(&self.region, self.gc_fence_published);
    }

    /// This replica, as reported when it has known no leader for a while.
    pub(crate) fn leaderless(&self) -> crate::store::LeaderlessReplica {
        crate::store::LeaderlessReplica {
            region_id: self.region_id,
            peer_id: self.peer_id,
            conf_version: self.region.epoch.unwrap_or_default().conf_version,
        }
    }

    pub(crate) fn learn_peer(&mut self, peer: metadata::Peer) {
        self.known_peers.entry(peer.id).or_insert(peer);
    }

    pub(crate) fn descriptor_of(&self, peer_id: u64) -> Option<metadata::Peer> {
        self.known_peers.get(&peer_id).copied()
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.raw.soft_state().role == Role::Leader
    }

    pub(crate) fn leader(&self) -> Option<metadata::Peer> {
        self.descriptor_of(self.leader_id())
    }

    /// The Raft leader's peer id as far as this replica knows, or 0.
    pub(crate) fn leader_id(&self) -> u64 {
        self.raw.soft_state().leader_id
    }

    /// The term, and when this replica's leader lease ends in microseconds of the
    /// store's clock if it leads under one.
    pub(crate) fn leader_lease(&self) -> (u64, Option<u64>) {
        (self.term(), self.raw.leader_lease_expires_at())
    }

    pub(crate) fn term(&self) -> u64 {
        self.raw.status().term
    }

    /// A copy of the Raft replica's state.
    pub(crate) fn raft_status(&self) -> Status {
        self.raw.status()
    }

    /// The highest index applied to this store's state machine (written with the data it
    /// applied, so it may run ahead of what Raft was told by `advance`).
    pub(crate) fn applied_index(&self) -> u64 {
        self.raw.storage().apply_state().applied_index
    }

    /// What the Raft leader knows of each replica's log, by peer id (current on the
    /// leader only).
    pub(crate) fn raft_progress(&self) -> impl Iterator<Item = (u64, &Progress)> {
        self.raw.progress()
    }

    /// The storage the Ready of this peer is persisted through.
    pub(crate) fn storage_mut(&mut self) -> &mut PeerStorage {
        self.raw.storage_mut()
    }

    pub(crate) fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// The next Ready, to be handled as `crate::raft::RawNode`'s contract says.
    pub(crate) fn ready(&mut self) -> Ready {
        let ready = self.raw.ready();
        if let Some(soft_state) = &ready.soft_state {
            let was_leader = self.reported_role == Role::Leader;
            self.log_role_change(was_leader, soft_state);
            self.reported_role = soft_state.role;
            if was_leader != (soft_state.role == Role::Leader) {
                self.on_leadership_change(was_leader);
            }
        }
        ready
    }

    /// Leader-only state does not survive a change of leadership: the one-phase
    /// commits in flight are forgotten (their entries may never be applied), and reads
    /// waiting on a leader that stepped down are refused, to be sent to the new one.
    fn on_leadership_change(&mut self, was_leader: bool) {
        self.forget_one_phase_in_flight();
        if was_leader {
            let error = self.not_leader();
            self.fail_reads(&error);
            self.close_feed(crate::feed::FeedClosed::NotLeader);
        }
    }

    /// One line when this replica gains or loses leadership; quieter for the rest.
    fn log_role_change(&self, was_leader: bool, soft_state: &SoftState) {
        let (region_id, peer_id, term) = (self.region_id, self.peer_id, self.term());
        let leader_peer_id = soft_state.leader_id;
        match (was_leader, soft_state.role == Role::Leader) {
            (false, true) => tracing::info!(region_id, peer_id, term, "became leader"),
            (true, false) => tracing::info!(region_id, peer_id, term, leader_peer_id, "stepped down"),
            _ => {
                tracing::debug!(region_id, peer_id, term, leader_peer_id, role = ?soft_state.role, "role changed")
            }
        }
    }

    pub(crate) fn advance(&mut self) {
        self.raw.advance();
    }

    /// Hands Raft a message from another replica.
    pub(crate) fn step(&mut self, message: Message) -> crate::raft::Result<()> {
        self.raw.step(message)
    }

    /// A message from `sender_peer_id` was stepped: if it is the leader this replica
    /// knows, the leader was heard from.
    pub(crate) fn heard_from(&mut self, sender_peer_id: u64) {
        if self.leader_id() == sender_peer_id {
            self.leaderless_ticks = 0;
        }
    }

    /// The index of the snapshot Raft accepted and this peer has yet to install.
    pub(crate) fn pending_snapshot_index(&self) -> Option<u64> {
        self.raw.pending_snapshot_index()
    }

    pub(crate) fn campaign(&mut self) {
        self.raw.campaign();
    }

    pub(crate) fn transfer_leader(&mut self, to_peer_id: u64) -> crate::raft::Result<()> {
        self.raw.transfer_leader(to_peer_id)
    }

    pub(in crate::store) fn not_leader(&self) -> StoreError {
        StoreError::NotLeader { region_id: self.region_id, leader: self.leader() }
    }
}
