//! The status server of a node: `GET /metrics` (Prometheus text format) and
//! `GET /health` (and `/fail`, see `fail_points`), on their own address so that
//! scraping never competes with the API's connections and a firewall can keep the two
//! apart.
//!
//! A scrape first refreshes the node's state gauges (on the blocking pool: asking the
//! raft workers for a report waits on channels), then renders. `/health` answers 200
//! while the node serves and 503 once it stops, with a one-line JSON body.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// How often histograms are drained when nobody scrapes, so that memory stays bounded.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What `/health` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub serving: bool,
    /// A JSON object describing the node.
    pub detail: String,
}

type Refresh = Arc<dyn Fn() + Send + Sync>;
type Check = Arc<dyn Fn() -> Health + Send + Sync>;

#[derive(Clone)]
struct Status {
    handle: PrometheusHandle,
    refresh: Refresh,
    health: Check,
}

/// A bound status address, not yet serving.
pub struct StatusServer {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    /// Whether `/fail` arms fail points (it refuses otherwise).
    fail_points: bool,
}

impl StatusServer {
    /// Binds `address` (port 0 picks a free port).
    pub(crate) async fn bind(address: &str) -> anyhow::Result<StatusServer> {
        let (listener, address) = crate::node::bind(address).await?;
        Ok(StatusServer { listener, address, fail_points: false })
    }

    /// Lets `/fail` arm the engine's fail points (see `fail_points`).
    pub(crate) fn enable_fail_points(&mut self) {
        self.fail_points = true;
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until `stop` resolves. `refresh` sets the node's state gauges before each
    /// scrape; `health` answers `/health`.
    pub(crate) fn serve(
        self,
        handle: PrometheusHandle,
        refresh: impl Fn() + Send + Sync + 'static,
        health: impl Fn() -> Health + Send + Sync + 'static,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let upkeep = handle.clone();
        let status = Status { handle, refresh: Arc::new(refresh), health: Arc::new(health) };
        let app = Router::new()
            .route("/metrics", get(render_metrics))
            .route("/health", get(answer_health))
            .with_state(status)
            .merge(super::fail_points::routes(self.fail_points));
        tokio::spawn(async move {
            let upkeep = tokio::spawn(async move {
                let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
                loop {
                    interval.tick().await;
                    upkeep.run_upkeep();
                }
            });
            let served = axum::serve(self.listener, app).with_graceful_shutdown(stop).await;
            upkeep.abort();
            if let Err(error) = served {
                eprintln!("the status server on {} stopped: {error}", self.address);
            }
        })
    }
}

async fn render_metrics(State(status): State<Status>) -> impl IntoResponse {
    let refresh = status.refresh.clone();
    // A refresh that fails (the node is stopping) leaves the last figures.
    let _ = tokio::task::spawn_blocking(move || refresh()).await;
    status.handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], status.handle.render())
}

async fn answer_health(State(status): State<Status>) -> impl IntoResponse {
    // The node's check may take a lock its raft threads hold for a moment.
    let check = status.health.clone();
    let health = tokio::task::spawn_blocking(move || check()).await.unwrap_or_else(|_| Health {
        serving: false,
        detail: r#"{"error":"the health check failed"}"#.into(),
    });
    let code = if health.serving { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "application/json")], health.detail)
}
