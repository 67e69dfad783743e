//! Real clusters of `tessera` processes: the client library against a driver and three
//! stores, splits, a killed leader store, a full restart, bad input, a prompt stop, store
//! removal, and the playground as the README runs it. The harness is in `common/`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tessera_server::client::{Client, ClientError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_writes_scans_range_deletes_and_compare_and_swap() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, 1_000_000);
    let client = cluster.client();
    wait_for_leader(&client).await;

    client.put(b"apple", b"red").await.expect("put");
    client.put(b"banana", b"yellow").await.expect("put");
    client.put(b"cherry", b"dark red").await.expect("put");
    assert_eq!(client.get(b"apple").await.expect("get"), Some(text("red")));
    assert_eq!(client.get(b"durian").await.expect("get"), None);

    let all = client.scan(b"", b"", 0, false).await.expect("scan");
    let keys: Vec<Vec<u8>> = all.iter().map(|p| p.key.clone()).collect();
    assert_eq!(keys, vec![text("apple"), text("banana"), text("cherry")]);
    let reversed = client.scan(b"a", b"c", 1, true).await.expect("reverse scan");
    assert_eq!(reversed.iter().map(|p| p.key.clone()).collect::<Vec<_>>(), vec![text("banana")]);

    let found = client.batch_get(&[text("cherry"), text("nothing"), text("apple")]).await.expect("batch get");
    assert_eq!(found.iter().map(|p| p.key.clone()).collect::<Vec<_>>(), vec![text("cherry"), text("apple")]);

    // Compare-and-swap: only the expected value swaps, and the found value comes back.
    let (swapped, previous) =
        client.compare_and_swap(b"apple", Some(b"green"), Some(b"gold")).await.expect("cas");
    assert_eq!((swapped, previous), (false, Some(text("red"))));
    let (swapped, _) = client.compare_and_swap(b"apple", Some(b"red"), Some(b"gold")).await.expect("cas");
    assert!(swapped);
    let (swapped, _) = client.compare_and_swap(b"fig", None, Some(b"purple")).await.expect("cas on absent");
    assert!(swapped);
    assert_eq!(client.get(b"apple").await.expect("get"), Some(text("gold")));

    client.delete_range(b"b", b"d").await.expect("delete range");
    let left = client.scan(b"", b"", 0, false).await.expect("scan");
    assert_eq!(left.iter().map(|p| p.key.clone()).collect::<Vec<_>>(), vec![text("apple"), text("fig")]);
    client.delete(b"fig").await.expect("delete");
    assert_eq!(client.get(b"fig").await.expect("get"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_typed_error_and_the_nodes_stay_up() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, 1_000_000);
    let client = cluster.client();
    wait_for_leader(&client).await;
    let invalid = |result: Result<(), ClientError>, what: &str| match result {
        Err(ClientError::InvalidArgument(refusal)) => assert!(!refusal.to_string().is_empty(), "{what}"),
        other => panic!("{what}: expected an invalid-argument error, got {other:?}"),
    };
    invalid(client.put(b"", b"v").await, "an empty key");
    invalid(client.put(&vec![b'k'; 8 * 1024 + 1], b"v").await, "a key over 8 KiB");
    invalid(client.put(b"k", &vec![0; 4 * 1024 * 1024 + 1]).await, "a value over 4 MiB");
    invalid(client.delete_range(b"z", b"a").await, "a range whose start is after its end");
    invalid(client.scan(b"z", b"a", 0, false).await.map(|_| ()), "a scan whose start is after its end");
    // A request for a region no store holds gets a typed answer, not a crash.
    let store = cluster.stores.iter().flatten().next().expect("a store");
    let mut raw = tessera_server::proto::kv_client::KvClient::connect(format!("http://{}", store.address))
        .await
        .expect("a connection to a store");
    let context =
        tessera_server::proto::RegionContext { region_id: 999_999, epoch: Some(Default::default()) };
    let request = tessera_server::proto::GetRequest { context: Some(context), key: b"k".to_vec() };
    let status = raw.get(request).await.expect_err("no such region");
    assert!(
        matches!(
            tessera_server::failure::kv_failure(&status),
            Some(tessera_server::proto::kv_failure::Kind::RegionNotFound(999_999))
        ),
        "{status:?}"
    );
    let status = raw.get(tessera_server::proto::GetRequest::default()).await.expect_err("no region named");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // A batch get of more keys than a store reads in one request is refused by the store;
    // the client sends such a batch in parts.
    let route = client.pd().region_by_key_async(b"k").await.expect("a route");
    let region = route.region.expect("a region");
    let context = tessera_server::proto::RegionContext { region_id: region.id, epoch: region.epoch };
    let keys: Vec<Vec<u8>> = (0..=tessera_server::service::kv::MAX_BATCH_GET_KEYS).map(key).collect();
    let request = tessera_server::proto::BatchGetRequest { context: Some(context), keys: keys.clone() };
    let status = raw.batch_get(request).await.expect_err("too many keys");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("at most"), "{status:?}");
    client.put(&key(7), b"seven").await.expect("a put");
    let found = client.batch_get(&keys).await.expect("a batch get in parts");
    assert_eq!(found.iter().map(|pair| pair.key.clone()).collect::<Vec<_>>(), vec![key(7)]);
    // Garbage and truncated frames on every node's port.
    for address in cluster.stores.iter().flatten().map(|s| s.address.clone()).chain([cluster.pd_address()]) {
        use std::io::Write;
        let mut socket = std::net::TcpStream::connect(&address).expect("a connection");
        let _ =
            socket.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x05\x00\x01\x00\x00\x00\x01garbage");
        let _ = socket.write_all(&[0xff; 4096]);
    }
    // Every node still serves.
    client.put(b"k", b"v").await.expect("the cluster still takes writes");
    assert_eq!(client.get(b"k").await.expect("get"), Some(text("v")));
    for store in cluster.stores.iter().flatten() {
        let mut probe = std::net::TcpStream::connect(&store.address).map(|_| ());
        assert!(probe.as_mut().is_ok(), "store {} is up", store.address);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_across_many_regions_returns_every_key_once_in_order() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, 40);
    let client = cluster.client();
    wait_for_leader(&client).await;
    let count = 3000;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..count).map(|i| (key(i), value(i))).collect();
    for chunk in pairs.chunks(100) {
        client.batch_put(chunk.to_vec()).await.expect("batch put");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let regions = client.pd().scan_regions_async(b"", b"", 0).await.expect("regions").len();
        if regions >= 50 {
            break;
        }
        assert!(Instant::now() < deadline, "only {regions} regions after two minutes");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let scanned = client.scan(b"", b"", 0, false).await.expect("scan");
    let expected: Vec<Vec<u8>> = (0..count).map(key).collect();
    assert_eq!(scanned.iter().map(|p| p.key.clone()).collect::<Vec<_>>(), expected);
    assert!(scanned.iter().enumerate().all(|(i, p)| p.value == value(i)));
    let backwards = client.scan(b"", b"", 0, true).await.expect("reverse scan");
    assert_eq!(backwards.len(), count);
    assert!(backwards.iter().rev().map(|p| p.key.clone()).eq(expected.iter().cloned()));
    // Every split the driver learned of was applied, and logged, on some store first.
    wait_until("the splits in the stores' logs", || {
        let splits: usize = (0..3).map(|i| cluster.logged(&format!("store{i}"), "split applied").len()).sum();
        if splits >= 49 { Ok(()) } else { Err(format!("{splits} splits logged")) }
    })
    .await;
}

