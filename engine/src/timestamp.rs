//! Transaction timestamps: the one clock every layer of a transaction agrees on.
//!
//! A [`Timestamp`] is 64 bits: the physical part, milliseconds since the Unix epoch, in
//! the high [`PHYSICAL_BITS`] bits, and a logical counter in the low [`LOGICAL_BITS`]
//! bits (TiKV's placement driver uses the same split, documented in its TSO design).
//! Ordering the integers orders the timestamps. The physical part keeps timestamps
//! close to wall time, which is what a garbage-collection safe point ("ten minutes
//! ago") and a human reading a log need; the logical part lets one millisecond carry
//! 262,144 timestamps, so the oracle never waits for the clock under load. 46 bits of
//! milliseconds last until the year 4199.
//!
//! Only the placement driver's oracle makes timestamps; everything else compares,
//! stores and carries them. This module owns the encoding and nothing else.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bits of the logical counter.
pub const LOGICAL_BITS: u32 = 18;
/// Bits of the physical milliseconds.
pub const PHYSICAL_BITS: u32 = 64 - LOGICAL_BITS;
/// Timestamps one millisecond can hold.
pub const LOGICAL_PER_MILLISECOND: u64 = 1 << LOGICAL_BITS;

/// A point in transaction time. Zero is before every timestamp the oracle hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// Before everything.
    pub const ZERO: Timestamp = Timestamp(0);
    /// After everything (reads at "the latest").
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// The timestamp with `physical_milliseconds` and `logical`, if both fit.
    pub fn new(physical_milliseconds: u64, logical: u64) -> Option<Timestamp> {
        if physical_milliseconds >> PHYSICAL_BITS != 0 || logical >= LOGICAL_PER_MILLISECOND {
            return None;
        }
        Some(Timestamp((physical_milliseconds << LOGICAL_BITS) | logical))
    }

    /// The timestamp a 64-bit integer encodes (every integer encodes one).
    pub const fn from_u64(value: u64) -> Timestamp {
        Timestamp(value)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Milliseconds since the Unix epoch.
    pub const fn physical_milliseconds(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    pub const fn logical(self) -> u64 {
        self.0 & (LOGICAL_PER_MILLISECOND - 1)
    }

    /// The wall-clock time of the physical part.
    pub fn wall_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.physical_milliseconds())
    }

    /// The first timestamp of the millisecond `duration` before this one's (zero if
    /// that is before the epoch): "now minus ten minutes" for a safe point.
    pub fn minus(self, duration: Duration) -> Timestamp {
        let milliseconds = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.physical_milliseconds().saturating_sub(milliseconds) << LOGICAL_BITS)
    }
}

/// `count` consecutive timestamps from `first`, handed by the oracle to one caller:
/// nobody else is ever handed any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampRun {
    pub first: Timestamp,
    pub count: u32,
}

impl TimestampRun {
    /// The run's last timestamp.
    pub fn last(self) -> Timestamp {
        assert!(self.count > 0, "invariant: a run of timestamps is never empty");
        Timestamp(self.first.0 + u64::from(self.count) - 1)
    }
}

/// How a store asks the oracle for timestamps (the server wires in the placement
/// driver's client): `answer` is called once, from any thread, with a run of `count`
/// timestamps or why there is none. A leader needs one before it takes one-phase
/// commits, and the feeds' resolved timestamps come from them (see
/// `store/operation/one_phase.rs`).
pub trait TimestampSource: Send + Sync + fmt::Debug + 'static {
    fn request(
        &self,
        count: u32,
        answer: Box<dyn FnOnce(Result<TimestampRun, crate::raft::OpaqueError>) + Send>,
    );
}

impl fmt::Display for Timestamp {
    /// `physical.logical`, e.g. `1764806400000.12`: readable and unambiguous.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_milliseconds(), self.logical())
    }
}

/// Milliseconds since the Unix epoch by the wall clock (zero if the clock is set before
/// it).
pub fn wall_clock_milliseconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_order_by_physical_then_logical() {
        let early = Timestamp::new(1_000, LOGICAL_PER_MILLISECOND - 1).expect("fits");
        let late = Timestamp::new(1_001, 0).expect("fits");
        assert!(early < late);
        assert_eq!((late.physical_milliseconds(), late.logical()), (1_001, 0));
        assert_eq!(Timestamp::from_u64(late.as_u64()), late);
        assert!(Timestamp::ZERO < early && late < Timestamp::MAX);
    }

    #[test]
    fn parts_that_do_not_fit_are_refused() {
        assert_eq!(Timestamp::new(1, LOGICAL_PER_MILLISECOND), None);
        assert_eq!(Timestamp::new(1 << PHYSICAL_BITS, 0), None);
        assert!(Timestamp::new((1 << PHYSICAL_BITS) - 1, LOGICAL_PER_MILLISECOND - 1).is_some());
    }

    #[test]
    fn minus_goes_back_whole_milliseconds_and_stops_at_zero() {
        let now = Timestamp::new(600_500, 7).expect("fits");
        assert_eq!(now.minus(Duration::from_secs(600)), Timestamp::new(500, 0).expect("fits"));
        assert_eq!(now.minus(Duration::from_secs(10_000)), Timestamp::ZERO);
        assert_eq!(now.to_string(), "600500.7");
    }
}
