//! A process's TLS credentials: the CA that vouches for its peers, its certificate
//! chain and its private key, as PEM files, and the rustls configurations built from
//! them for serving and for dialing.
//!
//! The files are looked at again for every new connection (three `stat` calls, small
//! next to a handshake): when one changed, the configurations are rebuilt, so that a
//! certificate rotated by replacing its files is used by the next connection without a
//! restart. Connections already open keep the certificate they were made with. A set
//! of files that does not load (a certificate written but its key not yet) keeps the
//! previous configurations in use and is tried again at the next connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Deserialize;

use super::node_verifier::NodeServerVerifier;

/// The protocol both ends speak over TLS (gRPC is HTTP/2; clients such as etcd's
/// refuse a server that does not agree on it).
const ALPN_HTTP2: &[u8] = b"h2";

/// Where a process's credentials are: the `[tls]` section of the configuration file,
/// or the `--tls-ca`, `--tls-cert` and `--tls-key` flags.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA certificates (PEM) a peer's certificate must chain to.
    pub ca_file: PathBuf,
    /// This process's certificate (PEM), followed by any intermediates.
    pub cert_file: PathBuf,
    /// This process's private key (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Why credentials could not be loaded. None is retryable by itself: the files must
/// be fixed (a rotation half done is retried at the next connection, see the module).
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// What a file looked like when it was read: a replaced or rewritten file differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    length_bytes: u64,
    modified: Option<SystemTime>,
}

type Stamps = [Option<FileStamp>; 3];

/// The configurations built from one reading of the files.
struct Configurations {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

struct Loaded {
    stamps: Stamps,
    configurations: Arc<Configurations>,
    /// The files as they were when they last failed to load: not tried again (nor
    /// logged again) until they change.
    failed: Option<Stamps>,
}

/// A process's credentials, reloaded when their files change.
pub struct Credentials {
    files: TlsFiles,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("files", &self.files).finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads `files`; a process whose files do not load does not start.
    pub fn load(files: TlsFiles) -> Result<Arc<Credentials>, CredentialsError> {
        let stamps = stamps(&files);
        let configurations = Arc::new(build(&files)?);
        let loaded = Loaded { stamps, configurations, failed: None };
        Ok(Arc::new(Credentials { files, loaded: Mutex::new(loaded) }))
    }

    /// The configuration to accept a connection with, from the files as they are now.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    /// The configuration to dial with, from the files as they are now.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().client.clone()
    }

    fn current(&self) -> Arc<Configurations> {
        // Stamped under the lock: a stamp taken before it could be older than the one
        // another connection installed meanwhile, and would rebuild for nothing.
        let mut loaded = self.loaded.lock();
        let now = stamps(&self.files);
        if now == loaded.stamps || loaded.failed == Some(now) {
            return loaded.configurations.clone();
        }
        // Rebuilt under the lock: a rotation is rare, and connections made meanwhile
        // wait a few milliseconds rather than each rebuilding.
        match build(&self.files) {
            Ok(configurations) => {
                tracing::info!(certificate = %self.files.cert_file.display(), "TLS credentials reloaded");
                loaded.configurations = Arc::new(configurations);
                loaded.stamps = now;
                loaded.failed = None;
            }
            Err(error) => {
                tracing::warn!(%error, "TLS credentials changed but do not load; still using the previous ones");
                loaded.failed = Some(now);
            }
        }
        loaded.configurations.clone()
    }
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        inode: metadata.ino(),
        length_bytes: metadata.len(),
        modified: metadata.modified().ok(),
    })
}

fn stamps(files: &TlsFiles) -> Stamps {
    [stamp(&files.ca_file), stamp(&files.cert_file), stamp(&files.key_file)]
}

fn read(path: &Path) -> Result<Vec<u8>, CredentialsError> {
    std::fs::read(path).map_err(|source| CredentialsError::Read { path: path.to_path_buf(), source })
}

fn invalid(path: &Path, reason: impl std::fmt::Display) -> CredentialsError {
    CredentialsError::Invalid { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Every certificate in a PEM file; at least one.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    let bytes = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(path, error))?;
    if certificates.is_empty() {
        return Err(CredentialsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CredentialsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => CredentialsError::NoKey { path: path.to_path_buf() },
        error => invalid(path, error),
    })
}

/// rustls's cryptography from ring. rustls 0.23.48 deprecated ring's provider for
/// lacking post-quantum key exchange; the provider that has it (aws-lc-rs) is a C and
/// CMake build on every fresh machine. ring's TLS 1.3 with X25519 is what etcd and
/// gRPC's other implementations negotiate today.
#[allow(deprecated, reason = "see above: ring's provider, without post-quantum key exchange, on purpose")]
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn build(files: &TlsFiles) -> Result<Configurations, CredentialsError> {
    let provider = Arc::new(crypto_provider());
    let mut roots = RootCertStore::empty();
    for authority in read_certificates(&files.ca_file)? {
        roots.add(authority).map_err(|error| invalid(&files.ca_file, error))?;
    }
    let roots = Arc::new(roots);
    let chain = read_certificates(&files.cert_file)?;
    let key = read_key(&files.key_file)?;
    // Every peer must show a certificate the CA signed: there is no anonymous access.
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|error| invalid(&files.ca_file, error))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid(&files.cert_file, error))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|error| {
            invalid(&files.key_file, format!("does not go with {}: {error}", files.cert_file.display()))
        })?;
    server.alpn_protocols = vec![ALPN_HTTP2.to_vec()];
    // The servers this process dials are nodes: their chain and name are checked, and
    // then their role (`node_verifier.rs`).
    let chain_and_name = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|error| invalid(&files.ca_file, error))?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid(&files.cert_file, error))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeServerVerifier::new(chain_and_name)))
        .with_client_auth_cert(chain, key)
        .map_err(|error| {
            invalid(&files.key_file, format!("does not go with {}: {error}", files.cert_file.display()))
        })?;
    client.alpn_protocols = vec![ALPN_HTTP2.to_vec()];
    Ok(Configurations { server: Arc::new(server), client: Arc::new(client) })
}
