//! Transactions: snapshot isolation over any keys of the transactional key space, by
//! Percolator's two-phase commit as TiKV runs it.
//!
//! [`Client::begin`] asks the placement driver's oracle for a start timestamp (awaited
//! at the first read or the commit, so that a transaction that only writes waits for
//! the oracle once: its commit timestamp is asked for in the same batch). Reads
//! see the database as of that timestamp, with the transaction's own writes over it;
//! writes are buffered here until [`Transaction::commit`], which runs the commit
//! protocol (`commit.rs`). Nothing is written before commit, so dropping a transaction
//! (or [`Transaction::rollback`]) leaves no trace.
//!
//! A read that meets another transaction's lock asks that transaction's primary what
//! became of it and finishes its commit or rollback (`resolve.rs`), or waits while it
//! is alive: a transaction is never seen half committed.
//!
//! Isolation: snapshot isolation, first committer wins: a transaction whose keys
//! another committed after its start fails with [`ClientError::Conflict`]. Keys read
//! and not written are not checked unless locked with [`Transaction::lock_keys`];
//! locking every key read makes the transaction serializable (no write skew). A range
//! read is checked too when asked with [`Transaction::refresh_on_commit`]: a key
//! created, changed or deleted in it after the start fails the commit (`refresh.rs`).

mod commit;
mod fence;
mod read;
mod refresh;
mod resolve;

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_engine::kv::{KvError, check_key, check_value};
use tessera_engine::proto::command::Mutation;
use tessera_engine::proto::frame::KeyValue;
use tessera_engine::proto::mvcc;
use tessera_engine::region::KeyRange;
use tessera_engine::timestamp::Timestamp;

pub use fence::FencePass;
pub use resolve::StaleLockOutcome;

use super::{Client, ClientError, PendingTimestamp, Refusal};

/// What the transaction will write to a key at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Buffered {
    Put(Vec<u8>),
    Delete,
    /// Read, not written: locked so that a concurrent commit to it fails us.
    Lock,
}

/// A transaction in progress: reads at its start timestamp, writes buffered until
/// commit.
pub struct Transaction {
    client: Arc<Client>,
    /// The timestamp the transaction reads at: asked of the oracle when it began
    /// (`pending_start`), awaited at its first read or its commit, so that a
    /// transaction that only writes waits for the oracle once, not twice.
    start_ts: tokio::sync::OnceCell<Timestamp>,
    pending_start: parking_lot::Mutex<Option<PendingTimestamp>>,
    /// A commit timestamp asked for with the start (`Client::begin_one_phase`), for the
    /// commit's first one-phase try.
    pending_commit: parking_lot::Mutex<Option<PendingTimestamp>>,
    buffered: BTreeMap<Vec<u8>, Buffered>,
    /// Key ranges `[start, end)` whose reads must still hold at the commit timestamp.
    refreshed: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A key's version as a snapshot read found it: its value, and the timestamp the
/// transaction that wrote it committed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedKeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub commit_ts: Timestamp,
}

impl From<crate::proto::VersionedPair> for VersionedKeyValue {
    fn from(pair: crate::proto::VersionedPair) -> VersionedKeyValue {
        VersionedKeyValue { key: pair.key, value: pair.value, commit_ts: Timestamp::from_u64(pair.commit_ts) }
    }
}

/// A read-only view of the transactional key space at one timestamp.
pub struct Snapshot {
    client: Arc<Client>,
    read_ts: Timestamp,
}

impl Client {
    /// Begins a transaction at a fresh timestamp from the oracle: asked for now, above
    /// every timestamp answered before this call; waited for when first needed (an
    /// oracle that cannot answer fails that first read, or the commit).
    pub async fn begin(self: &Arc<Self>) -> Result<Transaction, ClientError> {
        Ok(Transaction {
            client: self.clone(),
            start_ts: tokio::sync::OnceCell::new(),
            pending_start: parking_lot::Mutex::new(Some(self.request_timestamp())),
            pending_commit: parking_lot::Mutex::new(None),
            buffered: BTreeMap::new(),
            refreshed: Vec::new(),
        })
    }

    /// Begins a transaction expected to read a few keys and commit in one phase soon
    /// (etcd's Put): its commit timestamp is asked for together with its start, so
    /// that it waits for the oracle once, not once before its reads and once after.
    /// A commit timestamp that reads of its keys overtook meanwhile is refused by the
    /// leader (nothing is written) and the commit goes on as any other.
    pub async fn begin_one_phase(self: &Arc<Self>) -> Result<Transaction, ClientError> {
        let transaction = self.begin().await?;
        *transaction.pending_commit.lock() = Some(self.request_timestamp());
        Ok(transaction)
    }

