//! The multi-raft store: one node's replicas of many regions, in one RocksDB, driven by
//! a few threads.
//!
//! - `worker`: a small fixed pool of raft workers; each owns a share of the regions and
//!   drives them in rounds, so thousands of regions cost a few threads, not thousands.
//! - `log_writer`: group commit; the Raft writes of all regions of a round, from all
//!   workers, become durable with one WAL sync.
//! - `heartbeat`: a round's messages in one frame per destination store (two when the
//!   leaders' appends leave before the round's sync), heartbeats coalesced.
//! - `liveness`: probes between stores, and waking the regions of a silent one.
//! - `peer`: one region's replica (a peer): its state and what the worker may ask of it.
//! - `operation`: what a peer does, one file per operation (commands and their apply,
//!   reads, hibernation, snapshots, split checks, log truncation, destruction).
//! - `transport`: the [`Transport`] trait and an in-process implementation.
//!
//! Hibernation: a leader whose region has been idle for `hibernate_after_ticks` (nothing
//! proposed, every replica caught up) sends one last heartbeat marked `hibernate`; the
//! leader and the followers that receive it stop ticking, so an idle region sends and
//! computes nothing. Any message, proposal or read wakes a peer, and so does a store
//! gone silent: stores probe each other once per heartbeat interval (`liveness`, one
//! frame per store, not per region), and a store heard from by nothing for an election
//! timeout has every region with a replica there woken, so that followers of a leader
//! cut off from them elect another; [`Store::on_store_down`] does the same when the
//! placement driver declares a store down. A hibernating leader ends its lease.
//!
//! Measured on the 2-core development machine (three in-process stores, each with its
//! own RocksDB and synced log writes, 256 writes in flight, 64-byte values):
//! `ops/dev.sh store-bench --regions 1,64,1024 --writers 256 --seconds 10
//! --idle-regions 10000 --json`
//!
//! | regions | writes/s | syncs/s | entries per sync | p50 ms | p99 ms |
//! |---|---|---|---|---|---|
//! | 1 | 49,646 | 414 | 119.8 | 4.20 | 7.22 |
//! | 64 | 31,008 | 565 | 54.9 | 7.92 | 16.00 |
//! | 1,024 | 15,947 | 225 | 70.9 | 15.56 | 29.63 |
//!
//! 10,000 idle (hibernating) regions per store: 0.63 % of one core per store. One run;
//! the machine is shared, so figures move by a fifth between runs.
//!
//! The deterministic simulator drives the Raft core, not this runtime: the runtime's
//! job is threads, batching and RocksDB, which the simulator replaces by design. The
//! store is tested with real threads and RocksDB instead (`tests.rs`, and a
//! crash-recovery test with a child process killed at random points).

mod config;
mod errors;
mod fatal;
mod gc_collector;
mod heartbeat;
mod leader_lease;
mod liveness;
mod log_writer;
mod operation;
mod peer;
mod ranges;
mod read_watermark;
mod report;
mod responder;
mod router;
mod spare_timestamps;
mod split_check;
mod transport;
mod worker;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded, unbounded};
use rocksdb::{Direction, IteratorMode, WriteBatch};

pub use config::{InvalidStoreConfig, StoreConfig};
pub use errors::{EntryKind, InvalidChange, Retry, StoreError};
pub use leader_lease::LeaderLease;
pub use log_writer::GroupCommitFigures;
pub use operation::{ReadRequest, ReadResponse};
pub use report::{LeaderlessReplica, RegionReport, StoreReport, Traffic};
pub use responder::Responder;
pub use split_check::{IdAllocator, IdsExhausted};
pub use transport::{BatchSink, LocalTransport, Transport};
pub use worker::PeerStatus;

use crate::proto::{
    command::{AdminCommand, RaftCommand, Write, WriteResult},
    metadata::{PeerState, Region, RegionEpoch, RegionLocalState},
};
use crate::raft::OpaqueError;
use crate::region;
use crate::storage::{Cf, Engine, EngineError, PeerStorage, Record, keys};
use log_writer::{GroupCommitStats, LogWriter};
use router::Router;
use worker::{Worker, WorkerMsg, WorkerShared};

