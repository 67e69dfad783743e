//! Metrics of a node process: the Prometheus recorder every layer records into, the
//! gRPC request metrics, and the status server that exposes `/metrics` and `/health`.
//!
//! - [`install`]: once per process, before the node opens anything (the engine and the
//!   driver keep the handles they register first; see `tessera_engine::metrics`).
//! - `grpc`: a tower layer counting and timing every gRPC request by method and code.
//! - `http`: the status server.
//! - `fail_points`: its `/fail` routes, arming the engine's fail points from outside
//!   (only when the node's configuration enables them).
//!
//! Gauges that describe state (regions, leaders, RocksDB figures, the driver's view of
//! the cluster) are not kept current by the hot paths: the node refreshes them when
//! Prometheus scrapes, so an idle node does no work for its metrics.

mod fail_points;
mod grpc;
mod http;

pub use grpc::GrpcMetricsLayer;
pub use http::{Health, StatusServer};

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use thiserror::Error;

/// Latency buckets (seconds): 100 µs to 10 s, about three per decade, so that both a
/// group commit on a fast disk and a request stuck behind an election are placed.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Buckets for batch sizes (entries or regions per sync, heartbeats per frame).
const SIZE_BUCKETS: [f64; 12] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

#[derive(Debug, Error)]
pub(crate) enum MetricsError {
    #[error("cannot configure the metrics recorder: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    #[error("a metrics recorder is already installed in this process")]
    AlreadyInstalled,
}

/// What a node process is, for `tessera_build_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Store,
    Pd,
}

impl Role {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Store => "store",
            Role::Pd => "pd",
        }
    }
}

/// Installs the process's Prometheus recorder and registers every metric this role
/// exports, so that each appears from the first scrape.
pub(crate) fn install(role: Role) -> Result<PrometheusHandle, MetricsError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_entries".into()), &SIZE_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_regions".into()), &SIZE_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_per_frame".into()), &SIZE_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    grpc::describe();
    crate::security::listener::describe_metrics();
    crate::security::policy::describe_metrics();
    tessera_engine::metrics::register();
    if let Role::Pd = role {
        tessera_placement::metrics::register();
    }
    Ok(handle)
}

/// Exports `tessera_build_info` once the node knows its id (a store learns it from the
/// driver after the recorder is installed): the series that names each instance.
pub(crate) fn announce(role: Role, id: u64) {
    metrics::describe_gauge!(
        "tessera_build_info",
        Unit::Count,
        "Always 1; its labels say which version runs, in which role, under which node id."
    );
    let version = env!("CARGO_PKG_VERSION");
    metrics::gauge!("tessera_build_info", "version" => version, "role" => role.name(), "id" => id.to_string())
        .set(1.0);
}
