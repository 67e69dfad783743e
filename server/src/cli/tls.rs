//! The TLS flags every command that serves or dials takes (`--tls-ca`, `--tls-cert`,
//! `--tls-key`), over the configuration file's `[tls]` section.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::security::{Credentials, Dialer, TlsFiles};

/// Mutual TLS: all three or none (in the clear).
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct TlsFlags {
    /// The CA certificate (PEM) peers' certificates must chain to; with --tls-cert and
    /// --tls-key, every link is mutual TLS [default: the file's [tls] ca_file].
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// This process's certificate (PEM) [default: the file's [tls] cert_file].
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// This process's private key (PEM) [default: the file's [tls] key_file].
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
}

impl TlsFlags {
    /// The files named by the flags, else by the file's section; none for neither.
    pub(crate) fn files(&self, file: Option<TlsFiles>) -> anyhow::Result<Option<TlsFiles>> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => Ok(file),
            (Some(ca), Some(cert), Some(key)) => {
                Ok(Some(TlsFiles { ca_file: ca.clone(), cert_file: cert.clone(), key_file: key.clone() }))
            }
            _ => bail!(
                "--tls-ca, --tls-cert and --tls-key go together: give all three, or none to use the clear"
            ),
        }
    }

    /// The credentials the flags or the file name, loaded (a file that does not load
    /// stops the command here, not at its first connection).
    pub(crate) fn credentials(&self, file: Option<TlsFiles>) -> anyhow::Result<Option<Arc<Credentials>>> {
        let Some(files) = self.files(file)? else { return Ok(None) };
        let credentials = Credentials::load(files).context("loading the TLS credentials")?;
        Ok(Some(credentials))
    }

    /// How a command line tool dials.
    pub(crate) fn dialer(&self) -> anyhow::Result<Dialer> {
        Ok(self.credentials(None)?.map_or_else(Dialer::plain, Dialer::tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_go_together_and_win_over_the_file() {
        let file = TlsFiles { ca_file: "a".into(), cert_file: "b".into(), key_file: "c".into() };
        assert_eq!(TlsFlags::default().files(Some(file.clone())).expect("the file's"), Some(file.clone()));
        let flags =
            TlsFlags { tls_ca: Some("x".into()), tls_cert: Some("y".into()), tls_key: Some("z".into()) };
        assert_eq!(
            flags.files(Some(file.clone())).expect("the flags'").map(|files| files.ca_file),
            Some("x".into())
        );
        let partial = TlsFlags { tls_ca: Some("x".into()), ..TlsFlags::default() };
        let error = partial.files(Some(file)).expect_err("one flag alone");
        assert!(error.to_string().contains("go together"), "{error}");
    }
}
