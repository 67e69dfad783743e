//! A Tessera cluster of real processes for the nemesis to torment: every node a network
//! namespace running a store, the first few also a placement driver replica.
//!
//! The cluster owns its processes and namespaces: dropping it kills every process and
//! removes every namespace. It must never report the cluster ready before a client
//! could use it: readiness is asked of the driver, as a client would.

pub mod daemon;
pub mod network;
pub mod status;
pub mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tessera_placement::proto::StoreState;
use tessera_server::client::Client;
use tessera_server::security::Dialer;

use daemon::{Daemon, Role};
use network::Network;

const PD_PORT: u16 = 2379;
/// Where every node's store listens (its peers and the clients dial it there).
pub const STORE_PORT: u16 = 20160;
/// Where every node's store serves `/metrics`, `/health` and `/fail`.
const STORE_STATUS_PORT: u16 = 9461;
/// The stores' configuration file: fail points on (the nemesis arms them); versions
/// collected two seconds after the safe point moves, so that garbage collection runs
/// under the faults of every round.
const STORE_CONFIG: &str = "[store]\nenable_fail_points = true\ngc_compaction_interval_ms = 2000\n";

/// Versions kept five seconds and the safe point moved every second: garbage
/// collection (fences, lock resolution, the compaction filter) runs many times a round,
/// and a transaction the faults hold up past the lifetime is refused (an abort).
const DRIVER_CONFIG: &str = "[pd.transactions]\ngc_lifetime_ms = 5000\ngc_interval_ms = 1000\n";

pub struct ClusterConfig {
    pub nodes: usize,
    pub pd_replicas: usize,
    /// The `tessera` binary.
    pub binary: PathBuf,
    /// Where data directories and logs go.
    pub dir: PathBuf,
    /// Mutual TLS on every link (certificates made in `dir/tls`).
    pub tls: bool,
}

pub struct ChaosCluster {
    /// Processes before the network: dropping kills them, then removes the namespaces.
    pub daemons: Vec<Daemon>,
    pub network: Network,
    pd_endpoints: Vec<String>,
    tls: Option<tls::ChaosTls>,
}

impl ChaosCluster {
    pub fn start(config: &ClusterConfig) -> anyhow::Result<ChaosCluster> {
        if config.pd_replicas == 0 || config.pd_replicas > config.nodes {
            bail!("{} driver replicas cannot run on {} nodes", config.pd_replicas, config.nodes);
        }
        let network = Network::create(config.nodes)?;
        let pd_endpoints: Vec<String> =
            (1..=config.pd_replicas).map(|i| format!("{}:{PD_PORT}", network.host(i).ip)).collect();
        let members: Vec<String> =
            pd_endpoints.iter().enumerate().map(|(i, address)| format!("{}={address}", i + 1)).collect();
        let tls =
            if config.tls { Some(tls::ChaosTls::create(&config.dir.join("tls"), &network)?) } else { None };
        let tls_section = tls.as_ref().map(tls::ChaosTls::node_section).unwrap_or_default();
        let mut daemons = Vec::new();
        for host in &network.hosts {
            let node_dir = config.dir.join(format!("n{}", host.index));
            std::fs::create_dir_all(&node_dir).with_context(|| format!("creating {}", node_dir.display()))?;
            let dir = |name: &str| path(&node_dir, name);
            if host.index <= config.pd_replicas {
                let driver_config = node_dir.join("pd.toml");
                std::fs::write(&driver_config, format!("{DRIVER_CONFIG}{tls_section}"))
                    .with_context(|| format!("writing {}", driver_config.display()))?;
                let args = vec![
                    "pd".into(),
                    "--config".into(),
                    driver_config.display().to_string(),
                    "--data-dir".into(),
                    dir("pd"),
                    "--listen".into(),
                    format!("{}:{PD_PORT}", host.ip),
                    "--id".into(),
                    host.index.to_string(),
                    "--members".into(),
                    members.join(","),
                ];
                daemons.push(Daemon::new(
                    Role::Pd,
                    host.index,
                    &host.namespace,
                    &config.binary,
                    args,
                    node_dir.join("pd.log"),
                ));
            }
            let store_config = node_dir.join("store.toml");
            std::fs::write(&store_config, format!("{STORE_CONFIG}{tls_section}"))
                .with_context(|| format!("writing {}", store_config.display()))?;
            let args = vec![
                "store".into(),
                "--config".into(),
                store_config.display().to_string(),
                "--pd".into(),
                pd_endpoints.join(","),
                "--data-dir".into(),
                dir("store"),
                "--listen".into(),
                format!("{}:{STORE_PORT}", host.ip),
                "--metrics".into(),
                format!("{}:{STORE_STATUS_PORT}", host.ip),
                "--etcd-listen".into(),
                format!("{}:{}", host.ip, crate::etcd::ETCD_PORT),
            ];
            daemons.push(Daemon::new(
                Role::Store,
                host.index,
                &host.namespace,
                &config.binary,
                args,
                node_dir.join("store.log"),
            ));
        }
        let mut cluster = ChaosCluster { daemons, network, pd_endpoints, tls };
        for daemon in &mut cluster.daemons {
            daemon.start()?;
        }
        Ok(cluster)
    }

