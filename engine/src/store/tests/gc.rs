//! Garbage collection on real stores: a fence goes through Raft to every replica, a
//! split's new region inherits it, it survives a restart, and a compaction on a
//! follower collects only up to the fence that follower applied. Reads at or below the
//! store's safe point are refused.

use super::*;
use crate::proto::command::{Commit, TxnFence, TxnResult};
use crate::timestamp::Timestamp;

fn prewrite(key: &[u8], start_ts: u64) -> Write {
    let prewrite = crate::txn::single_put_prewrite(key, b"v", start_ts);
    Write { kind: Some(write::Kind::Prewrite(prewrite)) }
}

fn commit(key: &[u8], start_ts: u64, commit_ts: u64) -> Write {
    Write { kind: Some(write::Kind::Commit(Commit { start_ts, commit_ts, keys: vec![key.to_vec()] })) }
}

fn fence(fence_ts: u64) -> Write {
    Write { kind: Some(write::Kind::TxnFence(TxnFence { fence_ts, lock_limit: 10 })) }
}

fn outcome(results: Vec<WriteResult>) -> TxnResult {
    results.into_iter().next().and_then(|result| result.txn).expect("a transactional result")
}

/// The fence region `region_id` applied on `store`, as persisted.
fn persisted_fence(cluster: &Cluster, store: u64, region_id: u64) -> u64 {
    let key = keys::region_state_key(region_id);
    let state: Option<crate::proto::metadata::RegionLocalState> =
        cluster.stores[&store].engine().get_message(Cf::Meta, &key).expect("readable");
    state.expect("the region's state").txn_fence_ts
}

#[test]
fn a_fence_reaches_every_replica_answers_the_locks_below_it_and_a_split_passes_it_on() {
    let mut cluster = Cluster::with_regions(1, |_| {});
    assert!(outcome(cluster.write(1, vec![prewrite(b"a", 10)])).errors.is_empty());
    assert!(outcome(cluster.write(1, vec![prewrite(b"z", 30)])).errors.is_empty());
    let fenced = outcome(cluster.write(1, vec![fence(20)]));
    let locked: Vec<u64> = fenced
        .errors
        .iter()
        .filter_map(|error| match &error.kind {
            Some(crate::proto::command::key_error::Kind::Locked(lock)) => Some(lock.start_ts),
            _ => None,
        })
        .collect();
    assert_eq!(locked, vec![10], "only the lock at or below the fence");
    cluster.wait_for("every replica applying the fence", |cluster| {
        (1..=3).all(|store| persisted_fence(cluster, store, 1) == 20).then_some(())
    });
    // A snapshot read at or below the fence is refused, whatever the store's safe point
    // (none here): the region's data may have come from a store that collected up to it.
    let (leader, status) = cluster.leader(1).expect("a leader");
    let at_fence = ReadRequest::TxnGet { key: b"a".to_vec(), read_ts: Timestamp::from_u64(20) };
    let refused = cluster.stores[&leader].read(1, region::epoch(&status.region), at_fence).recv_timeout(WAIT);
    assert!(matches!(refused, Ok(Err(StoreError::BelowSafePoint(_)))), "{refused:?}");
    // The lock below the fence still commits; a new one below it is refused.
    assert!(outcome(cluster.write(1, vec![commit(b"a", 10, 25)])).errors.is_empty());
    assert_eq!(outcome(cluster.write(1, vec![prewrite(b"b", 15)])).below_fence, 20);

    let split = region::split_command(b"m".to_vec(), &[2, 21, 22, 23]).expect("ids are given");
    cluster.admin(1, split);
    cluster.wait_for("the new region's leader", |cluster| cluster.leader(2).map(|_| ()));
    assert_eq!(outcome(cluster.write(2, vec![prewrite(b"q", 18)])).below_fence, 20, "inherited");
    assert!(outcome(cluster.write(2, vec![prewrite(b"q", 21)])).errors.is_empty(), "above it, fine");

    // After a restart, still there.
    cluster.stop(2);
    cluster.start(2);
    assert_eq!(persisted_fence(&cluster, 2, 2), 20);
}

#[test]
fn a_follower_collects_only_up_to_the_fence_it_applied_and_reads_below_the_safe_point_are_refused() {
    let cluster = Cluster::with_regions(1, |_| {});
    for (start_ts, commit_ts) in [(10, 11), (20, 21), (30, 31)] {
        assert!(outcome(cluster.write(1, vec![prewrite(b"k", start_ts)])).errors.is_empty());
        assert!(outcome(cluster.write(1, vec![commit(b"k", start_ts, commit_ts)])).errors.is_empty());
    }
    let write_records = |store: u64| {
        let engine = cluster.stores[&store].engine();
        let handle = engine.cf(Cf::Write).expect("family");
        engine.db().iterator_cf(handle, rocksdb::IteratorMode::Start).count()
    };
    cluster.wait_for("every replica applying the commits", |_| {
        (1..=3).all(|store| write_records(store) == 3).then_some(())
    });
    // Every store knows a safe point of 40, but no replica has applied a fence: nothing
    // may be collected.
    for store in 1..=3 {
        assert!(
            cluster.stores[&store].engine().advance_gc_safe_point(Timestamp::from_u64(40)).expect("saved")
        );
        let engine = cluster.stores[&store].engine();
        engine.compact_versions().expect("compacted");
        assert_eq!(write_records(store), 3, "store {store} collected above its applied fence");
    }
    // Fenced at 25: up to 25 may go (the record at 11 is shadowed by the one at 21).
    outcome(cluster.write(1, vec![fence(25)]));
    cluster.wait_for("every replica collecting up to the fence", |cluster| {
        (1..=3)
            .all(|store| {
                let engine = cluster.stores[&store].engine();
                engine.compact_versions().expect("compacted");
                engine.gc().removed_records() == 1
            })
            .then_some(())
    });
    assert_eq!(cluster.txn_get(1, b"k", 41), ReadResponse::Value(Some(b"v".to_vec())));
    let (leader, status) = cluster.leader(1).expect("a leader");
    let epoch = region::epoch(&status.region);
    let below = ReadRequest::TxnGet { key: b"k".to_vec(), read_ts: Timestamp::from_u64(40) };
    let refused = cluster.stores[&leader].read(1, epoch, below).recv_timeout(WAIT).expect("an answer");
    assert!(matches!(refused, Err(StoreError::BelowSafePoint(_))), "{refused:?}");
}