/// A region holding more than one gRPC message (16 MiB) of keys and values: each store
/// answer stops at its response size and says so, and the client asks again from there,
/// raw and transactional, both ways and with a limit. Before pages, such a scan could
/// never succeed (the client retried the too-large answer until its deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_of_a_region_larger_than_a_message_comes_back_whole_in_pages() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, 1_000_000);
    let client = std::sync::Arc::new(cluster.client());
    wait_for_leader(&client).await;
    let count = 20;
    let big_value = |i: usize| vec![b'a' + i as u8; 1 << 20];
    for i in 0..count {
        client.put(&key(i), &big_value(i)).await.expect("a raw put");
        let mut transaction = client.begin().await.expect("a transaction");
        transaction.put(&key(i), &big_value(i)).expect("buffered");
        transaction.commit().await.expect("commits");
    }
    let expected: Vec<Vec<u8>> = (0..count).map(key).collect();
    let keys = |pairs: &[tessera_engine::proto::frame::KeyValue]| {
        pairs.iter().map(|p| p.key.clone()).collect::<Vec<_>>()
    };
    let forward = client.scan(b"", b"", 0, false).await.expect("a raw scan");
    assert_eq!(keys(&forward), expected);
    assert!(forward.iter().enumerate().all(|(i, pair)| pair.value == big_value(i)));
    let backward = client.scan(b"", b"", 0, true).await.expect("a reverse raw scan");
    assert!(keys(&backward).into_iter().rev().eq(expected.iter().cloned()));
    let limited = client.scan(b"", b"", 7, false).await.expect("a limited raw scan");
    assert_eq!(keys(&limited), expected[..7]);
    let snapshot = client.begin().await.expect("a transaction");
    let forward = snapshot.scan(b"", b"", 0, false).await.expect("a transactional scan");
    assert_eq!(keys(&forward), expected);
    assert!(forward.iter().enumerate().all(|(i, pair)| pair.value == big_value(i)));
    let backward = snapshot.scan(b"", b"", 13, true).await.expect("a limited reverse scan");
    assert!(keys(&backward).into_iter().eq(expected.iter().rev().take(13).cloned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_store_loses_no_acknowledged_write() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, 1_000_000);
    let client = cluster.client();
    wait_for_leader(&client).await;
    let mut acknowledged = Vec::new();
    for i in 0..200 {
        client.put(&key(i), &value(i)).await.expect("put before the kill");
        acknowledged.push(i);
    }
    // Kill the store leading the one region, as a crash would.
    let route = client.pd().region_by_key_async(b"").await.expect("route");
    let leader = route.leader.expect("a leader").store_id;
    let stores = client.pd().stores_async().await.expect("stores");
    let address = stores
        .iter()
        .filter_map(|s| s.store.as_ref())
        .find(|s| s.id == leader)
        .map(|s| s.address.clone())
        .expect("the leader's address");
    let index = cluster.stores.iter().position(|s| s.as_ref().is_some_and(|p| p.address == address));
    let victim = cluster.stores[index.expect("the leader is ours")].take().expect("running");
    victim.signal(rustix::process::Signal::KILL);
    drop(victim);
    for i in 200..400 {
        // A put on a connection the kill broke has an unknown outcome, and the client
        // says so rather than retrying behind our back; with no other writer, this
        // test may send it again itself.
        let mut unknown = 0;
        loop {
            match client.put(&key(i), &value(i)).await {
                Ok(()) => break,
                Err(ClientError::OutcomeUnknown(why)) if unknown < 3 => {
                    unknown += 1;
                    eprintln!("put {i}: outcome unknown ({why}); sending it again");
                }
                Err(error) => panic!("writes continue after re-routing, but put {i} failed: {error}"),
            }
        }
        acknowledged.push(i);
    }
    for i in acknowledged {
        assert_eq!(client.get(&key(i)).await.expect("get"), Some(value(i)), "key {i}");
    }
    check_failover_logs(&cluster, index.expect("the leader is ours"));
}

