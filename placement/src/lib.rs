//! Tessera's placement driver (PD): what it knows of the cluster and what it decides.
//!
//! - [`metadata`]: the durable state, replicated by the driver's own Raft group (an
//!   engine store holding one region).
//! - [`driver`]: one replica: leadership, heartbeats, id allocation, bootstrap, the
//!   operators in flight, the scheduling loop.
//! - [`metrics`]: what a replica exports about itself and, on the leader, the cluster.
//! - [`cluster`], [`operator`], [`schedulers`]: the view of stores and regions, the
//!   steps regions are asked to take, and the schedulers as pure functions.
//! - [`agent`]: the store's side: heartbeats out, operator steps in.
//! - [`client`]: the API ([`PdClient`]) every caller uses; [`local`]: an in-process
//!   implementation over replicas in one process.
//!
//! Nothing here opens a socket: the server implements [`PdClient`] and the engine's
//! transport over gRPC, and tests run drivers and stores in one process.

pub mod agent;
pub mod client;
pub mod cluster;
pub mod driver;
pub mod errors;
pub mod local;
pub mod metadata;
pub mod metrics;
pub mod operator;
pub mod schedulers;

/// The driver's API types (`proto/pd.proto`).
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/tessera.pd.rs"));
}

pub use client::PdClient;
pub use driver::{DriverConfig, PlacementDriver};
pub use errors::{Corruption, HeartbeatDefect, InvalidRequest, MetadataOperation, PdError, Unavailability};
