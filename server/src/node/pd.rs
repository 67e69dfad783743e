//! A placement driver replica: its metadata store, the driver, and one gRPC server for
//! both the driver's API and the Raft transport among the replicas.
//!
//! A replica either founds the driver with the other founding members (`--members`, or
//! alone), or joins a running one (`--join`): it asks the leader for a member id, keeps
//! the id in its data directory (a restart does not join again), and receives the
//! metadata as a learner that the leader promotes once caught up.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use anyhow::{Context, bail};
use tessera_placement::metadata::Founding;
use tessera_placement::{DriverConfig, PlacementDriver};
use tokio::runtime::Handle;

use super::Announcement;
use super::status::{Observability, flag_on_stop};
use crate::client::GrpcPdClient;
use crate::metrics::Role;
use crate::proto::pd_server::PdServer;
use crate::proto::raft_transport_server::RaftTransportServer;
use crate::security::{Credentials, Dialer};
use crate::service::pd::PdService;
use crate::transport::{AddressBook, GrpcTransport, MAX_MESSAGE_BYTES, RaftTransportService};

pub(crate) struct PdNodeConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    /// The address the other replicas reach this one at, if not the one it listens on.
    pub advertise: Option<String>,
    /// This replica's member id, if it founds the driver.
    pub member_id: u64,
    /// Every founding member's id and address (this one's included); empty for a lone
    /// replica, which then is member `member_id` at the address it listens on.
    pub members: Vec<(u64, String)>,
    /// Replicas of a running driver to join through, instead of founding one.
    pub join: Vec<String>,
    /// Where to serve `/metrics` and `/health`; none to export nothing.
    pub metrics: Option<String>,
    /// The driver's settings (schedulers, liveness, operator timeouts); the member id,
    /// founding and member addresses are filled in here.
    pub driver: DriverConfig,
    /// Mutual TLS on every link, with these credentials; none: in the clear.
    pub tls: Option<Arc<Credentials>>,
}

impl PdNodeConfig {
    fn dialer(&self) -> Dialer {
        self.tls.clone().map_or_else(Dialer::plain, Dialer::tls)
    }
}

/// The file in the data directory that keeps a joined replica's member id.
const MEMBER_ID_FILE: &str = "member_id";

/// The file in the data directory that keeps the token a replica joins with.
const JOIN_TOKEN_FILE: &str = "join_token";

/// How long a joining replica tries to reach the driver.
const JOIN_DEADLINE: Duration = Duration::from_secs(30);

/// Where the driver's members listen: the addresses known at start, then those the
/// metadata record (members that joined since).
struct MemberAddresses {
    known: HashMap<u64, String>,
    driver: OnceLock<Weak<PlacementDriver>>,
}

impl AddressBook for MemberAddresses {
    fn resolve(&self, member_id: u64) -> Option<String> {
        if let Some(address) = self.known.get(&member_id) {
            return Some(address.clone());
        }
        self.driver.get()?.upgrade()?.member_address(member_id)
    }
}

/// How this replica's membership starts: its id, how its metadata region comes to
/// exist, and the member addresses it knows.
async fn membership(
    config: &PdNodeConfig,
    bound: std::net::SocketAddr,
) -> anyhow::Result<(u64, Founding, HashMap<u64, String>)> {
    let id_file = config.data_dir.join(MEMBER_ID_FILE);
    if let Some(member_id) = super::read_id(&id_file)? {
        // Joined before: its metadata (and with them every member's address) are local.
        if !config.members.is_empty() {
            bail!(
                "this data directory holds member {member_id}, which joined a running driver: start it without --members"
            );
        }
        return Ok((member_id, Founding::Joined, HashMap::new()));
    }
    if config.join.is_empty() {
        let (voters, members): (Vec<u64>, HashMap<u64, String>) = if config.members.is_empty() {
            // A lone founder records where it is reached, unless no other host could
            // reach it there (joins are refused until it is restarted on a reachable
            // address or with one to advertise).
            let reached_at = match &config.advertise {
                Some(_) => Some(super::advertised_address(bound, config.advertise.as_deref())?),
                None => super::advertised_address(bound, None).ok(),
            };
            let members = reached_at.map(|address| (config.member_id, address)).into_iter().collect();
            (vec![config.member_id], members)
        } else {
            let members: HashMap<u64, String> = config.members.iter().cloned().collect();
            if !members.contains_key(&config.member_id) {
                bail!("member {} is not in the member list {:?}", config.member_id, config.members);
            }
            (members.keys().copied().collect(), members)
        };
        return Ok((config.member_id, Founding::Members(voters), members));
    }
    if !config.members.is_empty() {
        bail!("a replica either founds the driver (--members) or joins a running one (--join), not both");
    }
    if config.advertise.is_none() && (bound.port() == 0 || bound.ip().is_unspecified()) {
        bail!(
            "a joining replica needs a fixed, reachable --listen address (not {bound}) or --advertise: the driver \
             records it and the other replicas connect to it"
        );
    }
    let address = super::advertised_address(bound, config.advertise.as_deref())?;
    let token = join_token(&config.data_dir.join(JOIN_TOKEN_FILE))?;
    let driver = GrpcPdClient::new(Handle::current(), config.join.clone(), JOIN_DEADLINE, config.dialer());
    let answer = driver.join_member_async(&address, &token).await.context("joining the placement driver")?;
    super::write_id(&id_file, answer.member_id)?;
    let members =
        answer.members.into_iter().filter(|m| !m.address.is_empty()).map(|m| (m.id, m.address)).collect();
    Ok((answer.member_id, Founding::Joined, members))
}

