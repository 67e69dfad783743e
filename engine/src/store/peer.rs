//! One replica of one region on this store: its Raft node, its region descriptor, and
//! the requests waiting on it.
//!
//! A peer is owned by exactly one raft worker and never shared, so nothing here locks.
//! The worker drives it through rounds (see `worker.rs`); this module holds what a peer
//! does on its own: accepting requests, applying committed entries, serving confirmed
//! reads, hibernating, truncating its log.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crossbeam_channel::{Receiver, bounded};
use prost::Message as _;

use crate::kv::{self, ApplyBatch};
use crate::metrics::{METRICS, SnapshotFailure};
use crate::proto::{
    command::{AdminCommand, RaftCommand, WriteResult, admin_command},
    metadata::{self, PeerRole, Region, RegionEpoch},
};
use crate::raft::proto::{ConfChange, ConfChangeType, Entry, EntryType, Message};
use crate::raft::{Config, Progress, RawNode, ReadMode, Ready, Role, Status};
use crate::region::{self, EpochCheck};
use crate::storage::{Cf, Engine, EngineError, PeerStorage, keys};

use super::StoreConfig;
use super::errors::StoreError;
use super::ranges::RegionRanges;
use super::report::Traffic;

/// Where a request's answer goes: a channel a thread waits on ([`Responder::channel`]),
/// or a callback ([`Responder::new`]) that an async caller turns into a wake-up without
/// a thread parked per request. Answered at most once; dropped unanswered only if the
/// request never reached a worker.
pub struct Responder<T>(Box<dyn FnOnce(Result<T, StoreError>) + Send>);

impl<T: Send + 'static> Responder<T> {
    pub fn new(callback: impl FnOnce(Result<T, StoreError>) + Send + 'static) -> Responder<T> {
        Responder(Box::new(callback))
    }

    /// A responder and the channel its answer arrives on.
    pub fn channel() -> (Responder<T>, Receiver<Result<T, StoreError>>) {
        let (sender, receiver) = bounded(1);
        // The receiver may be gone (its caller gave up): nobody to tell.
        (Responder::new(move |result| drop(sender.send(result))), receiver)
    }

    pub fn send(self, result: Result<T, StoreError>) {
        (self.0)(result)
    }
}

/// A linearizable read of one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRequest {
    Get {
        key: Vec<u8>,
    },
    /// Keys in `[start, end)` (empty end: the region's end), at most `limit` (0: no limit).
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        reverse: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResponse {
    Value(Option<Vec<u8>>),
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
}

struct Proposal {
    index: u64,
    term: u64,
    proposed_at: Instant,
    respond: Responder<Vec<WriteResult>>,
}

struct PendingRead {
    request: ReadRequest,
    respond: Responder<ReadResponse>,
}

/// What applying entries asks the worker to do once the apply batch is written.
pub enum SideEffect {
    /// A split created this region; the store must start a peer for it.
    SplitCreated { region: Region, parent_was_leader: bool },
    /// This peer left the region's configuration; destroy it.
    Destroy,
}

pub struct Peer {
    pub region_id: u64,
    pub peer_id: u64,
    pub store_id: u64,
    raw: RawNode<PeerStorage>,
    pub region: Region,
    /// Store of every peer id this region has had, for addressing messages.
    known_peers: HashMap<u64, metadata::Peer>,
    proposals: VecDeque<Proposal>,
    reads: HashMap<u64, PendingRead>,
    confirmed_reads: Vec<(u64, u64)>,
    next_read_id: u64,
    pub hibernating: bool,
    /// The store's map of region ranges, kept current with this peer's.
    ranges: RegionRanges,
    /// Followers waiting for a snapshot, and the tick it was first seen in flight.
    snapshots_in_flight: HashMap<u64, u64>,
    /// Data was written since the last split check.
    written_since_split_check: bool,
    /// Keys and bytes found by the last size check.
    pub(crate) size: (u64, u64),
    pub(crate) traffic: Traffic,
    idle_ticks: u64,
    ticks: u64,
    pub destroyed: bool,
}

pub fn raft_config(config: &StoreConfig, peer_id: u64, applied: u64, new_group: bool) -> Config {
    let mut raft = Config::new(peer_id);
    raft.election_ticks = config.election_ticks;
    raft.heartbeat_ticks = config.heartbeat_ticks;
    raft.applied = applied;
    raft.new_group = new_group;
    raft.random_seed = peer_id ^ config.store_id.rotate_left(32);
    raft
}

