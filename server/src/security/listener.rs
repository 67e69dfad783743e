//! Accepting TLS connections for a node's gRPC server.
//!
//! The accept loop only accepts: each handshake runs in a task of its own, bounded in
//! time ([`HANDSHAKE_TIMEOUT`]: a peer that opens a socket and says nothing holds no
//! resource for long) and in number ([`MAX_HANDSHAKES`]: past it, new sockets wait in
//! the kernel's backlog). While more than half of them are taken, a source (an IPv4
//! address, an IPv6 /64) past [`MAX_HANDSHAKES_PER_SOURCE`] has its new sockets closed
//! at once, so that one peer opening sockets and saying nothing cannot hold every slot
//! and keep the others out; with slots to spare, no source is held back (many clients
//! behind one address reconnecting at once). Sockets spread over many sources can
//! still fill the slots for a handshake timeout; the kernel's backlog holds the rest. A connection whose handshake completes carries its peer's
//! [`PeerIdentity`] into every request made on it ([`PeerConnectInfo`], found in the
//! request's extensions), where [`super::policy`] reads it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::credentials::Credentials;
use super::identity::PeerIdentity;

/// How long a peer has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 256;
/// Handshakes in progress from one source at once while the slots run short.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 32;
/// Connections handed to the server and not yet taken by it.
const READY_CONNECTIONS: usize = 64;

const HANDSHAKE_FAILURES: &str = "tessera_tls_handshake_failures_total";

/// Who is at the other end of a connection, for every request made on it.
#[derive(Debug, Clone)]
pub struct PeerConnectInfo {
    pub remote_address: Option<SocketAddr>,
    pub identity: PeerIdentity,
}

/// A TLS connection whose handshake completed, with its peer's identity.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerConnectInfo,
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerConnectInfo;

    fn connect_info(&self) -> PeerConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        HANDSHAKE_FAILURES,
        metrics::Unit::Count,
        "TLS connections refused at the handshake (no certificate the CA signed, an expired one, a timeout, too many from one source), by reason."
    );
}

/// The connections `listener` accepts whose handshakes complete, until the stream is
/// dropped.
pub fn incoming(
    listener: TcpListener,
    credentials: Arc<Credentials>,
) -> ReceiverStream<Result<TlsConnection, std::io::Error>> {
    let (ready, connections) = mpsc::channel(READY_CONNECTIONS);
    tokio::spawn(accept_loop(listener, credentials, ready));
    ReceiverStream::new(connections)
}

type Ready = mpsc::Sender<Result<TlsConnection, std::io::Error>>;

/// The handshakes in progress, by source.
#[derive(Debug, Default)]
struct Sources(parking_lot::Mutex<HashMap<IpAddr, usize>>);

/// The source an address counts under: itself for IPv4 (an IPv4 peer of a dual-stack
/// listener, arriving as `::ffff:a.b.c.d`, included), its /64 for IPv6 (one host
/// commonly holds a whole /64).
fn source_of(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        address @ IpAddr::V4(_) => address,
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
    }
}

/// One handshake's place in its source's count, given back when dropped.
struct SourceSlot {
    sources: Arc<Sources>,
    address: IpAddr,
}

