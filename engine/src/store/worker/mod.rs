//! A raft worker: one thread driving a fixed share of the store's regions.
//!
//! The worker drains its mailbox (frames from other stores, proposals, reads, ticks,
//! requests from the store's API), then runs rounds over the regions that have work
//! (`round.rs`: collect, persist, send, apply, advance). Frames from other stores are
//! checked and dispatched in `inbound.rs`. The worker owns its peers outright, so
//! nothing in it locks; what a peer does is in `super::operation`.
//!
//! A failed write stops the node: its Raft state would no longer match its disk
//! (`super::fatal`).

mod inbound;
mod round;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use rocksdb::WriteBatch;

use crate::proto::command::{RaftCommand, WriteResult};
use crate::proto::frame::StoreFrame;
use crate::proto::metadata::RegionEpoch;
use crate::storage::Engine;
use crate::timestamp::TimestampRun;

use super::StoreConfig;
use super::errors::StoreError;
pub(super) use super::fatal::fail_stop;
use super::heartbeat::Outgoing;
use super::log_writer::LogWriter;
use super::operation::{ReadRequest, ReadResponse, SideEffect, propose_split_if_oversized};
use super::peer::Peer;
use super::ranges::RegionRanges;
use super::report::StoreReport;
use super::responder::Responder;
use super::router::Router;
use super::spare_timestamps::{RESOLVE_RUN_LENGTH, SpareTimestamps};
use super::split_check::IdAllocator;
use super::transport::Transport;

/// What a peer looks like from outside, for tests and operators.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    pub peer_id: u64,
    pub is_leader: bool,
    pub leader_peer_id: u64,
    pub term: u64,
    pub applied_index: u64,
    pub first_index: u64,
    pub region: crate::proto::metadata::Region,
    pub hibernating: bool,
}

pub(crate) enum WorkerMsg {
    Inbound(StoreFrame),
    Propose {
        region_id: u64,
        command: RaftCommand,
        respond: Responder<Vec<WriteResult>>,
    },
    Read {
        region_id: u64,
        epoch: RegionEpoch,
        request: ReadRequest,
        respond: Responder<ReadResponse>,
    },
    TransferLeader {
        region_id: u64,
        to_peer_id: u64,
        respond: Responder<()>,
    },
    Campaign(u64),
    /// Start the peer whose state is persisted (recovery, bootstrap, split).
    StartPeer {
        region_id: u64,
        new_group: bool,
        campaign: bool,
    },
    Tick,
    StoreDown(u64),
    /// Destroy the replica if `current` shows it was removed ([`super::Store::destroy_if_removed`]).
    DestroyIfRemoved {
        region_id: u64,
        peer_id: u64,
        current: crate::proto::metadata::Region,
        respond: Sender<bool>,
    },
    /// This worker's share of the store's report to the placement driver.
    Report(Sender<StoreReport>),
    Status {
        region_id: u64,
        respond: Sender<Option<PeerStatus>>,
    },
    /// Publish the region's leader lease into `lease` from now on.
    WatchLeaderLease {
        region_id: u64,
        lease: Arc<super::LeaderLease>,
    },
    /// The oracle's answer to the one-phase sync the region's leader asked for in
    /// `term` (`operation/one_phase.rs`).
    OnePhaseSync {
        region_id: u64,
        term: u64,
        answer: Result<crate::timestamp::Timestamp, crate::raft::OpaqueError>,
    },
    /// A watcher of the region's changes after `start_ts` (`operation/feed.rs`).
    SubscribeFeed {
        region_id: u64,
        epoch: RegionEpoch,
        start_ts: crate::timestamp::Timestamp,
        subscriber: Box<dyn crate::feed::FeedSubscriber>,
        respond: Responder<crate::feed::FeedStart>,
    },
    /// Time to resolve this worker's change feeds.
    ResolveFeeds,
    /// The oracle's answer to the timestamp this worker asked for to resolve its feeds.
    FeedResolve(Result<TimestampRun, crate::raft::OpaqueError>),
    Shutdown,
}

