//! Change feeds on real stores: a leader sends what commits in its region and resolves
//! past it only once no lock stands below, a published resolved timestamp turns away
//! one-phase commits at or below it, and losing leadership closes the feed.

use std::sync::atomic::AtomicU64;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::*;
use crate::feed::{FeedClosed, FeedEvent, FeedMessage, FeedSubscriber};
use crate::proto::command::{Commit, Mutation, OnePhaseRefusal, Prewrite, TxnResult};
use crate::proto::mvcc;
use crate::raft::OpaqueError;
use crate::timestamp::{Timestamp, TimestampRun, TimestampSource};

/// An oracle answering ever larger timestamps, from 10,000 on.
#[derive(Debug)]
struct CountingOracle(AtomicU64);

impl TimestampSource for CountingOracle {
    fn request(&self, count: u32, answer: Box<dyn FnOnce(Result<TimestampRun, OpaqueError>) + Send>) {
        let first = Timestamp::from_u64(self.0.fetch_add(u64::from(count), SeqCst));
        answer(Ok(TimestampRun { first, count }));
    }
}

fn with_oracle(config: &mut StoreConfig) {
    config.timestamps = Some(Arc::new(CountingOracle(AtomicU64::new(10_000))));
}

/// What the feed said: its messages, then why it closed.
enum Heard {
    Message(FeedMessage),
    Closed(FeedClosed),
}

struct ChannelSubscriber(Sender<Heard>);

impl FeedSubscriber for ChannelSubscriber {
    fn offer(&mut self, message: FeedMessage) -> bool {
        self.0.try_send(Heard::Message(message)).is_ok()
    }

    fn close(self: Box<Self>, reason: FeedClosed) {
        let _ = self.0.try_send(Heard::Closed(reason));
    }
}

/// Subscribes to region 1's feed at its leader from `start_ts`; answers the leader's
/// store and what the feed sends.
fn subscribe(cluster: &Cluster, start_ts: u64) -> (u64, Receiver<Heard>) {
    cluster.wait_for("a subscription", |cluster| {
        let (store, status) = cluster.leader(1)?;
        let (sender, receiver) = bounded(1024);
        let subscriber = Box::new(ChannelSubscriber(sender));
        let epoch = region::epoch(&status.region);
        let answer =
            cluster.stores[&store].subscribe_feed(1, epoch, Timestamp::from_u64(start_ts), subscriber);
        match answer.recv_timeout(WAIT) {
            Ok(Ok(_started)) => Some((store, receiver)),
            Ok(Err(StoreError::NotLeader { .. } | StoreError::FeedNotReady { .. })) => None,
            Ok(Err(error)) => panic!("the subscription failed: {error}"),
            Err(_) => None,
        }
    })
}

/// The next resolved timestamp the feed sends, with the events before it.
fn next_resolved(feed: &Receiver<Heard>) -> (Vec<FeedEvent>, Timestamp) {
    let mut events = Vec::new();
    loop {
        match feed.recv_timeout(WAIT) {
            Ok(Heard::Message(FeedMessage::Events(batch))) => events.extend(batch),
            Ok(Heard::Message(FeedMessage::Resolved(resolved))) => return (events, resolved),
            Ok(Heard::Closed(reason)) => panic!("the feed closed: {reason}"),
            Err(_) => panic!("no resolved timestamp within {WAIT:?}"),
        }
    }
}

fn txn(results: Vec<WriteResult>) -> TxnResult {
    results.into_iter().next().and_then(|result| result.txn).expect("a transactional result")
}

fn prewrite(key: &[u8], start_ts: u64, one_phase_commit_ts: u64) -> Write {
    let mutation = Mutation { op: mvcc::Mutation::Put as i32, key: key.to_vec(), value: b"v".to_vec() };
    let prewrite = Prewrite {
        start_ts,
        primary: key.to_vec(),
        lock_ttl_ms: 3_000,
        mutations: vec![mutation],
        one_phase_commit_ts,
    };
    Write { kind: Some(write::Kind::Prewrite(prewrite)) }
}

fn commit(key: &[u8], start_ts: u64, commit_ts: u64) -> Write {
    Write { kind: Some(write::Kind::Commit(Commit { start_ts, commit_ts, keys: vec![key.to_vec()] })) }
}