impl Peer {
    /// Opens the peer of `region_id` from what the store persisted.
    pub fn open(
        engine: &Engine,
        config: &StoreConfig,
        ranges: &RegionRanges,
        region_id: u64,
        new_group: bool,
    ) -> Result<Peer, StoreError> {
        let storage = PeerStorage::open(engine, region_id)?;
        let region = storage.region();
        let peer_id = storage.peer_id();
        let applied = storage.apply_state().applied_index;
        let raw = RawNode::new(raft_config(config, peer_id, applied, new_group), storage)
            .map_err(|e| StoreError::Raft(e.to_string()))?;
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
            ticks: 0,
            destroyed: false,
        };
        // A peer created empty is not in its region's descriptor yet, but must still sign
        // its messages.
        peer.known_peers.insert(peer_id, metadata::Peer { id: peer_id, store_id: config.store_id, role: 0 });
        peer.set_region(region);
        Ok(peer)
    }

    /// Adopts a descriptor installed from outside the apply path (a snapshot).
    pub fn refresh_region(&mut self, region: Region) {
        self.set_region(region);
    }

    fn set_region(&mut self, region: Region) {
        for peer in &region.peers {
            self.known_peers.insert(peer.id, *peer);
        }
        self.ranges.set(&region);
        self.region = region;
    }

    pub fn learn_peer(&mut self, peer: metadata::Peer) {
        self.known_peers.entry(peer.id).or_insert(peer);
    }

    pub fn descriptor_of(&self, peer_id: u64) -> Option<metadata::Peer> {
        self.known_peers.get(&peer_id).copied()
    }

    pub fn is_leader(&self) -> bool {
        self.raw.soft_state().role == Role::Leader
    }

    pub fn leader(&self) -> Option<metadata::Peer> {
        self.descriptor_of(self.leader_id())
    }

    /// The Raft leader's peer id as far as this replica knows, or 0.
    pub fn leader_id(&self) -> u64 {
        self.raw.soft_state().leader_id
    }

    pub fn term(&self) -> u64 {
        self.raw.status().term
    }

    /// A copy of the Raft replica's state.
    pub fn raft_status(&self) -> Status {
        self.raw.status()
    }

    /// The highest index applied to this store's state machine (written with the data it
    /// applied, so it may run ahead of what Raft was told by `advance`).
    pub fn applied_index(&self) -> u64 {
        self.raw.storage().apply_state().applied_index
    }

    /// What the Raft leader knows of each replica's log, by peer id (current on the
    /// leader only).
    pub fn raft_progress(&self) -> impl Iterator<Item = (u64, &Progress)> {
        self.raw.progress()
    }

    /// The storage the Ready of this peer is persisted through.
    pub fn storage_mut(&mut self) -> &mut PeerStorage {
        self.raw.storage_mut()
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// The next Ready, to be handled as `crate::raft::RawNode`'s contract says.
    pub fn ready(&mut self) -> Ready {
        self.raw.ready()
    }

    pub fn advance(&mut self) {
        self.raw.advance();
    }

    /// Hands Raft a message from another replica.
    pub fn step(&mut self, message: Message) -> crate::raft::Result<()> {
        self.raw.step(message)
    }

    pub fn campaign(&mut self) {
        self.raw.campaign();
    }

    pub fn transfer_leader(&mut self, to_peer_id: u64) -> crate::raft::Result<()> {
        self.raw.transfer_leader(to_peer_id)
    }

    fn not_leader(&self) -> StoreError {
        StoreError::NotLeader { region_id: self.region_id, leader: self.leader() }
    }

    pub fn wake(&mut self) {
        if self.hibernating {
            // Late acknowledgements may have renewed the lease against a stopped clock.
            self.raw.expire_lease();
        }
        self.hibernating = false;
        self.idle_ticks = 0;
    }

    /// Proposes a command; the answer comes once it is applied.
    pub fn propose(&mut self, command: RaftCommand, respond: Responder<Vec<WriteResult>>) {
        self.wake();
        match self.try_propose(command) {
            Ok((index, term)) => {
                METRICS.proposals.increment(1);
                self.proposals.push_back(Proposal { index, term, proposed_at: Instant::now(), respond });
            }
            Err(error) => respond.send(Err(error)),
        }
    }

    /// Proposes `command`; its log position (index, term) if the leader took it.
    fn try_propose(&mut self, command: RaftCommand) -> Result<(u64, u64), StoreError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let requested = command.epoch.unwrap_or_default();
        let position = match &command.admin {
            Some(AdminCommand { kind: Some(admin_command::Kind::ChangePeer(change)) }) => {
                region::check_epoch(&self.region, requested, EpochCheck::Admin)?;
                let peer = change.peer.ok_or(StoreError::InvalidChange("no peer given".into()))?;
                let adding = change.change_type != ConfChangeType::Remove as i32;
                if adding && self.region.peers.iter().any(|p| p.store_id == peer.store_id && p.id != peer.id)
                {
                    return Err(StoreError::InvalidChange(format!(
                        "store {} already holds a peer of region {}",
                        peer.store_id, self.region_id
                    )));
                }
                let conf_change = ConfChange {
                    changes: vec![crate::raft::proto::ConfChangeSingle {
                        change_type: change.change_type,
                        node_id: peer.id,
                    }],
                    context: peer.encode_to_vec(),
                };
                self.raw.propose_conf_change(&conf_change)
            }
            Some(_) => {
                region::check_epoch(&self.region, requested, EpochCheck::Admin)?;
                self.raw.propose(command.encode_to_vec())
            }
            None => {
                region::check_epoch(&self.region, requested, EpochCheck::Data)?;
                for write in &command.writes {
                    kv::check_write(&self.region, write)?;
                }
                self.raw.propose(command.encode_to_vec())
            }
        }
        .map_err(|error| match error {
            crate::raft::Error::NotLeader { .. } => self.not_leader(),
            other => StoreError::Raft(other.to_string()),
        })?;
        Ok((position.index, position.term))
    }

    /// Starts a linearizable read; it is served once the leader confirmed it.
    pub fn read(&mut self, epoch: RegionEpoch, request: ReadRequest, respond: Responder<ReadResponse>) {
        self.wake();
        let checked = (|| -> Result<(), StoreError> {
            if !self.is_leader() {
                return Err(self.not_leader());
            }
            region::check_epoch(&self.region, epoch, EpochCheck::Data)?;
            check_read(&self.region, &request)
        })();
        if let Err(error) = checked {
            respond.send(Err(error));
            return;
        }
        let read_id = self.next_read_id;
        self.next_read_id += 1;
        match self.raw.read_index(read_id.to_le_bytes().to_vec(), ReadMode::Lease) {
            Ok(()) => {
                self.reads.insert(read_id, PendingRead { request, respond });
            }
            Err(error) => {
                respond.send(Err(StoreError::Raft(error.to_string())));
            }
        }
    }

    pub fn on_read_states(&mut self, read_states: Vec<crate::raft::ReadState>, dropped: Vec<Vec<u8>>) {
        for state in read_states {
            if let Ok(bytes) = <[u8; 8]>::try_from(state.context.as_slice()) {
                self.confirmed_reads.push((u64::from_le_bytes(bytes), state.index));
            }
        }
        for context in dropped {
            let Ok(bytes) = <[u8; 8]>::try_from(context.as_slice()) else { continue };
            if let Some(read) = self.reads.remove(&u64::from_le_bytes(bytes)) {
                read.respond.send(Err(self.not_leader()));
            }
        }
    }

    /// Serves every confirmed read whose index is applied, from the engine.
    pub fn serve_reads(&mut self, engine: &Engine) {
        let applied = self.applied_index();
        let mut waiting = Vec::new();
        for (read_id, index) in std::mem::take(&mut self.confirmed_reads) {
            if index > applied {
                waiting.push((read_id, index));
                continue;
            }
            if let Some(read) = self.reads.remove(&read_id) {
                // The region may have split since the read was accepted.
                let result = match check_read(&self.region, &read.request) {
                    Ok(()) => execute_read(engine, &self.region, &read.request).map_err(StoreError::from),
                    Err(error) => Err(error),
                };
                if let Ok(response) = &result {
                    self.traffic.count_read(response);
                }
                read.respond.send(result);
            }
        }
        self.confirmed_reads = waiting;
    }

    /// Applies committed entries into `batch`; answers to send after the batch is written
    /// go to `answers`, work for the worker to `effects`.
    pub fn apply_entries(
        &mut self,
        engine: &Engine,
        entries: &[Entry],
        batch: &mut ApplyBatch,
        answers: &mut Vec<Box<dyn FnOnce() + Send>>,
        effects: &mut Vec<SideEffect>,
    ) -> Result<(), EngineError> {
        let Some(last) = entries.last() else { return Ok(()) };
        for entry in entries {
            let result = match entry.entry_type() {
                EntryType::ConfChange => self.apply_conf_change(entry, batch, effects),
                EntryType::Normal if entry.data.is_empty() => Ok(Ok(Vec::new())),
                EntryType::Normal => self.apply_command(engine, entry, batch, effects),
            }?;
            self.answer_proposal(entry, result, answers);
        }
        self.raw.storage_mut().set_applied(last.index, &mut batch.batch)
    }

    fn apply_command(
        &mut self,
        engine: &Engine,
        entry: &Entry,
        batch: &mut ApplyBatch,
        effects: &mut Vec<SideEffect>,
    ) -> Result<Result<Vec<WriteResult>, StoreError>, EngineError> {
        let Ok(command) = RaftCommand::decode(entry.data.as_slice()) else {
            return Ok(Err(StoreError::Raft(format!("entry {} does not decode as a command", entry.index))));
        };
        let requested = command.epoch.unwrap_or_default();
        if let Some(AdminCommand { kind: Some(admin_command::Kind::Split(split)) }) = &command.admin {
            if let Err(error) = region::check_epoch(&self.region, requested, EpochCheck::Admin) {
                return Ok(Err(error.into()));
            }
            let (left, right) =
                match region::split(&self.region, &split.split_key, split.new_region_id, &split.new_peer_ids)
                {
                    Ok(halves) => halves,
                    Err(error) => return Ok(Err(error.into())),
                };
            let conf_state = self.raw.conf_state();
            self.raw.storage_mut().set_region_state(left.clone(), conf_state, &mut batch.batch)?;
            let new_peer = region::peer_on_store(&right, self.store_id).map(|p| p.id);
            // A peer of the new region that a snapshot already initialized here (or that
            // was removed) is ahead of the split: leave it as it is.
            let existing: Option<crate::proto::metadata::RegionLocalState> =
                engine.get_message(Cf::Meta, &keys::region_state_key(right.id))?;
            let ahead = existing.is_some_and(|state| {
                state.state == crate::proto::metadata::PeerState::Tombstone as i32
                    || state.conf_state.is_some_and(|cs| !cs.voters.is_empty() || !cs.learners.is_empty())
            });
            if let Some(peer_id) = new_peer.filter(|_| !ahead) {
                // Claimed now, before the batch is written, so that no message can
                // create an empty peer of the new region in the meantime.
                self.ranges.set(&right);
                PeerStorage::initialize(engine, &right, peer_id, &mut batch.batch)?;
                effects.push(SideEffect::SplitCreated { region: right, parent_was_leader: self.is_leader() });
            }
            self.set_region(left);
            METRICS.splits.increment(1);
            return Ok(Ok(Vec::new()));
        }
        if let Err(error) = region::check_epoch(&self.region, requested, EpochCheck::Data) {
            return Ok(Err(error.into()));
        }
        self.written_since_split_check |= !command.writes.is_empty();
        self.traffic.count_writes(&command.writes);
        Ok(Ok(kv::apply_writes(engine, &self.region, &command.writes, batch)?))
    }

    fn apply_conf_change(
        &mut self,
        entry: &Entry,
        batch: &mut ApplyBatch,
        effects: &mut Vec<SideEffect>,
    ) -> Result<Result<Vec<WriteResult>, StoreError>, EngineError> {
        let Ok(change) = ConfChange::decode(entry.data.as_slice()) else {
            return Ok(Err(StoreError::Raft(format!(
                "entry {} does not decode as a membership change",
                entry.index
            ))));
        };
        let conf_state = match self.raw.apply_conf_change(&change) {
            Ok(conf_state) => conf_state,
            // Refused identically on every replica: nothing changes.
            Err(error) => return Ok(Err(StoreError::Raft(error.to_string()))),
        };
        let mut region = self.region.clone();
        if let (Some(single), Ok(peer)) =
            (change.changes.first(), metadata::Peer::decode(change.context.as_slice()))
        {
            region.peers.retain(|p| p.id != peer.id);
            match single.change_type() {
                ConfChangeType::AddVoter => {
                    region.peers.push(metadata::Peer { role: PeerRole::Voter as i32, ..peer })
                }
                ConfChangeType::AddLearner => {
                    region.peers.push(metadata::Peer { role: PeerRole::Learner as i32, ..peer })
                }
                ConfChangeType::Remove => {}
            }
            let mut epoch = region::epoch(&region);
            epoch.conf_version += 1;
            region.epoch = Some(epoch);
            self.known_peers.insert(peer.id, peer);
        }
        self.raw.storage_mut().set_region_state(region.clone(), conf_state.clone(), &mut batch.batch)?;
        self.set_region(region);
        let member = conf_state
            .voters
            .iter()
            .chain(&conf_state.learners)
            .chain(&conf_state.voters_outgoing)
            .chain(&conf_state.learners_next)
            .any(|&id| id == self.peer_id);
        if !member {
            effects.push(SideEffect::Destroy);
        }
        Ok(Ok(Vec::new()))
    }

    fn answer_proposal(
        &mut self,
        entry: &Entry,
        result: Result<Vec<WriteResult>, StoreError>,
        answers: &mut Vec<Box<dyn FnOnce() + Send>>,
    ) {
        while let Some(proposal) = self.proposals.front() {
            if proposal.index > entry.index {
                break;
            }
            let Some(proposal) = self.proposals.pop_front() else { break };
            let outcome = if proposal.index == entry.index && proposal.term == entry.term {
                METRICS.commit_duration.record(proposal.proposed_at.elapsed());
                result.clone()
            } else {
                // Another leader's entry took this index: ours was never committed.
                Err(StoreError::ProposalDropped)
            };
            answers.push(Box::new(move || {
                proposal.respond.send(outcome);
            }));
        }
        // A committed entry of term T means every later committed entry has a term of at
        // least T (Log Matching): a proposal of an earlier term can never commit.
        let (stale, live): (VecDeque<Proposal>, VecDeque<Proposal>) =
            std::mem::take(&mut self.proposals).into_iter().partition(|p| p.term < entry.term);
        self.proposals = live;
        for proposal in stale {
            answers.push(Box::new(move || {
                proposal.respond.send(Err(StoreError::ProposalDropped));
            }));
        }
    }

    /// A snapshot moved the peer past its pending proposals: whether they were applied
    /// is unknown here, so the clients are told exactly that.
    pub fn on_snapshot_installed(&mut self) {
        for proposal in self.proposals.drain(..) {
            proposal.respond.send(Err(StoreError::OutcomeUnknown));
        }
    }

    /// Fails every request waiting on this peer (it stops or is destroyed). Reads get
    /// `error`; proposals get `OutcomeUnknown`: they may have committed already, and a
    /// client must not take them for writes that did not happen.
    pub fn fail_all(&mut self, error: StoreError) {
        for proposal in self.proposals.drain(..) {
            proposal.respond.send(Err(StoreError::OutcomeUnknown));
        }
        for (_, read) in self.reads.drain() {
            read.respond.send(Err(error.clone()));
        }
        self.confirmed_reads.clear();
    }

    /// One tick of a peer that is not hibernating. Returns true if the leader decided to
    /// hibernate instead of ticking: the caller then sends the hibernation heartbeat,
    /// which must be the last thing followers hear (so Raft is not ticked this time,
    /// which could queue an ordinary heartbeat after it).
    pub fn tick(&mut self, config: &StoreConfig) -> bool {
        self.ticks += 1;
        self.expire_lost_snapshots(config);
        if self.is_leader() && self.idle_long_enough(config) {
            self.hibernating = true;
            self.raw.expire_lease();
            return true;
        }
        self.raw.tick();
        false
    }

    /// A snapshot the transport lost silently would leave its follower paused for good:
    /// one unanswered for ten election timeouts is reported failed, so it is sent again.
    fn expire_lost_snapshots(&mut self, config: &StoreConfig) {
        if !self.is_leader() {
            self.snapshots_in_flight.clear();
            return;
        }
        let ticks = self.ticks;
        let waiting: Vec<u64> = self
            .raw
            .progress()
            .filter(|(_, pr)| pr.state == crate::raft::ProgressState::Snapshot)
            .map(|(id, _)| id)
            .collect();
        self.snapshots_in_flight.retain(|id, _| waiting.contains(id));
        let limit = 10 * config.election_ticks;
        for id in waiting {
            let since = *self.snapshots_in_flight.entry(id).or_insert(ticks);
            if ticks - since > limit {
                self.raw.report_snapshot(id, false);
                self.snapshots_in_flight.remove(&id);
                METRICS.snapshot_failed(SnapshotFailure::Lost);
            }
        }
    }

    fn idle_long_enough(&mut self, config: &StoreConfig) -> bool {
        let status = self.raw.status();
        let last = status.last_index;
        let quiet = self.proposals.is_empty()
            && self.reads.is_empty()
            && status.commit_index == last
            && status.applied_index == last
            && status.lead_transferee.is_none()
            && self.raw.progress().all(|(_, pr)| pr.matched == last)
            // A size check is due: sleeping now would leave an oversized region unsplit.
            && !(config.split_check_interval_ticks > 0 && self.written_since_split_check);
        self.idle_ticks = if quiet { self.idle_ticks + 1 } else { 0 };
        self.idle_ticks >= config.hibernate_after_ticks
    }

    /// Whether it is time to check this region's size: every
    /// `split_check_interval_ticks`, and only if it was written since the last check.
    pub fn due_for_split_check(&mut self, config: &StoreConfig) -> bool {
        let due = config.split_check_interval_ticks > 0
            && self.ticks.is_multiple_of(config.split_check_interval_ticks)
            && self.written_since_split_check;
        if due {
            self.written_since_split_check = false;
        }
        due
    }

    pub fn record_size(&mut self, keys: u64, bytes: u64) {
        self.size = (keys, bytes);
    }

    /// Makes the next split check measure the region even if nothing is written.
    pub fn recheck_size(&mut self) {
        self.written_since_split_check = true;
    }

    /// Truncates the log every `log_gc_interval_ticks`: up to what every replica holds,
    /// or further (to `applied - log_gc_max_lag`) when a replica lags so far that a
    /// snapshot serves it better.
    pub fn log_gc(
        &mut self,
        config: &StoreConfig,
        batch: &mut rocksdb::WriteBatch,
    ) -> Result<bool, EngineError> {
        if config.log_gc_interval_ticks == 0 || !self.ticks.is_multiple_of(config.log_gc_interval_ticks) {
            return Ok(false);
        }
        let applied = self.applied_index();
        let floor = applied.saturating_sub(config.log_gc_max_lag);
        let target = if self.is_leader() {
            let slowest = self.raw.progress().map(|(_, pr)| pr.matched).min().unwrap_or(applied);
            slowest.min(applied).max(floor)
        } else {
            floor
        };
        self.raw.storage_mut().compact_to(target, batch)
    }

    /// Deletes the peer's data and log and leaves a tombstone, in `batch`.
    pub fn destroy(&mut self, engine: &Engine, batch: &mut rocksdb::WriteBatch) -> Result<(), EngineError> {
        self.destroyed = true;
        self.ranges.remove(self.region_id);
        self.fail_all(StoreError::RegionNotFound(self.region_id));
        if self.raw.storage().is_initialized() && !self.region.peers.is_empty() {
            batch.delete_range_cf(
                engine.cf(Cf::Data)?,
                keys::data_key(&self.region.start_key),
                keys::data_end_key(&self.region.end_key),
            );
        }
        self.raw.storage_mut().tombstone(batch)
    }
}

