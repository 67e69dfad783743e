//! Running nodes: a store ([`store::run`]) or a placement driver replica ([`pd::run`]),
//! each serving gRPC on one address (and, with a metrics address, `/metrics` and
//! `/health` on another: [`status`]) until told to stop.

mod gc;
pub mod pd;
mod stale_locks;
pub mod status;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tower::layer::util::{Identity, Stack};

use crate::metrics::GrpcMetricsLayer;
use crate::security::Credentials;
use crate::security::policy::AuthorizationLayer;

/// What a node announces once it serves, as one line scripts parse:
/// `store id=2 pid=4243 addr=127.0.0.1:20160 metrics=127.0.0.1:9461`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    pub role: crate::metrics::Role,
    pub id: u64,
    pub address: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// Where a store serves etcd's v3 API.
    pub etcd: Option<SocketAddr>,
}

impl std::fmt::Display for Announcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pid = std::process::id();
        write!(f, "{} id={} pid={pid} addr={}", self.role.name(), self.id, self.address)?;
        if let Some(metrics) = self.metrics {
            write!(f, " metrics={metrics}")?;
        }
        if let Some(etcd) = self.etcd {
            write!(f, " etcd={etcd}")?;
        }
        Ok(())
    }
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub(crate) async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// The address other nodes and clients are told to dial: `advertise` (HOST:PORT, or
/// HOST alone for the port bound), else the address bound, which must then be one they
/// can dial (not 0.0.0.0 or [::]). Refused with a message saying what to give.
pub(crate) fn advertised_address(bound: SocketAddr, advertise: Option<&str>) -> anyhow::Result<String> {
    let Some(advertise) = advertise else {
        if bound.ip().is_unspecified() {
            anyhow::bail!(
                "listening on {bound} (every interface): give --advertise HOST[:PORT], the address other nodes \
                 and clients reach this one at"
            );
        }
        return Ok(bound.to_string());
    };
    let (host, port) = split_host_port(advertise)?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        anyhow::bail!("--advertise {advertise:?} needs a host name or address");
    }
    let port = port.unwrap_or(bound.port());
    if port == 0 {
        anyhow::bail!("--advertise {advertise:?} needs a port other than 0");
    }
    Ok(format!("{host}:{port}"))
}

/// The address another listener of this node, bound at `bound`, is reached at: the
/// host `--advertise` names (its port is the main listener's), with `bound`'s port.
pub(crate) fn advertised_address_on(bound: SocketAddr, advertise: Option<&str>) -> anyhow::Result<String> {
    match advertise {
        Some(advertise) => {
            let (host, _) = split_host_port(advertise)?;
            advertised_address(bound, Some(&format!("{host}:{}", bound.port())))
        }
        None => advertised_address(bound, None),
    }
}

