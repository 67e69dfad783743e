//! A store node: registers with the placement driver (once; the id is kept in the data
//! directory), opens the store, starts its agent, and serves the key-value API and the
//! Raft transport.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use parking_lot::RwLock;
use tessera_engine::raft::OpaqueError;
use tessera_engine::store::{Store, StoreConfig};
use tessera_engine::timestamp::{TimestampRun, TimestampSource};
use tessera_placement::PdClient;
use tessera_placement::agent::{AgentConfig, DriverIds, StoreAgent};
use tessera_placement::proto::RegisterStoreRequest;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::Announcement;
use super::status::{Observability, Serving, flag_on_stop};
use crate::client::{Client, GrpcPdClient, TimestampClient};
use crate::metrics::Role;
use crate::proto::kv_server::KvServer;
use crate::proto::raft_transport_server::RaftTransportServer;
use crate::security::{Credentials, Dialer};
use crate::service::kv::KvService;
use crate::transport::{AddressBook, GrpcTransport, MAX_MESSAGE_BYTES, RaftTransportService};

pub(crate) struct StoreNodeConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    /// The address others reach this store at, if not the one it listens on.
    pub advertise: Option<String>,
    /// The placement driver's replicas.
    pub pd: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// How long a request waits for its region before failing.
    pub request_timeout: Duration,
    /// How the store runs its regions (Raft timing, split thresholds, log GC); the
    /// store id is filled in here.
    pub engine: StoreConfig,
    /// Where to serve `/metrics` and `/health`; none to export nothing.
    pub metrics: Option<String>,
    /// Where to serve etcd's v3 API; none not to.
    pub etcd_listen: Option<String>,
    pub etcd: crate::etcd::EtcdSettings,
    /// Whether the status server's `/fail` routes arm fail points (test clusters only;
    /// needs `metrics`).
    pub enable_fail_points: bool,
    /// Requests (and proposals) slower than this are logged with their phases.
    pub slow_request_threshold: Duration,
    /// Mutual TLS on every link, with these credentials; none: in the clear.
    pub tls: Option<Arc<Credentials>>,
}

/// How long the agent's calls to the driver (and address lookups) may take: a driver
/// that does not answer within a few seconds is skipped for this round rather than
/// waited for, and never holds up a shutdown for long.
const AGENT_PD_DEADLINE: Duration = Duration::from_secs(3);

/// The file in the data directory that keeps the store's id.
const STORE_ID_FILE: &str = "store_id";

/// Store addresses from the placement driver, cached. A stopping node asks no more:
/// a lookup still waiting when the runtime shuts down would poll a dead timer.
struct DriverAddressBook {
    pd: GrpcPdClient,
    cache: RwLock<HashMap<u64, String>>,
    stopping: CancellationToken,
}

impl AddressBook for DriverAddressBook {
    fn resolve(&self, store_id: u64) -> Option<String> {
        if let Some(address) = self.cache.read().get(&store_id) {
            return Some(address.clone());
        }
        if self.stopping.is_cancelled() {
            return None;
        }
        let stores = self.pd.stores().ok()?;
        let mut cache = self.cache.write();
        for store in stores.into_iter().filter_map(|view| view.store) {
            cache.insert(store.id, store.address);
        }
        cache.get(&store_id).cloned()
    }

    fn forget(&self, store_id: u64) {
        self.cache.write().remove(&store_id);
    }
}

/// How long a leader waits for the oracle before it gives up on one sync (it asks again
/// at the next one-phase commit meanwhile refused).
const ONE_PHASE_SYNC_DEADLINE: Duration = Duration::from_secs(5);

/// The oracle as the store's leaders reach it before taking one-phase commits: the
/// client library's batched timestamp stream, on the node's runtime.
struct OracleTimestamps {
    timestamps: TimestampClient,
    runtime: Handle,
}

impl std::fmt::Debug for OracleTimestamps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OracleTimestamps")
    }
}

/// The metrics and status server, if the configuration names an address, with fail
/// points armable through it if asked.
async fn start_observability(config: &StoreNodeConfig) -> anyhow::Result<Option<Observability>> {
    let mut observability = Observability::start(config.metrics.as_deref(), Role::Store).await?;
    if config.enable_fail_points {
        let status = observability.as_mut().context("enable_fail_points needs a metrics address")?;
        status.enable_fail_points();
        tracing::warn!(
            "fail points can be armed from outside through the status address (test clusters only)"
        );
    }
    Ok(observability)
}

