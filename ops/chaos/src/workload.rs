//! The clients: a few processes, each running one operation at a time on a handful of
//! keys (reads, writes, compare-and-swaps, scans) and recording every invocation and
//! completion in the history.
//!
//! A client runs either in the root namespace, where it reaches every node whatever the
//! faults, or inside a node's namespace (a thread of its own moved there, with its own
//! runtime and connections), where a partition cuts it off with that node: a client on
//! the minority side must see failures or unknown outcomes, never wrong answers. Every
//! client records into the one history, on one clock.
//!
//! Beside them, clients of the etcd API (`crate::etcd`) run the same operations on keys
//! of their own (`e0`, `e1`, ...), through etcd's gRPC interface of random stores.
//!
//! A completion is classified by what the client library guarantees: a failed read or
//! scan changed nothing; a write refused before it could apply failed; a write whose
//! fate the library could not know is unknown, and its process retires (its operation
//! stays open forever, as a crashed client's would), handing over to a fresh process
//! id. Values are unique (`p{process}-{n}`), so every value read names its writer.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tessera_server::client::{Client, ClientError};
use tokio::sync::watch;

use crate::history::{EventKind, HistoryWriter, Operation, Output};

pub type Recorder = Arc<Mutex<HistoryWriter>>;

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Where each client runs: one entry per client.
    pub homes: Vec<Home>,
    pub keys: usize,
    pub seed: u64,
    /// Longest pause between one process's operations (drawn uniformly from zero).
    pub think: Duration,
    /// The driver's replicas and the deadline of one request, for the clients that run
    /// in a node's namespace (and so need a client library of their own).
    pub pd_endpoints: Vec<String>,
    pub deadline: Duration,
    /// Clients of the etcd API (on the host), and the stores' etcd addresses.
    pub etcd_clients: usize,
    pub etcd_endpoints: crate::etcd::EtcdEndpoints,
    /// Where the etcd clients keep the writes acknowledged to them.
    pub etcd_acknowledged: crate::etcd::AcknowledgedWrites,
    /// How the clients in nodes' namespaces dial (over TLS if the cluster uses it).
    pub dialer: tessera_server::security::Dialer,
}

/// Where a client runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// The root namespace: every node stays reachable.
    Host,
    /// Node `node`'s network namespace, whose file is `path`: cut off with the node.
    Node { node: usize, path: PathBuf },
}

impl std::fmt::Display for Home {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Home::Host => write!(f, "host"),
            Home::Node { node, .. } => write!(f, "n{node}"),
        }
    }
}

/// The keys one kind of client works on: `{prefix}0`, `{prefix}1`, ... (one character
/// after the prefix, so that they sort as numbered for up to ten keys); every scan
/// covers `[prefix, scan_end)`, all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpace {
    pub prefix: &'static str,
    pub scan_end: &'static str,
}

/// The keys of the clients of Tessera's own API.
pub const KEYS: KeySpace = KeySpace { prefix: "k", scan_end: "l" };

impl KeySpace {
    pub fn key(&self, index: usize) -> String {
        format!("{}{index}", self.prefix)
    }
}

/// The key names of Tessera's own clients: `k0`, `k1`, ...
pub fn key(index: usize) -> String {
    KEYS.key(index)
}

/// How a client runs one operation of the history and says how it completed.
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, operation: &Operation) -> impl Future<Output = EventKind> + Send;
}

impl Executor for Arc<Client> {
    async fn execute(&self, operation: &Operation) -> EventKind {
        execute(self, operation).await
    }
}

/// Records an event; a history that cannot be written ends the round's usefulness, so
/// the error is kept and reported by the round, not hidden.
fn record(recorder: &Recorder, process: u64, kind: EventKind) -> std::io::Result<()> {
    recorder.lock().record(process, kind).map(|_| ())
}

/// Runs the clients until `stop` turns true; each finishes its operation in flight.
/// `client` serves the clients of the root namespace.
pub async fn run(
    client: Arc<Client>,
    config: WorkloadConfig,
    recorder: Recorder,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let seen: Arc<Mutex<HashMap<String, Option<String>>>> = Arc::default();
    let mut finished = Vec::new();
    let workers = config.homes.len() + config.etcd_clients;
    let worker = |index: usize, keys: KeySpace| Worker {
        index,
        workers,
        keys,
        config: config.clone(),
        recorder: recorder.clone(),
        seen: seen.clone(),
        stop: stop.clone(),
    };
    for index in config.homes.len()..workers {
        let worker = worker(index, crate::etcd::KEYS);
        let acknowledged = config.etcd_acknowledged.clone();
        let etcd =
            crate::etcd::EtcdApi::new(config.etcd_endpoints.clone(), index, config.deadline, acknowledged);
        let (done, answer) = tokio::sync::oneshot::channel();
        tokio::spawn(async move { done.send(worker.run(etcd).await) });
        finished.push(answer);
    }
    for (index, home) in config.homes.iter().enumerate() {
        let worker = worker(index, KEYS);
        finished.push(match home {
            Home::Host => {
                let client = client.clone();
                let (done, answer) = tokio::sync::oneshot::channel();
                tokio::spawn(async move { done.send(worker.run(client).await) });
                answer
            }
            Home::Node { path, .. } => {
                let (pd, deadline, dialer) =
                    (config.pd_endpoints.clone(), config.deadline, config.dialer.clone());
                let name = format!("client-{}", worker.index);
                let work =
                    async move { worker.run(Arc::new(Client::with_dialer(pd, deadline, dialer))).await };
                run_in_namespace(path.clone(), name, work).await?
            }
        });
    }
    for done in finished {
        done.await.map_err(|_| std::io::Error::other("a client stopped without an answer"))??;
    }
    Ok(())
}

