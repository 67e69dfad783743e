//! Settings of a store's runtime.

use std::time::Duration;

/// How a store runs its regions.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub store_id: u64,
    /// Raft worker threads; each owns a fixed share of the regions.
    pub workers: usize,
    /// Wall-clock length of one Raft tick.
    pub tick_interval: Duration,
    pub election_ticks: u64,
    pub heartbeat_ticks: u64,
    /// Ticks without activity after which a region's leader hibernates it.
    pub hibernate_after_ticks: u64,
    /// Every this many ticks a region truncates its Raft log.
    pub log_gc_interval_ticks: u64,
    /// A region keeps at most this many applied entries that a lagging follower still
    /// needs; a follower further behind catches up by snapshot instead.
    pub log_gc_max_lag: u64,
    /// Whether to sync the log on every write round (turn off only in benchmarks that
    /// measure everything but the disk).
    pub sync_log: bool,
    /// When a region's leader checks whether its region outgrew the split thresholds.
    pub split_check_interval_ticks: u64,
    /// A region with more keys than this is split at its middle key.
    pub split_max_keys: u64,
    /// A region with more bytes of keys and values than this is split at its middle key.
    pub split_max_bytes: u64,
    /// A write that takes longer than this from proposal to answer is logged, with the
    /// time it waited to commit and the time its apply batch took.
    pub slow_proposal_threshold: Duration,
}

impl StoreConfig {
    pub fn new(store_id: u64) -> StoreConfig {
        StoreConfig {
            store_id,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8),
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            hibernate_after_ticks: 20,
            log_gc_interval_ticks: 10,
            log_gc_max_lag: 1024,
            sync_log: true,
            split_check_interval_ticks: 50,
            split_max_keys: 1_000_000,
            split_max_bytes: 96 * 1024 * 1024,
            slow_proposal_threshold: Duration::from_secs(1),
        }
    }
}
