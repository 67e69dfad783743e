//! One replica of the placement driver.
//!
//! Every replica runs the metadata's Raft group ([`crate::metadata`]); only the leader
//! answers, from a [`LeaderState`] it rebuilt from the metadata when it took over, and
//! followers name the leader instead. A background thread keeps this replica's idea of
//! who leads current, and on the leader: declares silent stores down, expires operators,
//! founds the first region once enough stores registered, and runs the schedulers.
//!
//! Raft round trips (registrations, changes of epoch, id reservations) never happen
//! under the state's lock: the lock guards memory only, so lookups never wait for a
//! disk sync.
//!
//! A leader that lost its leadership without knowing yet may answer lookups from a
//! slightly old map for up to one tick; its writes fail, and clients treat any answer
//! as a hint that a store's epoch check confirms or refutes.

mod ids;
mod leader;
mod operators;
mod region_map;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tessera_engine::storage::proto::{Peer, PeerRole, Region, RegionEpoch};
use tessera_engine::store::{BatchSink, StoreConfig, Transport};

pub use operators::Outcome;

use crate::client::PdClient;
use crate::cluster::StoreState;
use crate::errors::PdError;
use crate::metadata::{self, Leadership, Metadata};
use crate::operator::{Operator, OperatorKind, Step};
use crate::proto::{
    OperatorView, RegionHeartbeat, RegionHeartbeatResponse, RegionHeartbeatsRequest,
    RegionHeartbeatsResponse, RegionRoute, RegisterStoreRequest, RegisterStoreResponse,
    StoreHeartbeatRequest, StoreHeartbeatResponse, StoreRecord, StoreView,
};
use crate::schedulers::{self, SchedulerConfig};
use ids::IdAllocator;
use leader::{LeaderState, StoreEntry};
use region_map::Verdict;

/// At most this many ids per request.
const MAX_IDS_PER_REQUEST: u32 = 10_000;

/// Placeholder ids the schedulers decide with are above this: no real id gets there.
const PLACEHOLDER_IDS: u64 = u64::MAX - (1 << 32);

#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// This replica's member id, and every member's (the Raft group's voters).
    pub member_id: u64,
    pub members: Vec<u64>,
    pub schedulers: SchedulerConfig,
    /// A store silent for this long is down.
    pub store_down_after: Duration,
    /// An operator not finished after this long is abandoned.
    pub operator_timeout: Duration,
    /// How often the leader checks liveness and operators.
    pub tick_interval: Duration,
    /// How often the schedulers run.
    pub schedule_interval: Duration,
    /// Ids reserved through Raft at a time.
    pub id_batch: u64,
    /// How long a request waits for a Raft round trip.
    pub request_timeout: Duration,
    /// Tick length of the metadata's Raft group.
    pub raft_tick_interval: Duration,
    pub raft_election_ticks: usize,
}

impl DriverConfig {
    pub fn new(member_id: u64, members: Vec<u64>) -> DriverConfig {
        DriverConfig {
            member_id,
            members,
            schedulers: SchedulerConfig::default(),
            store_down_after: Duration::from_secs(10),
            operator_timeout: Duration::from_secs(10 * 60),
            tick_interval: Duration::from_millis(100),
            schedule_interval: Duration::from_secs(1),
            id_batch: 1000,
            request_timeout: Duration::from_secs(5),
            raft_tick_interval: Duration::from_millis(100),
            raft_election_ticks: 10,
        }
    }

    fn store_config(&self) -> StoreConfig {
        StoreConfig {
            workers: 1,
            tick_interval: self.raft_tick_interval,
            election_ticks: self.raft_election_ticks,
            // The driver's group must notice a dead leader on its own: it never sleeps.
            hibernate_after_ticks: u64::MAX,
            // One region, never split.
            split_check_interval_ticks: 0,
            ..StoreConfig::new(self.member_id)
        }
    }
}

/// A running replica of the placement driver.
pub struct PlacementDriver {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    config: DriverConfig,
    metadata: Metadata,
    ids: IdAllocator,
    origin: Instant,
    /// Who leads, and when this replica last checked.
    leadership: RwLock<Option<(Leadership, Duration)>>,
    leader: Mutex<Option<LeaderState>>,
    /// Serializes the requests that persist something (registrations, changes of epoch).
    writer: Mutex<()>,
    stopping: AtomicBool,
}

