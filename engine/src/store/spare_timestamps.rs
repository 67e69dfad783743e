//! Timestamps the oracle handed this store beyond those it asked for to resolve its
//! change feeds, kept to re-time one-phase commits that would otherwise be refused.
//!
//! A worker resolving its feeds asks the oracle for a run of timestamps, resolves its
//! regions with the first (which raises their one-phase watermarks to it) and offers the
//! rest here. A one-phase commit brings a commit timestamp the client took from the
//! oracle when it began; if a resolve (or a read) raised the leader's watermark past it
//! meanwhile, the commit would be refused and the client would have to commit in two
//! phases. Instead the leader may give it a spare above the watermark. A spare is as
//! good a commit timestamp as one the client could ask for again:
//!
//! - it is above the watermark, so above every read the leader accepted and every
//!   resolved timestamp it promised (the guard's rule, `operation/one_phase.rs`);
//! - the oracle handed it out before the commit was proposed, so every transaction that
//!   begins after the commit is answered starts above it and sees it;
//! - the oracle handed it to this store alone, and this module hands each out once, so
//!   commit timestamps stay unique (two transactions never share one, which watches and
//!   revisions rely on).
//!
//! TiKV re-times one-phase commits too, to its `max_ts + 1`, without asking the oracle;
//! taking reserved timestamps instead keeps them unique.
//!
//! This module owns the spares and never hands one out twice.

use parking_lot::Mutex;

use crate::timestamp::{Timestamp, TimestampRun};

/// How many timestamps a worker asks the oracle for each time it resolves its feeds:
/// the first resolves, the rest are spares. Enough for every one-phase commit a busy
/// store takes between two resolves; the oracle hands out 262,144 per millisecond.
pub(crate) const RESOLVE_RUN_LENGTH: u32 = 512;

/// The store's spare timestamps: one run, the newest offered.
#[derive(Debug, Default)]
pub(crate) struct SpareTimestamps {
    /// The spares not handed out yet, `next..=last`; none when `next > last`.
    run: Mutex<(u64, u64)>,
}

impl SpareTimestamps {
    pub(crate) fn new() -> SpareTimestamps {
        SpareTimestamps { run: Mutex::new((1, 0)) }
    }

    /// Offers the rest of `run` after its first timestamp (which its caller used). An
    /// older run than the one kept is ignored: its spares are lower, so less useful.
    pub(crate) fn offer_after_first(&self, run: TimestampRun) {
        let (first, last) = (run.first.as_u64() + 1, run.last().as_u64());
        let mut kept = self.run.lock();
        if first <= last && first > kept.1 {
            *kept = (first, last);
        }
    }

    /// `count` spares, each above `above` and handed out to nobody before, or none if
    /// the run kept has not that many left above it.
    pub(crate) fn take_above(&self, above: Timestamp, count: usize) -> Option<Vec<Timestamp>> {
        let count = u64::try_from(count).ok()?;
        let mut kept = self.run.lock();
        let first = kept.0.max(above.as_u64().checked_add(1)?);
        let end = first.checked_add(count)?;
        if count == 0 || end - 1 > kept.1 {
            return None;
        }
        kept.0 = end;
        Some((first..end).map(Timestamp::from_u64).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first: u64, count: u32) -> TimestampRun {
        TimestampRun { first: Timestamp::from_u64(first), count }
    }

    #[test]
    fn spares_are_above_what_is_asked_and_never_handed_out_twice() {
        let spares = SpareTimestamps::new();
        spares.offer_after_first(run(100, 10)); // 101..=109
        let taken = spares.take_above(Timestamp::from_u64(104), 2).expect("105 and 106");
        assert_eq!(taken, vec![Timestamp::from_u64(105), Timestamp::from_u64(106)]);
        let next = spares.take_above(Timestamp::from_u64(0), 1).expect("107");
        assert_eq!(next, vec![Timestamp::from_u64(107)], "skipped spares are not handed out later");
        assert_eq!(spares.take_above(Timestamp::from_u64(0), 3), None, "only 108 and 109 are left");
        assert_eq!(spares.take_above(Timestamp::from_u64(109), 1), None, "none above 109");
    }

    #[test]
    fn an_older_run_does_not_replace_a_newer_one() {
        let spares = SpareTimestamps::new();
        assert_eq!(spares.take_above(Timestamp::ZERO, 1), None, "nothing offered yet");
        spares.offer_after_first(run(1_000, 4)); // 1001..=1003
        spares.offer_after_first(run(500, 100));
        assert_eq!(spares.take_above(Timestamp::ZERO, 1), Some(vec![Timestamp::from_u64(1_001)]));
        spares.offer_after_first(run(2_000, 1)); // no spare in it
        assert_eq!(spares.take_above(Timestamp::ZERO, 1), Some(vec![Timestamp::from_u64(1_002)]));
        spares.offer_after_first(run(3_000, 3));
        assert_eq!(
            spares.take_above(Timestamp::ZERO, 2),
            Some([3_001, 3_002].map(Timestamp::from_u64).to_vec())
        );
    }
}
