//! The store's side of the placement driver: a thread on every store that reports the
//! store and the regions it leads, and carries out what the driver answers.
//!
//! Every `heartbeat_interval` the agent
//! - sends a store heartbeat (capacity, used bytes, counts and traffic rates), wakes the
//!   regions shared with stores the driver declared down ([`Store::on_store_down`]: this
//!   is what rouses hibernating followers of a dead leader) and founds the regions the
//!   driver says this store must found (the cluster's first region), and records the
//!   garbage-collection safe point the driver answers (`tessera_engine::gc`);
//! - sends one batch of region heartbeats for every region this store leads, turning the
//!   store's cumulative traffic counters into rates with its own clock;
//! - starts the operator steps in the answers, without waiting for them: the driver
//!   learns their outcome from later heartbeats. A step already started recently is not
//!   started again;
//! - asks the driver about replicas that have known no leader for a while, and has the
//!   store destroy those the driver's region shows were removed (a replica that missed
//!   its own removal because its store was down would otherwise live on).
//!
//! The agent never decides anything; a driver that cannot be reached only delays
//! reports and steps, the store keeps serving.

mod steps;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tessera_engine::store::{IdAllocator, IdsExhausted, LeaderlessReplica, RegionReport, Store, Traffic};

use crate::client::PdClient;
use crate::errors::{PdError, Unavailability};
use crate::proto::{RegionHeartbeat, RegionHeartbeatsRequest, StoreHeartbeatRequest, StoreStats};
use steps::StepRunner;
use tessera_engine::raft::OpaqueError;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub heartbeat_interval: Duration,
    /// A step is started again only if the driver still asks for it after this long.
    pub step_retry_interval: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            heartbeat_interval: Duration::from_secs(1),
            step_retry_interval: Duration::from_secs(5),
        }
    }
}

/// A leaderless replica is checked with the driver at most this often.
const LEADERLESS_CHECK_INTERVAL: Duration = Duration::from_secs(20);

/// Leaderless replicas checked with the driver per round, at most.
const LEADERLESS_CHECKS_PER_ROUND: usize = 32;

/// Ids kept at hand for the store's own splits.
const SPLIT_IDS: usize = 64;

/// Ids for the store's own splits, from the placement driver. The store's raft workers
/// ask for them; they must never wait on the network, so they take from a pool that the
/// agent refills, and a split finding the pool short waits for the next size check.
#[derive(Default)]
pub struct DriverIds {
    pool: Mutex<VecDeque<u64>>,
}

impl DriverIds {
    pub fn new() -> DriverIds {
        DriverIds::default()
    }

    /// Tops the pool up from the driver (on the agent's thread).
    fn refill(&self, pd: &dyn PdClient) {
        let missing = SPLIT_IDS.saturating_sub(self.pool.lock().len());
        if missing < SPLIT_IDS / 2 {
            return;
        }
        if let Ok(ids) = pd.alloc_ids(missing as u32) {
            self.pool.lock().extend(ids);
        }
    }
}

impl IdAllocator for DriverIds {
    fn allocate(&self, count: usize) -> Result<Vec<u64>, IdsExhausted> {
        let mut pool = self.pool.lock();
        if pool.len() < count {
            return Err(IdsExhausted { wanted: count, at_hand: pool.len() });
        }
        Ok(pool.drain(..count).collect())
    }
}

