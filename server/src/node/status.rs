//! The observability side of a node: its recorder is installed and its status address
//! bound before the node opens anything (so that every layer's metrics reach the
//! recorder and the address can be announced), and it serves `/metrics` and `/health`
//! beside the gRPC server until the node has stopped.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, Health, Role, StatusServer};

pub(crate) struct Observability {
    server: StatusServer,
    handle: PrometheusHandle,
}

impl Observability {
    /// Installs the recorder and binds `address`; nothing when no address is given (the
    /// node then records into nothing).
    pub(crate) async fn start(address: Option<&str>, role: Role) -> anyhow::Result<Option<Observability>> {
        let Some(address) = address else { return Ok(None) };
        let server = StatusServer::bind(address).await.context("binding the metrics address")?;
        let handle = metrics::install(role)?;
        Ok(Some(Observability { server, handle }))
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.server.address()
    }

    /// Lets the status server's `/fail` routes arm the engine's fail points.
    pub(crate) fn enable_fail_points(&mut self) {
        self.server.enable_fail_points();
    }

    /// Serves until [`Serving::finish`]. `refresh` sets the node's state gauges before
    /// each scrape; `describe` is the JSON `/health` answers with; the node counts as
    /// serving until `stopping` is set.
    pub(crate) fn serve(
        self,
        role: Role,
        id: u64,
        refresh: impl Fn() + Send + Sync + 'static,
        describe: impl Fn() -> String + Send + Sync + 'static,
        stopping: CancellationToken,
    ) -> Serving {
        metrics::announce(role, id);
        let (stop, stopped) = oneshot::channel::<()>();
        let health = move || Health { serving: !stopping.is_cancelled(), detail: describe() };
        let task = self.server.serve(self.handle, refresh, health, async move {
            let _ = stopped.await;
        });
        Serving { stop, task }
    }
}

/// A running status server.
pub(crate) struct Serving {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    pub(crate) async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// `stop`, which also cancels the returned token when it resolves: the node is
/// stopping. Everything that must notice (health, streams from other nodes, calls to
/// the driver in flight) watches that one token.
pub(crate) fn flag_on_stop(stop: impl Future<Output = ()>) -> (impl Future<Output = ()>, CancellationToken) {
    let stopping = CancellationToken::new();
    let token = stopping.clone();
    let stop = async move {
        stop.await;
        token.cancel();
    };
    (stop, stopping)
}
