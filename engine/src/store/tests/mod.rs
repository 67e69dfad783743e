//! In-process clusters of real stores (threads, RocksDB in temporary directories, the
//! local transport). This file is the harness; the tests are by subject:
//! `replication.rs` (many regions, leader loss, catching up by snapshot, splits, moving
//! a peer, hibernation, hostile frames), `lease.rs` (leases on the store's clock) and
//! `lifecycle.rs` (how replicas come to exist and end), `liveness.rs` (failing over
//! hibernating regions) and `one_phase.rs` (when a leader takes one-phase commits).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::proto::{
    command::{CompareAndSwap, DeleteRange, Put, write},
    metadata::{Peer, PeerRole},
};
use std::sync::atomic::Ordering::SeqCst;

use crate::failpoint::{self, Action, points};
use crate::raft::proto::ConfChangeType;

mod feed;
mod gc;
mod lease;
mod lifecycle;
mod liveness;
mod one_phase;
mod replication;

const WAIT: Duration = Duration::from_secs(20);

fn test_config(store_id: u64) -> StoreConfig {
    StoreConfig {
        workers: 2,
        tick_interval: Duration::from_millis(10),
        hibernate_after_ticks: 30,
        ..StoreConfig::new(store_id)
    }
}

fn region_key(i: usize) -> Vec<u8> {
    format!("r{i:05}").into_bytes()
}

struct Cluster {
    transport: LocalTransport,
    dirs: BTreeMap<u64, tempfile::TempDir>,
    stores: BTreeMap<u64, Store>,
    configure: fn(&mut StoreConfig),
    ids: Option<Arc<dyn IdAllocator>>,
    /// Stores whose clock the test controls; the others run on the real one.
    clocks: BTreeMap<u64, Arc<crate::clock::ControlledClock>>,
}

/// Ids from a counter, as the placement driver will hand them out.
struct CountingIds(std::sync::atomic::AtomicU64);

impl IdAllocator for CountingIds {
    fn allocate(&self, count: usize) -> Result<Vec<u64>, IdsExhausted> {
        let first = self.0.fetch_add(count as u64, std::sync::atomic::Ordering::SeqCst);
        Ok((first..first + count as u64).collect())
    }
}

impl Cluster {
    fn new(stores: u64, configure: fn(&mut StoreConfig)) -> Cluster {
        Cluster::new_with_ids(stores, configure, None)
    }

    fn new_with_ids(
        stores: u64,
        configure: fn(&mut StoreConfig),
        ids: Option<Arc<dyn IdAllocator>>,
    ) -> Cluster {
        Cluster::build(stores, configure, ids, BTreeMap::new())
    }

    fn build(
        stores: u64,
        configure: fn(&mut StoreConfig),
        ids: Option<Arc<dyn IdAllocator>>,
        clocks: BTreeMap<u64, Arc<crate::clock::ControlledClock>>,
    ) -> Cluster {
        let mut cluster = Cluster {
            transport: LocalTransport::new(),
            dirs: BTreeMap::new(),
            stores: BTreeMap::new(),
            configure,
            ids,
            clocks,
        };
        for store_id in 1..=stores {
            cluster.dirs.insert(store_id, tempfile::tempdir().expect("a temporary directory"));
            cluster.start(store_id);
        }
        cluster
    }

    /// `count` regions covering the key space, each with a peer on stores 1 to 3.
    fn with_regions(count: usize, configure: fn(&mut StoreConfig)) -> Cluster {
        Cluster::with_regions_and_ids(count, configure, None)
    }

    fn with_regions_and_ids(
        count: usize,
        configure: fn(&mut StoreConfig),
        ids: Option<Arc<dyn IdAllocator>>,
    ) -> Cluster {
        Cluster::with_regions_on(Cluster::new_with_ids(3, configure, ids), count)
    }

    /// `count` regions over three stores, store `store_id` on a clock the test controls.
    fn with_regions_and_clock(
        count: usize,
        store_id: u64,
        clock: Arc<crate::clock::ControlledClock>,
    ) -> Cluster {
        let clocks = BTreeMap::from([(store_id, clock)]);
        Cluster::with_regions_on(Cluster::build(3, |_| {}, None, clocks), count)
    }

    /// Region 1 over the whole key space on stores 1 to 3 of a four-store cluster, with
    /// `keys` keys written.
    fn one_region_on_three_of_four(keys: usize) -> Cluster {
        let cluster = Cluster::new(4, |_| {});
        let region = Region {
            id: 1,
            start_key: Vec::new(),
            end_key: Vec::new(),
            epoch: Some(RegionEpoch { conf_version: 1, version: 1 }),
            peers: (1..=3).map(|store| Peer { id: 10 + store, store_id: store, role: 0 }).collect(),
        };
        for store_id in 1..=3 {
            cluster.stores[&store_id].bootstrap_region(&region).expect("bootstrap");
        }
        cluster.stores[&1].campaign(1);
        for i in 0..keys {
            cluster.write(1, vec![put(format!("k{i:02}").as_bytes(), b"v")]);
        }
        cluster
    }

    fn with_regions_on(cluster: Cluster, count: usize) -> Cluster {
        for i in 0..count {
            let region = Region {
                id: i as u64 + 1,
                start_key: if i == 0 { Vec::new() } else { region_key(i) },
                end_key: if i + 1 == count { Vec::new() } else { region_key(i + 1) },
                epoch: Some(RegionEpoch { conf_version: 1, version: 1 }),
                peers: (1..=3)
                    .map(|store| Peer { id: (i as u64 + 1) * 10 + store, store_id: store, role: 0 })
                    .collect(),
            };
            for store in cluster.stores.values() {
                store.bootstrap_region(&region).expect("bootstrap");
            }
            cluster.stores[&1].campaign(region.id);
        }
        cluster
    }

