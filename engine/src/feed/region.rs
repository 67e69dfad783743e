//! One region's change feed on its leader: the watchers, the region's locks and the
//! resolved timestamp (the rules are in the module's documentation).

use crate::gc::ReadRegistration;
use crate::proto::metadata::Region;
use crate::timestamp::Timestamp;

use super::change::{Change, FeedEvent};
use super::locks::LockTracker;
use super::stale::StaleLockTimer;

/// How many messages a watcher's channel should hold before the watcher counts as
/// fallen behind (a message is one apply round's events, or one resolved timestamp).
pub const SUBSCRIBER_CHANNEL_MESSAGES: usize = 1024;

/// What a region's feed tells a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedMessage {
    /// Versions committed in the region, in the order they applied (which is not
    /// commit-timestamp order: a watcher sorts them up to a resolved timestamp).
    Events(Vec<FeedEvent>),
    /// No commit at or below this timestamp will appear in the region after this
    /// message, beyond the events already sent.
    Resolved(Timestamp),
}

/// Why a region's feed ended. Every reason is retryable: the watcher reopens the
/// region's range, from its resolved timestamp, wherever its leader is then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedClosed {
    #[error("this replica no longer leads the region")]
    NotLeader,
    #[error("the region's range changed (it split)")]
    RangeChanged,
    #[error("the region's replica left this store")]
    RegionGone,
    #[error("the watcher fell behind the region's changes")]
    Congested,
    #[error("the store is shutting down")]
    ShuttingDown,
}

/// Where a region's feed delivers a watcher's messages. It must never block: the raft
/// worker calls it.
pub trait FeedSubscriber: Send {
    /// Hands over a message; false when the watcher cannot take it (it fell behind, or
    /// went away): the feed then drops the watcher.
    fn offer(&mut self, message: FeedMessage) -> bool;
    /// The feed's last word to the watcher.
    fn close(self: Box<Self>, reason: FeedClosed);
}

/// What a watcher is given when a region's leader takes it.
#[derive(Debug)]
pub struct FeedStart {
    /// The region as it was then: the range whose history the watcher's catch-up reads
    /// (a split closes the feed before it changes).
    pub region: Region,
    /// The watcher's start timestamp, registered as a read: garbage collection keeps
    /// every version the catch-up needs while it is held.
    pub read: ReadRegistration,
}

/// The watchers of one region on its leader.
pub struct RegionFeed {
    subscribers: Vec<Box<dyn FeedSubscriber>>,
    locks: LockTracker,
    /// The highest resolved timestamp published (zero: none yet).
    resolved: Timestamp,
    stale_lock_timer: StaleLockTimer,
}

impl RegionFeed {
    /// A feed over a region whose locks are `locks`, read from the lock family with
    /// every applied command written.
    pub fn new(locks: LockTracker) -> RegionFeed {
        RegionFeed {
            subscribers: Vec::new(),
            locks,
            resolved: Timestamp::ZERO,
            stale_lock_timer: StaleLockTimer::default(),
        }
    }

    pub fn subscribe(&mut self, subscriber: Box<dyn FeedSubscriber>) {
        self.subscribers.push(subscriber);
    }

    pub fn has_subscribers(&self) -> bool {
        !self.subscribers.is_empty()
    }

    pub fn resolved(&self) -> Timestamp {
        self.resolved
    }

    pub fn locks(&self) -> &LockTracker {
        &self.locks
    }

    /// Takes what a round of applies did: the locks are kept, the committed versions
    /// sent to every watcher.
    pub fn on_changes(&mut self, changes: Vec<Change>) {
        let mut events = Vec::new();
        for change in changes {
            match change {
                Change::Locked { key, start_ts } => self.locks.lock(key, start_ts),
                Change::Unlocked { key, start_ts } => self.locks.unlock(&key, start_ts),
                Change::Committed(event) => events.push(event),
            }
        }
        if !events.is_empty() {
            self.broadcast(FeedMessage::Events(events));
        }
    }

    /// Publishes a resolved timestamp of at most `bound` (the oracle's timestamp, or
    /// just below a one-phase commit in flight) and of at most the oldest lock's start;
    /// never lower than the last one. Answers what is now published.
    pub fn resolve(&mut self, bound: Timestamp) -> Timestamp {
        let candidate = match self.locks.oldest() {
            Some(oldest) => bound.min(oldest),
            None => bound,
        };
        if candidate > self.resolved {
            self.resolved = candidate;
        }
        if self.resolved > Timestamp::ZERO {
            self.broadcast(FeedMessage::Resolved(self.resolved));
        }
        self.resolved
    }

    /// The oldest lock (key and start timestamp) when it is older than `stale_after` by
    /// the oracle's `oracle_ts` and a report of it is due at `now_micros` (the store's
    /// clock); see `stale.rs`.
    pub fn stale_lock(
        &mut self,
        oracle_ts: Timestamp,
        stale_after: std::time::Duration,
        now_micros: u64,
    ) -> Option<(Vec<u8>, Timestamp)> {
        let oldest = self.locks.oldest()?;
        if !self.stale_lock_timer.due(oldest, oracle_ts, stale_after, now_micros) {
            return None;
        }
        self.locks.oldest_lock().map(|(key, start_ts)| (key.to_vec(), start_ts))
    }

    /// Ends the feed for every watcher.
    pub fn close(self, reason: FeedClosed) {
        for subscriber in self.subscribers {
            subscriber.close(reason.clone());
        }
    }

    /// Sends `message` to every watcher; one that cannot take it is dropped.
    fn broadcast(&mut self, message: FeedMessage) {
        let mut kept = Vec::with_capacity(self.subscribers.len());
        for mut subscriber in self.subscribers.drain(..) {
            if subscriber.offer(message.clone()) {
                kept.push(subscriber);
            } else {
                subscriber.close(FeedClosed::Congested);
            }
        }
        self.subscribers = kept;
    }
}
