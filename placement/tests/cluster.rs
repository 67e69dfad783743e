//! Whole clusters in one process: placement driver replicas and stores, each with its
//! own RocksDB in a temporary directory, over the engine's in-process transport. Drivers
//! and stores talk only through [`PdClient`] and the agent, as they do over gRPC.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_engine::proto::{
    command::{Put, Write, write},
    metadata::RegionEpoch,
};
use tessera_engine::region::KeyRange;
use tessera_engine::store::{LocalTransport, ReadRequest, ReadResponse, Store, StoreConfig, StoreError};
use tessera_placement::agent::{AgentConfig, DriverIds, StoreAgent};
use tessera_placement::local::LocalPdClient;
use tessera_placement::metadata::Founding;
use tessera_placement::proto::{RegionRoute, RegisterStoreRequest, StoreState, StoreView};
use tessera_placement::schedulers::SchedulerConfig;
use tessera_placement::{DriverConfig, PdClient, PdError, PlacementDriver};

const WAIT: Duration = Duration::from_secs(60);

/// One cluster at a time: each runs a dozen threads, and two cores shared by several
/// clusters would stretch every timeout.
static ONE_AT_A_TIME: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

struct Node {
    store: Arc<Store>,
    agent: StoreAgent,
    _dir: tempfile::TempDir,
}

struct Cluster {
    pd_transport: LocalTransport,
    drivers: BTreeMap<u64, Arc<PlacementDriver>>,
    _pd_dirs: Vec<tempfile::TempDir>,
    pd: Arc<LocalPdClient>,
    transport: LocalTransport,
    nodes: BTreeMap<u64, Node>,
}

fn store_config(store_id: u64) -> StoreConfig {
    StoreConfig {
        workers: 2,
        tick_interval: Duration::from_millis(10),
        hibernate_after_ticks: 30,
        split_check_interval_ticks: 10,
        split_max_keys: 100,
        ..StoreConfig::new(store_id)
    }
}

