//! Settings of a store's runtime.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, MonotonicClock};
use crate::feed::StaleLockSink;
use crate::raft::ConfigError;
use crate::timestamp::TimestampSource;

/// A lock older than a client's default time to live (three seconds from its
/// transaction's start) is worth asking about: its coordinator may be gone.
pub const DEFAULT_FEED_STALE_LOCK_AFTER: Duration = Duration::from_secs(3);

/// How a store runs its regions.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub store_id: u64,
    /// Raft worker threads; each owns a fixed share of the regions.
    pub workers: usize,
    /// Wall-clock length of one Raft tick.
    pub tick_interval: Duration,
    /// What ticks are timed by and leader leases measured on (a test may stop it to
    /// play a paused process).
    pub clock: Arc<dyn Clock>,
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
    /// A replica that has known no leader for this many ticks is reported as leaderless,
    /// so that the placement driver's agent can check whether it was removed from its
    /// region while its store was away (and destroy it if so).
    pub leader_missing_report_ticks: u64,
    /// Where leaders get a timestamp from the oracle before they take one-phase
    /// commits; without one, every one-phase commit is refused (and the client commits
    /// in two phases).
    pub timestamps: Option<Arc<dyn TimestampSource>>,
    /// After the garbage-collection safe point moved, the transactional families are
    /// compacted (so that old versions go) at most this often.
    pub gc_compaction_interval: Duration,
    /// How often the regions leading change feeds publish a resolved timestamp (each
    /// time, one oracle request per raft worker): a watcher's lag is about this long.
    pub feed_resolve_interval: Duration,
    /// A region whose oldest lock has held its feed's resolved timestamp back for
    /// longer than this (by the oracle's clock) reports it to `stale_locks`.
    pub feed_stale_lock_after: Duration,
    /// Where stale locks are reported for resolution (`crate::feed`); without one, a
    /// lock holds its feeds back until a reader or writer resolves it.
    pub stale_locks: Option<Arc<dyn StaleLockSink>>,
    /// Bytes of RocksDB's block cache, shared by every column family.
    pub block_cache_bytes: usize,
}

impl StoreConfig {
    pub fn new(store_id: u64) -> StoreConfig {
        StoreConfig {
            store_id,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8),
            tick_interval: Duration::from_millis(100),
            clock: MonotonicClock::shared(),
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
            leader_missing_report_ticks: 100,
            timestamps: None,
            gc_compaction_interval: Duration::from_secs(10 * 60),
            feed_resolve_interval: Duration::from_millis(20),
            feed_stale_lock_after: DEFAULT_FEED_STALE_LOCK_AFTER,
            stale_locks: None,
            block_cache_bytes: crate::storage::DEFAULT_BLOCK_CACHE_BYTES,
        }
    }

    /// Refuses settings that cannot work, naming the setting and the value given; a store
    /// checks its configuration before it opens anything.
    pub fn validate(&self) -> Result<(), InvalidStoreConfig> {
        if self.store_id == 0 {
            return Err(InvalidStoreConfig::ZeroStoreId);
        }
        if self.workers == 0 {
            return Err(InvalidStoreConfig::Zero("workers"));
        }
        if self.tick_interval < Duration::from_millis(1) {
            return Err(InvalidStoreConfig::Zero("tick_interval (in milliseconds)"));
        }
        if self.feed_resolve_interval < Duration::from_millis(1) {
            return Err(InvalidStoreConfig::Zero("feed_resolve_interval (in milliseconds)"));
        }
        if self.hibernate_after_ticks == 0 {
            return Err(InvalidStoreConfig::Zero("hibernate_after_ticks"));
        }
        if self.leader_missing_report_ticks == 0 {
            return Err(InvalidStoreConfig::Zero("leader_missing_report_ticks"));
        }
        if self.split_max_keys == 0 {
            return Err(InvalidStoreConfig::Zero("split_max_keys"));
        }
        if self.split_max_bytes == 0 {
            return Err(InvalidStoreConfig::Zero("split_max_bytes"));
        }
        // Far beyond any sensible timing, and small enough that no tick arithmetic
        // overflows (an election timeout is drawn up to twice this). The counts that
        // are only compared with (hibernation, leaderless reports) may be as large as
        // they like: u64::MAX means never.
        for (setting, ticks) in
            [("election_ticks", self.election_ticks), ("heartbeat_ticks", self.heartbeat_ticks)]
        {
            if ticks > MAX_TICKS {
                return Err(InvalidStoreConfig::TooManyTicks { setting, ticks, max: MAX_TICKS });
            }
        }
        // The Raft settings as every replica of this store will get them.
        super::peer::raft_config(self, 1, 0, false).validate().map_err(|error| match error {
            crate::raft::Error::InvalidConfig(config) => InvalidStoreConfig::Raft(config),
            other => unreachable!(
                "invariant: validating a Raft configuration fails only with a ConfigError, not {other}"
            ),
        })
    }

    /// A reading of the store's clock in the unit its Raft replicas measure leases in.
    pub(crate) fn now_micros(&self) -> u64 {
        u64::try_from(self.clock.now().as_micros()).unwrap_or(u64::MAX)
    }

    /// One tick's length in that unit.
    pub(crate) fn tick_length_micros(&self) -> u64 {
        u64::try_from(self.tick_interval.as_micros()).unwrap_or(u64::MAX).max(1)
    }
}

/// A store setting that cannot work. Retrying cannot help: the configuration must
/// change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidStoreConfig {
    #[error("the store id must not be 0")]
    ZeroStoreId,
    #[error("{0} must be above 0")]
    Zero(&'static str),
    #[error("{setting} is {ticks}, above the most a store accepts ({max})")]
    TooManyTicks { setting: &'static str, ticks: u64, max: u64 },
    #[error("the Raft settings cannot work: {0}")]
    Raft(ConfigError),
}

/// The most ticks any tick-counted setting may be: over a day at a 100 ms tick.
const MAX_TICKS: u64 = 1_000_000;