fn check_read(region: &Region, request: &ReadRequest) -> Result<(), StoreError> {
    match request {
        ReadRequest::Get { key } => {
            kv::check_key(key)?;
            region::check_key(region, key)?;
        }
        ReadRequest::Scan { start, end, .. } => region::check_range(region, start, end)?,
    }
    Ok(())
}

fn execute_read(
    engine: &Engine,
    region: &Region,
    request: &ReadRequest,
) -> Result<ReadResponse, EngineError> {
    match request {
        ReadRequest::Get { key } => Ok(ReadResponse::Value(engine.get(Cf::Data, &keys::data_key(key))?)),
        ReadRequest::Scan { start, end, limit, reverse } => {
            let end = if end.is_empty() { region.end_key.as_slice() } else { end.as_slice() };
            let (low, high) = (keys::data_key(start), keys::data_end_key(end));
            let mut options = rocksdb::ReadOptions::default();
            options.set_iterate_lower_bound(low.clone());
            options.set_iterate_upper_bound(high.clone());
            let mode = if *reverse {
                rocksdb::IteratorMode::End
            } else {
                rocksdb::IteratorMode::From(&low, rocksdb::Direction::Forward)
            };
            let mut pairs = Vec::new();
            for item in engine.db().iterator_cf_opt(engine.cf(Cf::Data)?, options, mode) {
                let (key, value) = item?;
                let Some(user_key) = keys::user_key(&key) else { continue };
                pairs.push((user_key.to_vec(), value.to_vec()));
                if *limit > 0 && pairs.len() >= *limit {
                    break;
                }
            }
            Ok(ReadResponse::Pairs(pairs))
        }
    }
}
