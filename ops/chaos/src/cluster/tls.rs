//! Mutual TLS for a chaos cluster: a CA made for the round, one node certificate naming
//! every node's address (each node reads it through the `[tls]` section of its
//! configuration file), an admin certificate for the harness's Tessera clients (the
//! nemesis splits, transfers and moves by hand) and a client certificate for its etcd
//! clients.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tessera_server::security::issue::{Authority, CertificateRequest};
use tessera_server::security::{Credentials, Dialer, Role, TlsFiles};

use super::network::Network;

pub struct ChaosTls {
    pub node: TlsFiles,
    pub admin: TlsFiles,
    pub etcd_client: TlsFiles,
}

impl ChaosTls {
    /// Certificates in `dir`, for the nodes of `network`.
    pub fn create(dir: &Path, network: &Network) -> anyhow::Result<ChaosTls> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let authority = Authority::generate("Tessera chaos CA")?;
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, authority.certificate_pem())
            .with_context(|| format!("writing {}", ca.display()))?;
        let mut node = CertificateRequest::new(Role::Node, "node");
        node.hosts = network.hosts.iter().map(|host| host.ip.clone()).collect();
        node.hosts.push("127.0.0.1".into());
        let issue = |request: &CertificateRequest| write(&authority, dir, request, &ca);
        Ok(ChaosTls {
            node: issue(&node)?,
            admin: issue(&CertificateRequest::new(Role::Admin, "chaos"))?,
            etcd_client: issue(&CertificateRequest::new(Role::Client, "root"))?,
        })
    }

    /// The configuration file section that gives a node its certificate.
    pub fn node_section(&self) -> String {
        let quoted = |path: &PathBuf| format!("{:?}", path.display().to_string());
        format!(
            "[tls]\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
            quoted(&self.node.ca_file),
            quoted(&self.node.cert_file),
            quoted(&self.node.key_file)
        )
    }

    /// How the harness's Tessera clients dial.
    pub fn dialer(&self) -> anyhow::Result<Dialer> {
        Ok(Dialer::tls(Credentials::load(self.admin.clone())?))
    }

    /// How the harness's etcd clients connect.
    pub fn etcd_options(&self) -> anyhow::Result<etcd_client::TlsOptions> {
        let read =
            |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
        let files = &self.etcd_client;
        Ok(etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&files.ca_file)?))
            .identity(etcd_client::Identity::from_pem(read(&files.cert_file)?, read(&files.key_file)?)))
    }
}

fn write(
    authority: &Authority,
    dir: &Path,
    request: &CertificateRequest,
    ca: &Path,
) -> anyhow::Result<TlsFiles> {
    let issued = authority.issue(request)?;
    let cert_file = dir.join(format!("{}.pem", request.name));
    let key_file = dir.join(format!("{}-key.pem", request.name));
    std::fs::write(&cert_file, &issued.certificate_pem)
        .with_context(|| format!("writing {}", cert_file.display()))?;
    std::fs::write(&key_file, &issued.key_pem).with_context(|| format!("writing {}", key_file.display()))?;
    Ok(TlsFiles { ca_file: ca.to_path_buf(), cert_file, key_file })
}