impl PlacementDriver {
    /// Opens (or creates) the replica's database at `path` and starts it.
    pub fn open(path: &Path, config: DriverConfig, transport: Arc<dyn Transport>) -> Result<Self, PdError> {
        let metadata =
            Metadata::open(path, config.store_config(), &config.members, transport, config.request_timeout)?;
        let shared = Arc::new(Shared {
            ids: IdAllocator::new(config.id_batch),
            config,
            metadata,
            origin: Instant::now(),
            leadership: RwLock::new(None),
            leader: Mutex::new(None),
            writer: Mutex::new(()),
            stopping: AtomicBool::new(false),
        });
        let runner = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tessera-pd-{}", shared.config.member_id))
            .spawn(move || runner.run())
            .map_err(|e| PdError::Unavailable(format!("cannot start the driver thread: {e}")))?;
        Ok(PlacementDriver { shared, thread: Some(thread) })
    }

    pub fn member_id(&self) -> u64 {
        self.shared.config.member_id
    }

    /// Where the other replicas' Raft frames for this one are delivered.
    pub fn sink(&self) -> Arc<dyn BatchSink> {
        self.shared.metadata.store().sink()
    }

    /// Whether this replica leads and has loaded the metadata.
    pub fn is_serving(&self) -> bool {
        self.shared.leader.lock().is_some()
    }

    /// Operators ended, by kind and outcome, since this replica last became leader.
    pub fn operator_outcomes(&self) -> BTreeMap<(OperatorKind, Outcome), u64> {
        self.shared.leader.lock().as_ref().map(|state| state.operators.outcomes().clone()).unwrap_or_default()
    }

