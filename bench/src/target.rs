//! The systems a run can measure, behind one set of operations.
//!
//! - `tessera://PD[,PD...]`: Tessera's client library (region cache, requests straight
//!   to leaders, retries on stale routing), as an application would use it.
//! - `etcd://ADDR[,ADDR...]`: etcd's v3 API through the `etcd-client` crate. Its gets
//!   are linearizable (etcd's default), as Tessera's are: both pay a round of the
//!   leader's quorum for every read, so the comparison is like for like.
//!
//! A read-modify-write is a read then a write of the same key, not a transaction, as
//! YCSB's F does; the transactional operations (Tessera only) are transactions, run
//! again while they conflict.

use std::time::Duration;

use etcd_client::GetOptions;
use tessera_server::client::{Client, ClientError, Transaction};
use tessera_server::security::{Credentials, Dialer, TlsFiles};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TargetError {
    #[error("unknown target {0:?}: tessera://PD_ADDR[,...] or etcd://ADDR[,...]")]
    Unknown(String),
    #[error("tessera: {0}")]
    Tessera(#[from] tessera_server::client::ClientError),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("TLS: {0}")]
    Tls(#[from] tessera_server::security::CredentialsError),
    #[error("TLS: cannot read {path}: {source}")]
    TlsFile { path: std::path::PathBuf, source: std::io::Error },
    #[error("{target} has no {operation}")]
    Unsupported { target: &'static str, operation: &'static str },
    #[error("a transaction conflicted {tries} times in a row")]
    KeptConflicting { tries: u32 },
    /// A timestamp not above the one the same task was answered with before.
    #[error("timestamp {now} after {before}: the oracle went back")]
    TimestampWentBack { before: u64, now: u64 },
}

/// Where to send the load, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetUrl {
    Tessera(Vec<String>),
    Etcd(Vec<String>),
}

impl std::str::FromStr for TargetUrl {
    type Err = TargetError;

    fn from_str(text: &str) -> Result<TargetUrl, TargetError> {
        let addresses = |rest: &str| -> Vec<String> {
            rest.split(',').filter(|a| !a.is_empty()).map(str::to_string).collect()
        };
        let parsed = if let Some(rest) = text.strip_prefix("tessera://") {
            TargetUrl::Tessera(addresses(rest))
        } else if let Some(rest) = text.strip_prefix("etcd://") {
            TargetUrl::Etcd(addresses(rest))
        } else {
            return Err(TargetError::Unknown(text.to_string()));
        };
        match &parsed {
            TargetUrl::Tessera(a) | TargetUrl::Etcd(a) if a.is_empty() => {
                Err(TargetError::Unknown(text.to_string()))
            }
            _ => Ok(parsed),
        }
    }
}

impl TargetUrl {
    pub fn kind(&self) -> &'static str {
        match self {
            TargetUrl::Tessera(_) => "tessera",
            TargetUrl::Etcd(_) => "etcd",
        }
    }
}

/// How many times a transaction that conflicts is run again before the request fails.
const MAX_TRANSACTION_TRIES: u32 = 100;
/// The longest pause before running a conflicting transaction again.
const MAX_CONFLICT_BACKOFF: Duration = Duration::from_millis(64);

/// etcd's client's TLS settings from the files.
fn etcd_tls(files: &TlsFiles) -> Result<etcd_client::TlsOptions, TargetError> {
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| TargetError::TlsFile { path: path.clone(), source })
    };
    Ok(etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&files.ca_file)?))
        .identity(etcd_client::Identity::from_pem(read(&files.cert_file)?, read(&files.key_file)?)))
}

/// A connected system under test; cheap to clone for every request task.
#[derive(Clone)]
pub enum Target {
    Tessera(std::sync::Arc<Client>),
    Etcd(Box<etcd_client::KvClient>),
}

