//! Who may talk to a node, and how its links are secured: mutual TLS on every gRPC link
//! (client to store, client to driver, store to store, store to driver, driver to
//! driver, and etcd's API), the identity a certificate gives its holder, and which
//! identity may call which method.
//!
//! - [`credentials`]: the CA, certificate and key files, read again when they change so
//!   that a rotation needs no restart, and the rustls configurations for both ends of a
//!   link.
//! - [`identity`]: a peer's role (node, admin or client) and name, from its certificate.
//! - [`listener`]: accepting TLS connections, their handshakes off the accept loop and
//!   bounded in time and number.
//! - [`dialer`]: how this process dials others, in the clear or over TLS; over TLS the
//!   server must show a node's certificate (`node_verifier.rs`).
//! - [`policy`]: the role each method needs, enforced by a layer on every node's server.
//! - [`issue`]: a development CA and certificates (`tessera cert`).
//!
//! Without TLS settings a node serves in the clear and checks no identity (a
//! development cluster on one machine) and says so when it starts. With them, a
//! connection without a certificate signed by the CA never completes its handshake, and
//! a request whose method the peer's role may not call is refused with
//! `PermissionDenied` before any service sees it.
//!
//! This module decides by the connection's certificate and the request's method path
//! only; it never reads a request's body (what a request may touch, such as etcd's key
//! ranges, is decided by the service that understands it).

pub mod credentials;
pub mod dialer;
pub mod identity;
pub mod issue;
pub mod listener;
mod node_verifier;
pub mod policy;

pub use credentials::{Credentials, CredentialsError, TlsFiles};
pub use dialer::Dialer;
pub use identity::{PeerIdentity, Role};
