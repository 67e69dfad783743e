//! A hostile-input harness on real processes: for a bounded time, every RPC of the
//! stores and of the driver (and etcd's Txn) gets random and adversarial messages:
//! mutations of valid requests (flipped bytes, truncations, fields repeated, names of
//! real and unknown regions, inverted ranges, limits at their maximum), gRPC bodies
//! whose length prefix claims gigabytes, deeply nested etcd transactions, and Raft
//! frames from a peer that does not exist. No node may crash, each node's resident
//! memory must stay under [`MAX_RESIDENT_BYTES`], and the cluster must serve afterwards.
//!
//! The cluster runs in the clear, so that forged Raft frames reach the engine (over TLS
//! only nodes may send them, see `security.rs`); their content may disturb the regions'
//! leadership, which is why the final check only asks that the cluster serves.
//! Every failure prints the seed; `HOSTILE_SEED=N` replays one.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, ONE_AT_A_TIME, wait_for_leader};
use prost::Message;
use tessera_engine::proto::command::{Put, Write, write};
use tessera_engine::proto::frame::{HeartbeatEntry, StoreFrame};
use tessera_server::proto::kv_client::KvClient;
use tessera_server::proto::pd_client::PdClient;
use tessera_server::proto::raft_transport_client::RaftTransportClient;
use tessera_server::proto::{
    BatchGetRequest, GetRequest, RegionByKeyRequest, RegionContext, ScanRegionsRequest, ScanRequest,
    TxnGetRequest, TxnRefreshRequest, TxnScanRequest, WriteRequest,
};

/// What each node may hold in memory while under attack: its working set here is tens
/// of MiB; a request that made it buffer a claimed length would take gigabytes.
const MAX_RESIDENT_BYTES: u64 = 1024 * 1024 * 1024;

/// How long the attack lasts.
const ATTACK: Duration = Duration::from_secs(20);

/// xorshift64*: enough randomness to vary the inputs, and replayable from its seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        (0..self.below(max + 1)).map(|_| self.next() as u8).collect()
    }
}

/// `seed`'s encoding, damaged a few times; the message it decodes to, if it does.
fn mutate<M: Message + Default>(seed: &M, random: &mut Random) -> Option<M> {
    let mut bytes = seed.encode_to_vec();
    for _ in 0..=random.below(3) {
        match random.below(5) {
            0 if !bytes.is_empty() => {
                let at = random.below(bytes.len());
                bytes[at] = random.next() as u8;
            }
            1 if !bytes.is_empty() => bytes.truncate(random.below(bytes.len())),
            2 => bytes.extend(random.bytes(32)),
            3 => bytes.extend(bytes.clone()),
            _ => {
                // A field of a random number holding up to 64 KiB.
                let field = 1 + random.below(7) as u64;
                let value = random.bytes(64 * 1024);
                prost::encoding::bytes::encode(field as u32, &value, &mut bytes);
            }
        }
    }
    M::decode(bytes.as_slice()).ok()
}

/// A key: empty, short, at the key limit or past it.
fn key(random: &mut Random) -> Vec<u8> {
    match random.below(4) {
        0 => Vec::new(),
        1 => random.bytes(16),
        2 => vec![b'k'; 8 * 1024],
        _ => vec![0xff; 8 * 1024 + 1],
    }
}

fn context(random: &mut Random, real: &[RegionContext]) -> Option<RegionContext> {
    match random.below(4) {
        0 => None,
        1 => Some(RegionContext { region_id: random.next(), epoch: None }),
        _ => real.get(random.below(real.len())).cloned(),
    }
}

