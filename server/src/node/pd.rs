//! A placement driver replica: its metadata store, the driver, and one gRPC server for
//! both the driver's API and the Raft transport among the replicas.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use tessera_placement::{DriverConfig, PlacementDriver};
use tokio::runtime::Handle;
use tonic::transport::Server;

use crate::proto::pd_server::PdServer;
use crate::proto::raft_transport_server::RaftTransportServer;
use crate::service::pd::PdService;
use crate::transport::{GrpcTransport, MAX_MESSAGE_BYTES, RaftTransportService, StaticAddresses};

pub struct PdNodeConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    /// This replica's member id.
    pub member_id: u64,
    /// Every member's id and address (this one's included); empty for a lone replica,
    /// which then is member `member_id` at the address it listens on.
    pub members: Vec<(u64, String)>,
    /// Voters every region should have.
    pub replicas: usize,
}

/// Runs a driver replica until `stop` resolves; `on_ready` receives the address it
/// serves on.
pub async fn run(
    config: PdNodeConfig,
    on_ready: impl FnOnce(SocketAddr),
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let (listener, address) = super::bind(&config.listen).await?;
    let members: HashMap<u64, String> = if config.members.is_empty() {
        HashMap::from([(config.member_id, address.to_string())])
    } else {
        config.members.iter().cloned().collect()
    };
    if !members.contains_key(&config.member_id) {
        bail!("member {} is not in the member list {:?}", config.member_id, config.members);
    }
    let transport =
        Arc::new(GrpcTransport::new(Handle::current(), Arc::new(StaticAddresses(members.clone()))));
    let mut driver_config = DriverConfig::new(config.member_id, members.keys().copied().collect());
    driver_config.schedulers.replicas = config.replicas;
    let db = config.data_dir.join("db");
    let driver = tokio::task::spawn_blocking(move || PlacementDriver::open(&db, driver_config, transport))
        .await?
        .context("opening the placement driver")?;
    let driver = Arc::new(driver);
    let router =
        Server::builder().add_service(PdServer::new(PdService::new(driver.clone(), members))).add_service(
            RaftTransportServer::new(RaftTransportService::new(config.member_id, driver.sink()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        );
    on_ready(address);
    let served = super::serve(router, listener, stop).await;
    tokio::task::spawn_blocking(move || drop(driver)).await?;
    served
}