    /// Stops the replica; its database is closed.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PlacementDriver {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn run(&self) {
        let mut next_schedule = Duration::ZERO;
        while !self.stopping.load(Ordering::SeqCst) {
            std::thread::sleep(self.config.tick_interval);
            let Some(epoch) = self.refresh_leadership() else { continue };
            let now = self.now();
            self.watch(now);
            self.maybe_bootstrap(epoch);
            if now >= next_schedule {
                next_schedule = now + self.config.schedule_interval;
                self.schedule(epoch, now);
            }
        }
    }

    /// Learns who leads; a replica that just became leader loads the metadata. Returns
    /// the metadata's epoch if this replica is the serving leader.
    fn refresh_leadership(&self) -> Option<RegionEpoch> {
        let leadership = self.metadata.leadership();
        *self.leadership.write() = leadership.map(|l| (l, self.now()));
        let Some(leadership) = leadership.filter(|l| l.is_leader) else {
            *self.leader.lock() = None;
            return None;
        };
        if self.leader.lock().as_ref().is_some_and(|state| state.term == leadership.term) {
            return Some(leadership.epoch);
        }
        *self.leader.lock() = None;
        // A linearizable read: everything the previous leaders committed is in it.
        let loaded = self.metadata.load(leadership.epoch).ok()?;
        self.ids.reset(loaded.ids);
        let state = LeaderState::new(
            leadership.term,
            loaded,
            self.now(),
            self.config.operator_timeout,
            self.config.schedulers.replicas,
        );
        *self.leader.lock() = Some(state);
        Some(leadership.epoch)
    }

    fn watch(&self, now: Duration) {
        let mut guard = self.leader.lock();
        let Some(state) = guard.as_mut() else { return };
        state.update_liveness(now, self.config.store_down_after);
        let LeaderState { operators, regions, .. } = state;
        operators.expire(now, |region_id| regions.get(region_id).is_some());
    }

    /// Founds the cluster's first region once enough stores are up.
    fn maybe_bootstrap(&self, epoch: RegionEpoch) {
        let replicas = self.config.schedulers.replicas;
        let stores: Vec<u64> = {
            let guard = self.leader.lock();
            let Some(state) = guard.as_ref() else { return };
            if state.is_bootstrapped() {
                return;
            }
            state
                .stores
                .values()
                .filter(|s| s.state == StoreState::Up)
                .map(|s| s.record.id)
                .take(replicas)
                .collect()
        };
        if stores.len() < replicas.max(1) {
            return;
        }
        let Ok(ids) = self.ids.allocate(&self.metadata, epoch, 1 + stores.len() as u64) else { return };
        let region = Region {
            id: ids[0],
            start_key: Vec::new(),
            end_key: Vec::new(),
            epoch: Some(RegionEpoch { conf_version: 1, version: 1 }),
            peers: stores
                .iter()
                .zip(&ids[1..])
                .map(|(&store_id, &id)| Peer { id, store_id, role: PeerRole::Voter as i32 })
                .collect(),
        };
        match self.metadata.claim_bootstrap(epoch, &region) {
            Ok(true) => {
                // The claim alone is enough: a new leader founds from it if this fails.
                let _ = self.metadata.write(epoch, vec![metadata::put_region(&region)]);
                if let Some(state) = self.leader.lock().as_mut() {
                    state.regions.insert(region.clone());
                    state.bootstrap = Some(region);
                }
            }
            // Another leader founded the cluster: reload.
            Ok(false) => *self.leader.lock() = None,
            Err(_) => {}
        }
    }

    /// Runs the schedulers. They decide under the lock with placeholder ids for new
    /// peers; the real ids are reserved afterwards, outside it, and substituted. Peer
    /// ids must grow over time (a store refuses to recreate a removed peer with an id
    /// not above the old one), so ids are never set aside for later.
    fn schedule(&self, epoch: RegionEpoch, now: Duration) {
        let (mut operators, wanted) = {
            let guard = self.leader.lock();
            let Some(state) = guard.as_ref() else { return };
            if !state.warmed_up(now, self.config.store_down_after) {
                return;
            }
            let view = state.view(now);
            let busy = state.operators.busy();
            let mut placeholders = 0u64;
            let operators = schedulers::schedule(&view, &self.config.schedulers, &busy, &mut || {
                placeholders += 1;
                Some(PLACEHOLDER_IDS + placeholders)
            });
            (operators, placeholders)
        };
        if operators.is_empty() {
            return;
        }
        let ids = match wanted {
            0 => Vec::new(),
            _ => match self.ids.allocate(&self.metadata, epoch, wanted) {
                Ok(ids) => ids,
                Err(_) => return,
            },
        };
        let real = |id: u64| match id.checked_sub(PLACEHOLDER_IDS + 1) {
            Some(index) => ids.get(index as usize).copied(),
            None => Some(id),
        };
        for operator in &mut operators {
            for step in &mut operator.steps {
                if let Step::AddLearner { peer } | Step::PromoteLearner { peer } | Step::RemovePeer { peer } =
                    step
                {
                    // The allocator answers with exactly the count asked for.
                    peer.id = real(peer.id).unwrap_or(0);
                }
            }
        }
        let mut guard = self.leader.lock();
        let Some(state) = guard.as_mut() else { return };
        for operator in operators {
            let complete = operator.steps.iter().all(|step| match step {
                Step::AddLearner { peer } | Step::PromoteLearner { peer } | Step::RemovePeer { peer } => {
                    peer.id != 0
                }
                _ => true,
            });
            if complete {
                state.add_operator(operator, now);
            }
        }
    }

    fn not_leader(&self) -> PdError {
        PdError::NotLeader { leader: self.leadership.read().and_then(|(l, _)| l.leader) }
    }

    /// How long a check of the leadership is trusted: well under an election timeout,
    /// so that a deposed leader stops answering before its successor starts.
    fn leadership_lease(&self) -> Duration {
        self.config.raft_tick_interval * self.config.raft_election_ticks as u32 / 2
    }

    /// The metadata's epoch, if this replica led at its last check and that check is
    /// recent enough.
    fn epoch(&self) -> Result<RegionEpoch, PdError> {
        match *self.leadership.read() {
            Some((leadership, checked))
                if leadership.is_leader && self.now().saturating_sub(checked) < self.leadership_lease() =>
            {
                Ok(leadership.epoch)
            }
            _ => Err(self.not_leader()),
        }
    }

    fn with_leader<T>(&self, f: impl FnOnce(&mut LeaderState) -> Result<T, PdError>) -> Result<T, PdError> {
        self.epoch()?;
        match self.leader.lock().as_mut() {
            Some(state) => f(state),
            None => Err(self.not_leader()),
        }
    }

    fn register_store(&self, request: RegisterStoreRequest) -> Result<RegisterStoreResponse, PdError> {
        if request.address.is_empty() {
            return Err(PdError::InvalidArgument("a store must give its address".into()));
        }
        let _writer = self.writer.lock();
        let epoch = self.epoch()?;
        let existing = self.with_leader(|state| {
            let same_address = state
                .stores
                .values()
                .find(|s| s.record.address == request.address && s.state != StoreState::Tombstone);
            if let Some(other) = same_address.filter(|s| s.record.id != request.store_id) {
                return Err(PdError::DuplicateAddress {
                    address: request.address.clone(),
                    store_id: other.record.id,
                });
            }
            if request.store_id == 0 {
                return Ok(None);
            }
            Ok(Some(state.store(request.store_id)?.record.clone()))
        })?;
        let store_id = match &existing {
            Some(record) => record.id,
            None => self.ids.allocate(&self.metadata, epoch, 1)?[0],
        };
        let record =
            StoreRecord { id: store_id, address: request.address, labels: request.labels, tombstone: false };
        if existing.as_ref() != Some(&record) {
            self.metadata.write(epoch, vec![metadata::put_store(&record)])?;
        }
        let now = self.now();
        self.with_leader(|state| {
            let entry = state.stores.entry(store_id).or_insert_with(|| StoreEntry {
                record: record.clone(),
                stats: Default::default(),
                last_heartbeat: now,
                state: StoreState::Up,
            });
            entry.record = record;
            entry.last_heartbeat = now;
            entry.state = StoreState::Up;
            Ok(RegisterStoreResponse { store_id })
        })
    }

    fn region_heartbeats(
        &self,
        request: RegionHeartbeatsRequest,
    ) -> Result<RegionHeartbeatsResponse, PdError> {
        for heartbeat in &request.regions {
            check_heartbeat(request.store_id, heartbeat)?;
        }
        // Changes of epoch are judged, persisted and adopted by one writer at a time, so
        // that what is on disk and what is in memory cannot cross.
        let _writer = self.writer.lock();
        let epoch = self.epoch()?;
        let mut puts = Vec::new();
        let mut deletes = BTreeSet::new();
        let term = self.with_leader(|state| {
            state.store(request.store_id)?;
            for region in request.regions.iter().filter_map(|h| h.region.as_ref()) {
                if let Verdict::Changed { replaces } = state.regions.judge(region) {
                    puts.push(region.clone());
                    deletes.extend(replaces);
                }
            }
            Ok(state.term)
        })?;
        let persisted: BTreeSet<u64> = puts.iter().map(|r| r.id).collect();
        if !puts.is_empty() {
            // A split's halves can arrive in one batch, each replacing the other's old
            // descriptor: never delete what the batch also writes.
            let writes = deletes
                .iter()
                .filter(|id| !persisted.contains(id))
                .map(|&id| metadata::delete_region(id))
                .chain(puts.iter().map(metadata::put_region))
                .collect();
            self.metadata.write(epoch, writes)?;
        }
        let now = self.now();
        self.with_leader(|state| {
            if state.term != term {
                return Err(self.not_leader());
            }
            let view = state.view(now);
            let regions = request
                .regions
                .iter()
                .filter_map(|heartbeat| {
                    let region = heartbeat.region.as_ref()?;
                    let newer = match state.regions.judge(region) {
                        Verdict::Stale(newer) => Some(newer),
                        _ => None,
                    };
                    let step = match newer {
                        Some(_) => None,
                        None => state.region_heartbeat(heartbeat, persisted.contains(&region.id), &view),
                    };
                    Some(RegionHeartbeatResponse { region_id: region.id, step, newer })
                })
                .collect();
            Ok(RegionHeartbeatsResponse { regions })
        })
    }
}