pub struct StoreAgent {
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StoreAgent {
    /// Starts reporting `store` to the driver; `ids` is the pool the store's splits
    /// draw from, which the agent keeps filled.
    pub fn start(
        store: Arc<Store>,
        pd: Arc<dyn PdClient>,
        ids: Arc<DriverIds>,
        config: AgentConfig,
    ) -> Result<StoreAgent, PdError> {
        let stopping = Arc::new(AtomicBool::new(false));
        let mut agent = Agent {
            steps: StepRunner::new(config.step_retry_interval),
            ids,
            store,
            pd,
            config,
            previous: HashMap::new(),
            notified_down: BTreeSet::new(),
            leaderless_checked: HashMap::new(),
        };
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tessera-pd-agent-{}", agent.store.store_id()))
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    agent.round();
                    std::thread::sleep(agent.config.heartbeat_interval);
                }
            })
            .map_err(|e| Unavailability::ThreadSpawn { thread: "agent", source: OpaqueError::new(e) })?;
        Ok(StoreAgent { stopping, thread: Some(thread) })
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StoreAgent {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Agent {
    store: Arc<Store>,
    pd: Arc<dyn PdClient>,
    config: AgentConfig,
    steps: StepRunner,
    ids: Arc<DriverIds>,
    /// Each led region's traffic counters at the previous report, and when.
    previous: HashMap<u64, (Traffic, Instant)>,
    /// Down stores whose regions here were already woken.
    notified_down: BTreeSet<u64>,
    /// When each leaderless replica was last checked with the driver, by region.
    leaderless_checked: HashMap<u64, Instant>,
}

/// Per-second rates between two readings of cumulative counters.
fn rates(now: Traffic, then: Traffic, elapsed: Duration) -> Traffic {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| (a.saturating_sub(b) as f64 / seconds) as u64;
    Traffic {
        written_bytes: rate(now.written_bytes, then.written_bytes),
        written_keys: rate(now.written_keys, then.written_keys),
        read_bytes: rate(now.read_bytes, then.read_bytes),
        read_keys: rate(now.read_keys, then.read_keys),
    }
}

impl Agent {
    fn round(&mut self) {
        self.ids.refill(self.pd.as_ref());
        let Ok(report) = self.store.report() else { return };
        let now = Instant::now();
        let heartbeats: Vec<RegionHeartbeat> =
            report.leaders.iter().map(|r| self.region_heartbeat(r, now)).collect();
        self.previous.retain(|id, _| report.leaders.iter().any(|r| r.region.id == *id));
        let total = heartbeats.iter().fold(Traffic::default(), |sum, h| Traffic {
            written_bytes: sum.written_bytes + h.write_bytes_per_sec,
            written_keys: sum.written_keys + h.write_keys_per_sec,
            read_bytes: sum.read_bytes + h.read_bytes_per_sec,
            read_keys: sum.read_keys + h.read_keys_per_sec,
        });
        self.store_heartbeat(report.regions, report.leaders.len() as u64, total);
        self.destroy_removed_replicas(&report.leaderless, now);
        if heartbeats.is_empty() {
            return;
        }
        let request = RegionHeartbeatsRequest { store_id: self.store.store_id(), regions: heartbeats };
        let Ok(response) = self.pd.region_heartbeats(request) else { return };
        for answer in response.regions {
            let Some(step) = answer.step else { continue };
            let Some(report) = report.leaders.iter().find(|r| r.region.id == answer.region_id) else {
                continue;
            };
            self.steps.run(&self.store, self.ids.as_ref(), &report.region, step);
        }
    }

    /// Checks leaderless replicas against the driver's view of their regions; the store
    /// destroys those removed from their region (it checks the membership versions
    /// itself: the driver's view may be older than the replica's).
    fn destroy_removed_replicas(&mut self, leaderless: &[LeaderlessReplica], now: Instant) {
        self.leaderless_checked.retain(|region_id, _| leaderless.iter().any(|r| r.region_id == *region_id));
        let due = leaderless.iter().filter(|replica| {
            self.leaderless_checked
                .get(&replica.region_id)
                .is_none_or(|at| now.duration_since(*at) >= LEADERLESS_CHECK_INTERVAL)
        });
        let due: Vec<LeaderlessReplica> = due.take(LEADERLESS_CHECKS_PER_ROUND).copied().collect();
        for replica in due {
            self.leaderless_checked.insert(replica.region_id, now);
            // Unknown to the driver, or the driver unreachable: checked again later.
            let Ok(route) = self.pd.region_by_id(replica.region_id) else { continue };
            let Some(current) = route.region else { continue };
            self.store.destroy_if_removed(replica.region_id, replica.peer_id, current);
        }
    }

    fn region_heartbeat(&mut self, report: &RegionReport, now: Instant) -> RegionHeartbeat {
        let rate = match self.previous.insert(report.region.id, (report.traffic, now)) {
            Some((then, at)) => rates(report.traffic, then, now.duration_since(at)),
            None => Traffic::default(),
        };
        RegionHeartbeat {
            region: Some(report.region.clone()),
            term: report.term,
            leader: Some(report.leader),
            pending_peers: report.pending_peers.clone(),
            approximate_keys: report.approximate_keys,
            approximate_bytes: report.approximate_bytes,
            write_bytes_per_sec: rate.written_bytes,
            write_keys_per_sec: rate.written_keys,
            read_bytes_per_sec: rate.read_bytes,
            read_keys_per_sec: rate.read_keys,
        }
    }

    fn store_heartbeat(&mut self, regions: u64, leaders: u64, rate: Traffic) {
        let path = self.store.engine().db().path().to_path_buf();
        let (capacity_bytes, available_bytes) = rustix::fs::statvfs(&path)
            .map(|fs| (fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize))
            .unwrap_or_default();
        let used_bytes = std::fs::read_dir(&path)
            .map(|dir| dir.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or_default();
        let stats = StoreStats {
            capacity_bytes,
            available_bytes,
            used_bytes,
            region_count: regions,
            leader_count: leaders,
            write_bytes_per_sec: rate.written_bytes,
            write_keys_per_sec: rate.written_keys,
            read_bytes_per_sec: rate.read_bytes,
            read_keys_per_sec: rate.read_keys,
        };
        let request = StoreHeartbeatRequest { store_id: self.store.store_id(), stats: Some(stats) };
        let Ok(response) = self.pd.store_heartbeat(request) else { return };
        let down: BTreeSet<u64> = response.down_stores.into_iter().collect();
        for &store_id in down.difference(&self.notified_down) {
            self.store.on_store_down(store_id);
        }
        self.notified_down = down;
        if response.gc_safe_point != 0 {
            let safe_point = tessera_engine::timestamp::Timestamp::from_u64(response.gc_safe_point);
            if let Err(error) = self.store.engine().advance_gc_safe_point(safe_point) {
                tracing::error!(%error, "cannot record the garbage-collection safe point");
            }
        }
        for region in response.bootstrap_regions {
            // Founded already (RegionExists) or not now: the driver asks again until the
            // region's leader reports.
            let _ = self.store.bootstrap_region(&region);
        }
    }
}