/// A store whose driver is gone still stops promptly on SIGTERM: its calls to the
/// driver in flight are abandoned and the streams other nodes hold open are ended,
/// rather than each waiting out its deadline (it took up to 15 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_stops_promptly_on_sigterm_with_the_driver_gone() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(2, 1_000_000);
    let pd = cluster.pd.take().expect("a driver");
    pd.signal(rustix::process::Signal::KILL);
    drop(pd);
    // Long enough for the agents to be mid-call to the dead driver.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let store = cluster.stores[0].take().expect("running");
    let started = Instant::now();
    store.stop();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "the store took {took:?} to stop");
    let stopped = cluster.logged("store0", "store stopped");
    assert_eq!(stopped.len(), 1, "the store logged its stop once");
}

/// A down store keeps its replicas for the down grace (and `ctl stores` says until
/// when); `ctl store remove` replaces them at once, unless a region would be left
/// without a quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_store_has_its_replicas_replaced_at_once() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster =
        Cluster::start_configured(4, 1_000_000, "[pd.schedule]\nstore_down_after_seconds = 2\n");
    let client = cluster.client();
    wait_for_leader(&client).await;
    client.put(b"k", b"v").await.expect("a put");
    let pd = cluster.pd_address();
    let route = client.pd().region_by_key_async(b"").await.expect("a route");
    let leader = route.leader.expect("a leader").store_id;
    let region = route.region.expect("a region");
    let followers: Vec<u64> = region.peers.iter().map(|p| p.store_id).filter(|&s| s != leader).collect();
    let index_of = |store_id: u64| {
        route.store_addresses.get(&store_id).and_then(|address| {
            cluster.stores.iter().position(|s| s.as_ref().is_some_and(|p| &p.address == address))
        })
    };
    let (first, second) = (followers[0], followers[1]);
    let (first_index, second_index) = (index_of(first).expect("ours"), index_of(second).expect("ours"));
    let second_address = cluster.stores[second_index].as_ref().expect("running").address.clone();
    drop(cluster.stores[first_index].take());
    drop(cluster.stores[second_index].take());
    wait_until("both followers' stores down", || {
        let stores: serde_json::Value =
            serde_json::from_str(&try_ctl(&pd, &["stores", "--json"])?).map_err(|e| e.to_string())?;
        let down =
            |id: u64| stores.as_array().into_iter().flatten().any(|s| s["id"] == id && s["state"] == "down");
        if down(first) && down(second) { Ok(()) } else { Err(stores.to_string()) }
    })
    .await;
    let stores: serde_json::Value = serde_json::from_str(&ctl(&pd, &["stores", "--json"])).expect("JSON");
    let row = stores.as_array().expect("rows").iter().find(|s| s["id"] == first).expect("the first");
    let replaced_in = row["replicas_replaced_in_ms"].as_u64().expect("a figure");
    assert!(replaced_in > 25 * 60 * 1000, "replaced after the 30-minute default grace: {row}");
    // Only one voter of three is up: removing either store would leave no quorum.
    let refused = try_ctl(&pd, &["store", "remove", &first.to_string()]).expect_err("no quorum left");
    assert!(refused.contains("voters on stores that are up"), "{refused}");
    cluster.stores[second_index] = Some(cluster.start_store(second_index, &second_address));
    wait_until("the second store up again", || {
        let stores: serde_json::Value =
            serde_json::from_str(&try_ctl(&pd, &["stores", "--json"])?).map_err(|e| e.to_string())?;
        let up = stores.as_array().into_iter().flatten().any(|s| s["id"] == second && s["state"] == "up");
        if up { Ok(()) } else { Err(stores.to_string()) }
    })
    .await;
    assert!(ctl(&pd, &["store", "remove", &first.to_string()]).contains("removed"));
    wait_until("the removed store's replica replaced on the fourth store", || {
        let regions: serde_json::Value =
            serde_json::from_str(&try_ctl(&pd, &["regions", "--json"])?).map_err(|e| e.to_string())?;
        let row =
            regions.as_array().into_iter().flatten().find(|r| r["id"] == region.id).ok_or("no region")?;
        let stores: Vec<u64> =
            row["peers"].as_array().into_iter().flatten().filter_map(|s| s.as_u64()).collect();
        if stores.len() == 3 && !stores.contains(&first) {
            Ok(())
        } else {
            Err(format!("peers on {stores:?}"))
        }
    })
    .await;
    assert_eq!(client.get(b"k").await.expect("a get"), Some(b"v".to_vec()));
    let stores: serde_json::Value = serde_json::from_str(&ctl(&pd, &["stores", "--json"])).expect("JSON");
    assert!(stores.as_array().expect("rows").iter().any(|s| s["id"] == first && s["state"] == "tombstone"));
}