impl WorkerMsg {
    /// Answers the request this message carries, if any, with `error`: the message
    /// could not be delivered to a worker.
    pub(crate) fn refuse(self, error: StoreError) {
        match self {
            WorkerMsg::Propose { respond, .. } => respond.send(Err(error)),
            WorkerMsg::Read { respond, .. } => respond.send(Err(error)),
            WorkerMsg::TransferLeader { respond, .. } => respond.send(Err(error)),
            WorkerMsg::SubscribeFeed { respond, .. } => respond.send(Err(error)),
            _ => {}
        }
    }
}

/// A timestamp for resolving feeds not answered in this long is asked for again.
const FEED_RESOLVE_GIVE_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// Mailbox messages handled before a round of Readies, at most.
const MAX_MESSAGES_PER_ROUND: usize = 4096;

/// What every worker of a store shares.
#[derive(Clone)]
pub(crate) struct WorkerShared {
    pub config: StoreConfig,
    pub engine: Engine,
    pub log_writer: LogWriter,
    pub transport: Arc<dyn Transport>,
    pub router: Router,
    pub ids: Option<Arc<dyn IdAllocator>>,
    pub ranges: RegionRanges,
    /// Timestamps for re-timing one-phase commits (`spare_timestamps.rs`).
    pub spare_timestamps: Arc<SpareTimestamps>,
}

pub(crate) struct Worker {
    pub config: StoreConfig,
    pub engine: Engine,
    pub log_writer: LogWriter,
    pub transport: Arc<dyn Transport>,
    pub router: Router,
    pub inbox: Receiver<WorkerMsg>,
    ids: Option<Arc<dyn IdAllocator>>,
    ranges: RegionRanges,
    spare_timestamps: Arc<SpareTimestamps>,
    peers: HashMap<u64, Peer>,
    dirty: BTreeSet<u64>,
    /// Regions whose leader lease is published, and where.
    watched_leases: HashMap<u64, Arc<super::LeaderLease>>,
    /// When a timestamp to resolve feeds with was asked of the oracle, while it is not
    /// answered yet.
    feed_resolve_pending: Option<std::time::Instant>,
}

impl Worker {
    pub(crate) fn new(shared: WorkerShared, inbox: Receiver<WorkerMsg>) -> Worker {
        let WorkerShared { config, engine, log_writer, transport, router, ids, ranges, spare_timestamps } =
            shared;
        Worker {
            config,
            engine,
            log_writer,
            transport,
            router,
            inbox,
            ids,
            ranges,
            spare_timestamps,
            peers: HashMap::new(),
            dirty: BTreeSet::new(),
            watched_leases: HashMap::new(),
            feed_resolve_pending: None,
        }
    }

    pub(crate) fn run(mut self) {
        while let Ok(first) = self.inbox.recv() {
            let mut stop = self.handle(first);
            // Bounded, so that a steady stream of messages cannot starve the rounds.
            for _ in 0..MAX_MESSAGES_PER_ROUND {
                if stop {
                    break;
                }
                match self.inbox.try_recv() {
                    Ok(message) => stop = self.handle(message),
                    Err(_) => break,
                }
            }
            self.process_readies();
            if stop {
                break;
            }
        }
        for peer in self.peers.values_mut() {
            peer.fail_all(StoreError::ShuttingDown);
        }
    }