#[test]
fn a_feed_sends_each_commit_and_resolves_past_it_only_once_its_lock_is_gone() {
    let cluster = Cluster::with_regions(1, with_oracle);
    // Synced with the oracle before the feed starts, so that only the feed's promises
    // can raise the leader's watermark past its first timestamps.
    cluster.wait_for("a synced leader", |cluster| {
        let result = txn(cluster.write(1, vec![prewrite(b"warm-up", 4_000_000, 5_000_000)]));
        (result.one_phase_refused == OnePhaseRefusal::OnePhaseAccepted as i32).then_some(())
    });
    let (_, feed) = subscribe(&cluster, 1);
    assert!(txn(cluster.write(1, vec![prewrite(b"k", 100, 0)])).errors.is_empty());
    // Several rounds with the lock in place: none may promise anything above its start.
    for _ in 0..5 {
        let (events, resolved) = next_resolved(&feed);
        assert!(events.is_empty(), "nothing committed yet: {events:?}");
        assert!(resolved <= Timestamp::from_u64(100), "resolved {resolved} above a lock of 100");
    }
    assert!(txn(cluster.write(1, vec![commit(b"k", 100, 150)])).errors.is_empty());
    let mut seen = Vec::new();
    let resolved = loop {
        let (events, resolved) = next_resolved(&feed);
        seen.extend(events);
        if resolved > Timestamp::from_u64(150) {
            break resolved;
        }
    };
    let expected = FeedEvent {
        key: b"k".to_vec(),
        value: Some(b"v".to_vec()),
        start_ts: Timestamp::from_u64(100),
        commit_ts: Timestamp::from_u64(150),
    };
    assert_eq!(seen, vec![expected], "the commit, once, before the promise past it");
    // The promise binds one-phase commits: one brought at or below it is re-timed above
    // it (with a spare timestamp of the resolve's run), and the feed sends it there.
    let result = txn(cluster.write(1, vec![prewrite(b"j", 200, resolved.as_u64())]));
    assert_eq!(result.one_phase_refused, OnePhaseRefusal::OnePhaseAccepted as i32, "{result:?}");
    let commit_ts = Timestamp::from_u64(result.status.expect("a committed status").commit_ts);
    assert!(commit_ts > resolved, "re-timed to {commit_ts}, not above the promise of {resolved}");
    let mut seen = Vec::new();
    while seen.is_empty() {
        let (events, resolved_after) = next_resolved(&feed);
        assert!(resolved_after >= resolved, "resolved went back from {resolved} to {resolved_after}");
        seen.extend(events);
    }
    let expected = FeedEvent {
        key: b"j".to_vec(),
        value: Some(b"v".to_vec()),
        start_ts: Timestamp::from_u64(200),
        commit_ts,
    };
    assert_eq!(seen, vec![expected], "the re-timed commit, at the timestamp it was given");
}

#[test]
fn a_feed_closes_when_its_replica_stops_leading() {
    let cluster = Cluster::with_regions(1, with_oracle);
    let (store, feed) = subscribe(&cluster, 1);
    next_resolved(&feed);
    let status = status_of(&cluster, store);
    let other = status.region.peers.iter().find(|peer| peer.store_id != store).expect("another replica");
    let transferred = cluster.stores[&store].transfer_leader(1, other.id).recv_timeout(WAIT);
    assert!(matches!(transferred, Ok(Ok(()))), "the transfer was refused: {transferred:?}");
    let reason = loop {
        match feed.recv_timeout(WAIT) {
            Ok(Heard::Message(_)) => continue,
            Ok(Heard::Closed(reason)) => break reason,
            Err(_) => panic!("the feed did not close within {WAIT:?}"),
        }
    };
    assert_eq!(reason, FeedClosed::NotLeader);
}

/// A transfer to a store that went away is abandoned after an election timeout; the
/// leader leads on, and its feed resolves again once the entry appended at the
/// abandonment commits. (The lease once stayed suspended for the rest of the term, and
/// an idle region's feed never resolved again: every watch of it stood still.)
#[test]
fn a_feed_resolves_again_after_a_transfer_to_a_stopped_store_is_abandoned() {
    let mut cluster = Cluster::with_regions(1, with_oracle);
    let (store, feed) = subscribe(&cluster, 1);
    next_resolved(&feed);
    let status = status_of(&cluster, store);
    let other = status.region.peers.iter().find(|peer| peer.store_id != store).expect("another replica");
    let (other_store, other_peer) = (other.store_id, other.id);
    // Caught up before it goes (the region is idle): the leader's progress says so, and
    // the transfer sends its TimeoutNow at once, into the void. (A lagging target would
    // get appends first, and the lease would never have been suspended.)
    cluster.wait_for("the target to hold everything", |cluster| {
        let target = cluster.stores[&other_store].status(1)?;
        (target.applied_index == status_of(cluster, store).applied_index).then_some(())
    });
    cluster.stop(other_store);
    let transferred = cluster.stores[&store].transfer_leader(1, other_peer).recv_timeout(WAIT);
    assert!(matches!(transferred, Ok(Ok(()))), "the transfer was refused: {transferred:?}");
    // Published before the transfer was taken (the same worker thread handled both).
    let mut before = Timestamp::ZERO;
    while let Ok(heard) = feed.try_recv() {
        match heard {
            Heard::Message(FeedMessage::Resolved(resolved)) => before = before.max(resolved),
            Heard::Message(FeedMessage::Events(_)) => {}
            Heard::Closed(reason) => panic!("the feed closed: {reason}"),
        }
    }
    let (_, after) = next_resolved(&feed);
    assert!(after > before, "resolved {after}, not past {before}");
    assert!(status_of(&cluster, store).is_leader, "the same leader resolved");
}

#[test]
fn a_feed_from_below_the_safe_point_is_refused() {
    let cluster = Cluster::with_regions(1, with_oracle);
    let (store, status) = cluster.wait_for("a leader", |cluster| cluster.leader(1));
    cluster.stores[&store]
        .engine()
        .advance_gc_safe_point(Timestamp::from_u64(500))
        .expect("the safe point moves");
    let (sender, _receiver) = bounded(16);
    let epoch = region::epoch(&status.region);
    let answer = cluster.stores[&store].subscribe_feed(
        1,
        epoch,
        Timestamp::from_u64(500),
        Box::new(ChannelSubscriber(sender)),
    );
    let refused = answer.recv_timeout(WAIT).expect("an answer");
    assert!(matches!(refused, Err(StoreError::BelowSafePoint(_))), "answered {refused:?}");
}