/// One call of a random Kv method with a random request; the answer does not matter.
async fn attack_store(
    kv: &mut KvClient<tonic::transport::Channel>,
    random: &mut Random,
    real: &[RegionContext],
) {
    let context = context(random, real);
    let (start, end) = (key(random), key(random));
    let limit = if random.below(2) == 0 { u32::MAX } else { random.below(100) as u32 };
    let reverse = random.below(2) == 0;
    let timeout = Duration::from_secs(2);
    let _ = tokio::time::timeout(timeout, async {
        match random.below(7) {
            0 => drop(kv.get(GetRequest { context, key: key(random) }).await),
            1 => {
                let keys = (0..random.below(2000)).map(|_| key(random)).collect();
                drop(kv.batch_get(BatchGetRequest { context, keys }).await)
            }
            2 => drop(kv.scan(ScanRequest { context, start_key: start, end_key: end, limit, reverse }).await),
            3 => {
                let seed = WriteRequest {
                    context,
                    writes: vec![Write { kind: Some(write::Kind::Put(Put { key: start, value: end })) }],
                };
                if let Some(request) = mutate(&seed, random) {
                    drop(kv.write(request).await);
                }
            }
            4 => drop(kv.txn_get(TxnGetRequest { context, key: start, read_ts: random.next() }).await),
            5 => {
                let request = TxnScanRequest {
                    context,
                    start_key: start,
                    end_key: end,
                    limit,
                    reverse,
                    read_ts: random.next(),
                };
                drop(kv.txn_scan(request).await)
            }
            _ => {
                let request = TxnRefreshRequest {
                    context,
                    start_key: start,
                    end_key: end,
                    after_ts: random.next(),
                    up_to_ts: random.next(),
                    own_start_ts: random.next(),
                };
                drop(kv.txn_refresh(request).await)
            }
        }
    })
    .await;
}

async fn attack_driver(pd: &mut PdClient<tonic::transport::Channel>, random: &mut Random) {
    let timeout = Duration::from_secs(2);
    let _ = tokio::time::timeout(timeout, async {
        match random.below(3) {
            0 => drop(pd.region_by_key(RegionByKeyRequest { key: key(random) }).await),
            1 => {
                let request =
                    ScanRegionsRequest { start_key: key(random), end_key: key(random), limit: u32::MAX };
                drop(pd.scan_regions(request).await)
            }
            _ => {
                let seed = tessera_placement::proto::RegisterStoreRequest {
                    store_id: random.next(),
                    address: String::from_utf8_lossy(&random.bytes(300)).into_owned(),
                    ..Default::default()
                };
                if let Some(request) = mutate(&seed, random) {
                    drop(pd.register_store(request).await);
                }
            }
        }
    })
    .await;
}

/// Raft frames from store 999 (nobody) for real and unknown regions.
async fn attack_transport(address: &str, random: &mut Random, real: &[RegionContext]) {
    let Ok(Ok(mut transport)) = tokio::time::timeout(
        Duration::from_secs(2),
        RaftTransportClient::connect(format!("http://{address}")),
    )
    .await
    else {
        return;
    };
    let frames: Vec<StoreFrame> = (0..random.below(50))
        .map(|_| {
            let region_id = context(random, real).map_or(random.next(), |context| context.region_id);
            let heartbeat = HeartbeatEntry {
                region_id,
                from_peer_id: random.next(),
                to_peer_id: random.next(),
                term: random.next() % 1000,
                commit: random.next(),
                round: random.next(),
                ..HeartbeatEntry::default()
            };
            let seed = StoreFrame {
                from_store: 999,
                to_store: 0,
                heartbeats: vec![heartbeat],
                ..Default::default()
            };
            mutate(&seed, random).unwrap_or(seed)
        })
        .collect();
    let _ = tokio::time::timeout(Duration::from_secs(2), transport.stream(tokio_stream::iter(frames))).await;
}