impl Target {
    /// A connection to `url`, over mutual TLS with `tls`.
    pub async fn connect(
        url: &TargetUrl,
        timeout: Duration,
        tls: Option<TlsFiles>,
    ) -> Result<Target, TargetError> {
        Ok(match url {
            TargetUrl::Tessera(pd) => {
                let dialer = match tls {
                    Some(files) => Dialer::tls(Credentials::load(files)?),
                    None => Dialer::plain(),
                };
                Target::Tessera(std::sync::Arc::new(Client::with_dialer(pd.clone(), timeout, dialer)))
            }
            TargetUrl::Etcd(endpoints) => {
                let mut options = etcd_client::ConnectOptions::new().with_timeout(timeout);
                if let Some(files) = tls {
                    options = options.with_tls(etcd_tls(&files)?);
                }
                Target::Etcd(Box::new(
                    etcd_client::Client::connect(endpoints, Some(options)).await?.kv_client(),
                ))
            }
        })
    }

    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, TargetError> {
        match self {
            Target::Tessera(client) => Ok(client.get(key).await?),
            Target::Etcd(kv) => {
                let answer = kv.get(key, None).await?;
                Ok(answer.kvs().first().map(|pair| pair.value().to_vec()))
            }
        }
    }

    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), TargetError> {
        match self {
            Target::Tessera(client) => Ok(client.put(key, value).await?),
            Target::Etcd(kv) => {
                kv.put(key, value, None).await?;
                Ok(())
            }
        }
    }

    /// A timestamp from the oracle (Tessera only).
    pub async fn timestamp(&mut self) -> Result<u64, TargetError> {
        match self {
            Target::Tessera(client) => Ok(client.timestamp().await?.as_u64()),
            Target::Etcd(_) => {
                Err(TargetError::Unsupported { target: "etcd", operation: "timestamp oracle" })
            }
        }
    }

    fn tessera(&self, operation: &'static str) -> Result<&std::sync::Arc<Client>, TargetError> {
        match self {
            Target::Tessera(client) => Ok(client),
            Target::Etcd(_) => Err(TargetError::Unsupported { target: "etcd", operation }),
        }
    }

    /// Runs `body` in a transaction and commits it, from the start again while it
    /// conflicts.
    async fn transact<F, Fut>(&self, body: F) -> Result<(), TargetError>
    where
        F: Fn(Transaction) -> Fut,
        Fut: std::future::Future<Output = Result<Transaction, ClientError>>,
    {
        let client = self.tessera("transactions")?;
        let mut backoff = Duration::from_millis(1);
        for _ in 0..MAX_TRANSACTION_TRIES {
            let transaction = body(client.begin().await?).await?;
            match transaction.commit().await {
                Ok(_) => return Ok(()),
                Err(error) if error.is_conflict() => {
                    // Contenders retrying at once would meet each other again: wait a
                    // little, longer each time, jittered by the tasks' own timing.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_CONFLICT_BACKOFF);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(TargetError::KeptConflicting { tries: MAX_TRANSACTION_TRIES })
    }

    /// A read-only transaction reading `key`.
    pub async fn txn_get(&mut self, key: &[u8]) -> Result<(), TargetError> {
        self.transact(|transaction| async move {
            transaction.get(key).await?;
            Ok(transaction)
        })
        .await
    }

    /// A transaction writing every pair.
    pub async fn txn_put(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<(), TargetError> {
        self.transact(|mut transaction| async move {
            for (key, value) in pairs {
                transaction.put(key, value)?;
            }
            Ok(transaction)
        })
        .await
    }

    /// A transaction reading `key` and writing `value` to it.
    pub async fn txn_read_modify_write(&mut self, key: &[u8], value: &[u8]) -> Result<(), TargetError> {
        self.transact(|mut transaction| async move {
            transaction.get(key).await?;
            transaction.put(key, value)?;
            Ok(transaction)
        })
        .await
    }

    /// A transaction moving 1 from account `from` to account `to` (balances are decimal
    /// text; an account never written holds 0).
    pub async fn txn_transfer(&mut self, from: &[u8], to: &[u8]) -> Result<(), TargetError> {
        self.transact(|mut transaction| async move {
            let balance = |value: Option<Vec<u8>>| -> i64 {
                value.and_then(|bytes| String::from_utf8(bytes).ok()?.parse().ok()).unwrap_or(0)
            };
            let from_balance = balance(transaction.get(from).await?);
            let to_balance = balance(transaction.get(to).await?);
            transaction.put(from, (from_balance - 1).to_string().as_bytes())?;
            transaction.put(to, (to_balance + 1).to_string().as_bytes())?;
            Ok(transaction)
        })
        .await
    }

    /// Up to `limit` pairs from `start` on; returns how many came back.
    pub async fn scan(&mut self, start: &[u8], limit: usize) -> Result<usize, TargetError> {
        match self {
            Target::Tessera(client) => Ok(client.scan(start, b"", limit, false).await?.len()),
            Target::Etcd(kv) => {
                // A range end of "\0" means every key from `start` on.
                let options = GetOptions::new().with_range(vec![0u8]).with_limit(limit as i64);
                Ok(kv.get(start, Some(options)).await?.kvs().len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls_name_the_system_and_its_addresses() {
        let tessera: TargetUrl = "tessera://127.0.0.1:2379".parse().expect("a tessera url");
        assert_eq!(tessera, TargetUrl::Tessera(vec!["127.0.0.1:2379".into()]));
        let etcd: TargetUrl = "etcd://a:1,b:2".parse().expect("an etcd url");
        assert_eq!(etcd, TargetUrl::Etcd(vec!["a:1".into(), "b:2".into()]));
        assert!("http://x".parse::<TargetUrl>().is_err());
        assert!("etcd://".parse::<TargetUrl>().is_err());
    }
}
