//! Real clusters of `tessera` processes on loopback ports they pick themselves: the
//! client library against a driver and three stores, splits, a killed leader store,
//! a full restart, bad input, and the playground as the README runs it.
//!
//! Every process is started by this file and killed by pid when its guard drops.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_server::client::{Client, ClientError};

const TESSERA: &str = env!("CARGO_BIN_EXE_tessera");

/// One cluster at a time: each runs several processes on a two-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A child process, killed when dropped.
struct Process {
    child: Child,
    address: String,
}

impl Process {
    fn start(args: &[String]) -> Process {
        let mut command = Command::new(TESSERA);
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
        die_with_parent(&mut command);
        let mut child = command.spawn().expect("the tessera binary starts");
        let stdout = child.stdout.take().expect("piped output");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("the node prints its address");
        let address = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no address in {line:?} from {args:?}"))
            .to_string();
        Process { child, address }
    }

    fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        self.signal(rustix::process::Signal::TERM);
        let status = self.child.wait().expect("the node exits");
        assert!(status.success(), "a node stopped by SIGTERM exits cleanly, got {status}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node must not outlive this test process, even if it is killed outright.
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only makes a system call that is safe between fork and exec.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    pd: Option<Process>,
    stores: Vec<Option<Process>>,
    split_max_keys: u64,
}

fn text(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

impl Cluster {
    fn start(stores: usize, split_max_keys: u64) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut cluster = Cluster { dir, pd: None, stores: Vec::new(), split_max_keys };
        cluster.start_pd("127.0.0.1:0");
        for index in 0..stores {
            let store = cluster.start_store(index, "127.0.0.1:0");
            cluster.stores.push(Some(store));
        }
        cluster
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn start_pd(&mut self, listen: &str) {
        let args = vec!["pd".into(), "--data-dir".into(), self.path("pd"), "--listen".into(), listen.into()];
        self.pd = Some(Process::start(&args));
    }

    fn pd_address(&self) -> String {
        self.pd.as_ref().expect("a driver").address.clone()
    }

    fn start_store(&self, index: usize, listen: &str) -> Process {
        let args = vec![
            "store".into(),
            "--pd".into(),
            self.pd_address(),
            "--data-dir".into(),
            self.path(&format!("store{index}")),
            "--listen".into(),
            listen.into(),
            "--split-max-keys".into(),
            self.split_max_keys.to_string(),
        ];
        Process::start(&args)
    }

    fn client(&self) -> Client {
        Client::new(vec![self.pd_address()], Duration::from_secs(30))
    }
}

async fn wait_for_leader(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client.pd().region_by_key_async(b"").await.is_ok_and(|route| route.leader.is_some()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the first region got no leader within a minute");
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

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
        Err(ClientError::InvalidArgument(message)) => assert!(!message.is_empty(), "{what}"),
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
        client.put(&key(i), &value(i)).await.expect("writes continue after re-routing");
        acknowledged.push(i);
    }
    for i in acknowledged {
        assert_eq!(client.get(&key(i)).await.expect("get"), Some(value(i)), "key {i}");
    }
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

fn ctl(pd: &str, args: &[&str]) -> String {
    let output = Command::new(TESSERA).arg("ctl").arg("--pd").arg(pd).args(args).output().expect("ctl runs");
    assert!(output.status.success(), "ctl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The README's first commands: a playground, then a short ctl session.
#[test]
fn the_playground_starts_serves_and_stops_cleanly() {
    let _serial = ONE_AT_A_TIME.blocking_lock();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut command = Command::new(TESSERA);
    command.args(["playground", "--dir"]).arg(dir.path()).stdout(Stdio::piped());
    die_with_parent(&mut command);
    let mut child = command.spawn().expect("the playground starts");
    let stdout = child.stdout.take().expect("piped output");
    // Killed when dropped, should an assertion fail first.
    let playground = Process { child, address: String::new() };
    let mut pd = None;
    let mut pids = Vec::new();
    let mut stores = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        if line == "ready" {
            break;
        }
        let field =
            |name: &str| line.split_whitespace().find_map(|f| f.strip_prefix(name)).map(str::to_string);
        pids.push(field("pid=").unwrap_or_else(|| panic!("every node line names its pid: {line}")));
        if line.starts_with("pd ") {
            pd = field("addr=");
        } else if line.starts_with("store ") {
            stores += 1;
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
    playground.stop();
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "node {pid} outlived the playground");
    }
}