/// The oracle for the store's leaders, through the driver client `pd`.
fn oracle_timestamps(pd: &Arc<GrpcPdClient>) -> Arc<dyn TimestampSource> {
    let timestamps = TimestampClient::start(pd.clone(), ONE_PHASE_SYNC_DEADLINE);
    Arc::new(OracleTimestamps { timestamps, runtime: Handle::current() })
}

impl TimestampSource for OracleTimestamps {
    fn request(&self, count: u32, answer: Box<dyn FnOnce(Result<TimestampRun, OpaqueError>) + Send>) {
        let run = self.timestamps.request_run(count);
        self.runtime.spawn(async move { answer(run.await.map_err(OpaqueError::new)) });
    }
}

/// This store's id: the one kept in its data directory, or a new one from the driver,
/// kept before registering so that a registration retried after a lost answer (or a
/// crash) names the same store.
async fn store_id(pd: &GrpcPdClient, data_dir: &std::path::Path) -> anyhow::Result<u64> {
    let id_file = data_dir.join(STORE_ID_FILE);
    if let Some(id) = super::read_id(&id_file)? {
        return Ok(id);
    }
    let ids = pd.alloc_ids_async(1).await.context("getting a store id from the placement driver")?;
    let id = *ids.first().context("the placement driver answered no id")?;
    super::write_id(&id_file, id)?;
    Ok(id)
}

