//! Locks that hold a feed back: a transaction whose coordinator died leaves its locks
//! until someone resolves them, and a region's resolved timestamp cannot pass its
//! oldest lock. Readers resolve the locks they meet, but nothing may ever read an idle
//! key again, and its watchers would wait for good. So a leader whose oldest lock has
//! held its feed back for longer than a threshold reports it (at most once per
//! [`STALE_LOCK_REPORT_EVERY`] per region while it stays) to a [`StaleLockSink`]; the
//! server resolves it through the lock's primary as a reader would (committed: commit
//! it; expired or rolled back: roll it back; alive: leave it to its coordinator).
//!
//! This module decides when a lock is reported; it never resolves anything itself (a
//! lock's fate is decided at its primary, which may be in another region).

use std::fmt;
use std::time::Duration;

use crate::timestamp::Timestamp;

/// How often a region reports the same lock while it keeps holding the feed back.
pub const STALE_LOCK_REPORT_EVERY: Duration = Duration::from_secs(1);

/// A lock that has held a region's resolved timestamp back for too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleLock {
    pub region_id: u64,
    pub key: Vec<u8>,
    pub start_ts: Timestamp,
}

/// Where a store reports stale locks (the server resolves them through its client).
/// `report` is called on a raft worker: it must never block (a full queue drops the
/// report: the lock is reported again a second later).
pub trait StaleLockSink: Send + Sync + fmt::Debug + 'static {
    fn report(&self, lock: StaleLock);
}

/// When a region reports its oldest lock.
#[derive(Debug, Default)]
pub(super) struct StaleLockTimer {
    /// When this region last reported one (the store's clock, microseconds).
    reported_at_micros: Option<u64>,
}

impl StaleLockTimer {
    /// Whether a lock that started at `start_ts` is stale by the oracle's `oracle_ts`
    /// (older than `stale_after`), and a report is due at `now_micros`; notes the
    /// report if so.
    pub(super) fn due(
        &mut self,
        start_ts: Timestamp,
        oracle_ts: Timestamp,
        stale_after: Duration,
        now_micros: u64,
    ) -> bool {
        let age_milliseconds =
            oracle_ts.physical_milliseconds().saturating_sub(start_ts.physical_milliseconds());
        if u128::from(age_milliseconds) < stale_after.as_millis() {
            return false;
        }
        let every_micros = u64::try_from(STALE_LOCK_REPORT_EVERY.as_micros()).unwrap_or(u64::MAX);
        if self.reported_at_micros.is_some_and(|at| now_micros.saturating_sub(at) < every_micros) {
            return false;
        }
        self.reported_at_micros = Some(now_micros);
        true
    }
}