/// `HOST:PORT`, `HOST`, `[V6]:PORT` or `[V6]` into the host (brackets kept) and port.
fn split_host_port(text: &str) -> anyhow::Result<(&str, Option<u16>)> {
    let (host, port) = match text.rfind(']') {
        Some(close) if text.starts_with('[') && text[1..close].contains(':') => {
            let rest = &text[close + 1..];
            match rest.strip_prefix(':') {
                Some(port) => (&text[..=close], Some(port)),
                None if rest.is_empty() => (&text[..=close], None),
                None => anyhow::bail!("--advertise {text:?}: unexpected text after the address"),
            }
        }
        Some(_) => anyhow::bail!("--advertise {text:?}: brackets hold an IPv6 address only"),
        None if text.matches(':').count() > 1 => {
            anyhow::bail!("--advertise {text:?}: write an IPv6 address in brackets, as [::1]:20160")
        }
        None => match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    let port = port
        .map(|port| {
            port.parse::<u16>().map_err(|_| anyhow::anyhow!("--advertise {text:?}: {port:?} is not a port"))
        })
        .transpose()?;
    Ok((host, port))
}

/// Binds `address` (port 0 picks a free port) and returns the listener with the
/// address it got.
pub(crate) async fn bind(address: &str) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// How long requests in flight have to finish once a node is told to stop. Streams
/// from other nodes never finish on their own: they are cut after this.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The layers every request to a node passes: counted and timed, then checked
/// against the access policy.
type Layers = Stack<AuthorizationLayer, Stack<GrpcMetricsLayer, Identity>>;

/// A node's gRPC services, behind its layers.
pub(crate) type Router = tonic::transport::server::Router<Layers>;

/// The gRPC server every node builds its services on: each request is counted and
/// timed, and over TLS (`tls` given) refused unless the peer's role may call it.
pub(crate) fn grpc_server(tls: Option<&std::sync::Arc<Credentials>>) -> tonic::transport::Server<Layers> {
    tonic::transport::Server::builder().layer(GrpcMetricsLayer).layer(AuthorizationLayer::new(tls.is_some()))
}

/// Serves `router` on `listener` (over TLS with `tls`, else in the clear) until `stop`
/// resolves and the requests in flight are done, or the grace period is over.
pub(crate) async fn serve(
    router: Router,
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<Credentials>>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let signal = async move {
        stop.await;
        let _ = stopping.send(true);
    };
    let server = async move {
        match tls {
            Some(credentials) => {
                let incoming = crate::security::listener::incoming(listener, credentials);
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
            None => {
                // No Nagle: a small answer held back for the peer's delayed ACK costs 40 ms.
                let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
        }
    };
    let grace = async move {
        let _ = stopped.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served?,
        () = grace => {}
    }
    Ok(())
}

/// A node id kept in a file of the data directory, if the node has one yet.
pub(crate) fn read_id(path: &std::path::Path) -> anyhow::Result<Option<u64>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let id = text
                .trim()
                .parse::<u64>()
                .with_context(|| format!("{} does not hold a node id", path.display()))?;
            Ok(Some(id))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Keeps a node id durably.
pub(crate) fn write_id(path: &std::path::Path, id: u64) -> anyhow::Result<()> {
    write_text(path, &id.to_string())
}

/// Keeps `text` in `path` durably: written aside, synced, renamed into place, and the
/// directory synced so that the rename survives a crash.
pub(crate) fn write_text(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let write = || -> std::io::Result<()> {
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text)?;
        std::fs::File::open(&temporary)?.sync_all()?;
        std::fs::rename(&temporary, path)?;
        if let Some(directory) = path.parent() {
            std::fs::File::open(directory)?.sync_all()?;
        }
        Ok(())
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_address_is_given_or_dialable() {
        let bound: SocketAddr = "0.0.0.0:20160".parse().expect("an address");
        let error = advertised_address(bound, None).expect_err("nobody can dial 0.0.0.0");
        assert!(error.to_string().contains("--advertise"), "{error}");
        assert_eq!(advertised_address(bound, Some("db-1.internal")).expect("a host"), "db-1.internal:20160");
        assert_eq!(
            advertised_address(bound, Some("10.0.0.7:30000")).expect("host and port"),
            "10.0.0.7:30000"
        );
        assert_eq!(advertised_address(bound, Some("[fd00::7]")).expect("IPv6"), "[fd00::7]:20160");
        assert_eq!(advertised_address(bound, Some("[fd00::7]:1")).expect("IPv6 and port"), "[fd00::7]:1");
        for bad in ["fd00::7", "db-1:http", "db-1:0", ":20160", "db 1", "[::1]junk", "[db-1]"] {
            assert!(advertised_address(bound, Some(bad)).is_err(), "{bad:?} accepted");
        }
        let local: SocketAddr = "127.0.0.1:5000".parse().expect("an address");
        assert_eq!(advertised_address(local, None).expect("dialable"), "127.0.0.1:5000");
    }

    #[test]
    fn a_second_listener_is_advertised_on_the_advertised_host_with_its_own_port() {
        let etcd: SocketAddr = "0.0.0.0:2379".parse().expect("an address");
        assert_eq!(advertised_address_on(etcd, Some("10.0.0.7:30000")).expect("a host"), "10.0.0.7:2379");
        assert_eq!(advertised_address_on(etcd, Some("[fd00::7]")).expect("IPv6"), "[fd00::7]:2379");
        assert!(advertised_address_on(etcd, None).is_err(), "nobody can dial 0.0.0.0");
        let local: SocketAddr = "127.0.0.1:2379".parse().expect("an address");
        assert_eq!(advertised_address_on(local, None).expect("dialable"), "127.0.0.1:2379");
    }
}
