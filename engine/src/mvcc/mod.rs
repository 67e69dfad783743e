//! Multi-version concurrency control: the storage layout of transactions (Percolator,
//! as TiKV lays it out), kept apart from the raw key space.
//!
//! Three column families of the node's RocksDB hold it (`crate::storage::Cf`): `lock`
//! (a prewritten key's lock, one per key), `write` (commit and rollback records, per
//! key and commit timestamp) and `versions` (values, per key and start timestamp). The
//! records are `crate::proto::mvcc`. Snapshots, splits and destruction cover the three
//! families with a region's range, like the raw key space.
//!
//! - `key`: how a user key and a timestamp become one RocksDB key, so that a key's
//!   versions are adjacent and newest first and a region's key range is one range of
//!   every transactional column family.
//! - `reader`: snapshot reads (get, scans both ways) at a timestamp, refused with the
//!   lock that stands in the way.
//! - `history`: what a change feed reads: the versions a range committed after a
//!   timestamp, and the value a version replaced.
//! - `refresh`: whether a range changed between a transaction's start and its commit
//!   timestamp (a serializable read of a range).
//!
//! The commands that write the families (prewrite, commit, rollback, through Raft) are
//! [`crate::txn`]'s.

mod history;
pub mod key;
pub mod reader;
pub mod refresh;

use crate::proto::command::LockInfo;
use crate::proto::mvcc::Lock;

/// A stored lock as a refusal names it.
pub fn lock_info(key: &[u8], lock: &Lock) -> LockInfo {
    LockInfo {
        key: key.to_vec(),
        primary: lock.primary.clone(),
        start_ts: lock.start_ts,
        ttl_ms: lock.ttl_ms,
        op: lock.mutation,
    }
}

#[cfg(test)]
mod tests;
