//! What a region's apply did, as a change feed sees it.

use crate::timestamp::Timestamp;

/// One effect of an applied transactional command on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The transaction that started at `start_ts` locked `key` (a prewrite, or a
    /// heartbeat writing the same lock again).
    Locked { key: Vec<u8>, start_ts: Timestamp },
    /// The lock the transaction that started at `start_ts` held on `key` is gone
    /// (committed or rolled back).
    Unlocked { key: Vec<u8>, start_ts: Timestamp },
    /// A version of `key` committed: a value, or a deletion (`None`).
    Committed(FeedEvent),
}

/// A committed version of one key, as watchers receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    pub key: Vec<u8>,
    /// The new value; `None` for a deletion.
    pub value: Option<Vec<u8>>,
    /// The transaction's start timestamp: the events of one transaction share it and
    /// its commit timestamp.
    pub start_ts: Timestamp,
    pub commit_ts: Timestamp,
}
