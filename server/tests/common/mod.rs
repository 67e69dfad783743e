//! The harness of the tests on real processes: `tessera` nodes started from the binary
//! on loopback ports they pick themselves, each killed by pid when its guard drops, and
//! `tessera ctl` run against them.

#![allow(dead_code, reason = "each test binary uses its own part of the harness")]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_server::client::Client;

pub const TESSERA: &str = env!("CARGO_BIN_EXE_tessera");

/// One cluster at a time: each runs several processes on a two-core machine.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A child process, killed when dropped.
pub struct Process {
    pub child: Child,
    pub address: String,
    /// Where it serves `/metrics`, `/health` and `/fail`, if it was asked to.
    pub metrics: Option<String>,
    /// Where a store serves etcd's API, if it was asked to.
    pub etcd: Option<String>,
}

impl Process {
    pub fn start(args: &[String]) -> Process {
        Process::try_start(args).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Starts a node; an error if it exits before printing its address (a port taken
    /// meanwhile, say), the process then reaped.
    pub fn try_start(args: &[String]) -> Result<Process, String> {
        let mut command = Command::new(TESSERA);
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
        die_with_parent(&mut command);
        let mut child = command.spawn().expect("the tessera binary starts");
        let stdout = child.stdout.take().expect("piped output");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("the node's output is readable");
        let field = |name: &str| line.split_whitespace().find_map(|field| field.strip_prefix(name));
        let Some(address) = field("addr=").map(str::to_string) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no address in {line:?} from {args:?}"));
        };
        let metrics = field("metrics=").map(str::to_string);
        let etcd = field("etcd=").map(str::to_string);
        Ok(Process { child, address, metrics, etcd })
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) {
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
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only makes a system call that is safe between fork and exec.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub pd: Option<Process>,
    pub stores: Vec<Option<Process>>,
    pub split_max_keys: u64,
    /// The `zone` label of each store, by index (none past its end).
    pub zones: Vec<String>,
    /// The stores' configuration file, if they read one.
    pub store_config: Option<String>,
    /// Arguments every node is started with (TLS flags, say).
    pub node_args: Vec<String>,
}

pub fn text(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

impl Cluster {
    pub fn start(stores: usize, split_max_keys: u64) -> Cluster {
        Cluster::start_configured(stores, split_max_keys, "")
    }

    /// A cluster whose driver reads `pd_config` (TOML) as its configuration file.
    pub fn start_configured(stores: usize, split_max_keys: u64, pd_config: &str) -> Cluster {
        Cluster::start_in_zones(&vec![""; stores], split_max_keys, pd_config)
    }

    /// One store per entry of `zones`, labelled `zone=ZONE` (no label for an empty one).
    pub fn start_in_zones(zones: &[&str], split_max_keys: u64, pd_config: &str) -> Cluster {
        Cluster::start_with_files(zones, split_max_keys, pd_config, None)
    }

    /// Like [`Cluster::start_in_zones`]; with `store_config`, every store reads it (TOML)
    /// as its configuration file.
    pub fn start_with_files(
        zones: &[&str],
        split_max_keys: u64,
        pd_config: &str,
        store_config: Option<&str>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Cluster::start_in(dir, (zones, split_max_keys), (pd_config, store_config), Vec::new())
    }

    /// `stores` stores and a driver in `dir`, every node started with `node_args`.
    pub fn start_with_node_args(
        dir: tempfile::TempDir,
        stores: usize,
        split_max_keys: u64,
        node_args: Vec<String>,
    ) -> Cluster {
        Cluster::start_in(dir, (&vec![""; stores], split_max_keys), ("", None), node_args)
    }

    fn start_in(
        dir: tempfile::TempDir,
        (zones, split_max_keys): (&[&str], u64),
        (pd_config, store_config): (&str, Option<&str>),
        node_args: Vec<String>,
    ) -> Cluster {
        let stores = zones.len();
        let zones = zones.iter().map(|zone| zone.to_string()).collect();
        let mut cluster = Cluster {
            dir,
            pd: None,
            stores: Vec::new(),
            split_max_keys,
            zones,
            store_config: None,
            node_args,
        };
        if let Some(text) = store_config {
            let path = cluster.path("store.toml");
            std::fs::write(&path, text).expect("the stores' configuration file");
            cluster.store_config = Some(path);
        }
        let config = cluster.path("pd.toml");
        std::fs::write(&config, pd_config).expect("the driver's configuration file");
        let mut args = vec!["pd".into(), "--config".into(), config, "--data-dir".into(), cluster.path("pd")];
        args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        args.extend(cluster.log_args("pd"));
        args.extend(cluster.node_args.iter().cloned());
        cluster.pd = Some(Process::start(&args));
        for index in 0..stores {
            let store = cluster.start_store(index, "127.0.0.1:0");
            cluster.stores.push(Some(store));
        }
        cluster
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn start_pd(&mut self, listen: &str) {
        let mut args =
            vec!["pd".into(), "--data-dir".into(), self.path("pd"), "--listen".into(), listen.into()];
        args.extend(self.log_args("pd"));
        args.extend(self.node_args.iter().cloned());
        self.pd = Some(Process::start(&args));
    }

    /// Every node logs JSON lines to `NAME.log` in the cluster's directory.
    pub fn log_args(&self, name: &str) -> Vec<String> {
        vec!["--log-format".into(), "json".into(), "--log-file".into(), self.path(&format!("{name}.log"))]
    }

    /// The events a node logged, each line parsed; every line must be one JSON object.
    pub fn log_events(&self, name: &str) -> Vec<serde_json::Value> {
        let path = self.path(&format!("{name}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines()
            .map(|line| {
                let event: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{path}: {e}: {line}"));
                assert!(event["level"].is_string() && event["target"].is_string(), "{path}: {line}");
                event
            })
            .collect()
    }

    /// The events with `message` a node logged.
    pub fn logged(&self, name: &str, message: &str) -> Vec<serde_json::Value> {
        self.log_events(name).into_iter().filter(|event| event["message"] == message).collect()
    }

    pub fn pd_address(&self) -> String {
        self.pd.as_ref().expect("a driver").address.clone()
    }

    pub fn start_store(&self, index: usize, listen: &str) -> Process {
        self.start_store_with(index, listen, &[])
    }

    /// A store started with `extra` arguments after the usual ones.
    pub fn start_store_with(&self, index: usize, listen: &str, extra: &[String]) -> Process {
        let mut args = vec![
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
        args.extend(self.log_args(&format!("store{index}")));
        if let Some(zone) = self.zones.get(index).filter(|zone| !zone.is_empty()) {
            args.extend(["--label".into(), format!("zone={zone}")]);
        }
        if let Some(path) = &self.store_config {
            args.extend(["--config".into(), path.clone()]);
        }
        args.extend(self.node_args.iter().cloned());
        args.extend_from_slice(extra);
        Process::start(&args)
    }

    pub fn client(&self) -> Client {
        Client::new(vec![self.pd_address()], Duration::from_secs(30))
    }
}

pub async fn wait_for_leader(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client.pd().region_by_key_async(b"").await.is_ok_and(|route| route.leader.is_some()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the first region got no leader within a minute");
}

pub fn key(i: usize) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

pub fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

pub fn try_ctl(pd: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(TESSERA).arg("ctl").arg("--pd").arg(pd).args(args).output().expect("ctl runs");
    if !output.status.success() {
        return Err(format!("ctl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// An address on 127.0.0.1 with a port free a moment ago.
pub fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").to_string()
}

pub fn ctl(pd: &str, args: &[&str]) -> String {
    try_ctl(pd, args).unwrap_or_else(|error| panic!("{error}"))
}

pub fn signal_pid(pid: &str, signal: rustix::process::Signal) {
    let pid = pid.parse::<i32>().ok().and_then(rustix::process::Pid::from_raw).expect("a pid");
    rustix::process::kill_process(pid, signal).expect("the process exists");
}

pub async fn wait_until(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match check() {
            Ok(()) => return,
            Err(error) if Instant::now() >= deadline => panic!("timed out waiting for {what}: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One HTTP/1.1 request (`method path`, with `body`): the status code and the body.
pub fn http(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("the status server accepts");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a timeout");
    let length = body.len();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{body}"
    )
    .expect("sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("an HTTP answer: {answer}"));
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("a status code");
    (status, body.to_string())
}

/// Sends one transactional command straight to the leader of the region holding
/// `key`, as a coordinator would, so that a test can stop between the steps of a commit.
/// A refusal (the driver's route was stale: a leader that just changed, a region that
/// just split) is sent again, for up to 30 s: transactional commands are idempotent.
pub async fn send_txn_command(
    client: &Client,
    key: &[u8],
    command: tessera_engine::proto::command::write::Kind,
) -> tessera_engine::proto::command::TxnResult {
    use tessera_server::proto::{RegionContext, WriteRequest, kv_client::KvClient};
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let route = client.pd().region_by_key_async(key).await.expect("a route");
        let region = route.region.expect("a region");
        let address = route.leader.and_then(|leader| route.store_addresses.get(&leader.store_id).cloned());
        let answer = match address {
            Some(address) => {
                let mut kv = KvClient::connect(format!("http://{address}")).await.expect("the store answers");
                let context = RegionContext { region_id: region.id, epoch: region.epoch };
                let writes = vec![tessera_engine::proto::command::Write { kind: Some(command.clone()) }];
                kv.write(WriteRequest { context: Some(context), writes })
                    .await
                    .map_err(|status| status.to_string())
            }
            None => Err("the region has no leader yet".to_string()),
        };
        match answer {
            Ok(answer) => return answer.into_inner().results.remove(0).txn.expect("a transactional result"),
            Err(error) => {
                assert!(Instant::now() < deadline, "the command was refused for 30 s, last: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Prewrites `keys` (the first is the primary) with locks that live `ttl_ms`, as a
/// coordinator that then dies would leave them; answers the transaction's start.
pub async fn prewrite_and_die(client: &Client, keys: &[&[u8]], ttl_ms: u64) -> u64 {
    use tessera_engine::proto::command::{Mutation, Prewrite, write};
    let start_ts = client.timestamp().await.expect("a timestamp").as_u64();
    for key in keys {
        let put = Mutation {
            op: tessera_engine::proto::mvcc::Mutation::Put as i32,
            key: key.to_vec(),
            value: b"from-the-dead".to_vec(),
        };
        let prewrite = Prewrite {
            start_ts,
            primary: keys[0].to_vec(),
            lock_ttl_ms: ttl_ms,
            mutations: vec![put],
            one_phase_commit_ts: 0,
        };
        let result = send_txn_command(client, key, write::Kind::Prewrite(prewrite)).await;
        assert!(result.errors.is_empty(), "prewrite of {key:?}: {:?}", result.errors);
    }
    start_ts
}

/// Splits the key space at each of `keys` and waits until the driver knows every split.
pub async fn split_at(client: &Client, keys: &[&[u8]]) {
    for key in keys {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let route = client.pd().region_by_key_async(key).await.expect("a route");
            if route.region.as_ref().is_some_and(|region| region.start_key == *key) && route.leader.is_some()
            {
                break;
            }
            assert!(Instant::now() < deadline, "no split at {key:?} within a minute");
            let _ = client.pd().split_region_async(key).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Whether a snapshot read at `read_ts` is refused as below the safe point.
pub async fn below_safe_point(
    client: &std::sync::Arc<Client>,
    read_ts: tessera_engine::timestamp::Timestamp,
) -> bool {
    let snapshot = client.snapshot_at(read_ts).await.expect("a snapshot");
    match snapshot.get(b"a").await {
        Err(tessera_server::client::ClientError::InvalidArgument(
            tessera_server::client::Refusal::BelowSafePoint { safe_point },
        )) => {
            assert!(safe_point >= read_ts, "refused at {read_ts} by a safe point below it: {safe_point}");
            true
        }
        Ok(_) => false,
        Err(other) => panic!("a read at {read_ts} failed otherwise: {other}"),
    }
}
