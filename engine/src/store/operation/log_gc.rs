//! Truncating the Raft log.
//!
//! Every `log_gc_interval_ticks` a peer truncates its log: a leader up to what every
//! replica holds, or further (to `applied - log_gc_max_lag`) when a replica lags so far
//! that a snapshot serves it better; a follower to `applied - log_gc_max_lag`. Only
//! applied entries go. The truncation rides in the batch the worker writes once per tick.

use crate::storage::EngineError;
use crate::store::StoreConfig;
use crate::store::peer::Peer;

impl Peer {
    /// Truncates the log when due; whether anything was truncated.
    pub(crate) fn log_gc(
        &mut self,
        config: &StoreConfig,
        batch: &mut rocksdb::WriteBatch,
    ) -> Result<bool, EngineError> {
        if config.log_gc_interval_ticks == 0 || !self.ticks.is_multiple_of(config.log_gc_interval_ticks) {
            return Ok(false);
        }
        let applied = self.applied_index();
        let floor = applied.saturating_sub(config.log_gc_max_lag);
        let target = if self.is_leader() {
            let slowest = self.raw.progress().map(|(_, pr)| pr.matched).min().unwrap_or(applied);
            slowest.min(applied).max(floor)
        } else {
            floor
        };
        self.raw.storage_mut().compact_to(target, batch)
    }
}