/// The logs tell the failover's story: the killed store led, a survivor took over in a
/// later term, and the driver saw every store register.
fn check_failover_logs(cluster: &Cluster, victim: usize) {
    let became_leader = |index: usize| cluster.logged(&format!("store{index}"), "became leader");
    let victim_terms: Vec<u64> = became_leader(victim).iter().filter_map(|e| e["term"].as_u64()).collect();
    assert!(!victim_terms.is_empty(), "the killed leader logged becoming leader");
    assert!(!cluster.logged(&format!("store{victim}"), "store serving").is_empty());
    let later_terms = (0..3)
        .filter(|&index| index != victim)
        .flat_map(became_leader)
        .filter(|event| event["term"].as_u64() > victim_terms.iter().max().copied())
        .count();
    assert!(later_terms > 0, "a survivor logged becoming leader in a later term");
    assert_eq!(cluster.logged("pd", "store registered").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_stopped_and_restarted_has_all_its_data() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, 1_000_000);
    let pd_address = cluster.pd_address();
    {
        let client = cluster.client();
        wait_for_leader(&client).await;
        for i in 0..300 {
            client.put(&key(i), &value(i)).await.expect("put");
        }
    }
    let store_addresses: Vec<String> = cluster.stores.iter().flatten().map(|s| s.address.clone()).collect();
    for store in cluster.stores.iter_mut() {
        store.take().expect("running").stop();
    }
    cluster.pd.take().expect("running").stop();
    // Back on the same addresses, from the same directories.
    cluster.start_pd(&pd_address);
    for (index, address) in store_addresses.iter().enumerate() {
        let store = cluster.start_store(index, address);
        cluster.stores.push(Some(store));
    }
    let client = cluster.client();
    for i in 0..300 {
        assert_eq!(client.get(&key(i)).await.expect("get after restart"), Some(value(i)), "key {i}");
    }
}

