//! Tessera's placement driver: what it knows of the cluster and what it decides.
//!
//! - [`cluster`]: the view of stores and regions built from heartbeats.
//! - [`operator`]: the steps a region's leader is asked to carry out.
//! - [`schedulers`]: replica repair and balancing, as pure functions of the view.
//!
//! The replicated metadata, heartbeats, id allocation and the driver loop arrive with
//! the rest of issue 4. Nothing here opens a socket: the server implements the driver's
//! traits over gRPC, tests in-process.

pub mod cluster;
pub mod operator;
pub mod schedulers;
