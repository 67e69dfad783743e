//! A raft worker: one thread driving a fixed share of the store's regions in rounds.
//!
//! A round drains the mailbox (messages from other stores, proposals, reads, ticks),
//! then takes the Ready of every region that has one and:
//! 1. sends the leaders' messages at once (they may precede persistence);
//! 2. puts all new log entries, hard states and snapshots into ONE write batch, made
//!    durable by the log writer with one sync shared with other workers (group commit),
//!    or written without a sync when it only advances commit indexes;
//! 3. sends the remaining messages, one frame per destination store;
//! 4. applies all committed entries into ONE more batch, written without sync (the log
//!    is durable already), then answers the clients;
//! 5. serves confirmed reads and advances every region.
//!
//! A failed log write stops the node: its Raft state would no longer match its disk.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use rocksdb::WriteBatch;

use crate::kv::ApplyBatch;
use crate::metrics::{METRICS, SnapshotFailure};
use crate::proto::{
    command::{RaftCommand, WriteResult},
    frame::StoreFrame,
    metadata::{self, PeerState, RegionEpoch, RegionLocalState},
};
use crate::raft::proto::MessageType;
use crate::storage::{Cf, Engine, PeerStorage, keys, snapshot};

use super::StoreConfig;
use super::errors::StoreError;
use super::heartbeat::{Outgoing, expand};
use super::log_writer::LogWriter;
use super::peer::{Peer, ReadRequest, ReadResponse, Responder, SideEffect};
use super::ranges::RegionRanges;
use super::report::StoreReport;
use super::router::Router;
use super::split_check::{self, IdAllocator};
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

pub enum WorkerMsg {
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
    /// This worker's share of the store's report to the placement driver.
    Report(Sender<StoreReport>),
    Status {
        region_id: u64,
        respond: Sender<Option<PeerStatus>>,
    },
    Shutdown,
}

impl WorkerMsg {
    /// Answers the request this message carries, if any, with `error`: the message
    /// could not be delivered to a worker.
    pub fn refuse(self, error: StoreError) {
        match self {
            WorkerMsg::Propose { respond, .. } => respond.send(Err(error)),
            WorkerMsg::Read { respond, .. } => respond.send(Err(error)),
            WorkerMsg::TransferLeader { respond, .. } => respond.send(Err(error)),
            _ => {}
        }
    }
}

/// Mailbox messages handled before a round of Readies, at most.
const MAX_MESSAGES_PER_ROUND: usize = 4096;

/// What every worker of a store shares.
#[derive(Clone)]
pub struct WorkerShared {
    pub config: StoreConfig,
    pub engine: Engine,
    pub log_writer: LogWriter,
    pub transport: Arc<dyn Transport>,
    pub router: Router,
    pub ids: Option<Arc<dyn IdAllocator>>,
    pub ranges: RegionRanges,
}

pub struct Worker {
    pub config: StoreConfig,
    pub engine: Engine,
    pub log_writer: LogWriter,
    pub transport: Arc<dyn Transport>,
    pub router: Router,
    pub inbox: Receiver<WorkerMsg>,
    ids: Option<Arc<dyn IdAllocator>>,
    ranges: RegionRanges,
    peers: HashMap<u64, Peer>,
    dirty: BTreeSet<u64>,
}

/// Stops the node: its disk no longer holds what its Raft state says, so acknowledging
/// anything more could lose it. The whole process stops, not just this worker, so that
/// no other region keeps serving on a store that lost its footing.
fn fail_stop(what: &str, error: impl std::fmt::Display) -> ! {
    eprintln!("fail-stop: {what} failed and the store cannot continue safely: {error}");
    std::process::abort()
}

/// Whether a region message's ids are set and consistent. A snapshot's payload is
/// checked by [`snapshot_range`]; Raft checks the rest.
fn well_formed(message: &crate::proto::frame::RegionMessage) -> bool {
    let (Some(from), Some(to), Some(raft)) = (&message.from_peer, &message.to_peer, &message.message) else {
        return false;
    };
    message.region_id != 0 && from.id != 0 && to.id != 0 && raft.from == from.id && raft.to == to.id
}

