//! One round: a fresh cluster, clients recording a history while the nemesis works,
//! then everything restored, a final read of every key, and the history checked.
//!
//! A round's directory holds its history (written as it happens), its fault log and
//! every node's log. It is removed when the round passes and kept whole (data
//! directories included) when it does not.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{LineWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tessera_server::client::Client;
use tokio::sync::watch;

use crate::availability::{self, Outage};
use crate::checker::{self, CheckConfig, Report};
use crate::cluster::{ChaosCluster, ClusterConfig};
use crate::etcd::watch::{self as etcd_watch, WatchRecord};
use crate::etcd::{self, AcknowledgedWrites, EtcdApi};
use crate::history::{self, EventKind, HistoryWriter, Operation};
use crate::nemesis;
use crate::transactions::round::{self as txn_round, TxnOutcome};
use crate::transactions::watchers::{self, Watchers};
use crate::transactions::workload as txn_workload;
use crate::transactions::workload::TxnHistory;
use crate::workload::{self, Executor, Home, KeySpace, Recorder, WorkloadConfig};

/// How long a client waits for one request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(3);
/// How long a cluster may take to start, or to recover once the faults end.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the clients keep going after the faults end: recovery is tested too.
const AFTER_FAULTS: Duration = Duration::from_secs(3);
/// Process ids of the final reads, above any client's.
const FINAL_PROCESS: u64 = 1_000_000;
/// How long a move whose first appends were dropped may take to finish once the
/// cluster serves again after the faults.
const MOVE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RoundConfig {
    pub seed: u64,
    pub duration: Duration,
    pub nodes: usize,
    pub pd_replicas: usize,
    pub clients: usize,
    /// How many of the clients run inside a node's namespace (the rest on the host).
    pub node_clients: usize,
    pub keys: usize,
    /// Transactional clients (bank and list-append), beside the register clients.
    pub txn_clients: usize,
    /// Register clients of the etcd API (on keys of their own), and with them a watcher.
    pub etcd_clients: usize,
    pub think: Duration,
    pub faults: Vec<String>,
    pub binary: PathBuf,
    pub dir: PathBuf,
    /// Mutual TLS on every link of the cluster and of its clients.
    pub tls: bool,
    /// Keep the round's directory even when it passes.
    pub keep: bool,
}

pub struct RoundOutcome {
    pub invocations: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    pub report: Report,
    /// The transactional clients' figures and the anomalies found in what they saw.
    pub transactions: TxnOutcome,
    /// The etcd API's watcher: what it was delivered, and what was wrong with it.
    pub etcd: EtcdOutcome,
    /// Why the round could not be judged whole: a node crashed, the cluster did not
    /// recover, a key could not be read at the end.
    pub problems: Vec<String>,
    pub faults: Vec<String>,
    /// How long the cluster took to serve again after each fault.
    pub outages: Vec<Outage>,
    /// How long the cluster took to serve, and to serve again once the faults ended.
    pub start_time: Duration,
    pub recovery_time: Duration,
    /// How long the moves and the replicas took to settle once the cluster served.
    pub settle_time: Duration,
    pub check_time: Duration,
}

/// What the etcd API's watcher saw, judged.
#[derive(Debug, Default)]
pub struct EtcdOutcome {
    pub acknowledged: usize,
    pub watched: usize,
    pub gaps: usize,
    pub problems: Vec<String>,
}

impl RoundOutcome {
    pub fn passed(&self) -> bool {
        self.report.is_valid()
            && self.problems.is_empty()
            && self.transactions.anomalies.is_empty()
            && self.etcd.problems.is_empty()
    }
}

/// The transactional clients and the watchers, until `stopped` says so.
fn transactional(
    client: Arc<Client>,
    config: &RoundConfig,
    stopped: watch::Receiver<bool>,
) -> impl Future<Output = (TxnHistory, Watchers)> + use<> {
    let (clients, seed) = (config.txn_clients, config.seed);
    async move {
        let transactions = txn_workload::run(client.clone(), clients, seed, stopped.clone());
        tokio::join!(transactions, watchers::run(client, seed, stopped, READY_TIMEOUT))
    }
}

