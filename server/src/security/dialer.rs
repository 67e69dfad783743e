//! How a process dials other nodes: in the clear, or over TLS with its credentials.
//!
//! One [`Dialer`] per process, handed to everything that dials (the Raft transport,
//! the driver's client, the client library), so that no link can be made in the clear
//! by a code path that forgot its settings. Over TLS the server's certificate must
//! chain to the CA, name the host dialed (a subject alternative name) and be a node's,
//! and this process shows its own certificate, read again when its files change.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::credentials::Credentials;

/// How to dial: cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    credentials: Option<Arc<Credentials>>,
}

impl Dialer {
    /// Dials in the clear.
    pub fn plain() -> Dialer {
        Dialer { credentials: None }
    }

    /// Dials over TLS with `credentials`.
    pub fn tls(credentials: Arc<Credentials>) -> Dialer {
        Dialer { credentials: Some(credentials) }
    }

    /// The endpoint for `address` (HOST:PORT), to be configured and then given to
    /// [`Dialer::connect`] or [`Dialer::connect_lazy`].
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, tonic::transport::Error> {
        // The scheme stays `http` over TLS too: TLS is this connector's, not tonic's,
        // and the scheme only names the request's `:scheme` pseudo-header.
        Endpoint::from_shared(format!("http://{address}"))
    }

    /// A channel that connects at its first call (and reconnects when broken).
    pub fn connect_lazy(&self, endpoint: &Endpoint) -> Channel {
        match &self.credentials {
            None => endpoint.connect_lazy(),
            Some(credentials) => {
                endpoint.connect_with_connector_lazy(TlsConnector { credentials: credentials.clone() })
            }
        }
    }

    /// A channel connected now.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
        match &self.credentials {
            None => endpoint.connect().await,
            Some(credentials) => {
                endpoint.connect_with_connector(TlsConnector { credentials: credentials.clone() }).await
            }
        }
    }
}

/// A handshake that failed. The connection closed under it (the server shed it, or
/// went away) is read as refused: nothing of a request was sent on it, which the
/// client library reads from ConnectionRefused (a write refused so is safe to send
/// again). A refusal of the certificates (rustls's errors, InvalidData) keeps its
/// kind: no retry changes it, and a write fails at once.
fn handshake_failure(address: &Uri, error: std::io::Error) -> std::io::Error {
    use std::io::ErrorKind;
    let kind = match error.kind() {
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => ErrorKind::ConnectionRefused,
        kind => kind,
    };
    std::io::Error::new(kind, HandshakeFailed { address: address.to_string(), source: error })
}

/// A TLS handshake that failed, naming the address it was with; the io error it
/// failed with stays its source.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {address}: {source}")]
struct HandshakeFailed {
    address: String,
    source: std::io::Error,
}

/// Opens TCP connections and completes a TLS handshake on them.
#[derive(Debug, Clone)]
struct TlsConnector {
    credentials: Arc<Credentials>,
}

type Connecting = Pin<
    Box<dyn Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send>,
>;

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let connector = tokio_rustls::TlsConnector::from(self.credentials.client_config());
        Box::pin(async move {
            let invalid =
                |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{uri}: {what}"));
            let host = uri.host().ok_or_else(|| invalid("no host"))?;
            let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
            // An IPv6 address comes bracketed in a URI.
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let name =
                ServerName::try_from(host.clone()).map_err(|_| invalid("not a host name or address"))?;
            let socket = TcpStream::connect((host.as_str(), port)).await?;
            // No Nagle: a small request held back for the peer's delayed ACK costs 40 ms.
            socket.set_nodelay(true)?;
            let stream =
                connector.connect(name, socket).await.map_err(|error| handshake_failure(&uri, error))?;
            Ok(TokioIo::new(stream))
        })
    }
}