/// A gRPC message whose length prefix claims 4 GiB, followed by a little data.
async fn lying_length(channel: tonic::transport::Channel, path: &str, random: &mut Random) {
    use tower::ServiceExt;
    let mut body = vec![0u8];
    body.extend(u32::MAX.to_be_bytes());
    body.extend(random.bytes(1024));
    let body = tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    let Ok(request) = http::Request::post(format!("http://tessera{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
    else {
        return;
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), channel.oneshot(request)).await;
}

/// An etcd Txn nested `depth` deep.
fn nested_txn(depth: usize) -> etcd_client::Txn {
    let mut txn = etcd_client::Txn::new().and_then([etcd_client::TxnOp::put("deep", "v", None)]);
    for _ in 0..depth {
        txn = etcd_client::Txn::new().and_then([etcd_client::TxnOp::txn(txn)]);
    }
    txn
}

fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

/// The node still runs, under the memory bound.
fn assert_alive_and_bounded(node: &mut common::Process, seed: u64) {
    let pid = node.child.id();
    let exited = node.child.try_wait().expect("the node's status");
    assert!(exited.is_none(), "seed {seed}: node {} (pid {pid}) exited: {exited:?}", node.address);
    let resident = resident_bytes(pid);
    assert!(resident > 0, "seed {seed}: no memory figure for pid {pid}");
    assert!(
        resident < MAX_RESIDENT_BYTES,
        "seed {seed}: node {} holds {resident} bytes, over {MAX_RESIDENT_BYTES}",
        node.address
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_crashes_no_node_and_bounds_its_memory() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = std::env::var("HOSTILE_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64)
    }) | 1;
    eprintln!("hostile input: seed {seed} (HOSTILE_SEED={seed} replays it)");
    let mut cluster = Cluster::start(3, 1_000_000);
    let etcd_store =
        cluster.start_store_with(3, "127.0.0.1:0", &["--etcd-listen".into(), "127.0.0.1:0".into()]);
    let client = cluster.client();
    wait_for_leader(&client).await;
    client.put(b"before", b"attack").await.expect("a put");
    let real: Vec<RegionContext> = client
        .pd()
        .scan_regions_async(b"", b"", 0)
        .await
        .expect("the regions")
        .into_iter()
        .filter_map(|route| route.region)
        .map(|region| RegionContext { region_id: region.id, epoch: region.epoch })
        .collect();
    let stores: Vec<String> = cluster.stores.iter().flatten().map(|store| store.address.clone()).collect();
    let pd = cluster.pd_address();
    let mut random = Random(seed);
    let deadline = Instant::now() + ATTACK;
    let mut calls = 0u64;
    let mut etcd = etcd_client::Client::connect([etcd_store.etcd.clone().expect("an etcd address")], None)
        .await
        .expect("the etcd API");
    while Instant::now() < deadline {
        let store = &stores[random.below(stores.len())];
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{store}"))
            .expect("an endpoint")
            .connect_lazy();
        match random.below(10) {
            0 => attack_transport(store, &mut random, &real).await,
            1 => lying_length(channel, "/tessera.service.Kv/Write", &mut random).await,
            2 => {
                let driver = tonic::transport::Endpoint::from_shared(format!("http://{pd}"))
                    .expect("an endpoint")
                    .connect_lazy();
                if random.below(2) == 0 {
                    lying_length(driver, "/tessera.service.Pd/RegionHeartbeats", &mut random).await;
                } else {
                    attack_driver(&mut PdClient::new(driver), &mut random).await;
                }
            }
            3 => {
                let depth = [10, 200, 1000][random.below(3)];
                let _ = tokio::time::timeout(Duration::from_secs(5), etcd.txn(nested_txn(depth))).await;
            }
            _ => attack_store(&mut KvClient::new(channel), &mut random, &real).await,
        }
        calls += 1;
    }
    eprintln!("hostile input: {calls} calls in {ATTACK:?}");
    let mut etcd_store = etcd_store;
    let nodes = cluster
        .stores
        .iter_mut()
        .flatten()
        .chain(cluster.pd.as_mut())
        .chain(std::iter::once(&mut etcd_store));
    for node in nodes {
        assert_alive_and_bounded(node, seed);
    }
    // The cluster serves afterwards (forged frames may have cost leaderships).
    let client = cluster.client();
    wait_for_leader(&client).await;
    client
        .put(b"after", b"attack")
        .await
        .unwrap_or_else(|error| panic!("seed {seed}: the cluster serves: {error}"));
}
