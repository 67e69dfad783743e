//! Rate limits for log events that can repeat per request (a refused request, a slow
//! proposal): under load such an event would otherwise write a line per request and
//! drown everything else. One [`LogLimit`] per kind of event admits a few lines per
//! interval and counts what it held back, so that the next admitted line can say how
//! many were suppressed.
//!
//! This module owns only the counting; it never logs and never decides a level.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Admits at most `lines_per_interval` events per `interval`.
pub struct LogLimit {
    interval: Duration,
    lines_per_interval: u32,
    window: Mutex<Window>,
}

struct Window {
    started: Option<Instant>,
    admitted: u32,
    suppressed: u64,
}

/// An admitted event: log it, with how many like it were suppressed before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub suppressed_before: u64,
}

impl LogLimit {
    /// A limit usable in a `static`.
    pub const fn new(lines_per_interval: u32, interval: Duration) -> LogLimit {
        assert!(lines_per_interval > 0, "invariant: a log limit admits at least one line per interval");
        LogLimit {
            interval,
            lines_per_interval,
            window: Mutex::new(Window { started: None, admitted: 0, suppressed: 0 }),
        }
    }

    /// Whether an event at `now` may be logged.
    pub fn admit_at(&self, now: Instant) -> Option<Admitted> {
        let mut window = self.window.lock();
        let expired =
            window.started.is_none_or(|started| now.saturating_duration_since(started) >= self.interval);
        if expired {
            window.started = Some(now);
            window.admitted = 0;
        }
        if window.admitted >= self.lines_per_interval {
            window.suppressed += 1;
            return None;
        }
        window.admitted += 1;
        let suppressed_before = std::mem::take(&mut window.suppressed);
        Some(Admitted { suppressed_before })
    }

    /// Whether an event now may be logged.
    pub fn admit(&self) -> Option<Admitted> {
        self.admit_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_the_first_lines_of_each_interval_and_counts_the_rest() {
        let limit = LogLimit::new(2, Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(limit.admit_at(start), Some(Admitted { suppressed_before: 0 }));
        assert_eq!(limit.admit_at(start), Some(Admitted { suppressed_before: 0 }));
        assert_eq!(limit.admit_at(start), None);
        assert_eq!(limit.admit_at(start + Duration::from_secs(9)), None);
        let next_window = start + Duration::from_secs(10);
        assert_eq!(limit.admit_at(next_window), Some(Admitted { suppressed_before: 2 }));
        assert_eq!(limit.admit_at(next_window), Some(Admitted { suppressed_before: 0 }));
        assert_eq!(limit.admit_at(next_window), None);
    }

    #[test]
    fn a_clock_that_goes_backwards_does_not_reopen_the_window() {
        let limit = LogLimit::new(1, Duration::from_secs(10));
        let start = Instant::now() + Duration::from_secs(60);
        assert!(limit.admit_at(start).is_some());
        assert_eq!(limit.admit_at(start - Duration::from_secs(30)), None);
    }
}