    /// What was committed at or below a fresh timestamp from the oracle: every write
    /// acknowledged before this call (one oracle round trip, where `snapshot_at` of a
    /// fresh timestamp takes two).
    pub async fn snapshot_now(self: &Arc<Self>) -> Result<Snapshot, ClientError> {
        Ok(Snapshot { client: self.clone(), read_ts: self.timestamp().await? })
    }

    /// What was committed at or below `read_ts`. A timestamp the oracle has not handed
    /// out yet is refused: commits could still land below it, so reads there would not
    /// repeat.
    pub async fn snapshot_at(self: &Arc<Self>, read_ts: Timestamp) -> Result<Snapshot, ClientError> {
        let now = self.timestamp().await?;
        if read_ts > now {
            return Err(ClientError::InvalidArgument(Refusal::FutureTimestamp { read_ts, now }));
        }
        Ok(Snapshot { client: self.clone(), read_ts })
    }
}

impl Snapshot {
    pub fn read_ts(&self) -> Timestamp {
        self.read_ts
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        check_key(key).map_err(refused)?;
        self.client.snapshot_get(key, self.read_ts).await
    }

    /// As [`Transaction::scan`].
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, ClientError> {
        self.client.snapshot_scan(start, end, self.read_ts, limit, reverse).await
    }

    /// The version of `key` visible in the snapshot: its value and commit timestamp.
    pub async fn get_version(&self, key: &[u8]) -> Result<Option<VersionedKeyValue>, ClientError> {
        check_key(key).map_err(refused)?;
        self.client.snapshot_get_version(key, self.read_ts).await
    }

    /// As [`Snapshot::scan`], each pair with its commit timestamp.
    pub async fn scan_versions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<VersionedKeyValue>, ClientError> {
        self.client.snapshot_scan_versions(start, end, self.read_ts, limit, reverse).await
    }
}

impl Transaction {
    /// The timestamp the transaction reads at (waited for on first use).
    pub async fn start_ts(&self) -> Result<Timestamp, ClientError> {
        let start_ts = self
            .start_ts
            .get_or_try_init(|| async {
                // Taken out before it is awaited: no lock is held across the wait. A
                // failed first try leaves none, and the next asks the oracle again.
                let pending = self.pending_start.lock().take();
                match pending {
                    Some(pending) => pending.await,
                    None => self.client.timestamp().await,
                }
            })
            .await?;
        Ok(*start_ts)
    }

    /// The version of `key` committed at or below the transaction's start, with its
    /// commit timestamp (the transaction's own buffered writes are not in it).
    pub async fn get_committed_version(&self, key: &[u8]) -> Result<Option<VersionedKeyValue>, ClientError> {
        check_key(key).map_err(refused)?;
        let start_ts = self.start_ts().await?;
        self.client.snapshot_get_version(key, start_ts).await
    }

    /// The versions of `[start, end)` committed at or below the transaction's start,
    /// as [`Snapshot::scan_versions`] (the transaction's own writes are not in them).
    pub async fn scan_committed_versions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<VersionedKeyValue>, ClientError> {
        let start_ts = self.start_ts().await?;
        self.client.snapshot_scan_versions(start, end, start_ts, limit, reverse).await
    }

