//! Snapshot reads at a timestamp, across regions, waiting out the locks in their way:
//! a lock of a transaction that may commit below the read's timestamp is resolved
//! through its primary (`resolve.rs`) and the read sent again; while its transaction
//! is alive, the read backs off and asks again, until the client's deadline.

use tessera_engine::proto::command::LockInfo;
use tessera_engine::proto::frame::KeyValue;
use tessera_engine::region::KeyRange;
use tessera_engine::timestamp::Timestamp;
use tokio::time::Instant;

use super::VersionedKeyValue;
use super::resolve::Resolution;
use crate::client::scan::{Page, resume_after};
use crate::client::{BACKOFF_MAX, BACKOFF_MIN, Client, ClientError, Resend, Transient};
use crate::proto::{TxnGetRequest, TxnScanRequest};

/// How long a reader has waited for live locks, and may still.
struct LockWait {
    give_up: Instant,
    backoff: std::time::Duration,
}

impl LockWait {
    fn new(client: &Client) -> LockWait {
        LockWait { give_up: Instant::now() + client.deadline, backoff: BACKOFF_MIN }
    }

    /// Resolves `lock`; if its transaction is alive, waits a little (longer each time)
    /// or gives up at the deadline.
    async fn wait_out(&mut self, client: &Client, lock: LockInfo) -> Result<(), ClientError> {
        if let Resolution::Resolved = client.resolve_lock(&lock).await? {
            return Ok(());
        }
        if Instant::now() + self.backoff >= self.give_up {
            let last =
                Transient::Locked { key: lock.key, holder_start_ts: Timestamp::from_u64(lock.start_ts) };
            return Err(ClientError::Unavailable { attempts: 0, last });
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        Ok(())
    }
}

impl Client {
    /// The value of transactional `key` at `read_ts`.
    pub(super) async fn snapshot_get(
        &self,
        key: &[u8],
        read_ts: Timestamp,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.snapshot_get_version(key, read_ts).await?.map(|version| version.value))
    }

    /// The version of transactional `key` visible at `read_ts`.
    pub(super) async fn snapshot_get_version(
        &self,
        key: &[u8],
        read_ts: Timestamp,
    ) -> Result<Option<VersionedKeyValue>, ClientError> {
        let mut wait = LockWait::new(self);
        loop {
            let (answer, _) = self
                .on_region(key, Resend::Always, |mut kv, context, _| {
                    let request = TxnGetRequest {
                        context: Some(context),
                        key: key.to_vec(),
                        read_ts: read_ts.as_u64(),
                    };
                    async move { kv.txn_get(request).await }
                })
                .await?;
            let answer = answer.into_inner();
            match answer.locked {
                None => {
                    let commit_ts = Timestamp::from_u64(answer.commit_ts);
                    let key = key.to_vec();
                    let found = VersionedKeyValue { key, value: answer.value, commit_ts };
                    return Ok(answer.found.then_some(found));
                }
                Some(lock) => wait.wait_out(self, lock).await?,
            }
        }
    }

    /// The transactional pairs of `[start, end)` at `read_ts`, as [`Client::scan`].
    pub(super) async fn snapshot_scan(
        &self,
        start: &[u8],
        end: &[u8],
        read_ts: Timestamp,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, ClientError> {
        let versions = self.snapshot_scan_versions(start, end, read_ts, limit, reverse).await?;
        Ok(versions.into_iter().map(|version| KeyValue { key: version.key, value: version.value }).collect())
    }

    /// As [`Client::snapshot_scan`], each pair with its commit timestamp.
    pub(super) async fn snapshot_scan_versions(
        &self,
        start: &[u8],
        end: &[u8],
        read_ts: Timestamp,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<VersionedKeyValue>, ClientError> {
        let scan_region = |low: Vec<u8>, high: Vec<u8>, wanted: usize| async move {
            let mut wait = LockWait::new(self);
            loop {
                let (answer, region) = self
                    .on_region(&low, Resend::Always, |mut kv, context, region| {
                        let request = TxnScanRequest {
                            context: Some(context),
                            start_key: low.clone(),
                            end_key: KeyRange::of(&region).clamp(&KeyRange::new(&low, &high)).end().to_vec(),
                            limit: wanted as u32,
                            reverse,
                            read_ts: read_ts.as_u64(),
                        };
                        async move { kv.txn_scan(request).await }
                    })
                    .await?;
                let answer = answer.into_inner();
                match answer.locked {
                    None => {
                        let last_key = answer.pairs.last().map(|pair| pair.key.as_slice());
                        let resume = resume_after(answer.more, last_key, reverse);
                        let pairs = answer.pairs.into_iter().map(VersionedKeyValue::from).collect();
                        return Ok(Page { pairs, region, resume });
                    }
                    Some(lock) => wait.wait_out(self, lock).await?,
                }
            }
        };
        self.scan_regions(start, end, limit, reverse, scan_region).await
    }
}
