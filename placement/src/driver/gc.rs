//! The garbage-collection safe point, as the driver's leader keeps it.
//!
//! The safe point is a timestamp that only rises, persisted in the metadata
//! (`gc_safe_point`) and handed to every store with its heartbeat's answer; a store
//! collects versions up to it and refuses snapshot reads at or below it (the engine's
//! `gc` module). It is never less than the configured lifetime behind the wall clock.
//!
//! The driver keeps and checks it; the pass that earns each new value (fencing every
//! region and resolving the locks below it) is the node's GC worker
//! (`server::node::gc`), which alone moves it, after that pass.

use tessera_engine::timestamp::{Timestamp, wall_clock_milliseconds};

use super::PlacementDriver;
use crate::errors::{InvalidRequest, PdError, Unavailability};
use crate::metadata::{Mark, MarkUpdate};

impl PlacementDriver {
    /// The safe point as this leader knows it (zero: none yet).
    pub fn gc_safe_point(&self) -> Result<Timestamp, PdError> {
        self.shared.with_leader(|state| Ok(Timestamp::from_u64(state.gc_safe_point)))
    }

    /// The highest safe point the lifetime allows now.
    pub fn gc_safe_point_allowed(&self) -> Timestamp {
        let lifetime_ms = u64::try_from(self.shared.config.gc_lifetime.as_millis()).unwrap_or(u64::MAX);
        let latest_ms = wall_clock_milliseconds().saturating_sub(lifetime_ms);
        Timestamp::new(latest_ms, 0).unwrap_or(Timestamp::ZERO)
    }

    /// Raises the safe point to `safe_point`, persisted through Raft before it is
    /// answered; answers the safe point now (which is never lowered: a lower request
    /// leaves it as it is). The caller must have fenced every region at `safe_point` and
    /// resolved the locks below it.
    pub fn advance_gc_safe_point(&self, safe_point: Timestamp) -> Result<Timestamp, PdError> {
        let allowed = self.gc_safe_point_allowed();
        if safe_point > allowed {
            let (safe_point_ms, latest_ms) =
                (safe_point.physical_milliseconds(), allowed.physical_milliseconds());
            return Err(InvalidRequest::SafePointTooRecent { safe_point_ms, latest_ms }.into());
        }
        let _writer = self.shared.writer.lock();
        let epoch = self.shared.epoch()?;
        let current = self.shared.with_leader(|state| Ok(state.gc_safe_point))?;
        if safe_point.as_u64() <= current {
            return Ok(Timestamp::from_u64(current));
        }
        let update =
            self.shared.metadata.advance_mark(Mark::GcSafePoint, epoch, current, safe_point.as_u64())?;
        let now = match update {
            MarkUpdate::Advanced => safe_point.as_u64(),
            // Another leader moved it meanwhile: this one is deposed, or about to be.
            MarkUpdate::Raced { found } => {
                tracing::warn!(found, expected = current, "the safe point was moved by another leader");
                return Err(Unavailability::SafePointMovedMeanwhile.into());
            }
        };
        self.shared.with_leader(|state| {
            state.gc_safe_point = state.gc_safe_point.max(now);
            Ok(())
        })?;
        crate::metrics::DRIVER.gc_safe_point.set(Timestamp::from_u64(now).physical_milliseconds() as f64);
        tracing::info!(safe_point = now, "garbage-collection safe point advanced");
        Ok(Timestamp::from_u64(now))
    }
}