/// A heartbeat must describe a region led from the store that sends it.
fn check_heartbeat(store_id: u64, heartbeat: &RegionHeartbeat) -> Result<(), PdError> {
    let invalid =
        |what: &str| Err(PdError::InvalidArgument(format!("region heartbeat from store {store_id}: {what}")));
    let Some(region) = &heartbeat.region else { return invalid("no region") };
    let Some(leader) = &heartbeat.leader else { return invalid("no leader") };
    if leader.store_id != store_id || !region.peers.iter().any(|p| p.id == leader.id) {
        return invalid("the leader is not this store's peer of the region");
    }
    if !region.end_key.is_empty() && region.start_key >= region.end_key {
        return invalid("the region's range is empty or inverted");
    }
    Ok(())
}

impl PdClient for PlacementDriver {
    fn register_store(&self, request: RegisterStoreRequest) -> Result<RegisterStoreResponse, PdError> {
        self.shared.register_store(request)
    }

    fn store_heartbeat(&self, request: StoreHeartbeatRequest) -> Result<StoreHeartbeatResponse, PdError> {
        let now = self.shared.now();
        let stats = request.stats.unwrap_or_default();
        self.shared.with_leader(|state| state.store_heartbeat(request.store_id, stats, now))
    }

    fn region_heartbeats(
        &self,
        request: RegionHeartbeatsRequest,
    ) -> Result<RegionHeartbeatsResponse, PdError> {
        self.shared.region_heartbeats(request)
    }