/// Runs `work` on a thread of its own moved into the network namespace at `path`, on a
/// runtime of that thread: every socket it opens is the namespace's. Fails at once if
/// the thread cannot enter the namespace or build its runtime; otherwise answers with
/// the channel `work`'s result will come through.
async fn run_in_namespace(
    path: PathBuf,
    name: String,
    work: impl Future<Output = std::io::Result<()>> + Send + 'static,
) -> std::io::Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>> {
    let (entered, ready) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
    let (done, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name(name).spawn(move || {
        let runtime = enter_namespace(&path)
            .map_err(|error| std::io::Error::other(format!("entering {}: {error}", path.display())))
            .and_then(|()| tokio::runtime::Builder::new_current_thread().enable_all().build());
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = entered.send(Err(error));
                return;
            }
        };
        let _ = entered.send(Ok(()));
        let _ = done.send(runtime.block_on(work));
    })?;
    ready
        .await
        .map_err(|_| std::io::Error::other("a client thread ended before entering its namespace"))??;
    Ok(answer)
}

/// Moves the calling thread into the network namespace whose file is `path`.
fn enter_namespace(path: &std::path::Path) -> std::io::Result<()> {
    let namespace = std::fs::File::open(path)?;
    rustix::thread::move_into_link_name_space(
        namespace.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;
    Ok(())
}

/// One client process's loop and what it shares with the others.
struct Worker {
    index: usize,
    /// Every worker's (its processes are numbered `index`, `index + workers`, ...).
    workers: usize,
    keys: KeySpace,
    config: WorkloadConfig,
    recorder: Recorder,
    seen: Arc<Mutex<HashMap<String, Option<String>>>>,
    stop: watch::Receiver<bool>,
}

impl Worker {
    async fn run(self, client: impl Executor) -> std::io::Result<()> {
        let Worker { index: worker, workers, keys, config, recorder, seen, stop } = self;
        let mut rng =
            ChaCha8Rng::seed_from_u64(config.seed.wrapping_mul(1_000_003).wrapping_add(worker as u64));
        let mut process = worker as u64;
        let mut written = 0u64;
        // A dropped sender stops the clients too: a round that failed half-way must not
        // leave them running.
        while !*stop.borrow() && stop.has_changed().is_ok() {
            let key = keys.key(rng.random_range(0..config.keys.max(1)));
            let mut fresh_value = || {
                written += 1;
                format!("p{process}-{written}")
            };
            let operation = match rng.random_range(0..100) {
                0..35 => Operation::Read { key },
                35..65 => Operation::Write { value: fresh_value(), key },
                65..90 => {
                    let expected = seen.lock().get(&key).cloned().flatten();
                    Operation::Cas { expected, new: fresh_value(), key }
                }
                _ => Operation::Scan { start: keys.prefix.into(), end: keys.scan_end.into() },
            };
            record(&recorder, process, EventKind::Invoke { op: operation.clone() })?;
            let completion = client.execute(&operation).await;
            if let EventKind::Ok { output: Output::Read { value } } = &completion
                && let Operation::Read { key } = &operation
            {
                seen.lock().insert(key.clone(), value.clone());
            }
            let unknown = matches!(completion, EventKind::Unknown { .. });
            record(&recorder, process, completion)?;
            if unknown {
                process += workers as u64;
            }
            let think = rng.random_range(Duration::ZERO..=config.think);
            tokio::time::sleep(think).await;
        }
        Ok(())
    }
}

/// Runs one operation and says how it completed.
pub async fn execute(client: &Client, operation: &Operation) -> EventKind {
    match operation {
        Operation::Read { key } => match client.get(key.as_bytes()).await {
            Ok(value) => EventKind::Ok { output: Output::Read { value: value.as_deref().map(text) } },
            Err(error) => EventKind::Fail { error: error.to_string() },
        },
        Operation::Scan { start, end } => match client.scan(start.as_bytes(), end.as_bytes(), 0, false).await
        {
            Ok(pairs) => EventKind::Ok {
                output: Output::Scan {
                    pairs: pairs.into_iter().map(|kv| (text(&kv.key), text(&kv.value))).collect(),
                },
            },
            Err(error) => EventKind::Fail { error: error.to_string() },
        },
        Operation::Write { key, value } => match client.put(key.as_bytes(), value.as_bytes()).await {
            Ok(()) => EventKind::Ok { output: Output::Written },
            Err(error) => write_failure(error),
        },
        Operation::Cas { key, expected, new } => {
            let expected = expected.as_deref().map(str::as_bytes);
            match client.compare_and_swap(key.as_bytes(), expected, Some(new.as_bytes())).await {
                Ok((swapped, previous)) => {
                    EventKind::Ok { output: Output::Cas { swapped, previous: previous.as_deref().map(text) } }
                }
                Err(error) => write_failure(error),
            }
        }
    }
}

/// A write's error as the client library types it: unknown only when it says so.
/// `Unavailable` means every try was refused before it could apply (the library
/// reports an ambiguous try as `OutcomeUnknown` at once, never retrying it).
fn write_failure(error: ClientError) -> EventKind {
    match error {
        ClientError::OutcomeUnknown(_) | ClientError::ProtocolViolation { .. } => {
            EventKind::Unknown { error: error.to_string() }
        }
        ClientError::InvalidArgument(_)
        | ClientError::Pd(_)
        | ClientError::Unavailable { .. }
        | ClientError::Conflict(_) => EventKind::Fail { error: error.to_string() },
    }
}

/// Bytes a store answered as the history's text.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
