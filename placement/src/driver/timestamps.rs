//! The timestamp oracle: strictly increasing transaction timestamps, handed out by the
//! driver's leader from memory.
//!
//! A timestamp is physical milliseconds and a logical counter ([`Timestamp`]). The
//! physical part is the wall clock's, or the last one handed out if the clock is behind
//! it; the logical part counts within a millisecond and carries into the next one. A
//! batch of timestamps never spans two milliseconds, so it is a run of consecutive
//! integers: a caller is told the first and the count.
//!
//! **Across leaders.** The leader hands out only timestamps whose physical part is
//! below a mark persisted in the metadata (`tso`). Before the wall clock gets near the
//! mark, the background loop moves it a window ahead by compare-and-swap through Raft.
//! A new leader loads the mark, moves it, and starts at it: above everything any earlier
//! leader handed out, since none went past a mark it had persisted. A leader that finds
//! the mark moved by someone else stops serving.
//!
//! **In real time.** Being above is not enough: a transaction that starts after another
//! committed must get a start timestamp above that commit timestamp, so a deposed leader
//! must stop before its successor hands out anything. The oracle answers only while the
//! metadata region's Raft leader lease holds in the term it was set up in
//! ([`LeaderLease`]): no other replica can be elected before that lease ends (voters
//! ignore campaigns while they hear from the leader, and a leader transfer revokes the
//! lease before its target may campaign). The lease is checked after the request
//! arrived and before the timestamps are chosen, which makes that moment the request's
//! linearization point.
//!
//! This module never blocks on Raft while holding its lock: the mark is moved outside
//! it, and a request that finds the window used up is refused (retryable) rather than
//! made to wait.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tessera_engine::proto::metadata::RegionEpoch;
use tessera_engine::store::LeaderLease;
use tessera_engine::timestamp::{LOGICAL_PER_MILLISECOND, PHYSICAL_BITS, Timestamp};

use crate::errors::{Corruption, InvalidRequest, PdError, Unavailability};
use crate::metadata::{Mark, MarkUpdate, Metadata};

/// Timestamps one request may ask for: a quarter of a millisecond's logical space, so
/// that a batch always fits in one millisecond.
pub const MAX_TIMESTAMPS_PER_REQUEST: u32 = (LOGICAL_PER_MILLISECOND / 4) as u32;

/// The shortest and longest window (`[pd.transactions] timestamp_window_ms`): below
/// the first the mark moves on every tick; past the second a new leader's timestamps
/// would start far ahead of the clock.
pub const MIN_TIMESTAMP_WINDOW: Duration = Duration::from_millis(10);
pub const MAX_TIMESTAMP_WINDOW: Duration = Duration::from_secs(60 * 60);

/// How far the logical counter may carry the physical part past the wall clock (or
/// past where this leader started, if that is later). Without a bound, callers asking
/// for the largest batches could push timestamps ahead of real time by seconds per
/// second; with it, they are refused (retryable) until the clock catches up.
const MAX_CARRY_AHEAD_MILLISECONDS: u64 = 1_000;

/// The largest physical part a timestamp can hold.
const MAX_PHYSICAL_MILLISECONDS: u64 = (1 << PHYSICAL_BITS) - 1;

/// A run of `count` consecutive timestamps starting at `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampBatch {
    pub first: Timestamp,
    pub count: u32,
}

/// What the oracle serves from, in the term it was set up in.
#[derive(Debug, Clone, Copy)]
struct Serving {
    term: u64,
    /// The last timestamp handed out (or, before the first, the start: below every
    /// timestamp this leader may hand out).
    last: Timestamp,
    /// Persisted: every timestamp handed out has a physical part below this.
    mark_milliseconds: u64,
    /// The mark this leader started from.
    floor_milliseconds: u64,
}

pub(crate) struct TimestampOracle {
    lease: Arc<LeaderLease>,
    /// How far ahead of the wall clock the mark is moved.
    window: Duration,
    serving: Mutex<Option<Serving>>,
}

/// The wall clock, read where the oracle reads it (a test may replace it).
pub(crate) type WallClock = fn() -> u64;

/// Why the oracle refuses a request for timestamps.
fn not_serving() -> PdError {
    PdError::NotLeader { leader: None }
}

impl TimestampOracle {
    /// An oracle whose mark moves `window` ahead (kept within the bounds above).
    pub(crate) fn new(lease: Arc<LeaderLease>, window: Duration) -> TimestampOracle {
        let window = window.clamp(MIN_TIMESTAMP_WINDOW, MAX_TIMESTAMP_WINDOW);
        TimestampOracle { lease, window, serving: Mutex::new(None) }
    }

    /// A leader of `term` starts from the mark it loaded. It hands out nothing until
    /// it has moved the mark ([`TimestampOracle::extend`]).
    pub(crate) fn reset(&self, term: u64, mark_milliseconds: u64) -> Result<(), PdError> {
        let start = Timestamp::new(mark_milliseconds, 0)
            .ok_or(Corruption::TimestampMark { milliseconds: mark_milliseconds })?;
        *self.serving.lock() =
            Some(Serving { term, last: start, mark_milliseconds, floor_milliseconds: mark_milliseconds });
        Ok(())
    }

    /// Stops serving (this replica no longer leads).
    pub(crate) fn stop(&self) {
        *self.serving.lock() = None;
    }

    /// Whether this oracle serves now: set up in a term whose lease holds.
    pub(crate) fn check_serving(&self) -> Result<(), PdError> {
        let term = self.serving.lock().map(|serving| serving.term);
        match term {
            Some(term) if self.lease.held_in_term() == Some(term) => Ok(()),
            _ => Err(not_serving()),
        }
    }

