//! One replica of the placement driver.
//!
//! Every replica runs the metadata's Raft group ([`crate::metadata`]); only the leader
//! answers, from a [`LeaderState`] it rebuilt from the metadata when it took over, and
//! followers name the leader instead. A background thread keeps this replica's idea of
//! who leads current, and on the leader: declares silent stores down, expires operators,
//! founds the first region once enough stores registered, and runs the schedulers. A
//! second one keeps the timestamp oracle's persisted mark ahead of the clock.
//!
//! Raft round trips (registrations, changes of epoch, id reservations) never happen
//! under the state's lock: the lock guards memory only, so lookups never wait for a
//! disk sync.
//!
//! A replica trusts its last check of the leadership for half an election timeout: a
//! deposed leader stops answering before a successor can be elected. Its answers are
//! hints anyway, which stores' epoch checks confirm or refute.
//!
//! - `background`: the loop (leadership, liveness, bootstrap, scheduling);
//! - `membership`: replicas joining a running driver;
//! - `requests`: the API ([`PdClient`]) as the leader serves it;
//! - `leader`, `region_map`, `operators`, `ids`: the leader's state and its parts;
//! - `gc`: the garbage-collection safe point the leader keeps;
//! - `timestamps`: the timestamp oracle, which answers from memory under the metadata
//!   region's Raft leader lease rather than this replica's check of the leadership.

mod background;
mod gc;
mod ids;
mod leader;
mod membership;
mod operators;
mod region_map;
mod requests;
mod timestamps;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tessera_engine::clock::{Clock, MonotonicClock};
use tessera_engine::proto::metadata::RegionEpoch;
use tessera_engine::store::{BatchSink, StoreConfig, Transport};

pub use membership::Member;
pub use operators::OperatorOutcome;
pub use timestamps::{
    MAX_TIMESTAMP_WINDOW, MAX_TIMESTAMPS_PER_REQUEST, MIN_TIMESTAMP_WINDOW, TimestampBatch,
};

use crate::errors::{PdError, Unavailability};
use crate::metadata::{Founding, Leadership, Metadata};
use crate::schedulers::SchedulerConfig;
use ids::IdPool;
use leader::LeaderState;
use tessera_engine::raft::OpaqueError;
use timestamps::TimestampOracle;

#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// This replica's member id, and how its metadata region comes to exist.
    pub member_id: u64,
    pub founding: Founding,
    /// Member addresses this replica knows from its start (the founding members', or
    /// those a join answered with); the leader records them in the metadata.
    pub member_addresses: BTreeMap<u64, String>,
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
    /// How far ahead of the wall clock the timestamp oracle persists its mark: a new
    /// leader's timestamps start at most this far ahead of the clock.
    pub timestamp_window: Duration,
    /// How long a request waits for a Raft round trip.
    pub request_timeout: Duration,
    /// How long old versions are kept: the garbage-collection safe point is never less
    /// than this far behind the wall clock.
    pub gc_lifetime: Duration,
    /// How often the leader tries to move the safe point forward.
    pub gc_interval: Duration,
    /// What the metadata's Raft group ticks by and measures its leader lease on (the
    /// timestamp oracle answers only under that lease); a test may stop it to model a
    /// paused process.
    pub clock: Arc<dyn Clock>,
    /// Tick length of the metadata's Raft group.
    pub raft_tick_interval: Duration,
    pub raft_election_ticks: u64,
}

impl DriverConfig {
    /// A founding member of a driver whose voters are `members`.
    pub fn new(member_id: u64, members: Vec<u64>) -> DriverConfig {
        DriverConfig {
            member_id,
            founding: Founding::Members(members),
            member_addresses: BTreeMap::new(),
            schedulers: SchedulerConfig::default(),
            store_down_after: Duration::from_secs(10),
            operator_timeout: Duration::from_secs(10 * 60),
            tick_interval: Duration::from_millis(100),
            schedule_interval: Duration::from_secs(1),
            id_batch: 1000,
            timestamp_window: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            gc_lifetime: Duration::from_secs(10 * 60),
            gc_interval: Duration::from_secs(60),
            clock: MonotonicClock::shared(),
            raft_tick_interval: Duration::from_millis(100),
            raft_election_ticks: 10,
        }
    }

    fn store_config(&self) -> StoreConfig {
        StoreConfig {
            workers: 1,
            tick_interval: self.raft_tick_interval,
            election_ticks: self.raft_election_ticks,
            clock: self.clock.clone(),
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
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    config: DriverConfig,
    metadata: Metadata,
    ids: IdPool,
    timestamps: TimestampOracle,
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
            Metadata::open(path, config.store_config(), &config.founding, transport, config.request_timeout)?;
        let lease = metadata.store().watch_leader_lease(crate::metadata::METADATA_REGION);
        let shared = Arc::new(Shared {
            ids: IdPool::new(config.id_batch),
            timestamps: TimestampOracle::new(lease, config.timestamp_window),
            config,
            metadata,
            origin: Instant::now(),
            leadership: RwLock::new(None),
            leader: Mutex::new(None),
            writer: Mutex::new(()),
            stopping: AtomicBool::new(false),
        });
        let mut driver = PlacementDriver { shared: shared.clone(), threads: Vec::new() };
        let member_id = shared.config.member_id;
        let runner = shared.clone();
        driver.threads.push(
            std::thread::Builder::new()
                .name(format!("tessera-pd-{member_id}"))
                .spawn(move || runner.run())
                .map_err(|e| Unavailability::ThreadSpawn { thread: "driver", source: OpaqueError::new(e) })?,
        );
        let oracle = shared;
        driver.threads.push(
            std::thread::Builder::new()
                .name(format!("tessera-pd-tso-{member_id}"))
                .spawn(move || oracle.run_timestamp_oracle())
                .map_err(|e| Unavailability::ThreadSpawn {
                    thread: "timestamp oracle",
                    source: OpaqueError::new(e),
                })?,
        );
        Ok(driver)
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

    /// Sets the driver's gauges: whether this replica serves as leader and, if it does,
    /// what it sees of the cluster; and its metadata store's (RocksDB's health among
    /// them). Called when metrics are collected.
    pub fn refresh_metrics(&self) {
        // A store that stops mid-refresh keeps its last figures.
        let _ = self.shared.metadata.store().refresh_metrics();
        let serving = self.shared.epoch().is_ok();
        let guard = self.shared.leader.lock();
        let metrics = &*crate::metrics::DRIVER;
        match guard.as_ref().filter(|_| serving) {
            Some(state) => {
                metrics.is_leader.set(1.0);
                let schedulers = &self.shared.config.schedulers;
                crate::metrics::record_cluster(
                    &state.view(self.shared.now()),
                    state.regions.len(),
                    schedulers.replicas,
                    schedulers.hot_region_min_bytes_per_sec,
                );
                metrics.operators_running.set(state.operators.running() as f64);
            }
            None => {
                metrics.is_leader.set(0.0);
                crate::metrics::clear_cluster();
            }
        }
    }

    /// Stops the replica; its database is closed.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
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
}