/// A founding member's config; members are addressed as `pd-{id}` (the in-process
/// transport routes by id, but a driver records every member's address).
fn driver_config(member_id: u64, members: Vec<u64>) -> DriverConfig {
    DriverConfig {
        member_addresses: members.iter().map(|&id| (id, format!("pd-{id}"))).collect(),
        schedulers: SchedulerConfig { down_grace: Duration::from_millis(500), ..SchedulerConfig::default() },
        store_down_after: Duration::from_secs(1),
        operator_timeout: Duration::from_secs(30),
        tick_interval: Duration::from_millis(20),
        schedule_interval: Duration::from_millis(50),
        raft_tick_interval: Duration::from_millis(10),
        raft_election_ticks: 20,
        ..DriverConfig::new(member_id, members)
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

impl Cluster {
    fn start(drivers: u64, stores: usize) -> Cluster {
        let members: Vec<u64> = (1..=drivers).collect();
        let pd_transport = LocalTransport::new();
        let pd = Arc::new(LocalPdClient::new());
        let mut cluster = Cluster {
            pd_transport,
            drivers: BTreeMap::new(),
            _pd_dirs: Vec::new(),
            pd,
            transport: LocalTransport::new(),
            nodes: BTreeMap::new(),
        };
        for &member in &members {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let driver = PlacementDriver::open(
                dir.path(),
                driver_config(member, members.clone()),
                Arc::new(cluster.pd_transport.clone()),
            )
            .expect("a driver replica opens");
            cluster.pd_transport.register(member, driver.sink());
            let driver = Arc::new(driver);
            cluster.pd.add(member, driver.clone());
            cluster.drivers.insert(member, driver);
            cluster._pd_dirs.push(dir);
        }
        for _ in 0..stores {
            cluster.add_store();
        }
        cluster
    }

    fn add_store(&mut self) -> u64 {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let address = format!("store-{}", self.nodes.len() + 1);
        let request = RegisterStoreRequest { store_id: 0, address, ..Default::default() };
        let store_id = self.pd.register_store(request).expect("the store registers").store_id;
        self.open_store(store_id, dir);
        store_id
    }

    /// Opens store `store_id` (registered already) on `dir`, with its agent.
    fn open_store(&mut self, store_id: u64, dir: tempfile::TempDir) {
        let pd: Arc<dyn PdClient> = self.pd.clone();
        let ids = Arc::new(DriverIds::new());
        let store = Store::open_with_ids(
            dir.path(),
            store_config(store_id),
            Arc::new(self.transport.clone()),
            Some(ids.clone()),
        )
        .expect("the store opens");
        self.transport.register(store_id, store.sink());
        let store = Arc::new(store);
        let config = AgentConfig {
            heartbeat_interval: Duration::from_millis(50),
            step_retry_interval: Duration::from_millis(500),
        };
        let agent = StoreAgent::start(store.clone(), pd, ids, config).expect("the agent starts");
        self.nodes.insert(store_id, Node { store, agent, _dir: dir });
    }

    /// Stops a store as a crash would look to the others: it goes silent.
    fn kill_store(&mut self, store_id: u64) {
        drop(self.stop_store(store_id));
    }

    /// Stops a store, keeping its data directory for a restart.
    fn stop_store(&mut self, store_id: u64) -> Option<tempfile::TempDir> {
        self.transport.unregister(store_id);
        let node = self.nodes.remove(&store_id)?;
        node.agent.stop();
        drop(node.store);
        Some(node._dir)
    }

    /// The replicas a store holds, by region: its peer id, from what it persisted.
    fn replicas_on(&self, store_id: u64) -> BTreeMap<u64, u64> {
        use tessera_engine::proto::metadata::PeerState;
        let Some(node) = self.nodes.get(&store_id) else { return BTreeMap::new() };
        region_states(&node.store)
            .into_iter()
            .filter(|(_, state)| state.state != PeerState::Tombstone as i32)
            .map(|(region_id, state)| (region_id, state.peer_id))
            .collect()
    }

    fn serving_driver(&self) -> Option<u64> {
        self.drivers.iter().find(|(_, d)| d.is_serving()).map(|(id, _)| *id)
    }

    /// Starts a driver replica that joins the running driver through its leader.
    fn join_driver(&mut self) -> u64 {
        let address = format!("pd-{}", self.drivers.len() + 1);
        let mut member = 0;
        self.wait_for("the leader to add a member", |c| {
            let leader = c.serving_driver().ok_or("no serving leader")?;
            member = c.drivers[&leader].add_member(&address, &address).map_err(|e| e.to_string())?.0;
            Ok(())
        });
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = DriverConfig { founding: Founding::Joined, ..driver_config(member, Vec::new()) };
        let driver = PlacementDriver::open(dir.path(), config, Arc::new(self.pd_transport.clone()))
            .expect("a joining replica opens");
        self.pd_transport.register(member, driver.sink());
        let driver = Arc::new(driver);
        self.pd.add(member, driver.clone());
        self.drivers.insert(member, driver);
        self._pd_dirs.push(dir);
        member
    }

    fn kill_driver(&mut self, member: u64) {
        self.pd_transport.unregister(member);
        self.pd.remove(member);
        self.drivers.remove(&member);
    }

    fn route(&self, key: &[u8]) -> Result<(RegionRoute, u64, u64, RegionEpoch), String> {
        let route = self.pd.region_by_key(key).map_err(|e| e.to_string())?;
        let region = route.region.clone().ok_or("a route without its region")?;
        let leader = route.leader.ok_or("no leader known yet")?;
        Ok((route, region.id, leader.store_id, region.epoch.unwrap_or_default()))
    }

    /// Writes `keys` (all in one region, or one by one where they are not), retrying
    /// through leader changes and splits.
    fn put_all(&self, keys: &[usize]) {
        let deadline = Instant::now() + WAIT;
        let mut pending: Vec<usize> = keys.to_vec();
        while let Some(&first) = pending.first() {
            assert!(Instant::now() < deadline, "writes did not complete; {} left", pending.len());
            let attempt = (|| -> Result<usize, String> {
                let (route, region_id, leader, epoch) = self.route(&key(first))?;
                let region = route.region.ok_or("no region")?;
                let batch: Vec<usize> = pending
                    .iter()
                    .copied()
                    .take_while(|&i| KeyRange::of(&region).contains(&key(i)))
                    .collect();
                let writes = batch
                    .iter()
                    .map(|&i| Write { kind: Some(write::Kind::Put(Put { key: key(i), value: value(i) })) })
                    .collect();
                let node = self.nodes.get(&leader).ok_or("leader store is gone")?;
                node.store
                    .write(region_id, epoch, writes)
                    .recv_timeout(Duration::from_secs(5))
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                Ok(batch.len())
            })();
            match attempt {
                Ok(done) => {
                    pending.drain(..done);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn get(&self, i: usize) -> Result<Option<Vec<u8>>, String> {
        let (_, region_id, leader, epoch) = self.route(&key(i))?;
        let node = self.nodes.get(&leader).ok_or("leader store is gone")?;
        match node
            .store
            .read(region_id, epoch, ReadRequest::Get { key: key(i) })
            .recv_timeout(Duration::from_secs(5))
            .map_err(|e| e.to_string())?
        {
            Ok(ReadResponse::Value(value)) => Ok(value),
            Ok(other) => Err(format!("a get answered {other:?}")),
            Err(StoreError::NotLeader { .. }) => Err("not leader".into()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Every key in `0..count` reads back its value.
    fn assert_all_present(&self, count: usize) {
        for i in 0..count {
            let deadline = Instant::now() + WAIT;
            loop {
                match self.get(i) {
                    Ok(found) => {
                        assert_eq!(found, Some(value(i)), "key {i} lost or wrong");
                        break;
                    }
                    Err(error) => {
                        assert!(Instant::now() < deadline, "key {i} unreadable: {error}");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }

    fn regions(&self) -> Vec<RegionRoute> {
        self.pd.scan_regions(b"", b"", 0).unwrap_or_default()
    }

    fn stores(&self) -> Vec<StoreView> {
        self.pd.stores().unwrap_or_default()
    }

    /// The regions tile the key space, each with `replicas` voters on live stores and a
    /// known leader.
    fn healthy(&self, replicas: usize) -> Result<usize, String> {
        let regions = self.regions();
        let mut expected_start: Vec<u8> = Vec::new();
        for route in &regions {
            let region = route.region.as_ref().ok_or("a route without a region")?;
            if region.start_key != expected_start {
                return Err(format!("gap or overlap before region {}", region.id));
            }
            expected_start = region.end_key.clone();
            let stores: BTreeSet<u64> = region.peers.iter().map(|p| p.store_id).collect();
            if region.peers.len() != replicas || stores.len() != replicas {
                return Err(format!("region {} has peers {:?}", region.id, region.peers));
            }
            if let Some(dead) = stores.iter().find(|s| !self.nodes.contains_key(s)) {
                return Err(format!("region {} keeps a peer on dead store {dead}", region.id));
            }
            if route.leader.is_none() {
                return Err(format!("region {} has no leader", region.id));
            }
        }
        if !expected_start.is_empty() || regions.is_empty() {
            return Err("the regions do not reach the end of the key space".into());
        }
        Ok(regions.len())
    }

    fn wait_for(&self, what: &str, mut check: impl FnMut(&Cluster) -> Result<(), String>) {
        let deadline = Instant::now() + WAIT;
        loop {
            match check(self) {
                Ok(()) => return,
                Err(error) if Instant::now() >= deadline => {
                    self.dump();
                    panic!("timed out waiting for {what}: {error}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Prints what every live store holds (region states as persisted, and its peers'
    /// view), so that a timed-out wait shows why.
    fn dump(&self) {
        eprintln!("operators in flight: {:?}", self.pd.operators());
        for (store_id, node) in &self.nodes {
            for (region_id, state) in region_states(&node.store) {
                let region = state.region.unwrap_or_default();
                let status = node.store.status(region_id);
                eprintln!(
                    "store {store_id} region {region_id} state {} peer {} [{}, {}) peers {:?} {:?} \
                     leader {:?} applied {:?}",
                    state.state,
                    state.peer_id,
                    String::from_utf8_lossy(&region.start_key),
                    String::from_utf8_lossy(&region.end_key),
                    region.peers.iter().map(|p| (p.id, p.store_id, p.role)).collect::<Vec<_>>(),
                    region.epoch,
                    status.as_ref().map(|s| s.leader_peer_id),
                    status.as_ref().map(|s| s.applied_index),
                );
            }
        }
    }

    fn balanced(&self, region_tolerance: f64, leader_tolerance: f64) -> Result<(), String> {
        let stores: Vec<StoreView> =
            self.stores().into_iter().filter(|s| s.state == StoreState::Up as i32).collect();
        if stores.len() != self.nodes.len() {
            return Err(format!("{} stores up, {} running", stores.len(), self.nodes.len()));
        }
        let n = stores.len() as f64;
        let region_mean = stores.iter().map(|s| s.region_count).sum::<u64>() as f64 / n;
        let leader_mean = stores.iter().map(|s| s.leader_count).sum::<u64>() as f64 / n;
        let counts: Vec<(u64, u64, u64)> = stores
            .iter()
            .map(|s| (s.store.as_ref().map_or(0, |r| r.id), s.region_count, s.leader_count))
            .collect();
        for &(id, regions, leaders) in &counts {
            if (regions as f64 - region_mean).abs() > region_tolerance
                || (leaders as f64 - leader_mean).abs() > leader_tolerance
            {
                return Err(format!("store {id} off the mean: (store, regions, leaders) {counts:?}"));
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let stores: Vec<u64> = self.nodes.keys().copied().collect();
        for store_id in stores {
            self.kill_store(store_id);
        }
    }
}

/// Every region state a store persisted (tombstones included), by region id.
fn region_states(store: &Store) -> Vec<(u64, tessera_engine::proto::metadata::RegionLocalState)> {
    use tessera_engine::storage::{Cf, keys};
    let engine = store.engine();
    let Ok(meta) = engine.cf(Cf::Meta) else { return Vec::new() };
    engine
        .db()
        .iterator_cf(meta, rocksdb::IteratorMode::Start)
        .flatten()
        .filter_map(|(key, value)| {
            let region_id = keys::region_id_of_state_key(&key)?;
            let state =
                <tessera_engine::proto::metadata::RegionLocalState as prost::Message>::decode(value.as_ref())
                    .ok()?;
            Some((region_id, state))
        })
        .collect()
}

/// Loads `count` keys and waits until they split into at least `min_regions` healthy
/// regions.
fn load(cluster: &Cluster, count: usize, min_regions: usize) {
    let keys: Vec<usize> = (0..count).collect();
    for chunk in keys.chunks(50) {
        cluster.put_all(chunk);
    }
    cluster.wait_for("the load to split into healthy regions", |c| {
        let regions = c.healthy(3)?;
        if regions < min_regions { Err(format!("{regions} regions")) } else { Ok(()) }
    });
}

#[test]
fn a_cluster_bootstraps_and_splits_into_many_regions_with_three_replicas() {
    let _serial = ONE_AT_A_TIME.lock();
    let cluster = Cluster::start(3, 3);
    cluster.wait_for("the first region", |c| c.healthy(3).map(|_| ()));
    let first = cluster.regions();
    assert_eq!(first.len(), 1, "one region covers the key space at first");
    load(&cluster, 3000, 10);
    cluster.assert_all_present(3000);
    // Every store holds a replica of every region: three stores, three replicas.
    let regions = cluster.regions().len() as u64;
    for store in cluster.stores() {
        assert_eq!(store.region_count, regions, "store {:?}", store.store);
    }
}

#[test]
fn added_stores_receive_regions_and_leaders_until_balanced() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut cluster = Cluster::start(1, 3);
    load(&cluster, 1200, 6);
    cluster.add_store();
    cluster.add_store();
    let config = SchedulerConfig::default();
    cluster.wait_for("balance within the tolerances", |c| {
        c.healthy(3)?;
        c.balanced(config.region_tolerance as f64, config.leader_tolerance as f64)
    });
    let stores = cluster.stores();
    assert!(stores.iter().all(|s| s.region_count > 0 && s.leader_count > 0), "{stores:?}");
    cluster.assert_all_present(1200);
}

#[test]
fn a_killed_store_is_replaced_on_the_survivors() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut cluster = Cluster::start(1, 4);
    load(&cluster, 1200, 6);
    let victim = *cluster.nodes.keys().max().expect("four stores");
    cluster.wait_for("the victim to hold replicas", |c| {
        let regions = c.regions();
        let on_victim =
            |r: &&RegionRoute| r.region.iter().any(|g| g.peers.iter().any(|p| p.store_id == victim));
        if regions.iter().any(|r| on_victim(&r)) {
            Ok(())
        } else {
            Err("no replica on the victim yet".into())
        }
    });
    cluster.kill_store(victim);
    cluster.wait_for("every region to regain three replicas on the survivors", |c| c.healthy(3).map(|_| ()));
    let down = cluster.stores().into_iter().find(|s| s.store.as_ref().is_some_and(|r| r.id == victim));
    assert_eq!(down.map(|s| s.state), Some(StoreState::Down as i32), "the killed store is down");
    cluster.assert_all_present(1200);
}

/// A store is down while its replicas are replaced on the others, then comes back with
/// them on disk. They missed their own removal: each must be found (it knows no leader)
/// and destroyed against the driver's view of its region, within a minute, its data
/// deleted; the store then takes new replicas, which apply.
#[test]
fn a_store_back_after_its_replicas_were_replaced_destroys_them_and_takes_new_ones() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut cluster = Cluster::start(1, 4);
    load(&cluster, 1200, 6);
    let victim = *cluster.nodes.keys().max().expect("four stores");
    cluster.wait_for("the victim to hold replicas", |c| {
        if c.replicas_on(victim).is_empty() { Err("none yet".into()) } else { Ok(()) }
    });
    let dir = cluster.stop_store(victim).expect("the victim runs");
    cluster.wait_for("every region to regain three replicas on the survivors", |c| c.healthy(3).map(|_| ()));
    cluster.open_store(victim, dir);
    let stale: BTreeMap<u64, u64> = cluster.replicas_on(victim);
    assert!(!stale.is_empty(), "the victim came back with its replicas on disk");

    let started = Instant::now();
    cluster.wait_for("every stale replica on the victim to be destroyed", |c| {
        let now = c.replicas_on(victim);
        let left: Vec<u64> = stale
            .iter()
            .filter(|(region, peer)| now.get(region) == Some(peer))
            .map(|(&region, _)| region)
            .collect();
        if left.is_empty() { Ok(()) } else { Err(format!("stale replicas of regions {left:?} remain")) }
    });
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "stale replicas lived {took:?}");
    // Every replica the victim holds now is one the driver knows: a new one.
    cluster.wait_for("the victim to take new replicas that the driver knows", |c| {
        let known: BTreeMap<u64, u64> = c
            .regions()
            .iter()
            .filter_map(|route| route.region.as_ref())
            .filter_map(|r| r.peers.iter().find(|p| p.store_id == victim).map(|p| (r.id, p.id)))
            .collect();
        let held = c.replicas_on(victim);
        if known.is_empty() {
            return Err("no replica placed on the victim yet".into());
        }
        if held != known {
            return Err(format!("the victim holds {held:?}, the driver places {known:?}"));
        }
        Ok(())
    });
    cluster.wait_for("the victim's new replicas to apply", |c| {
        let node = &c.nodes[&victim];
        let missing = (0..1200).filter(|&i| {
            let Ok((route, _, _, _)) = c.route(&key(i)) else { return true };
            let on_victim = route.region.iter().any(|r| r.peers.iter().any(|p| p.store_id == victim));
            let data = node
                .store
                .engine()
                .get(tessera_engine::storage::Cf::Data, &tessera_engine::storage::keys::data_key(&key(i)));
            on_victim && data.ok().flatten() != Some(value(i))
        });
        match missing.count() {
            0 => Ok(()),
            count => Err(format!("{count} keys missing on the victim")),
        }
    });
    cluster.assert_all_present(1200);
}

#[test]
fn a_killed_driver_leader_hands_over_and_scheduling_continues() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut cluster = Cluster::start(3, 3);
    load(&cluster, 1200, 6);
    let ids_before = cluster.pd.alloc_ids(5).expect("ids");
    cluster.add_store();
    cluster.add_store();
    // Kill the leader while the moves to the new stores are under way.
    cluster.wait_for("operators in flight", |c| {
        let operators = c.pd.operators().map_err(|e| e.to_string())?;
        // Ended operators are listed too (with their outcome): only one under way counts.
        if operators.iter().any(|operator| operator.outcome.is_empty()) {
            Ok(())
        } else {
            Err("no operator under way yet".into())
        }
    });
    let old = cluster.serving_driver().expect("a serving leader");
    cluster.kill_driver(old);
    cluster.wait_for("another driver to take over", |c| {
        c.serving_driver().filter(|&id| id != old).map(|_| ()).ok_or_else(|| "no leader".to_string())
    });
    let leader = cluster.serving_driver().expect("a new leader");
    let follower = cluster.drivers.keys().copied().find(|&id| id != leader).expect("a follower");
    // A follower redirects to the leader, once it has heard from it.
    cluster.wait_for("a follower to name the new leader", |c| match c.drivers[&follower].stores() {
        Err(PdError::NotLeader { leader: Some(named) }) if named == leader => Ok(()),
        Err(PdError::NotLeader { leader: named }) => Err(format!("the follower still names {named:?}")),
        other => panic!("a follower must redirect to the leader, answered {other:?}"),
    });
    let ids_after = cluster.pd.alloc_ids(5).expect("ids from the new leader");
    assert!(ids_after.iter().min() > ids_before.iter().max(), "ids are never handed out twice");
    let config = SchedulerConfig::default();
    cluster.wait_for("balance under the new leader", |c| {
        c.healthy(3)?;
        c.balanced(config.region_tolerance as f64, config.leader_tolerance as f64)
    });
    cluster.assert_all_present(1200);
}

#[test]
fn an_operator_split_and_lookups_by_key_range_and_id() {
    let _serial = ONE_AT_A_TIME.lock();
    let cluster = Cluster::start(1, 3);
    cluster.wait_for("the first region", |c| c.healthy(3).map(|_| ()));
    cluster.pd.split_region(b"m").expect("the split is accepted");
    cluster.wait_for("the split", |c| {
        let regions = c.regions();
        let starts: Vec<Vec<u8>> =
            regions.iter().filter_map(|r| r.region.as_ref()).map(|r| r.start_key.clone()).collect();
        if starts == vec![Vec::new(), b"m".to_vec()] {
            c.healthy(3).map(|_| ())
        } else {
            Err(format!("{starts:?}"))
        }
    });
    let right = cluster.pd.region_by_key(b"q").expect("a region holds q");
    let right_region = right.region.expect("its descriptor");
    assert_eq!(right_region.start_key, b"m");
    let by_id = cluster.pd.region_by_id(right_region.id).expect("found by id");
    assert_eq!(by_id.region.as_ref(), Some(&right_region));
    let left_only = cluster.pd.scan_regions(b"a", b"c", 0).expect("a scan");
    assert_eq!(left_only.len(), 1);
    assert!(matches!(cluster.pd.region_by_id(999_999), Err(PdError::UnknownRegion(999_999))));
    assert!(matches!(cluster.pd.scan_regions(b"z", b"a", 0), Err(PdError::InvalidArgument(_))));
    assert!(matches!(cluster.pd.alloc_ids(0), Err(PdError::InvalidArgument(_))));
    let duplicate = RegisterStoreRequest { store_id: 0, address: "store-1".into(), ..Default::default() };
    assert!(matches!(cluster.pd.register_store(duplicate), Err(PdError::DuplicateAddress { .. })));
}

#[test]
fn replicas_join_a_running_driver_become_voters_and_take_over() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut cluster = Cluster::start(1, 3);
    load(&cluster, 300, 1);
    let ids_before = cluster.pd.alloc_ids(5).expect("ids");
    let first = cluster.join_driver();
    let second = cluster.join_driver();
    assert!(first > 1 && second > first, "member ids grow: {first}, {second}");
    cluster.wait_for("both new replicas to be voters", |c| {
        let leader = c.serving_driver().ok_or("no serving leader")?;
        let members = c.drivers[&leader].members().map_err(|e| e.to_string())?;
        let voters: BTreeSet<u64> = members.iter().filter(|m| m.voter).map(|m| m.id).collect();
        if voters == BTreeSet::from([1, first, second]) {
            Ok(())
        } else {
            Err(format!("members {members:?}"))
        }
    });
    // A join retried with its token names the same member; another replica claiming a
    // member's address (one that lost its data) is refused.
    let leader = cluster.serving_driver().expect("a serving leader");
    let retried = cluster.drivers[&leader].add_member("pd-2", "pd-2").expect("a retried join");
    assert_eq!(retried.0, first, "a retried join gets its first id");
    match cluster.drivers[&leader].add_member("pd-2", "another token") {
        Err(PdError::InvalidArgument(invalid)) => assert!(invalid.to_string().contains("pd-2"), "{invalid}"),
        other => panic!("a second replica at a member's address must be refused, got {other:?}"),
    }
    // The founding replica goes: the two that joined hold a quorum and the metadata.
    cluster.kill_driver(1);
    cluster.wait_for("a replica that joined to take over", |c| {
        c.serving_driver().map(|_| ()).ok_or_else(|| "no leader".to_string())
    });
    let ids_after = cluster.pd.alloc_ids(5).expect("ids from the new leader");
    assert!(ids_after.iter().min() > ids_before.iter().max(), "ids are never handed out twice");
    cluster.wait_for("the new leader to know every store", |c| {
        let up = c.stores().iter().filter(|s| s.state == StoreState::Up as i32).count();
        if up == 3 { Ok(()) } else { Err(format!("{up} stores up")) }
    });
    cluster.assert_all_present(300);
}

#[test]
fn operators_asked_by_hand_transfer_a_leader_and_move_a_replica() {
    let _serial = ONE_AT_A_TIME.lock();
    let cluster = Cluster::start(1, 4);
    load(&cluster, 200, 1);
    cluster.wait_for("the first region on three stores", |c| c.healthy(3).map(|_| ()));
    let route = cluster.pd.region_by_key(b"").expect("a region holds the empty key");
    let region = route.region.clone().expect("its descriptor");
    let leader_store = route.leader.expect("a leader").store_id;
    let follower = region.peers.iter().map(|p| p.store_id).find(|&s| s != leader_store).expect("a follower");
    let outsider = cluster.nodes.keys().copied().find(|s| region.peers.iter().all(|p| p.store_id != *s));
    let outsider = outsider.expect("four stores, three replicas: one store without one");

    cluster.pd.transfer_leader(region.id, follower).expect("the transfer is accepted");
    cluster.wait_for("the leadership to move", |c| match c.pd.region_by_id(region.id) {
        Ok(RegionRoute { leader: Some(leader), .. }) if leader.store_id == follower => Ok(()),
        other => Err(format!("{other:?}")),
    });
    // The leader's own replica moves: the operator hands leadership away first.
    cluster.pd.move_peer(region.id, follower, outsider).expect("the move is accepted");
    cluster.wait_for("the replica to move", |c| {
        let route = c.pd.region_by_id(region.id).map_err(|e| e.to_string())?;
        let stores: BTreeSet<u64> =
            route.region.iter().flat_map(|r| r.peers.iter().map(|p| p.store_id)).collect();
        if stores.contains(&outsider) && !stores.contains(&follower) && route.leader.is_some() {
            c.healthy(3).map(|_| ())
        } else {
            Err(format!("peers on stores {stores:?}"))
        }
    });
    cluster.assert_all_present(200);

    let now = cluster.pd.region_by_id(region.id).expect("the region").region.expect("its descriptor");
    let holder = now.peers[0].store_id;
    match cluster.pd.move_peer(region.id, follower, outsider) {
        Err(PdError::InvalidArgument(invalid)) => {
            assert!(invalid.to_string().contains("no replica"), "{invalid}")
        }
        other => panic!("moving a replica the store no longer holds must be refused, got {other:?}"),
    }
    match cluster.pd.transfer_leader(region.id, follower) {
        Err(PdError::InvalidArgument(invalid)) => {
            assert!(invalid.to_string().contains("no voter"), "{invalid}")
        }
        other => panic!("leadership goes only to a voter, got {other:?}"),
    }
    assert!(matches!(cluster.pd.transfer_leader(999_999, holder), Err(PdError::UnknownRegion(999_999))));
    assert!(matches!(cluster.pd.move_peer(region.id, holder, 999_999), Err(PdError::UnknownStore(999_999))));
}

#[test]
fn a_gc_pass_never_fences_above_a_hold_and_holds_outlive_the_leader() {
    use tessera_engine::timestamp::Timestamp;
    let _serial = ONE_AT_A_TIME.lock();
    let mut cluster = Cluster::start(3, 1);
    cluster
        .wait_for("a serving driver", |c| c.serving_driver().map(|_| ()).ok_or_else(|| "none".to_string()));
    let leader = cluster.serving_driver().expect("a leader");
    let driver = cluster.drivers[&leader].clone();
    // A pass chooses its candidate; a hold below it is taken before the pass fences.
    let candidate = driver.gc_safe_point_allowed().expect("a candidate");
    let held = Timestamp::from_u64(candidate.as_u64() - (1000 << 18));
    let minute = Duration::from_secs(60);
    assert_eq!(driver.hold_gc("watches", held, minute).expect("an answer"), (true, 0));
    let fenced = driver.begin_gc_pass(candidate).expect("the pass begins");
    assert!(fenced < held, "the pass fences at {fenced}, not above the hold at {held}");
    let (taken, floor) = driver.hold_gc("late", fenced, minute).expect("an answer");
    assert!(!taken && floor == fenced.as_u64(), "a hold at the fence is refused (floor {floor})");
    // The next leader knows both the hold and the fence.
    cluster.kill_driver(leader);
    cluster.wait_for("another driver to take over", |c| {
        c.serving_driver().filter(|&id| id != leader).map(|_| ()).ok_or_else(|| "no leader".to_string())
    });
    let next = cluster.drivers[&cluster.serving_driver().expect("a leader")].clone();
    assert!(next.gc_safe_point_allowed().expect("a candidate") < held, "the hold outlived its leader");
    let (taken, floor) = next.hold_gc("late", fenced, minute).expect("an answer");
    assert!(!taken && floor >= fenced.as_u64(), "the fence outlived its leader (floor {floor})");
    // Released, the hold no longer holds anything back.
    next.hold_gc("watches", Timestamp::ZERO, Duration::ZERO).expect("released");
    assert!(next.gc_safe_point_allowed().expect("a candidate") > held);
}