impl Worker {
    pub fn new(shared: WorkerShared, inbox: Receiver<WorkerMsg>) -> Worker {
        let WorkerShared { config, engine, log_writer, transport, router, ids, ranges } = shared;
        Worker {
            config,
            engine,
            log_writer,
            transport,
            router,
            inbox,
            ids,
            ranges,
            peers: HashMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    pub fn run(mut self) {
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
            WorkerMsg::Inbound(batch) => self.on_inbound(batch),
            WorkerMsg::Propose { region_id, command, respond } => match self.peers.get_mut(&region_id) {
                Some(peer) => {
                    peer.propose(command, respond);
                    self.dirty.insert(region_id);
                }
                None => {
                    respond.send(Err(StoreError::RegionNotFound(region_id)));
                }
            },
            WorkerMsg::Read { region_id, epoch, request, respond } => match self.peers.get_mut(&region_id) {
                Some(peer) => {
                    peer.read(epoch, request, respond);
                    self.dirty.insert(region_id);
                }
                None => {
                    respond.send(Err(StoreError::RegionNotFound(region_id)));
                }
            },
            WorkerMsg::TransferLeader { region_id, to_peer_id, respond } => {
                let result = match self.peers.get_mut(&region_id) {
                    Some(peer) => {
                        peer.wake();
                        self.dirty.insert(region_id);
                        peer.transfer_leader(to_peer_id).map_err(|e| StoreError::Raft(e.to_string()))
                    }
                    None => Err(StoreError::RegionNotFound(region_id)),
                };
                respond.send(result);
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
            WorkerMsg::StoreDown(store_id) => {
                for (&region_id, peer) in self.peers.iter_mut() {
                    if peer.region.peers.iter().any(|p| p.store_id == store_id) {
                        peer.wake();
                        self.dirty.insert(region_id);
                    }
                }
            }
            WorkerMsg::Status { region_id, respond } => {
                let status = self.peers.get(&region_id).map(|peer| PeerStatus {
                    peer_id: peer.peer_id,
                    is_leader: peer.is_leader(),
                    leader_peer_id: peer.leader_id(),
                    term: peer.term(),
                    applied_index: peer.applied_index(),
                    first_index: peer.raft_status().first_index,
                    region: peer.region.clone(),
                    hibernating: peer.hibernating,
                });
                let _ = respond.send(status);
            }
            WorkerMsg::Report(respond) => {
                let peers = self.peers.values();
                let report = StoreReport {
                    regions: self.peers.len() as u64,
                    hibernating: peers.clone().filter(|peer| peer.hibernating).count() as u64,
                    without_leader: peers
                        .clone()
                        .filter(|peer| !peer.hibernating && peer.leader_id() == 0)
                        .count() as u64,
                    leaders: peers.filter(|peer| peer.is_leader()).map(Peer::report).collect(),
                };
                let _ = respond.send(report);
            }
            WorkerMsg::Shutdown => return true,
        }
        false
    }

    fn start_peer(&mut self, region_id: u64, new_group: bool, campaign: bool) {
        match Peer::open(&self.engine, &self.config, &self.ranges, region_id, new_group) {
            Ok(mut peer) => {
                if campaign {
                    peer.campaign();
                }
                if let Some(mut old) = self.peers.insert(region_id, peer) {
                    old.fail_all(StoreError::RegionNotFound(region_id));
                }
                self.dirty.insert(region_id);
            }
            Err(error) => fail_stop(&format!("opening region {region_id}"), error),
        }
    }

    /// A message for a region with no peer here: create an empty peer if the message
    /// says one should exist (a new member's first append or snapshot), unless the
    /// region was removed from this store.
    fn maybe_create_peer(&mut self, region_id: u64, peer_id: u64, start: &[u8], end: &[u8]) -> bool {
        if self.ranges.overlapping(region_id, start, end).is_some() {
            // A region here still covers part of it: most likely the parent that has not
            // applied its split yet, which will create this peer itself.
            return false;
        }
        let state: Option<RegionLocalState> =
            match self.engine.get_message(Cf::Meta, &keys::region_state_key(region_id)) {
                Ok(state) => state,
                // Unreadable state: never create over it.
                Err(_) => return false,
            };
        if let Some(state) = state {
            if state.state == PeerState::Tombstone as i32 && state.peer_id >= peer_id {
                return false;
            }
            if state.state != PeerState::Tombstone as i32 {
                // Persisted but not started: a split's new half not yet applied here.
                return false;
            }
        }
        let mut batch = WriteBatch::default();
        if let Err(error) = PeerStorage::initialize_empty(&self.engine, region_id, peer_id, &mut batch)
            .and_then(|()| self.engine.write(batch, true))
        {
            fail_stop(&format!("creating a peer of region {region_id}"), error);
        }
        self.start_peer(region_id, true, false);
        true
    }

    fn on_inbound(&mut self, batch: StoreFrame) {
        for message in batch.messages {
            if !well_formed(&message) {
                continue;
            }
            let (Some(from_peer), Some(to_peer), Some(raft_message)) =
                (message.from_peer, message.to_peer, message.message)
            else {
                continue;
            };
            let region_id = message.region_id;
            if to_peer.store_id != self.config.store_id {
                continue;
            }
            METRICS.messages_received.count(raft_message.msg_type(), 1);
            // A snapshot is decoded once, here: it must be of the addressed region.
            let snapshot_range = match raft_message.msg_type() {
                MessageType::Snapshot => match snapshot_range(region_id, &raft_message) {
                    Some(range) => Some(range),
                    None => {
                        METRICS.snapshot_failed(SnapshotFailure::Rejected);
                        continue;
                    }
                },
                _ => None,
            };
            let creates = matches!(raft_message.msg_type(), MessageType::Append | MessageType::Snapshot);
            let present = self.peers.contains_key(&region_id)
                || (creates
                    && self.maybe_create_peer(region_id, to_peer.id, &message.start_key, &message.end_key));
            if !present {
                continue;
            }
            if let Some(range) = &snapshot_range
                && self.ranges.overlapping(region_id, &range.0, &range.1).is_some()
            {
                // Installing it would make two regions here cover the same keys.
                METRICS.snapshot_failed(SnapshotFailure::Rejected);
                continue;
            }
            let Some(peer) = self.peers.get_mut(&region_id) else { continue };
            if peer.peer_id != to_peer.id {
                continue;
            }
            peer.learn_peer(from_peer);
            peer.wake();
            // A malformed or stale message is refused by Raft; the node carries on.
            let _ = peer.step(raft_message);
            self.dirty.insert(region_id);
        }
        METRICS.messages_received.count(MessageType::Heartbeat, batch.heartbeats.len() as u64);
        METRICS
            .messages_received
            .count(MessageType::HeartbeatResponse, batch.heartbeat_responses.len() as u64);
        // A heartbeat's sender is on the store that sent the frame: a peer that knows
        // nothing of its region yet (created empty, waiting for its first snapshot) can
        // answer it, and the answer unblocks the leader's probe.
        let sender = |peer_id| metadata::Peer { id: peer_id, store_id: batch.from_store, role: 0 };
        for entry in batch.heartbeats {
            let Some(peer) = self.peers.get_mut(&entry.region_id) else { continue };
            if peer.peer_id != entry.to_peer_id {
                continue;
            }
            peer.learn_peer(sender(entry.from_peer_id));
            let _ = peer.step(expand(&entry, MessageType::Heartbeat));
            if entry.hibernate && peer.leader_id() == entry.from_peer_id && peer.term() == entry.term {
                peer.hibernating = true;
            } else {
                peer.wake();
            }
            self.dirty.insert(entry.region_id);
        }
        for entry in batch.heartbeat_responses {
            let Some(peer) = self.peers.get_mut(&entry.region_id) else { continue };
            if peer.peer_id != entry.to_peer_id {
                continue;
            }
            let _ = peer.step(expand(&entry, MessageType::HeartbeatResponse));
            self.dirty.insert(entry.region_id);
        }
    }

    fn on_tick(&mut self) {
        let mut outgoing = Outgoing::new(self.config.store_id);
        let mut gc = WriteBatch::default();
        for (&region_id, peer) in self.peers.iter_mut() {
            if peer.hibernating {
                continue;
            }
            if peer.tick(&self.config) {
                outgoing.add_hibernation(peer);
            }
            if let Err(error) = peer.log_gc(&self.config, &mut gc) {
                fail_stop(&format!("truncating the log of region {region_id}"), error);
            }
            check_size(&self.engine, &self.config, self.ids.as_deref(), peer);
            self.dirty.insert(region_id);
        }
        if !gc.is_empty()
            && let Err(error) = self.engine.write(gc, false)
        {
            fail_stop("truncating raft logs", error);
        }
        outgoing.flush(self.transport.as_ref());
    }

    fn process_readies(&mut self) {
        // New readies appear as rounds complete (a leader commits once its own write is
        // durable); a few rounds settle them, the rest waits for the next wake-up.
        for _ in 0..4 {
            if self.dirty.is_empty() {
                return;
            }
            self.round();
        }
    }

    fn round(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        let mut outgoing = Outgoing::new(self.config.store_id);
        let mut log_batch = WriteBatch::default();
        let (mut entries, mut regions) = (0u64, 0u64);
        let mut must_sync = false;
        let mut readies = Vec::new();
        for region_id in dirty {
            let Some(peer) = self.peers.get_mut(&region_id) else { continue };
            if !peer.has_ready() {
                continue;
            }
            let mut ready = peer.ready();
            must_sync |= ready.must_sync;
            outgoing.add(peer, std::mem::take(&mut ready.messages));
            let storage = peer.storage_mut();
            let mut wrote = false;
            if let Some(snapshot) = &ready.snapshot {
                if let Err(error) = snapshot::install(&self.engine, storage, snapshot, &mut log_batch) {
                    fail_stop(&format!("installing a snapshot of region {region_id}"), error);
                }
                wrote = true;
            }
            if !ready.entries.is_empty() {
                if let Err(error) = storage.append(&ready.entries, &mut log_batch) {
                    fail_stop(&format!("appending to region {region_id}"), error);
                }
                entries += ready.entries.len() as u64;
                wrote = true;
            }
            if let Some(hard_state) = ready.hard_state {
                if let Err(error) = storage.set_hard_state(hard_state, &mut log_batch) {
                    fail_stop(&format!("saving the hard state of region {region_id}"), error);
                }
                wrote = true;
            }
            if ready.snapshot.is_some() {
                let region = storage.region();
                peer.refresh_region(region);
                peer.on_snapshot_installed();
                METRICS.snapshots_applied.increment(1);
            }
            regions += u64::from(wrote);
            readies.push((region_id, ready));
        }
        METRICS.entries_appended.increment(entries);
        if !log_batch.is_empty() {
            // Only new entries, terms and votes must be durable before anyone hears of
            // them; a round that merely advanced commit indexes needs no sync (a lost
            // commit index is learned again from the leader).
            let written = if must_sync {
                self.log_writer.write(log_batch, entries, regions)
            } else {
                self.engine.write(log_batch, false).map_err(|e| e.to_string())
            };
            if let Err(error) = written {
                fail_stop("writing the raft log", error);
            }
        }
        for (region_id, ready) in readies.iter_mut() {
            if let Some(peer) = self.peers.get(region_id) {
                outgoing.add(peer, std::mem::take(&mut ready.persisted_messages));
            }
        }
        outgoing.flush(self.transport.as_ref());

        let apply_started = Instant::now();
        let committed: usize = readies.iter().map(|(_, ready)| ready.committed_entries.len()).sum();
        let mut apply = ApplyBatch::default();
        let mut answers: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
        let mut effects = Vec::new();
        for (region_id, ready) in readies.iter() {
            let Some(peer) = self.peers.get_mut(region_id) else { continue };
            let mut peer_effects = Vec::new();
            if let Err(error) = peer.apply_entries(
                &self.engine,
                &ready.committed_entries,
                &mut apply,
                &mut answers,
                &mut peer_effects,
            ) {
                fail_stop(&format!("applying region {region_id}"), error);
            }
            effects.extend(peer_effects.into_iter().map(|effect| (*region_id, effect)));
        }
        if !apply.is_empty()
            && let Err(error) = self.engine.write(apply.take(), false)
        {
            fail_stop("writing applied data", error);
        }
        for answer in answers {
            answer();
        }
        if committed > 0 {
            METRICS.entries_applied.increment(committed as u64);
            METRICS.apply_duration.record(apply_started.elapsed());
        }
        for (region_id, mut ready) in readies {
            let Some(peer) = self.peers.get_mut(&region_id) else { continue };
            peer.on_read_states(
                std::mem::take(&mut ready.read_states),
                std::mem::take(&mut ready.dropped_reads),
            );
            peer.serve_reads(&self.engine);
            peer.advance();
            if peer.has_ready() {
                self.dirty.insert(region_id);
            }
        }
        for (region_id, effect) in effects {
            self.apply_side_effect(region_id, effect);
        }
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
            SideEffect::Destroy => {
                let Some(mut peer) = self.peers.remove(&region_id) else { return };
                let mut batch = WriteBatch::default();
                if let Err(error) =
                    peer.destroy(&self.engine, &mut batch).and_then(|()| self.engine.write(batch, true))
                {
                    fail_stop(&format!("destroying the peer of region {region_id}"), error);
                }
            }
        }
    }
}

/// Measures `peer`'s region when its leader is due for a check, keeping the figures for
/// reports, and proposes a split if it outgrew the thresholds and `ids` can name the
/// new region.
fn check_size(engine: &Engine, config: &StoreConfig, ids: Option<&dyn IdAllocator>, peer: &mut Peer) {
    if !peer.is_leader() || !peer.due_for_split_check(config) {
        return;
    }
    let Ok(size) =
        split_check::check_size(engine, &peer.region, config.split_max_keys, config.split_max_bytes)
    else {
        return;
    };
    peer.record_size(size.keys, size.bytes);
    let (Some(split_key), Some(ids)) = (size.split_key, ids) else { return };
    // Until a check finds the region within the thresholds, every check measures it
    // again: the split proposed here may fail (a concurrent change of epoch, no ids).
    peer.recheck_size();
    // Without ids the split waits for the next check.
    let Ok(ids) = ids.allocate(1 + peer.region.peers.len()) else { return };
    let Some((&new_region_id, new_peer_ids)) = ids.split_first() else { return };
    let split =
        crate::proto::command::Split { split_key, new_region_id, new_peer_ids: new_peer_ids.to_vec() };
    let command = RaftCommand {
        region_id: peer.region_id,
        epoch: peer.region.epoch,
        writes: Vec::new(),
        admin: Some(crate::proto::command::AdminCommand {
            kind: Some(crate::proto::command::admin_command::Kind::Split(split)),
        }),
    };
    // Nobody waits for the answer: the next check retries if the split did not happen.
    peer.propose(command, Responder::new(drop));
}

/// The key range a snapshot message would install, if its payload decodes and is of
/// `region_id`.
fn snapshot_range(region_id: u64, message: &crate::raft::proto::Message) -> Option<(Vec<u8>, Vec<u8>)> {
    let snapshot = message.snapshot.as_ref()?;
    let data =
        <crate::proto::frame::RegionSnapshotData as prost::Message>::decode(snapshot.data.as_slice()).ok()?;
    data.region.filter(|region| region.id == region_id).map(|region| (region.start_key, region.end_key))
}
