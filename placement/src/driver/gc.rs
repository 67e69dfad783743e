//! The garbage-collection safe point, as the driver's leader keeps it.
//!
//! The safe point is a timestamp that only rises, persisted in the metadata
//! (`gc_safe_point`) and handed to every store with its heartbeat's answer; a store
//! collects versions up to it and refuses snapshot reads at or below it (the engine's
//! `gc` module). It is never less than the configured lifetime behind the wall clock.
//!
//! **Holds.** A service that reads history from a timestamp for a long time (a change
//! feed's watchers, which reopen from where they are after a fault) holds garbage
//! collection below that timestamp with a time to live, persisted like the safe point:
//! while a hold lasts, the safe point stays below it. A hold is refused at or below the
//! safe point or the highest timestamp a pass has fenced regions at (`gc_fence`,
//! persisted before the pass fences anything): those versions may be gone already.
//!
//! The driver keeps and checks it; the pass that earns each new value (fencing every
//! region and resolving the locks below it) is the node's GC worker
//! (`server::node::gc`), which alone moves it, after that pass.

use std::time::Duration;

use tessera_engine::timestamp::{Timestamp, wall_clock_milliseconds};

use super::PlacementDriver;
use crate::errors::{InvalidRequest, PdError, Unavailability};
use crate::metadata::{GcHold, Mark, MarkUpdate, delete_gc_hold, put_gc_hold};

/// The longest name a service holding garbage collection may give.
const MAX_SERVICE_NAME_BYTES: usize = 128;

/// The longest a hold lasts without being renewed: a service that died stops holding
/// garbage collection within it.
pub const MAX_HOLD_TTL: Duration = Duration::from_secs(10 * 60);

impl PlacementDriver {
    /// The safe point as this leader knows it (zero: none yet).
    pub fn gc_safe_point(&self) -> Result<Timestamp, PdError> {
        self.shared.with_leader(|state| Ok(Timestamp::from_u64(state.gc_safe_point)))
    }

    /// The highest safe point allowed now: what the lifetime allows, and below every
    /// service's hold that has not expired.
    pub fn gc_safe_point_allowed(&self) -> Result<Timestamp, PdError> {
        let lifetime_ms = u64::try_from(self.shared.config.gc_lifetime.as_millis()).unwrap_or(u64::MAX);
        let now_ms = wall_clock_milliseconds();
        let by_lifetime = Timestamp::new(now_ms.saturating_sub(lifetime_ms), 0).unwrap_or(Timestamp::ZERO);
        let held = self.shared.with_leader(|state| {
            Ok(state
                .gc_holds
                .values()
                .filter(|hold| hold.expires_at_ms > now_ms)
                .map(|hold| hold.safe_point.saturating_sub(1))
                .min())
        })?;
        Ok(held.map_or(by_lifetime, |held| by_lifetime.min(Timestamp::from_u64(held))))
    }

    /// Records, before any region is fenced, that a pass is about to fence at
    /// `candidate`, or lower if a hold taken meanwhile allows less: the answer is what
    /// the pass must fence at. From then on no hold at or below it is taken (a fenced
    /// region may already refuse reads there). Checked and recorded under the same lock
    /// as holds are taken, so that no hold is granted below a fence.
    pub fn begin_gc_pass(&self, candidate: Timestamp) -> Result<Timestamp, PdError> {
        let _writer = self.shared.writer.lock();
        let candidate = candidate.min(self.gc_safe_point_allowed()?);
        let epoch = self.shared.epoch()?;
        let current = self.shared.with_leader(|state| Ok(state.gc_fence))?;
        if candidate.as_u64() <= current {
            return Ok(candidate);
        }
        match self.shared.metadata.advance_mark(Mark::GcFence, epoch, current, candidate.as_u64())? {
            MarkUpdate::Advanced => {}
            // A write of this leader that timed out and applied later: adopt it, and let
            // the pass try again.
            MarkUpdate::Raced { found } => {
                self.shared.with_leader(|state| {
                    state.gc_fence = state.gc_fence.max(found);
                    Ok(())
                })?;
                return Err(Unavailability::GcFenceMovedMeanwhile.into());
            }
        }
        self.shared.with_leader(|state| {
            state.gc_fence = state.gc_fence.max(candidate.as_u64());
            Ok(())
        })?;
        Ok(candidate)
    }

    /// Holds garbage collection below `safe_point` for `service` until `ttl` from now
    /// (a zero `safe_point` releases the hold), persisted before it is answered.
    /// Answers whether it holds, and the lowest timestamp a hold may name now (the
    /// safe point, or where regions are fenced already, whichever is higher): a hold
    /// at or below it is not taken, as the versions it would keep may be gone.
    pub fn hold_gc(
        &self,
        service: &str,
        safe_point: Timestamp,
        ttl: Duration,
    ) -> Result<(bool, u64), PdError> {
        if service.is_empty() || service.len() > MAX_SERVICE_NAME_BYTES {
            return Err(InvalidRequest::ServiceName { bytes: service.len() }.into());
        }
        if ttl > MAX_HOLD_TTL || (ttl.is_zero() && safe_point != Timestamp::ZERO) {
            return Err(InvalidRequest::HoldTtl { ttl_ms: ttl.as_millis() as u64 }.into());
        }
        let _writer = self.shared.writer.lock();
        let epoch = self.shared.epoch()?;
        let floor = self.shared.with_leader(|state| Ok(state.gc_safe_point.max(state.gc_fence)))?;
        if safe_point == Timestamp::ZERO {
            self.shared.metadata.write(epoch, vec![delete_gc_hold(service)])?;
            self.shared.with_leader(|state| Ok(state.gc_holds.remove(service)))?;
            return Ok((false, floor));
        }
        if safe_point.as_u64() <= floor {
            return Ok((false, floor));
        }
        let now_ms = wall_clock_milliseconds();
        let hold = GcHold {
            safe_point: safe_point.as_u64(),
            expires_at_ms: now_ms.saturating_add(ttl.as_millis() as u64),
        };
        // Expired holds are deleted here, as new ones arrive.
        let expired: Vec<String> = self.shared.with_leader(|state| {
            Ok(state
                .gc_holds
                .iter()
                .filter(|(_, hold)| hold.expires_at_ms <= now_ms)
                .map(|(name, _)| name.clone())
                .collect())
        })?;
        let mut writes: Vec<_> =
            expired.iter().filter(|name| *name != service).map(|name| delete_gc_hold(name)).collect();
        writes.push(put_gc_hold(service, hold));
        self.shared.metadata.write(epoch, writes)?;
        self.shared.with_leader(|state| {
            for name in &expired {
                state.gc_holds.remove(name);
            }
            state.gc_holds.insert(service.to_string(), hold);
            Ok(())
        })?;
        Ok((true, floor))
    }

    /// Raises the safe point to `safe_point`, persisted through Raft before it is
    /// answered; answers the safe point now (which is never lowered: a lower request
    /// leaves it as it is). The caller must have fenced every region at `safe_point` and
    /// resolved the locks below it.
    pub fn advance_gc_safe_point(&self, safe_point: Timestamp) -> Result<Timestamp, PdError> {
        let allowed = self.gc_safe_point_allowed()?;
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