impl Sources {
    /// A slot for a handshake from `address`; None when its source has
    /// [`MAX_HANDSHAKES_PER_SOURCE`] in progress and the slots are `short`.
    fn claim(self: &Arc<Self>, address: IpAddr, short: bool) -> Option<SourceSlot> {
        let address = source_of(address);
        let mut counts = self.0.lock();
        let count = counts.entry(address).or_insert(0);
        if short && *count >= MAX_HANDSHAKES_PER_SOURCE {
            return None;
        }
        *count += 1;
        Some(SourceSlot { sources: self.clone(), address })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.sources.0.lock();
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, credentials: Arc<Credentials>, ready: Ready) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let sources = Arc::new(Sources::default());
    loop {
        let permit = tokio::select! {
            permit = handshakes.clone().acquire_owned() => permit,
            () = ready.closed() => return,
        };
        // The semaphore is never closed: an error is a broken invariant, ending the loop.
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = ready.closed() => return,
        };
        let (socket, remote_address) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, most likely: accepting again at once would spin.
                tracing::warn!(%error, "cannot accept a connection; pausing accepts for 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let short = handshakes.available_permits() < MAX_HANDSHAKES / 2;
        let Some(slot) = sources.claim(remote_address.ip(), short) else {
            tracing::debug!(%remote_address, "TLS connection refused: too many handshakes from its address");
            metrics::counter!(HANDSHAKE_FAILURES, "reason" => "source_limit").increment(1);
            continue;
        };
        // No Nagle: a small answer held back for the peer's delayed ACK costs 40 ms.
        let _ = socket.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(credentials.server_config());
        let ready = ready.clone();
        tokio::spawn(async move {
            let (_permit, _slot) = (permit, slot);
            match handshake(acceptor, socket, remote_address).await {
                Ok(connection) => {
                    let _ = ready.send(Ok(connection)).await;
                }
                Err(reason) => {
                    tracing::debug!(%remote_address, %reason, "TLS connection refused");
                    metrics::counter!(HANDSHAKE_FAILURES, "reason" => reason.label()).increment(1);
                }
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("no handshake within {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    #[error("handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("no client certificate")]
    NoCertificate,
    #[error("{0}")]
    Identity(#[from] super::identity::IdentityError),
}

impl Refusal {
    fn label(&self) -> &'static str {
        match self {
            Refusal::Timeout => "timeout",
            Refusal::Handshake(_) => "handshake",
            Refusal::NoCertificate => "no_certificate",
            Refusal::Identity(_) => "identity",
        }
    }
}

async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    socket: TcpStream,
    remote_address: SocketAddr,
) -> Result<TlsConnection, Refusal> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket))
        .await
        .map_err(|_| Refusal::Timeout)?
        .map_err(Refusal::Handshake)?;
    let (_, session) = stream.get_ref();
    // The verifier demands a certificate: a session without one is a broken invariant
    // of rustls's configuration, refused all the same.
    let certificate = session.peer_certificates().and_then(<[_]>::first).ok_or(Refusal::NoCertificate)?;
    let identity = PeerIdentity::from_certificate(certificate)?;
    Ok(TlsConnection { stream, info: PeerConnectInfo { remote_address: Some(remote_address), identity } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_holds_at_most_its_share_of_handshakes_and_gets_them_back() {
        let sources = Arc::new(Sources::default());
        let (greedy, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().expect("an address"), "10.0.0.2".parse().expect("an address"));
        let mut held: Vec<SourceSlot> = (0..MAX_HANDSHAKES_PER_SOURCE)
            .map(|_| sources.claim(greedy, true).expect("below the limit"))
            .collect();
        assert!(sources.claim(greedy, true).is_none(), "past the limit while slots are short");
        let spare = sources.claim(greedy, false).expect("no limit while slots are to spare");
        assert!(sources.claim(other, true).is_some(), "another source is not held back");
        drop(spare);
        held.pop();
        assert!(sources.claim(greedy, true).is_some(), "a finished handshake gives its slot back");
        held.clear();
        assert!(sources.0.lock().is_empty(), "nothing kept for a source with no handshake");
        let (one, same_64): (IpAddr, IpAddr) =
            ("2001:db8::1".parse().expect("an address"), "2001:db8::ffff:2".parse().expect("an address"));
        assert_eq!(source_of(one), source_of(same_64), "an IPv6 /64 is one source");
        assert_ne!(source_of(one), source_of("2001:db8:0:1::1".parse().expect("an address")));
        let (mapped, other_mapped): (IpAddr, IpAddr) =
            ("::ffff:10.0.0.1".parse().expect("an address"), "::ffff:10.0.0.2".parse().expect("an address"));
        assert_eq!(source_of(mapped), greedy, "an IPv4 peer of a dual-stack listener is its IPv4 address");
        assert_ne!(source_of(mapped), source_of(other_mapped), "IPv4 peers are not one /64");
    }
}