/// A running store.
pub struct Store {
    config: StoreConfig,
    engine: Engine,
    router: Router,
    stats: Arc<GroupCommitStats>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Store {
    /// Opens the store's database at `path` (creating it if needed), starts its threads
    /// and every region it holds, replaying each region's log from its applied index.
    pub fn open(
        path: &Path,
        config: StoreConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Store, StoreError> {
        Store::open_with_ids(path, config, transport, None)
    }

    /// Like [`Store::open`]; with `ids`, leaders split regions that outgrow the size or
    /// key-count thresholds of the configuration on their own.
    pub fn open_with_ids(
        path: &Path,
        config: StoreConfig,
        transport: Arc<dyn Transport>,
        ids: Option<Arc<dyn IdAllocator>>,
    ) -> Result<Store, StoreError> {
        config.validate()?;
        let opening_started = Instant::now();
        let engine = Engine::open_with_cache(path, config.block_cache_bytes)?;
        let stats = Arc::new(GroupCommitStats::default());
        let (log_writer, log_thread) = LogWriter::start(engine.clone(), config.sync_log, stats.clone());
        let workers = config.workers.max(1);
        let (senders, inboxes): (Vec<_>, Vec<_>) = (0..workers).map(|_| unbounded()).unzip();
        let liveness = Arc::new(liveness::StoreLiveness::new(&config));
        let router = Router::new(senders, liveness.clone());
        let noting: Arc<dyn Transport> =
            Arc::new(liveness::NotingTransport { inner: transport.clone(), liveness: liveness.clone() });
        let mut threads = vec![log_thread];
        let shared = WorkerShared {
            config: config.clone(),
            engine: engine.clone(),
            log_writer,
            transport: noting,
            router: router.clone(),
            ids,
            ranges: ranges::RegionRanges::default(),
            spare_timestamps: Arc::new(spare_timestamps::SpareTimestamps::new()),
        };
        for (index, inbox) in inboxes.into_iter().enumerate() {
            let worker = Worker::new(shared.clone(), inbox);
            let thread = std::thread::Builder::new()
                .name(format!("tessera-raft-{}-{index}", config.store_id))
                .spawn(move || fatal::fail_stop_on_panic("raft worker", move || worker.run()))
                .map_err(|e| StoreError::ThreadSpawn {
                    thread: "raft worker",
                    source: OpaqueError::new(e),
                })?;
            threads.push(thread);
        }
        let stopping = Arc::new(AtomicBool::new(false));
        let ticker = Ticker { router: router.clone(), liveness, transport, stopping: stopping.clone() };
        threads.push(start_ticker(ticker, &config)?);
        threads.push(gc_collector::start(engine.clone(), config.gc_compaction_interval, stopping.clone())?);
        let store = Store { config, engine, router, stats, stopping, threads };
        let regions = store.persisted_regions()?;
        tracing::info!(
            store_id = store.config.store_id,
            regions = regions.len(),
            workers,
            opened_in_ms = opening_started.elapsed().as_millis() as u64,
            path = %path.display(),
            "store opened; replaying each region's log from its applied index"
        );
        for region_id in regions {
            store
                .router
                .send(region_id, WorkerMsg::StartPeer { region_id, new_group: false, campaign: false });
        }
        Ok(store)
    }

    fn persisted_regions(&self) -> Result<Vec<u64>, StoreError> {
        let mut regions = Vec::new();
        let meta = self.engine.cf(Cf::Meta)?;
        for item in self.engine.db().iterator_cf(meta, IteratorMode::From(&[], Direction::Forward)) {
            let (key, value) = item.map_err(EngineError::from)?;
            let Some(region_id) = keys::region_id_of_state_key(&key) else { continue };
            let state = <RegionLocalState as prost::Message>::decode(value.as_ref())
                .map_err(|e| EngineError::corrupt(Record::RegionState { region_id }, e))?;
            if state.state != PeerState::Tombstone as i32 {
                regions.push(region_id);
            }
        }
        Ok(regions)
    }

    pub fn store_id(&self) -> u64 {
        self.config.store_id
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Where other stores' frames for this store are delivered.
    pub fn sink(&self) -> Arc<dyn BatchSink> {
        Arc::new(self.router.clone())
    }

    /// Founds a region on this store: `region` lists every peer; this store's is started.
    pub fn bootstrap_region(&self, region: &Region) -> Result<(), StoreError> {
        let peer = region::peer_on_store(region, self.config.store_id)
            .ok_or(StoreError::RegionNotFound(region.id))?;
        if self.engine.get(Cf::Meta, &keys::region_state_key(region.id))?.is_some() {
            return Err(StoreError::RegionExists(region.id));
        }
        let mut batch = WriteBatch::default();
        PeerStorage::initialize(&self.engine, region, peer.id, 0, &mut batch)?;
        self.engine.write(batch, true)?;
        self.router
            .send(region.id, WorkerMsg::StartPeer { region_id: region.id, new_group: true, campaign: false });
        Ok(())
    }

    /// Prepares an empty replica of `region_id` as peer `peer_id`, to be filled by the
    /// region's leader (a snapshot, then the log): for a replica added to its region
    /// before this store could hear from it. It answers the leader's heartbeats at once,
    /// which is what starts the leader sending. Nothing changes if the store already
    /// has state for the region (a restart).
    pub fn create_empty_peer(&self, region_id: u64, peer_id: u64) -> Result<(), StoreError> {
        if self.engine.get(Cf::Meta, &keys::region_state_key(region_id))?.is_some() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        PeerStorage::initialize_empty(&self.engine, region_id, peer_id, &mut batch)?;
        self.engine.write(batch, true)?;
        self.router.send(region_id, WorkerMsg::StartPeer { region_id, new_group: true, campaign: false });
        Ok(())
    }

    /// Asks this store's peer of `region_id` to campaign now.
    pub fn campaign(&self, region_id: u64) {
        self.router.send(region_id, WorkerMsg::Campaign(region_id));
    }

    fn propose(
        &self,
        region_id: u64,
        command: RaftCommand,
    ) -> Receiver<Result<Vec<WriteResult>, StoreError>> {
        let (respond, answer) = Responder::channel();
        self.router.send(region_id, WorkerMsg::Propose { region_id, command, respond });
        answer
    }

    /// Replicates a batch of writes to one region; answers once applied.
    pub fn write(
        &self,
        region_id: u64,
        epoch: RegionEpoch,
        writes: Vec<Write>,
    ) -> Receiver<Result<Vec<WriteResult>, StoreError>> {
        self.propose(region_id, RaftCommand { region_id, epoch: Some(epoch), writes, admin: None })
    }

    /// Like [`Store::write`], answering through `respond` (a callback for async callers).
    pub fn write_with(
        &self,
        region_id: u64,
        epoch: RegionEpoch,
        writes: Vec<Write>,
        respond: Responder<Vec<WriteResult>>,
    ) {
        let command = RaftCommand { region_id, epoch: Some(epoch), writes, admin: None };
        self.router.send_request(region_id, WorkerMsg::Propose { region_id, command, respond });
    }

    /// Replicates an admin command (split, change of peer).
    pub fn admin(
        &self,
        region_id: u64,
        epoch: RegionEpoch,
        admin: AdminCommand,
    ) -> Receiver<Result<Vec<WriteResult>, StoreError>> {
        self.propose(
            region_id,
            RaftCommand { region_id, epoch: Some(epoch), writes: Vec::new(), admin: Some(admin) },
        )
    }

    /// A linearizable read of one region.
    pub fn read(
        &self,
        region_id: u64,
        epoch: RegionEpoch,
        request: ReadRequest,
    ) -> Receiver<Result<ReadResponse, StoreError>> {
        let (respond, answer) = Responder::channel();
        self.read_with(region_id, epoch, request, respond);
        answer
    }

    /// Like [`Store::read`], answering through `respond` (a callback for async callers).
    pub fn read_with(
        &self,
        region_id: u64,
        epoch: RegionEpoch,
        request: ReadRequest,
        respond: Responder<ReadResponse>,
    ) {
        self.router.send_request(region_id, WorkerMsg::Read { region_id, epoch, request, respond });
    }

    pub fn transfer_leader(&self, region_id: u64, to_peer_id: u64) -> Receiver<Result<(), StoreError>> {
        let (respond, answer) = Responder::channel();
        self.router.send(region_id, WorkerMsg::TransferLeader { region_id, to_peer_id, respond });
        answer
    }

    /// Subscribes `subscriber` to the changes of `region_id` committed after
    /// `start_ts`, at the region's `epoch`; refused unless this store leads the region
    /// and is ready to (see `operation/feed.rs`). The feed sends what applies from now
    /// on: what committed before is the caller's to read from MVCC after this answer.
    pub fn subscribe_feed(
        &self,
        region_id: u64,
        epoch: crate::proto::metadata::RegionEpoch,
        start_ts: crate::timestamp::Timestamp,
        subscriber: Box<dyn crate::feed::FeedSubscriber>,
    ) -> Receiver<Result<crate::feed::FeedStart, StoreError>> {
        let (respond, answer) = Responder::channel();
        self.subscribe_feed_with(region_id, epoch, start_ts, subscriber, respond);
        answer
    }

    /// Like [`Store::subscribe_feed`], answering through `respond`.
    pub fn subscribe_feed_with(
        &self,
        region_id: u64,
        epoch: crate::proto::metadata::RegionEpoch,
        start_ts: crate::timestamp::Timestamp,
        subscriber: Box<dyn crate::feed::FeedSubscriber>,
        respond: Responder<crate::feed::FeedStart>,
    ) {
        let message = WorkerMsg::SubscribeFeed { region_id, epoch, start_ts, subscriber, respond };
        self.router.send(region_id, message);
    }

    /// The leader lease of this store's replica of `region_id`, kept current by the
    /// raft worker from now on (see [`LeaderLease`]).
    pub fn watch_leader_lease(&self, region_id: u64) -> Arc<LeaderLease> {
        let lease = Arc::new(LeaderLease::new(self.config.clock.clone()));
        self.router.send(region_id, WorkerMsg::WatchLeaderLease { region_id, lease: lease.clone() });
        lease
    }

    /// This store's view of one of its regions.
    pub fn status(&self, region_id: u64) -> Option<PeerStatus> {
        let (respond, answer) = bounded(1);
        self.router.send(region_id, WorkerMsg::Status { region_id, respond });
        answer.recv_timeout(Duration::from_secs(5)).ok().flatten()
    }

    /// How many regions this store holds, and a report of each one it leads (for the
    /// placement driver's heartbeats).
    pub fn report(&self) -> Result<StoreReport, StoreError> {
        let (respond, answers) = unbounded();
        self.router.broadcast(|| WorkerMsg::Report(respond.clone()));
        drop(respond);
        let mut report = StoreReport::default();
        for _ in 0..self.router.workers() {
            let share = answers.recv_timeout(Duration::from_secs(5)).map_err(|_| StoreError::ShuttingDown)?;
            report.merge(share);
        }
        Ok(report)
    }

    /// Destroys this store's replica `peer_id` of `region_id` if `current` (the region as
    /// the placement driver knows it) shows it was removed: a newer membership without
    /// it. For a replica that missed its own removal (its store was down, which is why
    /// it was removed): it would otherwise keep its keys claimed on this store, wake its
    /// region with campaigns and keep its data. Returns whether it was destroyed.
    pub fn destroy_if_removed(&self, region_id: u64, peer_id: u64, current: Region) -> bool {
        let (respond, answer) = bounded(1);
        self.router.send(region_id, WorkerMsg::DestroyIfRemoved { region_id, peer_id, current, respond });
        answer.recv_timeout(Duration::from_secs(5)).unwrap_or(false)
    }

    /// Another store is down: wake every region with a replica there, so that followers
    /// of a leader on it can elect another.
    pub fn on_store_down(&self, store_id: u64) {
        self.router.broadcast(|| WorkerMsg::StoreDown(store_id));
    }

    /// Sets the store's gauges to its current state: regions, leaders, hibernation and
    /// RocksDB's health. Called when metrics are collected, so idle stores do no work
    /// for them.
    pub fn refresh_metrics(&self) -> Result<(), StoreError> {
        let metrics = &*crate::metrics::METRICS;
        // RocksDB's figures first: they matter most when the workers are too busy to
        // answer the report in time (a write stall).
        let stats = self.engine.stats();
        for (gauges, cf) in metrics.column_families.iter().zip(stats.column_families) {
            gauges.memtable_bytes.set(cf.memtable_bytes as f64);
            gauges.pending_compaction_bytes.set(cf.pending_compaction_bytes as f64);
            gauges.live_sst_bytes.set(cf.live_sst_bytes as f64);
        }
        metrics.write_stopped.set(if stats.write_stopped { 1.0 } else { 0.0 });
        metrics.delayed_write_rate.set(stats.delayed_write_rate as f64);
        metrics.write_stall_seconds.set(stats.write_stall_micros as f64 / 1e6);
        let report = self.report()?;
        metrics.regions.set(report.regions as f64);
        metrics.leaders.set(report.leaders.len() as f64);
        metrics.regions_hibernating.set(report.hibernating as f64);
        metrics.regions_active.set(report.regions.saturating_sub(report.hibernating) as f64);
        metrics.regions_without_leader.set(report.without_leader as f64);
        Ok(())
    }

    pub fn group_commit(&self) -> GroupCommitFigures {
        self.stats.figures()
    }

    /// Stops every thread; requests in flight are failed with `ShuttingDown`.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.router.broadcast(|| WorkerMsg::Shutdown);
        let threads = std::mem::take(&mut self.threads);
        // Workers and the ticker first; the log writer ends when the last worker drops
        // its handle.
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

/// What the ticker thread drives: the workers' ticks and the probes between stores.
struct Ticker {
    router: Router,
    liveness: Arc<liveness::StoreLiveness>,
    transport: Arc<dyn Transport>,
    stopping: Arc<AtomicBool>,
}

/// Ticks every worker once per `tick_interval` on the store's clock. Ticks never come
/// faster than that, which the leases of the replicas' leaders rely on (a voter that
/// heard from a leader ignores campaigns for an election timeout counted in ticks); a
/// late tick only delays an election. Each tick also probes the other stores and wakes
/// the regions of those gone silent (`liveness.rs`).
///
/// It also asks the workers to resolve their change feeds every
/// `feed_resolve_interval` of real time (`operation/feed.rs`).
fn start_ticker(ticker: Ticker, config: &StoreConfig) -> Result<JoinHandle<()>, StoreError> {
    let (interval, clock) = (config.tick_interval, config.clock.clone());
    let resolve_interval = config.feed_resolve_interval;
    std::thread::Builder::new()
        .name("tessera-ticker".into())
        .spawn(move || {
            fatal::fail_stop_on_panic("ticker", move || {
                let mut next_tick = clock.now() + interval;
                let mut next_resolve = Instant::now() + resolve_interval;
                while !ticker.stopping.load(Ordering::SeqCst) {
                    std::thread::sleep(interval.min(resolve_interval));
                    if Instant::now() >= next_resolve {
                        ticker.router.broadcast(|| WorkerMsg::ResolveFeeds);
                        next_resolve = Instant::now() + resolve_interval;
                    }
                    let now = clock.now();
                    if now < next_tick {
                        continue;
                    }
                    ticker.router.broadcast(|| WorkerMsg::Tick);
                    for store_id in ticker.liveness.on_tick(ticker.transport.as_ref()) {
                        ticker.router.broadcast(|| WorkerMsg::StoreDown(store_id));
                    }
                    next_tick = now + interval;
                }
            })
        })
        .map_err(|e| StoreError::ThreadSpawn { thread: "ticker", source: OpaqueError::new(e) })
}
