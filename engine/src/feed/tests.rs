use std::sync::Arc;

use parking_lot::Mutex;

use super::*;
use crate::timestamp::Timestamp;

fn ts(value: u64) -> Timestamp {
    Timestamp::from_u64(value)
}

/// A watcher that holds at most `room` messages, and records how it was closed.
#[derive(Clone, Default)]
struct Watcher {
    received: Arc<Mutex<Vec<FeedMessage>>>,
    closed: Arc<Mutex<Option<FeedClosed>>>,
    room: usize,
}

impl FeedSubscriber for Watcher {
    fn offer(&mut self, message: FeedMessage) -> bool {
        let mut received = self.received.lock();
        if received.len() >= self.room {
            return false;
        }
        received.push(message);
        true
    }

    fn close(self: Box<Self>, reason: FeedClosed) {
        *self.closed.lock() = Some(reason);
    }
}

fn watcher(room: usize) -> Watcher {
    Watcher { room, ..Watcher::default() }
}

fn commit(key: &str, start_ts: u64, commit_ts: u64) -> Change {
    let event = FeedEvent {
        key: key.as_bytes().to_vec(),
        value: Some(b"v".to_vec()),
        start_ts: ts(start_ts),
        commit_ts: ts(commit_ts),
    };
    Change::Committed(event)
}

#[test]
fn the_oldest_lock_is_the_smallest_start_among_keys_still_locked() {
    let mut locks = LockTracker::default();
    locks.lock(b"a".to_vec(), ts(10));
    locks.lock(b"b".to_vec(), ts(10));
    locks.lock(b"c".to_vec(), ts(20));
    assert_eq!(locks.oldest(), Some(ts(10)));
    assert!(matches!(locks.oldest_lock(), Some((b"a" | b"b", start)) if start == ts(10)));
    locks.unlock(b"a", ts(10));
    assert_eq!(locks.oldest_lock(), Some((&b"b"[..], ts(10))), "the key still locked is named");
    assert_eq!(locks.oldest(), Some(ts(10)), "b still holds a lock of 10");
    // Another transaction's release of the key does not remove this one's lock.
    locks.unlock(b"b", ts(99));
    assert_eq!(locks.oldest(), Some(ts(10)));
    locks.unlock(b"b", ts(10));
    assert_eq!(locks.oldest(), Some(ts(20)));
    // A key locked again (the same lock written by a heartbeat) is counted once.
    locks.lock(b"c".to_vec(), ts(20));
    assert_eq!(locks.len(), 1);
    locks.unlock(b"c", ts(20));
    assert!(locks.is_empty());
    assert_eq!(locks.oldest(), None);
    assert_eq!(locks.oldest_lock(), None);
}

#[test]
fn the_resolved_timestamp_stays_at_or_below_the_oldest_lock_and_never_goes_back() {
    let mut locks = LockTracker::default();
    locks.lock(b"k".to_vec(), ts(50));
    let mut feed = RegionFeed::new(locks);
    let seen = watcher(100);
    feed.subscribe(Box::new(seen.clone()));
    assert_eq!(feed.resolve(ts(100)), ts(50), "a lock of 50 may still commit above 50, never at or below it");
    feed.on_changes(vec![Change::Unlocked { key: b"k".to_vec(), start_ts: ts(50) }, commit("k", 50, 90)]);
    assert_eq!(feed.resolve(ts(100)), ts(100));
    // An older bound (a one-phase commit in flight at 80) does not take it back.
    assert_eq!(feed.resolve(ts(79)), ts(100));
    let received = seen.received.lock().clone();
    assert_eq!(
        received,
        vec![
            FeedMessage::Resolved(ts(50)),
            FeedMessage::Events(vec![FeedEvent {
                key: b"k".to_vec(),
                value: Some(b"v".to_vec()),
                start_ts: ts(50),
                commit_ts: ts(90),
            }]),
            FeedMessage::Resolved(ts(100)),
            FeedMessage::Resolved(ts(100)),
        ]
    );
}

#[test]
fn a_watcher_that_falls_behind_is_dropped_and_told_so_while_others_go_on() {
    let mut feed = RegionFeed::new(LockTracker::default());
    let slow = watcher(1);
    let fast = watcher(100);
    feed.subscribe(Box::new(slow.clone()));
    feed.subscribe(Box::new(fast.clone()));
    feed.on_changes(vec![commit("a", 1, 2)]);
    feed.on_changes(vec![commit("b", 3, 4)]);
    assert_eq!(*slow.closed.lock(), Some(FeedClosed::Congested));
    assert_eq!(fast.received.lock().len(), 2);
    assert!(feed.has_subscribers());
    feed.close(FeedClosed::NotLeader);
    assert_eq!(*fast.closed.lock(), Some(FeedClosed::NotLeader));
}

#[test]
fn locks_taken_and_released_in_one_round_leave_no_trace_and_send_no_event() {
    let seen = watcher(100);
    let mut feed = RegionFeed::new(LockTracker::default());
    feed.subscribe(Box::new(seen.clone()));
    feed.on_changes(vec![
        Change::Locked { key: b"k".to_vec(), start_ts: ts(5) },
        Change::Unlocked { key: b"k".to_vec(), start_ts: ts(5) },
    ]);
    assert!(feed.locks().is_empty());
    assert!(seen.received.lock().is_empty());
}

#[test]
fn a_lock_is_reported_once_it_is_older_than_the_threshold_and_again_after_a_while() {
    let mut feed = RegionFeed::new(LockTracker::default());
    let stale_after = std::time::Duration::from_millis(500);
    let at = |milliseconds: u64| Timestamp::new(milliseconds, 0).expect("fits");
    let every_micros = STALE_LOCK_REPORT_EVERY.as_micros() as u64;
    assert_eq!(feed.stale_lock(at(10_000), stale_after, 0), None, "no lock, nothing to report");
    feed.on_changes(vec![
        Change::Locked { key: b"young".to_vec(), start_ts: at(9_800) },
        Change::Locked { key: b"old".to_vec(), start_ts: at(9_000) },
    ]);
    assert_eq!(feed.stale_lock(at(9_400), stale_after, 0), None, "younger than the threshold");
    let report = Some((b"old".to_vec(), at(9_000)));
    assert_eq!(feed.stale_lock(at(9_500), stale_after, 1), report, "the oldest, once old enough");
    assert_eq!(feed.stale_lock(at(9_600), stale_after, every_micros), None, "not again at once");
    assert_eq!(feed.stale_lock(at(9_700), stale_after, 1 + every_micros), report, "again a while later");
    feed.on_changes(vec![Change::Unlocked { key: b"old".to_vec(), start_ts: at(9_000) }]);
    let young = Some((b"young".to_vec(), at(9_800)));
    assert_eq!(feed.stale_lock(at(10_300), stale_after, 2 + 2 * every_micros), young);
}
