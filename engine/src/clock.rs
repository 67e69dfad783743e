//! The store's monotonic clock: what its leader leases are measured on, and what drives
//! its ticks.
//!
//! A lease must be measured on time itself, not on ticks: a process that is paused
//! (SIGSTOP, a VM freeze, a starved thread) stops ticking while the rest of its region
//! elects another leader, and a lease counted in ticks would still hold when it resumes.
//! (Every store of a cluster must run with the same tick interval and election ticks,
//! which the lease's arithmetic assumes.)
//! The real clock is [`MonotonicClock`] (`CLOCK_MONOTONIC` through [`Instant`]: it runs
//! on while a process is stopped). It stands still while the whole machine is suspended,
//! and a virtual machine's may while the VM is paused: the lease assumes neither lasts
//! without the others' clocks stopping too (a paused process, the case that matters
//! in practice, is covered). [`ControlledClock`] lets a test stop time for one
//! store and move it on in a jump, which is what a pause looks like from inside.
//!
//! This module only tells the time; the Raft core never reads it (the store hands its
//! readings over, see [`crate::raft::LeaseClock`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A monotonic clock: readings never go back.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Time since an origin fixed when the clock was made.
    fn now(&self) -> Duration;
}

/// The process's monotonic clock.
pub struct MonotonicClock {
    origin: Instant,
}

impl std::fmt::Debug for MonotonicClock {
    // The origin is an arbitrary instant: two clocks of the same kind print alike.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("MonotonicClock")
    }
}

impl MonotonicClock {
    pub fn new() -> MonotonicClock {
        MonotonicClock { origin: Instant::now() }
    }

    /// The clock as the shared handle stores take.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(MonotonicClock::new())
    }
}

impl Default for MonotonicClock {
    fn default() -> MonotonicClock {
        MonotonicClock::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock for tests: it follows real time until [`ControlledClock::stop`], then stands
/// still until [`ControlledClock::resume_after`] moves it on by a given pause and lets it
/// run again. A store on a stopped clock neither ticks nor sees time pass, as if its
/// process were paused, while its threads still run (so a test can hand it requests).
#[derive(Debug)]
pub struct ControlledClock {
    origin: Instant,
    state: Mutex<ControlledState>,
}

#[derive(Debug, Clone, Copy)]
struct ControlledState {
    /// Added to the real time since `origin`.
    offset: Duration,
    /// The reading while stopped.
    stopped_at: Option<Duration>,
}

impl ControlledClock {
    pub fn new() -> Arc<ControlledClock> {
        Arc::new(ControlledClock {
            origin: Instant::now(),
            state: Mutex::new(ControlledState { offset: Duration::ZERO, stopped_at: None }),
        })
    }

    /// Stops the clock at its current reading.
    pub fn stop(&self) {
        let mut state = self.state.lock();
        if state.stopped_at.is_none() {
            state.stopped_at = Some(self.origin.elapsed() + state.offset);
        }
    }

    /// Moves a stopped clock on by `pause` in one jump and lets it run again from there.
    pub fn resume_after(&self, pause: Duration) {
        let mut state = self.state.lock();
        let Some(stopped_at) = state.stopped_at.take() else { return };
        let target = stopped_at + pause;
        // Real time went on while stopped; the offset makes the reading `target` now.
        state.offset = target.saturating_sub(self.origin.elapsed());
    }
}

impl Clock for ControlledClock {
    fn now(&self) -> Duration {
        let state = self.state.lock();
        state.stopped_at.unwrap_or_else(|| self.origin.elapsed() + state.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controlled_clock_stands_still_when_stopped_and_jumps_by_the_pause() {
        let clock = ControlledClock::new();
        clock.stop();
        let stopped = clock.now();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.now(), stopped, "a stopped clock stands still");
        clock.resume_after(Duration::from_secs(10));
        let resumed = clock.now();
        assert!(resumed >= stopped + Duration::from_secs(10), "moved on by the pause");
        assert!(resumed < stopped + Duration::from_secs(11), "and not by the real time as well");
        std::thread::sleep(Duration::from_millis(5));
        assert!(clock.now() > resumed, "runs again");
    }

    #[test]
    fn the_monotonic_clock_never_goes_back() {
        let clock = MonotonicClock::new();
        let mut last = clock.now();
        for _ in 0..1000 {
            let now = clock.now();
            assert!(now >= last);
            last = now;
        }
    }
}
