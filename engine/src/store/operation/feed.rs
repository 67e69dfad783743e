//! Change feeds on the region's leader (the rules are [`crate::feed`]'s).
//!
//! - Subscribe: a leader takes a watcher only once it has applied an entry of its own
//!   term (every lock its predecessors took is then in the lock family), at the
//!   region's current epoch, from a timestamp garbage collection has not reached. The
//!   first watcher builds the region's lock tracker from the lock family.
//! - Apply: while the region has watchers, its apply captures what transactional
//!   commands did (`records.rs` notes it in the batch); the feed keeps its locks and
//!   sends the committed versions on.
//! - Resolve: with a timestamp from the oracle, a leader whose lease holds publishes a
//!   resolved timestamp and raises its one-phase watermark to it, so that no one-phase
//!   commit at or below it is taken afterwards.
//! - Stale locks: a leader whose oldest lock has held its feed back for too long
//!   reports it for resolution (`crate::feed`'s stale locks).
//! - End: leadership lost, range changed, replica destroyed or store stopping: the feed
//!   closes with the reason, and its watchers reopen elsewhere.

use crate::feed::{Change, FeedClosed, FeedStart, FeedSubscriber, LockTracker, RegionFeed, StaleLock};
use crate::proto::metadata::RegionEpoch;
use crate::region::{self, EpochCheck};
use crate::storage::{ApplyBatch, Engine};
use crate::store::errors::StoreError;
use crate::store::operation::SideEffect;
use crate::store::peer::Peer;
use crate::timestamp::Timestamp;

impl Peer {
    /// Takes a watcher of this region's changes after `start_ts`.
    pub(crate) fn subscribe_feed(
        &mut self,
        engine: &Engine,
        epoch: RegionEpoch,
        start_ts: Timestamp,
        subscriber: Box<dyn FeedSubscriber>,
    ) -> Result<FeedStart, StoreError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        region::check_epoch(&self.region, epoch, EpochCheck::Data)?;
        if self.applied_term != self.term() {
            return Err(StoreError::FeedNotReady { region_id: self.region_id });
        }
        let fence = Timestamp::from_u64(self.raw.storage().txn_fence());
        // Held by the watcher while it catches up: the versions it reads stay.
        let read = engine.gc().begin_read(start_ts, fence)?;
        if self.feed.is_none() {
            let locks = LockTracker::read(engine, &self.region)?;
            self.feed = Some(RegionFeed::new(locks));
        }
        if let Some(feed) = &mut self.feed {
            feed.subscribe(subscriber);
        }
        // A sleeping leader has no lease, and a feed needs one to resolve.
        self.wake();
        Ok(FeedStart { region: self.region.clone(), read })
    }

    pub(crate) fn has_feed(&self) -> bool {
        self.feed.is_some()
    }

    /// Before this region's entries of a round apply: captures their changes if it has
    /// watchers.
    pub(super) fn begin_feed_capture(&self, batch: &mut ApplyBatch) {
        if self.feed.is_some() {
            batch.start_capture();
        }
    }

    /// After this region's entries of a round applied: their changes go to the feed
    /// once the round's batch is written ([`SideEffect::FeedChanges`]), so that a
    /// watcher never hears of a version a read here could not see yet.
    pub(super) fn end_feed_capture(&mut self, batch: &mut ApplyBatch, effects: &mut Vec<SideEffect>) {
        // Taken whatever happened meanwhile: a split applied in the round closed the feed.
        let changes = batch.take_captured();
        if self.feed.is_some() && !changes.is_empty() {
            effects.push(SideEffect::FeedChanges(changes));
        }
    }

    /// Hands the feed the changes of a round whose batch is written (none is resolved
    /// in between: resolving happens between rounds).
    pub(crate) fn feed_changes(&mut self, changes: Vec<Change>) {
        if let Some(feed) = &mut self.feed {
            feed.on_changes(changes);
            if !feed.has_subscribers() {
                self.feed = None;
            }
        }
    }

    /// Publishes a resolved timestamp from `oracle_ts`, a timestamp the oracle answered
    /// to a request made before this call; nothing when this replica may not (it does
    /// not lead under a lease, or is not caught up).
    pub(crate) fn resolve_feed(&mut self, now_micros: u64, oracle_ts: Timestamp) {
        if self.feed.is_none() {
            return;
        }
        self.raw.observe_time(now_micros);
        let lease_holds = self.raw.leader_lease_expires_at().is_some_and(|expires| expires > now_micros);
        // Everything committed must have applied: a split committed and not applied here
        // may already have a leader of its new region elsewhere taking commits in part
        // of this range, which this region's locks know nothing of.
        let caught_up = self.raw.status().commit_index <= self.applied_index();
        if !self.is_leader() || !lease_holds || self.applied_term != self.term() || !caught_up {
            return;
        }
        let bound = match self.lowest_one_phase_in_flight() {
            Some(commit_ts) => oracle_ts.min(Timestamp::from_u64(commit_ts.as_u64().saturating_sub(1))),
            None => oracle_ts,
        };
        let Some(feed) = &mut self.feed else { return };
        let resolved = feed.resolve(bound);
        let drained = !feed.has_subscribers();
        // No one-phase commit at or below what was promised may be taken from now on.
        self.raise_one_phase_watermark(resolved);
        if drained {
            self.feed = None;
        }
    }

    /// The lock that has held this region's feed back for longer than `stale_after` by
    /// the oracle's `oracle_ts`, when a report of it is due at `now_micros`.
    pub(crate) fn stale_feed_lock(
        &mut self,
        oracle_ts: Timestamp,
        stale_after: std::time::Duration,
        now_micros: u64,
    ) -> Option<StaleLock> {
        if !self.is_leader() {
            return None;
        }
        let (key, start_ts) = self.feed.as_mut()?.stale_lock(oracle_ts, stale_after, now_micros)?;
        Some(StaleLock { region_id: self.region_id, key, start_ts })
    }

    /// Ends the region's feed, if it has one.
    pub(in crate::store) fn close_feed(&mut self, reason: FeedClosed) {
        if let Some(feed) = self.feed.take() {
            feed.close(reason);
        }
    }
}
