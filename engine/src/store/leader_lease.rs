//! A region's leader lease, published for code outside the store that may act only
//! while this replica certainly leads: the placement driver's timestamp oracle, which
//! must stop handing out timestamps before any successor can start.
//!
//! The raft worker publishes the lease of a watched region before it sends any message
//! of that region's round: a leader transfer revokes the lease in the Raft core, and the
//! revocation is visible here before the target is told to campaign. An extension is
//! published at the next round; a late extension only makes the lease look shorter.
//! A lease ends by time, so readers compare its end with the store's clock themselves.
//!
//! This module publishes and answers; it never decides anything about leadership.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::clock::Clock;

#[derive(Debug, Clone, Copy, Default)]
struct Published {
    term: u64,
    /// Microseconds on the store's clock; 0 when the replica leads under no lease.
    expires_at_micros: u64,
}

/// The last published lease of one region on this store.
#[derive(Debug)]
pub struct LeaderLease {
    published: Mutex<Published>,
    clock: Arc<dyn Clock>,
}

impl LeaderLease {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> LeaderLease {
        LeaderLease { published: Mutex::new(Published::default()), clock }
    }

    /// Records the replica's term and the end of its lease (None: it holds none).
    pub(crate) fn publish(&self, term: u64, expires_at_micros: Option<u64>) {
        *self.published.lock() = Published { term, expires_at_micros: expires_at_micros.unwrap_or(0) };
    }

    /// The term in which this replica leads under a lease that holds now, if any. The
    /// clock is read after the lock is taken: the answer is true at that reading.
    pub fn held_in_term(&self) -> Option<u64> {
        let published = *self.published.lock();
        let now_micros = u64::try_from(self.clock.now().as_micros()).unwrap_or(u64::MAX);
        (now_micros < published.expires_at_micros).then_some(published.term)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ControlledClock;

    fn micros(duration: Duration) -> u64 {
        u64::try_from(duration.as_micros()).expect("a test's clock fits")
    }

    #[test]
    fn a_lease_holds_until_its_end_on_the_store_clock_and_not_after() {
        let clock = ControlledClock::new();
        clock.stop();
        let lease = LeaderLease::new(clock.clone());
        assert_eq!(lease.held_in_term(), None, "nothing published yet");
        lease.publish(7, Some(micros(clock.now() + Duration::from_secs(1))));
        assert_eq!(lease.held_in_term(), Some(7));
        clock.resume_after(Duration::from_millis(500));
        clock.stop();
        assert_eq!(lease.held_in_term(), Some(7), "half-way through");
        clock.resume_after(Duration::from_millis(500));
        clock.stop();
        assert_eq!(lease.held_in_term(), None, "a lease ends at its end");
    }

    #[test]
    fn a_revoked_lease_stops_holding_at_once() {
        let clock = ControlledClock::new();
        let lease = LeaderLease::new(clock);
        lease.publish(3, Some(u64::MAX));
        assert_eq!(lease.held_in_term(), Some(3));
        lease.publish(3, None);
        assert_eq!(lease.held_in_term(), None);
    }
}