/// A fresh cluster in the round's directory, serving, with the bank's accounts open;
/// a client of it, and how long it took to serve.
async fn start_cluster(config: &RoundConfig) -> anyhow::Result<(ChaosCluster, Arc<Client>, Duration)> {
    // A seed run again must not start from what its last run left (data directories
    // included): the cluster would serve the old run's values.
    if config.dir.exists() {
        std::fs::remove_dir_all(&config.dir).with_context(|| format!("removing {}", config.dir.display()))?;
    }
    std::fs::create_dir_all(&config.dir).with_context(|| format!("creating {}", config.dir.display()))?;
    let cluster = ChaosCluster::start(&ClusterConfig {
        nodes: config.nodes,
        pd_replicas: config.pd_replicas,
        binary: config.binary.clone(),
        dir: config.dir.clone(),
        tls: config.tls,
    })?;
    let client = Arc::new(Client::with_dialer(cluster.pd_endpoints(), REQUEST_DEADLINE, cluster.dialer()?));
    let first_key = workload::key(0);
    let starting = Instant::now();
    cluster.wait_ready(&client, first_key.as_bytes(), READY_TIMEOUT).await.context("starting the cluster")?;
    let start_time = starting.elapsed();
    txn_workload::open_accounts(&client, READY_TIMEOUT).await.context("opening the bank's accounts")?;
    Ok((cluster, client, start_time))
}

pub async fn run(config: &RoundConfig) -> anyhow::Result<RoundOutcome> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let (mut cluster, client, start_time) = start_cluster(config).await?;

    let file = File::create(config.dir.join("history.jsonl")).context("creating the history")?;
    let recorder: Recorder = Arc::new(Mutex::new(HistoryWriter::new(Box::new(LineWriter::new(file)))));
    let (stop, stopped) = watch::channel(false);
    let mut record = nemesis::Record::default();
    let workload_config = workload_config(config, &cluster, &mut record)?;
    let etcd_watcher = EtcdWatcher::start(config, &workload_config).await?;
    let clients = tokio::spawn(workload::run(
        client.clone(),
        workload_config.clone(),
        recorder.clone(),
        stopped.clone(),
    ));
    let txn_clients = tokio::spawn(transactional(client.clone(), config, stopped));

    let until = tokio::time::Instant::now() + config.duration;
    let kinds = (&config.faults[..], config.keys);
    let nemesis_result =
        nemesis::run(&mut cluster, &client, &mut rng, kinds, &recorder, until, &mut record).await;
    let mut problems = cluster.crashed();
    let restored = cluster.restore();
    tokio::time::sleep(AFTER_FAULTS).await;
    let clients_stopped_ns = recorder.lock().now_ns();
    let _ = stop.send(true);
    clients.await.context("the clients' task")?.context("recording the history")?;
    let (txn_history, watchers) = txn_clients.await.context("the transactional clients' task")?;
    // A nemesis that failed half-way (a status address that refused, a process it could
    // not signal) still leaves a round to judge: the failure is one of its problems.
    if let Err(error) = nemesis_result {
        problems.push(format!("the nemesis failed: {error:#}"));
    }
    restored?;

    let (recovery_time, settle_time) = after_the_faults(&mut cluster, &client, &record, &mut problems).await;
    problems.extend(every_final_read(&client, &recorder, &workload_config).await);
    let etcd_finish = etcd_watcher.finish(&workload_config).await;
    let transactions = txn_round::judge(&client, txn_history, watchers, READY_TIMEOUT).await;
    problems.extend(cluster.crashed());
    recorder.lock().flush().context("writing the history")?;
    drop(cluster);

    let events = recorder.lock().events().to_vec();
    let calls = history::calls(&events).context("the history just recorded")?;
    let checking = Instant::now();
    let report = checker::check(&calls, &CheckConfig::default());
    let etcd = judge_etcd(etcd_finish, &events, &workload_config.etcd_acknowledged.lock());
    let check_time = checking.elapsed();
    let keys: Vec<String> = (0..config.keys).map(workload::key).collect();
    let outages = availability::outages(&events, &record.episodes, &keys, clients_stopped_ns, config.seed);
    let count = |f: fn(&EventKind) -> bool| events.iter().filter(|e| f(&e.kind)).count();
    let outcome = RoundOutcome {
        invocations: count(|k| matches!(k, EventKind::Invoke { .. })),
        ok: count(|k| matches!(k, EventKind::Ok { .. })),
        failed: count(|k| matches!(k, EventKind::Fail { .. })),
        unknown: count(|k| matches!(k, EventKind::Unknown { .. })),
        report,
        transactions,
        etcd,
        problems,
        faults: record.lines,
        outages,
        start_time,
        recovery_time,
        settle_time,
        check_time,
    };
    write_lines(&config.dir.join("faults.txt"), &outcome.faults)?;
    if outcome.passed() && !config.keep {
        std::fs::remove_dir_all(&config.dir).with_context(|| format!("removing {}", config.dir.display()))?;
    } else if !outcome.passed() {
        write_findings(&config.dir, &outcome)?;
    }
    Ok(outcome)
}