/// Two stores join a loaded cluster: the driver's schedulers move replicas and leaders
/// to them across real processes. Values are large enough that moved regions travel as
/// snapshots over a megabyte, in chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_added_to_a_loaded_cluster_receive_regions_and_leaders() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, 150);
    let client = cluster.client();
    wait_for_leader(&client).await;
    let count = 1500;
    let big = |i: usize| {
        let mut value = value(i);
        value.resize(16 * 1024, b'.');
        value
    };
    for chunk in (0..count).collect::<Vec<_>>().chunks(50) {
        client.batch_put(chunk.iter().map(|&i| (key(i), big(i))).collect()).await.expect("batch put");
    }
    for index in 3..5 {
        let store = cluster.start_store(index, "127.0.0.1:0");
        cluster.stores.push(Some(store));
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let stores = client.pd().stores_async().await.expect("stores");
        let up: Vec<_> = stores.iter().filter(|s| s.state == 0).collect();
        let mean = |f: fn(&&tessera_placement::proto::StoreView) -> u64| {
            up.iter().map(f).sum::<u64>() as f64 / up.len().max(1) as f64
        };
        let (regions, leaders) = (mean(|s| s.region_count), mean(|s| s.leader_count));
        let balanced = up.len() == 5
            && up.iter().all(|s| {
                (s.region_count as f64 - regions).abs() <= 2.0
                    && (s.leader_count as f64 - leaders).abs() <= 1.0
                    && s.region_count > 0
                    && s.leader_count > 0
            });
        if balanced {
            break;
        }
        let counts: Vec<(u64, u64)> = up.iter().map(|s| (s.region_count, s.leader_count)).collect();
        assert!(Instant::now() < deadline, "not balanced after four minutes: (regions, leaders) {counts:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for i in 0..count {
        assert_eq!(client.get(&key(i)).await.expect("get"), Some(big(i)), "key {i}");
    }
}