/// Serves `/metrics` and `/health`; the store's gauges are refreshed at each scrape.
fn serve_status(
    observability: Observability,
    store: &Arc<Store>,
    store_id: u64,
    stopping: CancellationToken,
) -> Serving {
    let weak = Arc::downgrade(store);
    let refresh = move || {
        if let Some(store) = weak.upgrade() {
            // A store that stops mid-refresh keeps its last figures.
            let _ = store.refresh_metrics();
        }
    };
    let describe = move || format!(r#"{{"role":"store","id":{store_id}}}"#);
    observability.serve(Role::Store, store_id, refresh, describe, stopping)
}

/// The key-value API. Watches served here reach every region's leader through the
/// client library.
fn kv_service(
    (client, request_timeout, slow_request_threshold): (Arc<Client>, Duration, Duration),
    store: &Arc<Store>,
    addresses: Arc<dyn AddressBook>,
    stopping: CancellationToken,
) -> KvService {
    KvService::new(store, (client, stopping), addresses, request_timeout, slow_request_threshold)
}

/// The store's gRPC services: the key-value API and the Raft transport.
fn store_router(
    timings: (Arc<Client>, Duration, Duration),
    tls: Option<&Arc<Credentials>>,
    store: &Arc<Store>,
    addresses: Arc<dyn AddressBook>,
    stopping: CancellationToken,
) -> super::Router {
    let transport = RaftTransportService::new(store.store_id(), store.sink(), stopping.clone());
    super::grpc_server(tls)
        .add_service(
            KvServer::new(kv_service(timings, store, addresses, stopping))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(RaftTransportServer::new(transport).max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// A server of etcd's API answering on `listener` until `stopping` is cancelled; its
/// task, and the address it serves on.
fn serve_etcd(
    (listener, address): (tokio::net::TcpListener, std::net::SocketAddr),
    (client, settings, tls): (Arc<Client>, crate::etcd::EtcdSettings, Option<Arc<Credentials>>),
    store: &Arc<Store>,
    stopping: CancellationToken,
) -> (tokio::task::JoinHandle<anyhow::Result<()>>, std::net::SocketAddr) {
    let router = crate::etcd::router(client, Arc::downgrade(store), store.store_id(), settings, tls.as_ref());
    (tokio::spawn(super::serve(router, listener, tls, stopping.cancelled_owned())), address)
}

/// Registers store `store_id` with the placement driver: the address it is reached at,
/// and the one it serves etcd's API on, if it does (bound at `etcd_bound`).
async fn register(
    pd: &GrpcPdClient,
    config: &StoreNodeConfig,
    store_id: u64,
    (advertised, etcd_bound): (&str, Option<std::net::SocketAddr>),
) -> anyhow::Result<()> {
    let etcd_address = match etcd_bound {
        Some(bound) => super::advertised_address_on(bound, config.advertise.as_deref())?,
        None => String::new(),
    };
    let request = RegisterStoreRequest {
        store_id,
        address: advertised.to_string(),
        labels: config.labels.clone(),
        etcd_address,
    };
    pd.register_store_async(request).await.context("registering with the placement driver")?;
    Ok(())
}

/// Store addresses, asked of the driver with the agent's short deadline.
fn driver_address_book(
    config: &StoreNodeConfig,
    dialer: &Dialer,
    stopping: &CancellationToken,
) -> Arc<dyn AddressBook> {
    Arc::new(DriverAddressBook {
        pd: GrpcPdClient::new(Handle::current(), config.pd.clone(), AGENT_PD_DEADLINE, dialer.clone())
            .abandoned_on(stopping.clone()),
        cache: RwLock::new(HashMap::new()),
        stopping: stopping.clone(),
    })
}

/// Runs a store until `stop` resolves; `on_ready` receives what it serves on.
pub(crate) async fn run(
    config: StoreNodeConfig,
    on_ready: impl FnOnce(Announcement),
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    if config.pd.is_empty() {
        bail!("a store needs the placement driver's address (--pd)");
    }
    let observability = start_observability(&config).await?;
    let (stop, stopping) = flag_on_stop(stop);
    let (listener, address) = super::bind(&config.listen).await?;
    let etcd_listener = match &config.etcd_listen {
        Some(etcd_listen) => Some(super::bind(etcd_listen).await?),
        None => None,
    };
    let advertised = super::advertised_address(address, config.advertise.as_deref())?;
    let dialer = config.tls.clone().map_or_else(Dialer::plain, Dialer::tls);
    let pd = Arc::new(GrpcPdClient::new(
        Handle::current(),
        config.pd.clone(),
        Duration::from_secs(30),
        dialer.clone(),
    ));
    let store_id = store_id(&pd, &config.data_dir).await?;
    let etcd_bound = etcd_listener.as_ref().map(|(_, bound)| *bound);
    register(&pd, &config, store_id, (&advertised, etcd_bound)).await?;
    tracing::info!(store_id, %address, %advertised, data_dir = %config.data_dir.display(), "store registered with the placement driver");
    let addresses = driver_address_book(&config, &dialer, &stopping);
    let transport = Arc::new(GrpcTransport::new(Handle::current(), addresses.clone(), dialer.clone()));
    let ids = Arc::new(DriverIds::new());
    // The node's own client: what its services answer through, and what resolves the
    // locks that hold its change feeds back.
    let client = Arc::new(Client::with_dialer(config.pd.clone(), config.request_timeout, dialer.clone()));
    let timings = (client.clone(), config.request_timeout, config.slow_request_threshold);
    let (stale_locks, stale_lock_reports) = super::stale_locks::queue();
    tokio::spawn(super::stale_locks::run(stale_lock_reports, client.clone(), stopping.clone()));
    let engine = StoreConfig {
        store_id,
        slow_proposal_threshold: config.slow_request_threshold,
        timestamps: Some(oracle_timestamps(&pd)),
        stale_locks: Some(stale_locks),
        ..config.engine
    };
    let db = config.data_dir.join("db");
    let store_ids = ids.clone();
    // Off the async workers: opening replays every region's log.
    let opened =
        tokio::task::spawn_blocking(move || Store::open_with_ids(&db, engine, transport, Some(store_ids)));
    let store = Arc::new(opened.await?.context("opening the store")?);
    // The agent reports every second, with the short deadline.
    let driver: Arc<dyn PdClient> = Arc::new(
        GrpcPdClient::new(Handle::current(), config.pd.clone(), AGENT_PD_DEADLINE, dialer)
            .abandoned_on(stopping.clone()),
    );
    let agent = StoreAgent::start(store.clone(), driver, ids, AgentConfig::default())?;
    let router = store_router(timings, config.tls.as_ref(), &store, addresses, stopping.clone());
    let etcd = etcd_listener.map(|listening| {
        serve_etcd(listening, (client, config.etcd, config.tls.clone()), &store, stopping.clone())
    });
    on_ready(Announcement {
        role: Role::Store,
        id: store_id,
        address,
        metrics: observability.as_ref().map(Observability::address),
        etcd: etcd.as_ref().map(|(_, etcd_address)| *etcd_address),
    });
    let status = observability.map(|observability| serve_status(observability, &store, store_id, stopping));
    tracing::info!(store_id, %address, "store serving");
    let served = super::serve(router, listener, config.tls, stop).await;
    let stopping_started = std::time::Instant::now();
    tracing::info!(store_id, "store stopping");
    // The status server first (a scrape in flight holds the store for a moment), then
    // stop reporting and close the store (the services hold it weakly): requests in
    // flight are answered or failed, and RocksDB is closed.
    if let Some(status) = status {
        status.finish().await;
    }
    if let Some((etcd, _)) = etcd {
        etcd.await??;
    }
    tokio::task::spawn_blocking(move || {
        agent.stop();
        drop(store);
    })
    .await?;
    tracing::info!(store_id, stopped_in_ms = stopping_started.elapsed().as_millis() as u64, "store stopped");
    served
}