    pub fn pd_endpoints(&self) -> Vec<String> {
        self.pd_endpoints.clone()
    }

    /// How the harness's Tessera clients dial the cluster.
    pub fn dialer(&self) -> anyhow::Result<Dialer> {
        self.tls.as_ref().map_or_else(|| Ok(Dialer::plain()), tls::ChaosTls::dialer)
    }

    /// How the harness's etcd clients connect: over TLS if the cluster uses it.
    pub fn etcd_tls(&self) -> anyhow::Result<Option<etcd_client::TlsOptions>> {
        self.tls.as_ref().map(tls::ChaosTls::etcd_options).transpose()
    }

    /// Every store's etcd address.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        self.network.hosts.iter().map(|host| format!("{}:{}", host.ip, crate::etcd::ETCD_PORT)).collect()
    }

    pub fn nodes(&self) -> usize {
        self.network.hosts.len()
    }

    pub fn pd_replicas(&self) -> usize {
        self.daemons.iter().filter(|d| d.role == Role::Pd).count()
    }

    pub fn daemon(&mut self, role: Role, node: usize) -> anyhow::Result<&mut Daemon> {
        self.daemons
            .iter_mut()
            .find(|d| d.role == role && d.node == node)
            .with_context(|| format!("no {} on node {node}", role.name()))
    }

    /// Where node `node`'s store serves its status routes (`/fail` among them).
    pub fn store_status_address(&self, node: usize) -> String {
        format!("{}:{STORE_STATUS_PORT}", self.network.host(node).ip)
    }

    /// The node whose store listens at `address`.
    pub fn node_of_address(&self, address: &str) -> Option<usize> {
        let ip = address.split(':').next()?;
        self.network.hosts.iter().find(|h| h.ip == ip).map(|h| h.index)
    }

    /// Heals the network, resumes paused processes and restarts killed ones.
    pub fn restore(&mut self) -> anyhow::Result<()> {
        self.network.heal()?;
        for daemon in &mut self.daemons {
            daemon.resume()?;
            daemon.start()?;
        }
        Ok(())
    }

    /// Processes that exited without being killed: a crash is a finding.
    pub fn crashed(&mut self) -> Vec<String> {
        self.daemons
            .iter_mut()
            .filter_map(|daemon| daemon.exited().map(|status| format!("{} exited: {status}", daemon.name())))
            .collect()
    }

    /// Waits until the driver answers, sees every store up, and the region holding
    /// `key` has a leader.
    pub async fn wait_ready(&self, client: &Client, key: &[u8], timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::from("not asked yet");
        while tokio::time::Instant::now() < deadline {
            match self.readiness(client, key).await {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("the cluster was not ready within {timeout:?}: {last}")
    }

    /// Waits until every store holds as many replicas as the driver places on it (by
    /// the store's own heartbeat): a replica that outlived its removal (its store was
    /// down while it was moved away) must be found and destroyed. Answers each
    /// disagreement left at `timeout`.
    pub async fn replicas_agree(&self, client: &Client, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let stores = client.pd().stores_async().await.map_err(|e| e.to_string());
            let disagreements: Vec<String> = match &stores {
                Ok(stores) => stores.iter().filter_map(replica_disagreement).collect(),
                Err(error) => vec![format!("the driver did not list its stores: {error}")],
            };
            if disagreements.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(disagreements.join("; "));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn readiness(&self, client: &Client, key: &[u8]) -> Result<(), String> {
        let stores = client.pd().stores_async().await.map_err(|e| e.to_string())?;
        let up = stores.iter().filter(|s| s.state == StoreState::Up as i32).count();
        if up < self.nodes() {
            return Err(format!("{up} of {} stores up", self.nodes()));
        }
        let route = client.pd().region_by_key_async(key).await.map_err(|e| e.to_string())?;
        if route.leader.is_none() {
            return Err("the first region has no leader yet".into());
        }
        Ok(())
    }
}

/// How a store's own count of its replicas differs from the driver's, if it does.
fn replica_disagreement(view: &tessera_placement::proto::StoreView) -> Option<String> {
    let held = view.stats.as_ref()?.region_count;
    let placed = view.region_count;
    let id = view.store.as_ref().map_or(0, |store| store.id);
    (held != placed).then(|| format!("store {id} holds {held} replicas, the driver places {placed} there"))
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}