    /// The value of `key` as the transaction sees it.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        check_key(key).map_err(refused)?;
        match self.buffered.get(key) {
            Some(Buffered::Put(value)) => Ok(Some(value.clone())),
            Some(Buffered::Delete) => Ok(None),
            Some(Buffered::Lock) | None => self.client.snapshot_get(key, self.start_ts().await?).await,
        }
    }

    /// The pairs of `[start, end)` (empty end: to the end of the key space) as the
    /// transaction sees them, in key order (descending with `reverse`), at most
    /// `limit` (0: no limit).
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, ClientError> {
        let range = KeyRange::new(start, end);
        let own: Vec<(&Vec<u8>, &Buffered)> = self
            .buffered
            .iter()
            .filter(|(key, buffered)| range.contains(key) && **buffered != Buffered::Lock)
            .collect();
        // Each buffered write can hide at most one stored pair: ask for that many more.
        let asked = if limit == 0 { 0 } else { limit + own.len() };
        let read_ts = self.start_ts().await?;
        let stored = self.client.snapshot_scan(start, end, read_ts, asked, reverse).await?;
        Ok(overlay(stored, own, asked, limit, reverse))
    }

    /// Sets `key` to `value` at commit.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        check_key(key).and_then(|()| check_value(value)).map_err(refused)?;
        self.buffered.insert(key.to_vec(), Buffered::Put(value.to_vec()));
        Ok(())
    }

    /// Deletes `key` at commit.
    pub fn delete(&mut self, key: &[u8]) -> Result<(), ClientError> {
        check_key(key).map_err(refused)?;
        self.buffered.insert(key.to_vec(), Buffered::Delete);
        Ok(())
    }

    /// Locks keys read but not written: the commit fails if another transaction commits
    /// any of them after this one started. Keys this transaction writes are checked
    /// anyway.
    pub fn lock_keys<K: AsRef<[u8]>>(
        &mut self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<(), ClientError> {
        for key in keys {
            let key = key.as_ref();
            check_key(key).map_err(refused)?;
            self.buffered.entry(key.to_vec()).or_insert(Buffered::Lock);
        }
        Ok(())
    }

    /// Makes the commit fail with a conflict if a key in `[start, end)` (an empty end:
    /// to the end of the key space) was put or deleted after the transaction started:
    /// what it read of the range still holds at its commit timestamp (no phantoms).
    /// Costs a check of the range before the commit point, and the one-phase path.
    pub fn refresh_on_commit(&mut self, start: &[u8], end: &[u8]) -> Result<(), ClientError> {
        if KeyRange::new(start, end).is_inverted() {
            return Err(ClientError::InvalidArgument(Refusal::InvertedRange));
        }
        // A range asked for again (a compare and a Range of one prefix) is checked once.
        let range = (start.to_vec(), end.to_vec());
        if !self.refreshed.contains(&range) {
            self.refreshed.push(range);
        }
        Ok(())
    }

    /// Commits the transaction; answers its commit timestamp (its start timestamp if
    /// it wrote and locked nothing: a read-only transaction is its snapshot). On
    /// [`ClientError::Conflict`] nothing of it is visible, ever; begin it again.
    pub async fn commit(self) -> Result<Timestamp, ClientError> {
        if self.buffered.is_empty() {
            return self.start_ts().await;
        }
        // Asked for before the start timestamp is awaited, so that a transaction that
        // only wrote waits for both in one round trip: a one-phase commit's first try
        // takes it (it is above the start timestamp, asked for later by this client).
        let asked_early = self.pending_commit.lock().take();
        let commit_ts = asked_early.unwrap_or_else(|| self.client.request_timestamp());
        let start_ts = self.start_ts().await?;
        let mutations =
            self.buffered.into_iter().map(|(key, buffered)| (key.clone(), mutation(key, buffered))).collect();
        commit::Commit::new(self.client, start_ts, mutations, self.refreshed).run(Some(commit_ts)).await
    }

    /// Abandons the transaction. Nothing was written before commit, so nothing needs
    /// undoing: this only discards the buffered writes.
    pub fn rollback(self) {}
}

/// A key or value the stores would refuse, refused before anything is sent.
fn refused(error: KvError) -> ClientError {
    ClientError::InvalidArgument(Refusal::Kv(error))
}

fn mutation(key: Vec<u8>, buffered: Buffered) -> Mutation {
    let (op, value) = match buffered {
        Buffered::Put(value) => (mvcc::Mutation::Put, value),
        Buffered::Delete => (mvcc::Mutation::Delete, Vec::new()),
        Buffered::Lock => (mvcc::Mutation::Lock, Vec::new()),
    };
    Mutation { op: op as i32, key, value }
}

/// The stored pairs of a scan with the transaction's own writes over them. `stored`
/// came from a scan that asked for `asked` pairs (0: all); if it got that many, the
/// range past its last key was not read, and own writes there are left out too.
fn overlay(
    stored: Vec<KeyValue>,
    own: Vec<(&Vec<u8>, &Buffered)>,
    asked: usize,
    limit: usize,
    reverse: bool,
) -> Vec<KeyValue> {
    let complete = asked == 0 || stored.len() < asked;
    let boundary = stored.last().map(|pair| pair.key.clone());
    let read_up_to = |key: &[u8]| match (&boundary, complete, reverse) {
        (_, true, _) | (None, _, _) => true,
        (Some(last), false, false) => key <= last.as_slice(),
        (Some(last), false, true) => key >= last.as_slice(),
    };
    let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
        stored.into_iter().map(|pair| (pair.key, pair.value)).collect();
    for (key, buffered) in own.into_iter().filter(|(key, _)| read_up_to(key)) {
        match buffered {
            Buffered::Put(value) => merged.insert(key.clone(), value.clone()),
            Buffered::Delete => merged.remove(key),
            Buffered::Lock => None,
        };
    }
    let pairs = merged.into_iter().map(|(key, value)| KeyValue { key, value });
    let mut ordered: Vec<KeyValue> = if reverse { pairs.rev().collect() } else { pairs.collect() };
    if limit != 0 {
        ordered.truncate(limit);
    }
    ordered
}

#[cfg(test)]
mod tests;