/// The clients' settings; where each runs goes first in the nemesis's log.
fn workload_config(
    config: &RoundConfig,
    cluster: &ChaosCluster,
    record: &mut nemesis::Record,
) -> anyhow::Result<WorkloadConfig> {
    let homes = client_homes(config, cluster);
    let homes_named: Vec<String> = homes.iter().map(Home::to_string).collect();
    record.lines.push(format!("clients: {}", homes_named.join(" ")));
    Ok(WorkloadConfig {
        homes,
        keys: config.keys,
        seed: config.seed,
        think: config.think,
        pd_endpoints: cluster.pd_endpoints(),
        deadline: REQUEST_DEADLINE,
        etcd_clients: config.etcd_clients,
        etcd_endpoints: crate::etcd::EtcdEndpoints {
            addresses: cluster.etcd_endpoints(),
            tls: cluster.etcd_tls()?,
        },
        etcd_acknowledged: AcknowledgedWrites::default(),
        dialer: cluster.dialer()?,
    })
}

/// Once the faults are over: the cluster must serve again within a minute (how long it
/// took is answered), the moves whose first appends were dropped must finish, and every
/// store must hold as many replicas as the driver places on it (counts, not the
/// replicas themselves: a stale replica and a missing one on the same store would
/// cancel out). What fails goes to `problems`.
async fn after_the_faults(
    cluster: &mut ChaosCluster,
    client: &Client,
    record: &nemesis::Record,
    problems: &mut Vec<String>,
) -> (Duration, Duration) {
    let recovering = Instant::now();
    let first_key = workload::key(0);
    if let Err(error) = cluster.wait_ready(client, first_key.as_bytes(), READY_TIMEOUT).await {
        problems.push(format!("after the faults: {error:#}"));
    }
    let recovery_time = recovering.elapsed();
    let settling = Instant::now();
    let move_deadline = tokio::time::Instant::now() + MOVE_TIMEOUT;
    problems.extend(nemesis::unfinished_moves(client, &record.moves, move_deadline).await);
    if let Err(disagreement) = cluster.replicas_agree(client, READY_TIMEOUT).await {
        problems.push(format!("stale or missing replicas a minute after the faults: {disagreement}"));
    }
    (recovery_time, settling.elapsed())
}

/// Where each client runs: the first `clients - node_clients` on the host, the others
/// in the namespaces of nodes drawn from the seed.
fn client_homes(config: &RoundConfig, cluster: &ChaosCluster) -> Vec<Home> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x686f_6d65);
    let on_host = config.clients.saturating_sub(config.node_clients);
    (0..config.clients)
        .map(|index| {
            if index < on_host {
                return Home::Host;
            }
            let node = rand::Rng::random_range(&mut rng, 1..=cluster.nodes());
            Home::Node { node, path: cluster.network.host(node).namespace_path() }
        })
        .collect()
}

/// A final read of every key, through Tessera's API and through the etcd API's (for
/// the keys of its clients, if any); what could not be read.
async fn every_final_read(
    client: &Arc<Client>,
    recorder: &Recorder,
    workload: &WorkloadConfig,
) -> Vec<String> {
    let mut problems =
        final_reads(client.clone(), recorder, workload.keys, workload::KEYS, FINAL_PROCESS).await;
    if workload.etcd_clients > 0 {
        let endpoints = workload.etcd_endpoints.clone();
        let etcd = EtcdApi::new(endpoints, 0, REQUEST_DEADLINE, AcknowledgedWrites::default());
        let first = FINAL_PROCESS + workload.keys as u64;
        problems.extend(final_reads(etcd, recorder, workload.keys, etcd::KEYS, first).await);
    }
    problems
}

/// A final read of every key of `space` through `client`, process `first` reading the
/// first; what could not be read.
async fn final_reads(
    client: impl Executor,
    recorder: &Recorder,
    keys: usize,
    space: KeySpace,
    first: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    for index in 0..keys {
        let process = first + index as u64;
        if let Err(error) = final_read(&client, recorder, process, space.key(index)).await {
            problems.push(error);
        }
    }
    problems
}

