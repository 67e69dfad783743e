//! Ticks and hibernation.
//!
//! - Tick: every awake peer ticks its Raft node once per store tick (elections,
//!   heartbeats, the leader lease) and counts its own ticks for the periodic work of
//!   the other operations (snapshot expiry, size checks, log truncation).
//! - Sleep: a leader whose region stayed quiet for `hibernate_after_ticks` (nothing
//!   proposed or read, every replica caught up, no transfer, no size check due) stops
//!   ticking instead; the worker sends the hibernation heartbeat, which must be the
//!   last thing followers hear from it. A sleeping leader ends its lease: its clock
//!   stops while it sleeps.
//! - Wake: any message, proposal or read wakes a peer ([`Peer::wake`]), and so does a
//!   store that went down with a replica of the region.

use crate::store::StoreConfig;
use crate::store::peer::Peer;

impl Peer {
    /// Wakes a hibernating peer; resets the idle count of an awake one.
    pub(crate) fn wake(&mut self) {
        if self.hibernating {
            // Late acknowledgements may have renewed the lease against a stopped clock.
            self.raw.expire_lease();
        }
        self.hibernating = false;
        self.idle_ticks = 0;
    }

    /// One tick of a peer that is not hibernating. Returns true if the leader decided to
    /// hibernate instead of ticking: the caller then sends the hibernation heartbeat,
    /// which must be the last thing followers hear (so Raft is not ticked this time,
    /// which could queue an ordinary heartbeat after it).
    pub(crate) fn tick(&mut self, config: &StoreConfig, now_micros: u64) -> bool {
        self.ticks += 1;
        self.raw.observe_time(now_micros);
        // Reset when the leader is heard from (worker::inbound): a learner or a stale
        // replica that never campaigns keeps naming a leader it no longer hears.
        self.leaderless_ticks = if self.is_leader() { 0 } else { self.leaderless_ticks.saturating_add(1) };
        self.expire_lost_snapshots(config);
        if self.is_leader() && self.idle_long_enough(config) {
            self.hibernating = true;
            self.raw.expire_lease();
            return true;
        }
        self.raw.tick();
        false
    }

    fn idle_long_enough(&mut self, config: &StoreConfig) -> bool {
        let status = self.raw.status();
        let last = status.last_index;
        let quiet = self.proposals.is_empty()
            && self.reads.is_empty()
            && status.commit_index == last
            && status.applied_index == last
            && status.lead_transferee.is_none()
            && self.raw.progress().all(|(_, pr)| pr.matched == last)
            // Watchers need resolved timestamps, which need a lease, which needs ticks.
            && self.feed.is_none()
            // A size check is due: sleeping now would leave an oversized region unsplit.
            && !(config.split_check_interval_ticks > 0 && self.written_since_split_check);
        self.idle_ticks = if quiet { self.idle_ticks + 1 } else { 0 };
        self.idle_ticks >= config.hibernate_after_ticks
    }
}
