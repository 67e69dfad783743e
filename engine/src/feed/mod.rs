//! Change feeds, the region side: what a region's leader tells the watchers of its
//! range (`tessera_server` merges regions into a watch of a key range).
//!
//! - [`Change`]: what applying transactional commands did to a region, captured in the
//!   apply batch while the region has watchers: locks taken and released, and versions
//!   committed (with their values). Raw writes have no timestamps and are not in feeds.
//! - [`LockTracker`]: the region's locks by start timestamp, built from the lock family
//!   when the first watcher arrives and kept by the captured changes after.
//! - [`RegionFeed`]: the leader's watchers of one region, the committed versions sent
//!   to them as they apply, and the **resolved timestamp**: a promise that no commit at
//!   or below it will ever appear in the region.
//!
//! **Resolved timestamps.** Every so often the store takes a timestamp T from the
//! oracle; once it has T, each region leading feeds publishes
//! `min(T, oldest lock's start, lowest one-phase commit in flight - 1)`, and raises its
//! one-phase guard's read watermark to it. Why nothing can commit at or below it:
//! a two-phase commit needs a lock first and takes its commit timestamp from the oracle
//! after its locks are in place, so a lock not yet taken when the region looked commits
//! above T, and a lock in place commits above its own start; a one-phase commit brings
//! its commit timestamp with it, so the guard takes none at or below the watermark
//! (it refuses it, or re-times it above with a spare timestamp of the resolve's run),
//! and those proposed already are in flight. A leader publishes only while its lease holds
//! (no other leader can have taken commits meanwhile; a successor syncs its watermark
//! with the oracle before it takes one-phase commits, above T), only once it has
//! applied an entry of its own term (every lock of its predecessors is then in the lock
//! family), and never lower than before.
//!
//! **Stale locks.** A lock left by a dead coordinator would hold its region's resolved
//! timestamp back until something resolves it: the leader reports a lock that has held
//! it back too long to the server, which resolves it as a reader would (`stale.rs`).
//!
//! This module owns the feed's state and its rules; it must never block the raft
//! worker: watchers get messages through bounded channels, and a watcher that does not
//! keep up is dropped with [`FeedClosed::Congested`] (it reopens from what it saw).

mod change;
mod locks;
mod region;
mod stale;

#[cfg(test)]
mod tests;

pub use change::{Change, FeedEvent};
pub use locks::LockTracker;
pub use region::{
    FeedClosed, FeedMessage, FeedStart, FeedSubscriber, RegionFeed, SUBSCRIBER_CHANNEL_MESSAGES,
};
pub use stale::{STALE_LOCK_REPORT_EVERY, StaleLock, StaleLockSink};