    fn start(&mut self, store_id: u64) {
        let mut config = test_config(store_id);
        (self.configure)(&mut config);
        if let Some(clock) = self.clocks.get(&store_id) {
            config.clock = clock.clone();
        }
        let transport = Arc::new(self.transport.clone());
        let store = Store::open_with_ids(self.dirs[&store_id].path(), config, transport, self.ids.clone())
            .expect("open");
        self.transport.register(store_id, store.sink());
        self.stores.insert(store_id, store);
    }

    fn stop(&mut self, store_id: u64) {
        self.transport.unregister(store_id);
        if let Some(store) = self.stores.remove(&store_id) {
            store.shutdown();
        }
        for store in self.stores.values() {
            store.on_store_down(store_id);
        }
    }

    fn leader(&self, region_id: u64) -> Option<(u64, PeerStatus)> {
        self.stores
            .iter()
            .find_map(|(&id, store)| store.status(region_id).filter(|s| s.is_leader).map(|s| (id, s)))
    }

    fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&Cluster) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Writes through the region's leader, retrying while leadership moves.
    fn write(&self, region_id: u64, writes: Vec<Write>) -> Vec<WriteResult> {
        self.wait_for(&format!("a write to region {region_id}"), |cluster| {
            let (store, status) = cluster.leader(region_id)?;
            let epoch = region::epoch(&status.region);
            match cluster.stores[&store].write(region_id, epoch, writes.clone()).recv_timeout(WAIT) {
                Ok(Ok(responses)) => Some(responses),
                Ok(Err(
                    StoreError::NotLeader { .. } | StoreError::ProposalDropped | StoreError::Region(_),
                )) => None,
                Ok(Err(error)) => panic!("write to region {region_id} failed: {error}"),
                Err(_) => None,
            }
        })
    }

    fn read(&self, region_id: u64, request: ReadRequest) -> ReadResponse {
        self.wait_for(&format!("a read of region {region_id}"), |cluster| {
            let (store, status) = cluster.leader(region_id)?;
            let epoch = region::epoch(&status.region);
            match cluster.stores[&store].read(region_id, epoch, request.clone()).recv_timeout(WAIT) {
                Ok(Ok(response)) => Some(response),
                Ok(Err(StoreError::NotLeader { .. } | StoreError::Region(_))) => None,
                Ok(Err(error)) => panic!("read of region {region_id} failed: {error}"),
                Err(_) => None,
            }
        })
    }

    /// The value of transactional `key` at `read_ts`, as a read of it answered (a lock
    /// in the way is answered as is).
    fn txn_get(&self, region_id: u64, key: &[u8], read_ts: u64) -> ReadResponse {
        let request = ReadRequest::TxnGet {
            key: key.to_vec(),
            read_ts: crate::timestamp::Timestamp::from_u64(read_ts),
        };
        match self.read(region_id, request) {
            ReadResponse::Version(version) => ReadResponse::Value(version.map(|version| version.value)),
            other => other,
        }
    }

    fn get(&self, region_id: u64, key: &[u8]) -> Option<Vec<u8>> {
        match self.read(region_id, ReadRequest::Get { key: key.to_vec() }) {
            ReadResponse::Value(value) => value,
            other => panic!("a get answered {other:?}"),
        }
    }

    fn admin(&self, region_id: u64, request: AdminCommand) {
        self.wait_for(&format!("an admin command on region {region_id}"), |cluster| {
            let (store, status) = cluster.leader(region_id)?;
            let epoch = region::epoch(&status.region);
            match cluster.stores[&store].admin(region_id, epoch, request.clone()).recv_timeout(WAIT) {
                Ok(Ok(_)) => Some(()),
                Ok(Err(StoreError::Raft(crate::raft::Error::ConfChangeInProgress))) => None,
                Ok(Err(StoreError::NotLeader { .. } | StoreError::ProposalDropped)) => None,
                Ok(Err(error)) => panic!("admin command on region {region_id} failed: {error}"),
                Err(_) => None,
            }
        })
    }
}

fn put(key: &[u8], value: &[u8]) -> Write {
    Write { kind: Some(write::Kind::Put(Put { key: key.to_vec(), value: value.to_vec() })) }
}

fn data_on(store: &Store, key: &[u8]) -> Option<Vec<u8>> {
    store.engine().get(Cf::Data, &keys::data_key(key)).expect("engine read")
}

/// A region message of `region_id` from peer `from` on store 1 to peer `to` on store 2
/// over `[start, end)`.
fn region_message(
    region_id: u64,
    (from, to): (u64, u64),
    range: (&[u8], &[u8]),
    message: Option<crate::raft::proto::Message>,
) -> crate::proto::frame::RegionMessage {
    crate::proto::frame::RegionMessage {
        region_id,
        from_peer: Some(Peer { id: from, store_id: 1, role: 0 }),
        to_peer: Some(Peer { id: to, store_id: 2, role: 0 }),
        epoch: None,
        start_key: range.0.to_vec(),
        end_key: range.1.to_vec(),
        message,
    }
}

fn status_of(cluster: &Cluster, store: u64) -> PeerStatus {
    cluster.stores[&store].status(1).expect("the store holds region 1")
}