    /// `count` consecutive timestamps, each above every timestamp handed out before
    /// this call by this leader or any earlier one.
    pub(crate) fn allocate(&self, count: u32, wall_clock: WallClock) -> Result<TimestampBatch, PdError> {
        if count == 0 || count > MAX_TIMESTAMPS_PER_REQUEST {
            return Err(InvalidRequest::TimestampCount { count, max: MAX_TIMESTAMPS_PER_REQUEST }.into());
        }
        let mut guard = self.serving.lock();
        let serving = guard.as_mut().ok_or_else(not_serving)?;
        if self.lease.held_in_term() != Some(serving.term) {
            return Err(not_serving());
        }
        let now_milliseconds = wall_clock();
        let (physical, first_logical) = next_run(serving.last, now_milliseconds, u64::from(count));
        let carry_limit = now_milliseconds.max(serving.floor_milliseconds) + MAX_CARRY_AHEAD_MILLISECONDS;
        if physical > carry_limit {
            return Err(Unavailability::TimestampsAheadOfClock { physical_milliseconds: physical }.into());
        }
        if physical >= serving.mark_milliseconds {
            let mark_milliseconds = serving.mark_milliseconds;
            return Err(Unavailability::TimestampWindowUsedUp { mark_milliseconds }.into());
        }
        let first = Timestamp::new(physical, first_logical);
        let last = Timestamp::new(physical, first_logical + u64::from(count) - 1);
        let (Some(first), Some(last)) = (first, last) else {
            unreachable!("invariant: a run below a valid mark fits one millisecond (next_run carries)")
        };
        assert!(first > serving.last, "invariant: timestamps strictly increase");
        serving.last = last;
        Ok(TimestampBatch { first, count })
    }

    /// Moves the persisted mark a window ahead when less than half a window is left.
    /// Called by the oracle's thread on every tick (a new leader's first call makes it
    /// serve). A mark found moved (by another leader, or by this one's own write that
    /// timed out but committed) starts this leader over from it: the persisted mark
    /// only grows, so it is above everything handed out, and a deposed leader is
    /// stopped by its lease anyway.
    pub(crate) fn extend(
        &self,
        metadata: &Metadata,
        epoch: RegionEpoch,
        wall_clock: WallClock,
    ) -> Result<(), PdError> {
        let Some(serving) = *self.serving.lock() else { return Ok(()) };
        let window_milliseconds = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        let base = wall_clock().max(serving.last.physical_milliseconds());
        if serving.mark_milliseconds.saturating_sub(base) > window_milliseconds / 2 {
            return Ok(());
        }
        let target = base.saturating_add(window_milliseconds).min(MAX_PHYSICAL_MILLISECONDS);
        let update = metadata.advance_mark(Mark::Timestamps, epoch, serving.mark_milliseconds, target)?;
        let mut guard = self.serving.lock();
        // Only the state the mark was moved for: a reset meanwhile loaded its own.
        let Some(current) = guard.as_mut().filter(|current| current.term == serving.term) else {
            return Ok(());
        };
        match update {
            MarkUpdate::Advanced => {
                current.mark_milliseconds = current.mark_milliseconds.max(target);
                Ok(())
            }
            MarkUpdate::Raced { found } => {
                tracing::info!(
                    term = serving.term,
                    found,
                    "the timestamp mark had moved: starting over from it"
                );
                let start =
                    Timestamp::new(found, 0).ok_or(Corruption::TimestampMark { milliseconds: found })?;
                *current = Serving {
                    term: serving.term,
                    last: start,
                    mark_milliseconds: found,
                    floor_milliseconds: found,
                };
                Err(Unavailability::TimestampMarkMovedMeanwhile.into())
            }
        }
    }
}

/// The millisecond and first logical value of a run of `count` timestamps after `last`,
/// at wall-clock reading `now_milliseconds`: the clock's millisecond if it is ahead,
/// otherwise `last`'s, carried into the next one when the run would not fit.
fn next_run(last: Timestamp, now_milliseconds: u64, count: u64) -> (u64, u64) {
    let physical = now_milliseconds.max(last.physical_milliseconds());
    if physical > last.physical_milliseconds() {
        return (physical, 0);
    }
    let first_logical = last.logical() + 1;
    if first_logical + count > LOGICAL_PER_MILLISECOND {
        return (physical + 1, 0);
    }
    (physical, first_logical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_takes_the_clock_when_it_is_ahead() {
        let last = Timestamp::new(1_000, 5).expect("fits");
        assert_eq!(next_run(last, 1_007, 10), (1_007, 0));
    }

    #[test]
    fn a_run_continues_the_logical_count_when_the_clock_is_behind_or_equal() {
        let last = Timestamp::new(1_000, 5).expect("fits");
        assert_eq!(next_run(last, 1_000, 10), (1_000, 6));
        assert_eq!(next_run(last, 400, 10), (1_000, 6), "a clock that went back changes nothing");
    }

    #[test]
    fn a_run_that_would_not_fit_carries_into_the_next_millisecond() {
        let last = Timestamp::new(1_000, LOGICAL_PER_MILLISECOND - 10).expect("fits");
        assert_eq!(next_run(last, 1_000, 9), (1_000, LOGICAL_PER_MILLISECOND - 9));
        assert_eq!(next_run(last, 1_000, 10), (1_001, 0));
    }
}