    /// Handles one mailbox message; returns true on shutdown.
    fn handle(&mut self, message: WorkerMsg) -> bool {
        match message {
            WorkerMsg::Inbound(frame) => self.on_inbound(frame),
            WorkerMsg::Propose { region_id, command, respond } => match self.peers.get_mut(&region_id) {
                Some(peer) => {
                    peer.propose(command, respond);
                    let sync = peer.take_one_phase_sync();
                    self.dirty.insert(region_id);
                    if let Some(term) = sync {
                        self.request_one_phase_sync(region_id, term);
                    }
                }
                None => respond.send(Err(StoreError::RegionNotFound(region_id))),
            },
            WorkerMsg::OnePhaseSync { region_id, term, answer } => {
                if let Some(peer) = self.peers.get_mut(&region_id) {
                    peer.on_one_phase_sync(term, answer);
                }
            }
            WorkerMsg::Read { region_id, epoch, request, respond } => match self.peers.get_mut(&region_id) {
                Some(peer) => {
                    peer.read(self.config.now_micros(), epoch, request, respond);
                    self.dirty.insert(region_id);
                }
                None => respond.send(Err(StoreError::RegionNotFound(region_id))),
            },
            WorkerMsg::TransferLeader { region_id, to_peer_id, respond } => {
                respond.send(self.transfer_leader(region_id, to_peer_id));
            }
            WorkerMsg::Campaign(region_id) => {
                if let Some(peer) = self.peers.get_mut(&region_id) {
                    peer.wake();
                    peer.campaign();
                    self.dirty.insert(region_id);
                }
            }
            WorkerMsg::StartPeer { region_id, new_group, campaign } => {
                self.start_peer(region_id, new_group, campaign)
            }
            WorkerMsg::Tick => self.on_tick(),
            WorkerMsg::StoreDown(store_id) => self.on_store_down(store_id),
            WorkerMsg::DestroyIfRemoved { region_id, peer_id, current, respond } => {
                let _ = respond.send(self.destroy_if_removed(region_id, peer_id, &current));
            }
            WorkerMsg::Status { region_id, respond } => {
                let _ = respond.send(self.peers.get(&region_id).map(status_of));
            }
            WorkerMsg::WatchLeaderLease { region_id, lease } => {
                self.watched_leases.insert(region_id, lease);
                self.publish_lease(region_id);
            }
            WorkerMsg::Report(respond) => {
                let _ = respond.send(self.report());
            }
            WorkerMsg::SubscribeFeed { region_id, epoch, start_ts, subscriber, respond } => {
                match self.peers.get_mut(&region_id) {
                    Some(peer) => {
                        respond.send(peer.subscribe_feed(&self.engine, epoch, start_ts, subscriber))
                    }
                    None => respond.send(Err(StoreError::RegionNotFound(region_id))),
                }
            }
            WorkerMsg::ResolveFeeds => self.request_feed_resolve(),
            WorkerMsg::FeedResolve(answer) => self.resolve_feeds(answer),
            WorkerMsg::Shutdown => return true,
        }
        false
    }

    /// Asks the oracle for the timestamp a new leader needs before it takes one-phase
    /// commits; the answer comes back as a message to the region.
    fn request_one_phase_sync(&self, region_id: u64, term: u64) {
        let Some(source) = &self.config.timestamps else { return };
        let router = self.router.clone();
        source.request(
            1,
            Box::new(move |answer| {
                let answer = answer.map(|run| run.first);
                router.send(region_id, WorkerMsg::OnePhaseSync { region_id, term, answer });
            }),
        );
    }