/// The README's first commands: a playground, then a short ctl session.
#[test]
fn the_playground_starts_serves_and_stops_cleanly() {
    let _serial = ONE_AT_A_TIME.blocking_lock();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut command = Command::new(TESSERA);
    command.args(["playground", "--metrics-port", "0", "--dir"]).arg(dir.path()).stdout(Stdio::piped());
    die_with_parent(&mut command);
    let mut child = command.spawn().expect("the playground starts");
    let stdout = child.stdout.take().expect("piped output");
    // Killed when dropped, should an assertion fail first.
    let playground = Process { child, address: String::new(), metrics: None, etcd: None };
    let mut pd = None;
    let mut pids = Vec::new();
    let mut stores = 0;
    let mut pd_metrics = Vec::new();
    let mut store_metrics = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("a line");
        if line == "ready" {
            break;
        }
        let field =
            |name: &str| line.split_whitespace().find_map(|f| f.strip_prefix(name)).map(str::to_string);
        pids.push(field("pid=").unwrap_or_else(|| panic!("every node line names its pid: {line}")));
        let metrics =
            field("metrics=").unwrap_or_else(|| panic!("every node line names its metrics: {line}"));
        if line.starts_with("pd ") {
            pd = field("addr=");
            pd_metrics.push(metrics);
        } else if line.starts_with("store ") {
            stores += 1;
            store_metrics.push(metrics);
        }
    }
    let pd = pd.expect("the playground printed its driver");
    assert_eq!(stores, 3);
    assert_eq!(ctl(&pd, &["put", "hello", "world"]).trim(), "OK");
    assert_eq!(ctl(&pd, &["get", "hello"]).trim(), "world");
    let stores_json: serde_json::Value =
        serde_json::from_str(&ctl(&pd, &["stores", "--json"])).expect("JSON");
    assert_eq!(stores_json.as_array().map(Vec::len), Some(3), "{stores_json}");
    let regions_json: serde_json::Value =
        serde_json::from_str(&ctl(&pd, &["regions", "--json"])).expect("JSON");
    assert!(regions_json[0]["leader"].is_u64(), "{regions_json}");
    // Operators by hand wait for their operator and say how it ended.
    let (region, leader) = (regions_json[0]["id"].to_string(), regions_json[0]["leader"].as_u64());
    let peers = regions_json[0]["peers"].as_array().expect("peers");
    let follower = peers.iter().filter_map(serde_json::Value::as_u64).find(|&s| Some(s) != leader);
    let follower = follower.expect("a follower").to_string();
    let said = ctl(&pd, &["transfer-leader", &region, &follower]);
    assert!(said.contains("finished"), "ctl waits for the transfer: {said}");
    let said = ctl(&pd, &["transfer-leader", &region, &follower]);
    assert!(said.contains("already there"), "{said}");
    let said = ctl(&pd, &["split", "m"]);
    assert!(said.contains("finished"), "ctl waits for the split: {said}");
    let said = ctl(&pd, &["split", "m"]);
    assert!(said.contains("already splits there"), "a second split right after the first: {said}");
    check_metrics(&pd_metrics, &store_metrics);
    // The failover demo: a store killed outright leaves the cluster serving, and
    // SIGHUP brings it back with its data (its line is printed again).
    let victim = pids.last().expect("a store's pid").clone();
    signal_pid(&victim, rustix::process::Signal::KILL);
    assert_eq!(ctl(&pd, &["put", "during", "failover"]).trim(), "OK");
    assert_eq!(ctl(&pd, &["get", "hello"]).trim(), "world");
    assert!(process_runs(&playground.child.id().to_string()), "the playground outlived a node");
    signal_pid(&playground.child.id().to_string(), rustix::process::Signal::HUP);
    let restarted = lines.next().expect("a line for the restarted store").expect("a line");
    assert!(restarted.starts_with("store "), "{restarted}");
    let new_pid =
        restarted.split_whitespace().find_map(|f| f.strip_prefix("pid=")).expect("a pid").to_string();
    assert_ne!(new_pid, victim);
    assert!(process_runs(&new_pid), "the restarted store runs");
    pids.push(new_pid);
    playground.stop();
    for pid in pids {
        assert!(!process_runs(&pid), "node {pid} outlived the playground");
    }
    // Each node logged to its own file in the playground's directory.
    let store_log = std::fs::read_to_string(dir.path().join("store1.log")).expect("store 1's log");
    assert!(store_log.contains("store serving") && store_log.contains("store stopped"), "{store_log}");
    let pd_log = std::fs::read_to_string(dir.path().join("pd1.log")).expect("the driver's log");
    assert!(pd_log.contains("store registered"), "{pd_log}");
}

/// `GET path`: the status code and the body.
fn http_get(address: &str, path: &str) -> (u16, String) {
    common::http(address, "GET", path, "")
}

/// The value of one series (name with its labels, as rendered) in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every node serves /health and /metrics, and the metrics say what the cluster did:
/// the driver leads and sees three stores up, every store holds a region, the write
/// went through Raft and the key-value API.
fn check_metrics(pd_metrics: &[String], store_metrics: &[String]) {
    for address in pd_metrics.iter().chain(store_metrics) {
        let (status, body) = http_get(address, "/health");
        assert_eq!(status, 200, "/health on {address}: {body}");
        assert!(body.contains("\"role\""), "/health describes the node: {body}");
    }
    let (status, pd) = http_get(&pd_metrics[0], "/metrics");
    assert_eq!(status, 200);
    assert_eq!(sample(&pd, "tessera_pd_is_leader"), Some(1.0), "{pd}");
    assert_eq!(sample(&pd, "tessera_pd_stores{state=\"up\"}"), Some(3.0), "{pd}");
    assert!(sample(&pd, "tessera_pd_regions").is_some_and(|regions| regions >= 1.0), "{pd}");
    assert!(pd.contains("tessera_build_info{version="), "{pd}");
    let mut proposals = 0.0;
    let mut writes = 0.0;
    for address in store_metrics {
        let (status, text) = http_get(address, "/metrics");
        assert_eq!(status, 200);
        assert!(sample(&text, "tessera_store_regions").is_some_and(|regions| regions >= 1.0), "{text}");
        assert!(
            text.contains("tessera_raft_log_sync_duration_seconds_bucket{le="),
            "a real histogram: {text}"
        );
        proposals += sample(&text, "tessera_raft_proposals_total").unwrap_or(0.0);
        writes +=
            sample(&text, "tessera_grpc_requests_total{method=\"Kv/Write\",code=\"ok\"}").unwrap_or(0.0);
    }
    assert!(proposals >= 1.0, "the put was proposed");
    assert!(writes >= 1.0, "the put was counted by the key-value API");
}