    fn alloc_ids(&self, count: u32) -> Result<Vec<u64>, PdError> {
        if count == 0 || count > MAX_IDS_PER_REQUEST {
            return Err(PdError::InvalidArgument(format!(
                "ids are handed out 1 to {MAX_IDS_PER_REQUEST} at a time, not {count}"
            )));
        }
        let epoch = self.shared.epoch()?;
        self.shared.with_leader(|_| Ok(()))?;
        self.shared.ids.allocate(&self.shared.metadata, epoch, u64::from(count))
    }

    fn region_by_key(&self, key: &[u8]) -> Result<RegionRoute, PdError> {
        self.shared.with_leader(|state| {
            if !state.is_bootstrapped() {
                return Err(PdError::NotBootstrapped);
            }
            // A gap only exists while a split's halves are being reported.
            state.regions.by_key(key).map(LeaderState::route).ok_or(PdError::Unavailable(format!(
                "no region holds {} right now; retry",
                String::from_utf8_lossy(key)
            )))
        })
    }

    fn region_by_id(&self, region_id: u64) -> Result<RegionRoute, PdError> {
        self.shared.with_leader(|state| {
            state.regions.get(region_id).map(LeaderState::route).ok_or(PdError::UnknownRegion(region_id))
        })
    }

    fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<RegionRoute>, PdError> {
        if !end.is_empty() && start > end {
            return Err(PdError::InvalidArgument("the start of a range is after its end".into()));
        }
        self.shared.with_leader(|state| {
            let limit = if limit == 0 { usize::MAX } else { limit };
            Ok(state.regions.range(start, end).take(limit).map(LeaderState::route).collect())
        })
    }

    fn stores(&self) -> Result<Vec<StoreView>, PdError> {
        self.shared.with_leader(|state| Ok(state.store_views()))
    }

    fn split_region(&self, key: &[u8]) -> Result<(), PdError> {
        if key.is_empty() {
            return Err(PdError::InvalidArgument(
                "the empty key starts the key space: nothing to split".into(),
            ));
        }
        let now = self.shared.now();
        self.shared.with_leader(|state| {
            let entry = state.regions.by_key(key).ok_or(PdError::NotBootstrapped)?;
            if entry.region().start_key == key {
                return Ok(());
            }
            let route = LeaderState::route(entry);
            let region_id = entry.region().id;
            let operator = Operator {
                region_id,
                kind: OperatorKind::Split,
                steps: vec![Step::Split { key: key.to_vec() }],
            };
            if state.add_operator(operator, now) { Ok(()) } else { Err(PdError::RegionBusy(Box::new(route))) }
        })
    }

    fn operators(&self) -> Result<Vec<OperatorView>, PdError> {
        let now = self.shared.now();
        self.shared.with_leader(|state| Ok(state.operators.views(now)))
    }
}