    fn transfer_leader(&mut self, region_id: u64, to_peer_id: u64) -> Result<(), StoreError> {
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return Err(StoreError::RegionNotFound(region_id));
        };
        peer.wake();
        self.dirty.insert(region_id);
        let transfer = peer.transfer_leader(to_peer_id).map_err(StoreError::Raft);
        // The lease ended with the transfer: say so before the caller hears of it.
        self.publish_lease(region_id);
        transfer
    }

    /// Publishes the leader lease of `region_id` if it is watched ([`super::LeaderLease`]).
    pub(super) fn publish_lease(&self, region_id: u64) {
        // Only the driver's store watches a lease: the data stores' rounds skip this.
        if self.watched_leases.is_empty() {
            return;
        }
        let (Some(lease), Some(peer)) = (self.watched_leases.get(&region_id), self.peers.get(&region_id))
        else {
            return;
        };
        let (term, expires_at) = peer.leader_lease();
        lease.publish(term, expires_at);
    }

    /// Wakes every region with a replica on `store_id`, so that followers of a leader
    /// there can elect another.
    fn on_store_down(&mut self, store_id: u64) {
        for (&region_id, peer) in self.peers.iter_mut() {
            if peer.region.peers.iter().any(|p| p.store_id == store_id) {
                peer.wake();
                self.dirty.insert(region_id);
            }
        }
    }

    /// Destroys the replica if `current` is a newer membership of its region without it.
    fn destroy_if_removed(
        &mut self,
        region_id: u64,
        peer_id: u64,
        current: &crate::proto::metadata::Region,
    ) -> bool {
        let Some(peer) = self.peers.get(&region_id) else { return false };
        let known = peer.region.epoch.unwrap_or_default().conf_version;
        let newer = current.id == region_id && current.epoch.unwrap_or_default().conf_version > known;
        if peer.peer_id != peer_id || !newer || current.peers.iter().any(|p| p.id == peer_id) {
            return false;
        }
        // Still needed for the quorums of a joint configuration, which the driver's
        // descriptor does not show: it learns of its removal from the region. And a
        // replica that never received its region's state cannot tell an older view of
        // the driver's from a newer one (its membership version is 0): it waits too.
        if peer.outgoing_voter() || peer.region.peers.is_empty() {
            return false;
        }
        tracing::info!(
            region_id,
            peer_id,
            known_conf_version = known,
            current_conf_version = current.epoch.unwrap_or_default().conf_version,
            "destroying a replica removed from its region while this store was away"
        );
        self.destroy_peer(region_id);
        true
    }

    /// Destroys the peer of `region_id`: its data, log and claim on its keys go, and a
    /// tombstone stays.
    fn destroy_peer(&mut self, region_id: u64) {
        let Some(mut peer) = self.peers.remove(&region_id) else { return };
        // A destroyed replica leads nothing, whatever its lease said.
        if let Some(lease) = self.watched_leases.get(&region_id) {
            lease.publish(peer.term(), None);
        }
        let mut batch = WriteBatch::default();
        if let Err(error) =
            peer.destroy(&self.engine, &mut batch).and_then(|()| self.engine.write(batch, true))
        {
            fail_stop(&format!("destroying the peer of region {region_id}"), error);
        }
    }

    /// This worker's share of the store's report.
    fn report(&self) -> StoreReport {
        let peers = self.peers.values();
        let missing = self.config.leader_missing_report_ticks;
        StoreReport {
            leaderless: peers
                .clone()
                .filter(|peer| peer.leaderless_ticks >= missing)
                .map(Peer::leaderless)
                .collect(),
            regions: self.peers.len() as u64,
            hibernating: peers.clone().filter(|peer| peer.hibernating).count() as u64,
            without_leader: peers.clone().filter(|peer| !peer.hibernating && peer.leader_id() == 0).count()
                as u64,
            leaders: peers.filter(|peer| peer.is_leader()).map(Peer::report).collect(),
        }
    }

    fn start_peer(&mut self, region_id: u64, new_group: bool, campaign: bool) {
        match Peer::open(
            &self.engine,
            &self.config,
            &self.ranges,
            &self.spare_timestamps,
            region_id,
            new_group,
        ) {
            Ok(mut peer) => {
                if campaign {
                    peer.campaign();
                }
                let removed = peer.removed_from_its_region();
                if let Some(mut old) = self.peers.insert(region_id, peer) {
                    old.fail_all(StoreError::RegionNotFound(region_id));
                }
                if removed {
                    // Its removal applied, but the store stopped before destroying it.
                    tracing::info!(
                        region_id,
                        "finishing the destruction of a replica removed before a restart"
                    );
                    self.destroy_peer(region_id);
                    return;
                }
                self.dirty.insert(region_id);
            }
            Err(error) => fail_stop(&format!("opening region {region_id}"), error),
        }
    }

    fn on_tick(&mut self) {
        let now_micros = self.config.now_micros();
        let mut outgoing = Outgoing::new(self.config.store_id);
        let mut gc = WriteBatch::default();
        for (&region_id, peer) in self.peers.iter_mut() {
            if peer.hibernating {
                continue;
            }
            if peer.tick(&self.config, now_micros) {
                outgoing.add_hibernation(peer);
            }
            if let Err(error) = peer.log_gc(&self.config, &mut gc) {
                fail_stop(&format!("truncating the log of region {region_id}"), error);
            }
            propose_split_if_oversized(&self.engine, &self.config, self.ids.as_deref(), peer);
            self.dirty.insert(region_id);
        }
        if !gc.is_empty()
            && let Err(error) = self.engine.write(gc, false)
        {
            fail_stop("truncating raft logs", error);
        }
        outgoing.flush(self.transport.as_ref());
    }

    /// Asks the oracle for a timestamp to resolve this worker's feeds with, unless one
    /// is on its way or no region has a feed. The answer is asked for now, so it is
    /// above every commit timestamp any client had when this call was made.
    fn request_feed_resolve(&mut self) {
        let Some(source) = &self.config.timestamps else { return };
        let Some((&region_id, _)) = self.peers.iter().find(|(_, peer)| peer.has_feed()) else { return };
        // An answer that never came (a request lost with its connection) must not stop
        // the feeds for good: after a while, ask again.
        if self.feed_resolve_pending.is_some_and(|asked| asked.elapsed() < FEED_RESOLVE_GIVE_UP) {
            return;
        }
        self.feed_resolve_pending = Some(std::time::Instant::now());
        let router = self.router.clone();
        source.request(
            RESOLVE_RUN_LENGTH,
            Box::new(move |answer| {
                router.send(region_id, WorkerMsg::FeedResolve(answer));
            }),
        );
    }

    /// Resolves every feed of this worker with the first timestamp of the oracle's
    /// answer, and keeps the rest as spares for one-phase commits.
    fn resolve_feeds(&mut self, answer: Result<TimestampRun, crate::raft::OpaqueError>) {
        self.feed_resolve_pending = None;
        let run = match answer {
            Ok(run) => run,
            Err(error) => {
                tracing::info!(%error, "no timestamp to resolve change feeds with this time");
                return;
            }
        };
        let now_micros = self.config.now_micros();
        let stale_after = self.config.feed_stale_lock_after;
        for peer in self.peers.values_mut() {
            peer.resolve_feed(now_micros, run.first);
            if let Some(sink) = &self.config.stale_locks
                && let Some(lock) = peer.stale_feed_lock(run.first, stale_after, now_micros)
            {
                crate::metrics::METRICS.feed_stale_locks_reported.increment(1);
                sink.report(lock);
            }
        }
        self.spare_timestamps.offer_after_first(run);
    }

    fn apply_side_effect(&mut self, region_id: u64, effect: SideEffect) {
        match effect {
            SideEffect::SplitCreated { region, parent_was_leader } => {
                // The new region may belong to another worker; its state is persisted.
                self.router.send(
                    region.id,
                    WorkerMsg::StartPeer {
                        region_id: region.id,
                        new_group: true,
                        campaign: parent_was_leader,
                    },
                );
            }
            SideEffect::FenceRaised { fence_ts } => {
                if let Some(peer) = self.peers.get_mut(&region_id) {
                    peer.publish_gc_fence(fence_ts);
                }
            }
            SideEffect::FeedChanges(changes) => {
                if let Some(peer) = self.peers.get_mut(&region_id) {
                    peer.feed_changes(changes);
                }
            }
            SideEffect::Destroy => {
                if crate::failpoint::hit(crate::failpoint::points::STORE_SKIP_DESTROY_AFTER_REMOVAL) {
                    return;
                }
                self.destroy_peer(region_id);
            }
        }
    }
}

fn status_of(peer: &Peer) -> PeerStatus {
    PeerStatus {
        peer_id: peer.peer_id,
        is_leader: peer.is_leader(),
        leader_peer_id: peer.leader_id(),
        term: peer.term(),
        applied_index: peer.applied_index(),
        first_index: peer.raft_status().first_index,
        region: peer.region.clone(),
        hibernating: peer.hibernating,
    }
}
