//! Everything in Tessera that talks.
//!
//! - [`service`]: the gRPC services: the key-value API on stores, the placement
//!   driver's API on its replicas.
//! - [`transport`]: the Raft transport between nodes over gRPC streams.
//! - [`client`]: the client library (region cache, retries, scans across regions) and
//!   the driver's gRPC client.
//! - [`failure`]: typed failures carried in gRPC statuses.
//! - [`metrics`]: the Prometheus recorder, gRPC request metrics, `/metrics` and `/health`.
//! - [`node`]: running a store or a driver replica.
//! - [`cli`]: the `tessera` command line: `store`, `pd`, `playground`, `ctl`.

pub mod cli;
pub mod client;
pub mod failure;
pub mod metrics;
pub mod node;
pub mod service;
pub mod transport;

/// The gRPC services and their messages (`proto/service.proto`).
pub mod proto {
    tonic::include_proto!("tessera.service");
}