/// Reads `key` until an answer comes (each try recorded), for at most the recovery
/// timeout.
async fn final_read(
    client: &impl Executor,
    recorder: &Recorder,
    process: u64,
    key: String,
) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let operation = Operation::Read { key: key.clone() };
    loop {
        let record = |kind| recorder.lock().record(process, kind).map_err(|e| format!("recording: {e}"));
        record(EventKind::Invoke { op: operation.clone() })?;
        let completion = client.execute(&operation).await;
        let done = matches!(completion, EventKind::Ok { .. });
        let error = format!("{completion:?}");
        record(completion)?;
        if done {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("the final read of {key} never succeeded; last: {error}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write_lines(path: &Path, lines: &[String]) -> anyhow::Result<()> {
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    for line in lines {
        writeln!(file, "{line}")?;
    }
    Ok(())
}

fn write_findings(dir: &Path, outcome: &RoundOutcome) -> anyhow::Result<()> {
    let mut lines = outcome.problems.clone();
    lines.extend(outcome.report.violations.iter().map(|v| v.to_string()));
    lines.extend(outcome.report.lost_writes.iter().map(|w| w.to_string()));
    lines.extend(
        outcome.report.inconclusive.iter().map(|key| format!("key {key}: the search hit its step limit")),
    );
    lines.extend(outcome.transactions.anomalies.iter().cloned());
    lines.extend(outcome.etcd.problems.iter().cloned());
    write_lines(&dir.join("findings.txt"), &lines)
}

/// The etcd API's watcher of a round, while it follows the etcd clients' keys.
struct EtcdWatcher {
    record: Arc<Mutex<WatchRecord>>,
    until: watch::Sender<Option<i64>>,
    follower: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

/// The watcher stopped, with what it needs to be judged.
struct EtcdFinish {
    record: WatchRecord,
    /// The final state of the etcd keys and the revision it was read at, or why not.
    end: Result<(i64, BTreeMap<String, String>), String>,
    followed: Result<(), String>,
}

impl EtcdWatcher {
    /// Opens the watch at the revision the etcd keys are read at now (none without
    /// etcd clients).
    async fn start(config: &RoundConfig, workload: &WorkloadConfig) -> anyhow::Result<EtcdWatcher> {
        let record = Arc::new(Mutex::new(WatchRecord::default()));
        let (until, until_receiver) = watch::channel(None);
        if config.etcd_clients == 0 {
            return Ok(EtcdWatcher { record, until, follower: None });
        }
        let endpoints = workload.etcd_endpoints.clone();
        let (from, _) = etcd_watch::read_all(&endpoints, READY_TIMEOUT)
            .await
            .map_err(|error| anyhow::anyhow!("reading the etcd keys before the clients start: {error}"))?;
        record.lock().from = from;
        let follower = etcd_watch::follow(endpoints, record.clone(), until_receiver, READY_TIMEOUT);
        Ok(EtcdWatcher { record, until, follower: Some(tokio::spawn(follower)) })
    }

    /// After the final reads: reads the end state, lets the watcher run past it, stops.
    async fn finish(self, workload: &WorkloadConfig) -> Option<EtcdFinish> {
        let follower = self.follower?;
        let end = etcd_watch::read_all(&workload.etcd_endpoints, READY_TIMEOUT).await;
        let followed = match &end {
            Ok((until, _)) => {
                let _ = self.until.send(Some(*until));
                follower.await.unwrap_or_else(|error| Err(format!("the etcd watcher's task: {error}")))
            }
            Err(_) => {
                follower.abort();
                Ok(())
            }
        };
        let record = self.record.lock().clone();
        Some(EtcdFinish { record, end, followed })
    }
}

/// The etcd watcher's record checked against the history and the final state.
fn judge_etcd(
    finished: Option<EtcdFinish>,
    history: &[history::Event],
    acknowledged: &[etcd::Acknowledged],
) -> EtcdOutcome {
    let Some(finish) = finished else { return EtcdOutcome::default() };
    let mut outcome = EtcdOutcome {
        acknowledged: acknowledged.len(),
        watched: finish.record.events.len(),
        gaps: finish.record.gaps.len(),
        problems: Vec::new(),
    };
    if let Err(error) = finish.followed {
        outcome.problems.push(error);
    }
    match finish.end {
        Ok((until, final_state)) => {
            let expected = etcd_watch::Expected { history, acknowledged, final_state: &final_state, until };
            outcome.problems.extend(etcd_watch::check(&finish.record, &expected));
        }
        Err(error) => outcome.problems.push(format!("the etcd keys could not be read at the end: {error}")),
    }
    outcome
}