/// An address on loopback with a port free now, for a node whose address must be fixed
/// before it starts (a joining driver replica's is recorded by the driver).
/// The driver's members as `ctl members --json` shows them: (id, role).
fn members(pd: &str) -> Result<Vec<(u64, String)>, String> {
    let rows: serde_json::Value =
        serde_json::from_str(&try_ctl(pd, &["members", "--json"])?).map_err(|e| e.to_string())?;
    Ok(rows
        .as_array()
        .expect("an array")
        .iter()
        .map(|row| (row["id"].as_u64().expect("an id"), row["role"].as_str().expect("a role").to_string()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_replicas_join_and_the_cluster_outlives_its_founder() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, 1_000_000);
    let client = cluster.client();
    wait_for_leader(&client).await;
    for i in 0..100 {
        client.put(&key(i), &value(i)).await.expect("put");
    }
    let founder = cluster.pd_address();
    let dir = cluster.dir.path().to_path_buf();
    let join = |name: &str, listen: &str| {
        let data_dir = dir.join(name).display().to_string();
        let args = ["pd", "--data-dir", &data_dir, "--listen", listen, "--join", &founder];
        Process::start(&args.map(String::from))
    };
    let (second, third) = (free_address(), free_address());
    let second_pd = join("pd2", &second);
    let _third_pd = join("pd3", &third);
    wait_until("both joined replicas to be voters", || {
        let members = members(&founder)?;
        let voters = members.iter().filter(|(_, role)| role == "voter").count();
        if voters == 3 { Ok(()) } else { Err(format!("{members:?}")) }
    })
    .await;
    let ids: Vec<u64> = members(&founder).expect("members").iter().map(|(id, _)| *id).collect();
    // The stores were given the founder's address only; they refresh the member list
    // every few seconds while the driver answers.
    tokio::time::sleep(Duration::from_secs(6)).await;

    // The founder dies; the two that joined hold a quorum and every piece of metadata.
    drop(cluster.pd.take());
    let survivors = format!("{second},{third}");
    let client = Client::new(vec![second.clone(), third.clone()], Duration::from_secs(30));
    for i in 100..200 {
        client.put(&key(i), &value(i)).await.expect("put after the founder died");
    }
    for i in 0..200 {
        assert_eq!(client.get(&key(i)).await.expect("get"), Some(value(i)), "key {i}");
    }
    // An operator reaches a store only through its heartbeats to the new leader.
    let said = ctl(&survivors, &["split", "key000150"]);
    assert!(said.contains("finished"), "ctl split waits for the split: {said}");
    wait_until("the split asked of the new leader", || {
        let regions: serde_json::Value =
            serde_json::from_str(&try_ctl(&survivors, &["regions", "--json"])?).map_err(|e| e.to_string())?;
        let count = regions.as_array().map_or(0, Vec::len);
        if count >= 2 { Ok(()) } else { Err(format!("{count} regions")) }
    })
    .await;

    // A joined replica restarts as the member it was, without joining again.
    second_pd.stop();
    let _second_pd = join("pd2", &second);
    wait_until("the restarted replica to serve again as the same member", || {
        let now: Vec<u64> = members(&third)?.iter().map(|(id, _)| *id).collect();
        if now == ids { Ok(()) } else { Err(format!("members {now:?}, were {ids:?}")) }
    })
    .await;
}

/// Whether process `pid` exists and has not exited: a zombie (exited, not yet reaped by
/// its parent) has a /proc entry too, with state Z.
fn process_runs(pid: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}
