//! `tessera cert`: a development CA and certificates signed by it, as PEM files in one
//! directory: `ca.pem` and `ca-key.pem`, then `NAME.pem` and `NAME-key.pem` for each
//! certificate. Keys are written readable by their owner only. An existing file is
//! never overwritten: a CA replaced by mistake would lock every node out.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::security::Role;
use crate::security::issue::{Authority, CertificateRequest};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The directory holding the CA and the certificates (created if missing).
    #[arg(long, default_value = "tls")]
    dir: PathBuf,
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Make a new CA: ca.pem (give it to every node and client) and ca-key.pem (keep it
    /// safe: whoever holds it can make certificates of any role).
    Ca {
        /// The CA's common name.
        #[arg(long, default_value = "Tessera development CA")]
        name: String,
    },
    /// A node certificate (stores and driver replicas), valid for serving and dialing.
    Node(IssueArgs),
    /// An admin certificate (an operator's: split, transfer, move, store removal).
    Admin(IssueArgs),
    /// A client certificate (applications; the name is the etcd API's user).
    Client(IssueArgs),
}

#[derive(clap::Args)]
struct IssueArgs {
    /// The certificate's common name, and the files' names.
    name: String,
    /// A host name or IP address the node is dialed at (repeatable; nodes need at least
    /// one) [default for nodes: 127.0.0.1 and localhost].
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Days the certificate is valid (1 to 3650).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=3650))]
    days: u64,
}

/// The files of one certificate in `dir`.
pub(crate) struct CertificateFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

pub(crate) fn ca_files(dir: &Path) -> CertificateFiles {
    CertificateFiles { certificate: dir.join("ca.pem"), key: dir.join("ca-key.pem") }
}

pub(crate) fn certificate_files(dir: &Path, name: &str) -> CertificateFiles {
    CertificateFiles {
        certificate: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let (role, issue) = match &args.command {
        CertCommand::Ca { name } => {
            let files = make_authority(&args.dir, name)?;
            println!("{}\n{}", files.certificate.display(), files.key.display());
            return Ok(());
        }
        CertCommand::Node(issue) => (Role::Node, issue),
        CertCommand::Admin(issue) => (Role::Admin, issue),
        CertCommand::Client(issue) => (Role::Client, issue),
    };
    let authority = load_authority(&args.dir)?;
    let mut request = CertificateRequest::new(role, &issue.name);
    request.hosts = match (role, issue.hosts.is_empty()) {
        (Role::Node, true) => vec!["127.0.0.1".to_string(), "localhost".to_string()],
        _ => issue.hosts.clone(),
    };
    request.not_after = request.not_before + Duration::from_secs(issue.days * 24 * 60 * 60);
    let files = write_certificate(&authority, &args.dir, &request)?;
    println!("{}\n{}", files.certificate.display(), files.key.display());
    Ok(())
}

/// A new CA in `dir`.
pub(crate) fn make_authority(dir: &Path, name: &str) -> anyhow::Result<CertificateFiles> {
    let authority = Authority::generate(name)?;
    let files = ca_files(dir);
    write_new(&files.certificate, authority.certificate_pem(), 0o644)?;
    write_new(&files.key, authority.key_pem(), 0o600)?;
    Ok(files)
}

/// The CA kept in `dir`.
pub(crate) fn load_authority(dir: &Path) -> anyhow::Result<Authority> {
    let files = ca_files(dir);
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {} (make a CA first: tessera cert ca)", path.display()))
    };
    Authority::load(&read(&files.certificate)?, &read(&files.key)?)
        .with_context(|| format!("{} and {} are not a CA", files.certificate.display(), files.key.display()))
}

/// A certificate for `request` signed by `authority`, written in `dir`.
pub(crate) fn write_certificate(
    authority: &Authority,
    dir: &Path,
    request: &CertificateRequest,
) -> anyhow::Result<CertificateFiles> {
    if request.name.is_empty() || request.name.contains(['/', '\0']) || request.name.starts_with('.') {
        bail!("{:?} cannot name a certificate's files", request.name);
    }
    let issued = authority.issue(request)?;
    let files = certificate_files(dir, &request.name);
    write_new(&files.certificate, &issued.certificate_pem, 0o644)?;
    write_new(&files.key, &issued.key_pem, 0o600)?;
    Ok(files)
}

/// Writes `text` to a file that must not exist yet, with `mode`.
fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).with_context(
            || format!("cannot create {} (an existing file is never replaced)", path.display()),
        )?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