/// The token this replica joins with: chosen once (128 random bits) and kept before the
/// first attempt, so that every retry from this data directory names the same joiner.
fn join_token(path: &std::path::Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)
        .context("reading /dev/urandom for a join token")?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    super::write_text(path, &token)?;
    Ok(token)
}

/// Runs a driver replica until `stop` resolves; `on_ready` receives what it serves on.
pub(crate) async fn run(
    config: PdNodeConfig,
    on_ready: impl FnOnce(Announcement),
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let observability = Observability::start(config.metrics.as_deref(), Role::Pd).await?;
    let (listener, address) = super::bind(&config.listen).await?;
    let (member_id, founding, members) = membership(&config, address).await?;
    let addresses = Arc::new(MemberAddresses { known: members.clone(), driver: OnceLock::new() });
    let transport = Arc::new(GrpcTransport::new(Handle::current(), addresses.clone(), config.dialer()));
    let mut driver_config = config.driver.clone();
    driver_config.member_id = member_id;
    driver_config.founding = founding;
    driver_config.member_addresses = members.into_iter().collect::<BTreeMap<_, _>>();
    let db = config.data_dir.join("db");
    let driver = tokio::task::spawn_blocking(move || PlacementDriver::open(&db, driver_config, transport))
        .await?
        .context("opening the placement driver")?;
    let driver = Arc::new(driver);
    let _ = addresses.driver.set(Arc::downgrade(&driver));
    let (stop, stopping) = flag_on_stop(stop);
    // The garbage-collection worker reaches the stores as a client does, through this
    // replica's own driver address (it acts only while this replica leads).
    let gc_client = crate::client::Client::with_dialer(
        vec![address.to_string()],
        config.driver.request_timeout * 6,
        config.dialer(),
    );
    let gc_worker = tokio::spawn(super::gc::run(
        Arc::downgrade(&driver),
        gc_client,
        config.driver.gc_interval,
        stopping.clone(),
    ));
    let router = super::grpc_server(config.tls.as_ref())
        .add_service(PdServer::new(PdService::new(driver.clone())))
        .add_service(
            RaftTransportServer::new(RaftTransportService::new(member_id, driver.sink(), stopping.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        );
    on_ready(Announcement {
        role: Role::Pd,
        id: member_id,
        address,
        metrics: observability.as_ref().map(Observability::address),
        etcd: None,
    });
    let status = observability.map(|observability| {
        let weak = Arc::downgrade(&driver);
        let refresh = move || {
            if let Some(driver) = weak.upgrade() {
                driver.refresh_metrics();
            }
        };
        let weak = Arc::downgrade(&driver);
        let describe = move || {
            let leader = weak.upgrade().is_some_and(|driver| driver.is_serving());
            format!(r#"{{"role":"pd","id":{member_id},"leader":{leader}}}"#)
        };
        observability.serve(Role::Pd, member_id, refresh, describe, stopping)
    });
    tracing::info!(member_id, %address, "placement driver replica serving");
    let served = super::serve(router, listener, config.tls.clone(), stop).await;
    gc_worker.abort();
    let stopping_started = std::time::Instant::now();
    tracing::info!(member_id, "placement driver replica stopping");
    // The status server first: a scrape in flight holds the driver for a moment.
    if let Some(status) = status {
        status.finish().await;
    }
    tokio::task::spawn_blocking(move || drop(driver)).await?;
    let stopped_in_ms = stopping_started.elapsed().as_millis() as u64;
    tracing::info!(member_id, stopped_in_ms, "placement driver replica stopped");
    served
}
