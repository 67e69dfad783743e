//! Garbage collection: the filter's verdicts record by record, then collection on a
//! real RocksDB through compaction, bounded by the safe point, each region's applied
//! fence and the reads in progress.

use std::sync::Arc;

use prost::Message as _;

use super::filter::{Verdict, VersionFilter};
use super::*;
use crate::mvcc::key::version_key;
use crate::mvcc::reader::MvccReader;
use crate::proto::command::Commit;
use crate::proto::mvcc::{Write, WriteKind};
use crate::region::single_peer_region as region;
use crate::storage::{ApplyBatch, Cf, Engine};

fn record(kind: WriteKind, start_ts: u64, short_value: Option<&[u8]>) -> Vec<u8> {
    Write { kind: kind as i32, start_ts, short_value: short_value.map(<[u8]>::to_vec) }.encode_to_vec()
}

/// A bound over the whole key space: `global`, one region fenced at `fence`.
fn whole_space(global: u64, fence: u64) -> CollectionBound {
    let state = GcState::default();
    state.raise(Timestamp::from_u64(global));
    state.set_region_fence(&region(1, b"", b""), fence);
    state.collection_bound()
}

#[test]
fn the_newest_put_or_delete_at_or_below_the_limit_stays_and_everything_it_shadows_goes() {
    let mut filter = VersionFilter::with_bound(whole_space(100, 100));
    let short = Some(&b"v"[..]);
    let verdicts = [
        // Key a: above the limit, kept whatever it is.
        (version_key(b"a", Timestamp::from_u64(150)), record(WriteKind::WritePut, 140, short), Verdict::Keep),
        (
            version_key(b"a", Timestamp::from_u64(120)),
            record(WriteKind::WriteRollback, 120, None),
            Verdict::Keep,
        ),
        // A rollback at or below the limit goes, and does not shadow anything.
        (
            version_key(b"a", Timestamp::from_u64(100)),
            record(WriteKind::WriteRollback, 100, None),
            Verdict::Remove,
        ),
        // The newest put at or below: what a read at 101 finds.
        (version_key(b"a", Timestamp::from_u64(90)), record(WriteKind::WritePut, 80, short), Verdict::Keep),
        (version_key(b"a", Timestamp::from_u64(70)), record(WriteKind::WriteLock, 60, None), Verdict::Remove),
        (version_key(b"a", Timestamp::from_u64(50)), record(WriteKind::WritePut, 40, short), Verdict::Remove),
        (
            version_key(b"a", Timestamp::from_u64(30)),
            record(WriteKind::WritePut, 20, None),
            Verdict::RemoveWithValue { start_ts: 20 },
        ),
        // Key b starts afresh: its newest record at or below the limit is a delete.
        (version_key(b"b", Timestamp::from_u64(60)), record(WriteKind::WriteDelete, 55, None), Verdict::Keep),
        (
            version_key(b"b", Timestamp::from_u64(40)),
            record(WriteKind::WriteDelete, 35, None),
            Verdict::Remove,
        ),
        // Not a version key, or a record that does not decode: kept.
        (b"zc".to_vec(), record(WriteKind::WritePut, 1, short), Verdict::Keep),
        (version_key(b"d", Timestamp::from_u64(10)), vec![0xff, 0xff], Verdict::Keep),
    ];
    for (key, value, expected) in verdicts {
        assert_eq!(filter.decide(&key, &value), expected, "record at {key:?}");
    }
}

#[test]
fn a_region_is_collected_only_up_to_its_applied_fence_and_nothing_outside_a_region_is() {
    let state = GcState::default();
    state.raise(Timestamp::from_u64(100));
    state.set_region_fence(&region(1, b"", b"m"), 50);
    state.set_region_fence(&region(2, b"m", b"t"), 500);
    let bound = state.collection_bound();
    assert_eq!(bound.limit(&version_key(b"a", Timestamp::from_u64(1))), 50, "the fence is lower");
    assert_eq!(bound.limit(&version_key(b"p", Timestamp::from_u64(1))), 100, "the safe point is lower");
    assert_eq!(bound.limit(&version_key(b"x", Timestamp::from_u64(1))), 0, "no region here");
    // A region removed from the store is collected no more.
    state.remove_region(2);
    assert_eq!(state.collection_bound().limit(&version_key(b"p", Timestamp::from_u64(1))), 0);
    // Overlapping ranges (a moment of a split or a snapshot): none is trusted, even
    // when the overlap is not with the next range in order.
    state.set_region_fence(&region(3, b"k", b"z"), 500);
    let bound = state.collection_bound();
    assert_eq!(bound.limit(&version_key(b"a", Timestamp::from_u64(1))), 0);
    assert_eq!(bound.limit(&version_key(b"p", Timestamp::from_u64(1))), 0);
    let state = GcState::default();
    state.raise(Timestamp::from_u64(100));
    for (id, start, end) in [(1, &b"a"[..], &b"z"[..]), (2, b"b", b"c"), (3, b"d", b"e"), (4, b"z", b"")] {
        state.set_region_fence(&region(id, start, end), 100);
    }
    let bound = state.collection_bound();
    assert_eq!(bound.limit(&version_key(b"dd", Timestamp::from_u64(1))), 0, "[d, e) lies inside [a, z)");
    assert_eq!(bound.limit(&version_key(b"zz", Timestamp::from_u64(1))), 100, "[z, end) overlaps nothing");
}

#[test]
fn a_read_in_progress_holds_collection_below_its_timestamp_and_reads_at_or_below_the_safe_point_are_refused()
{
    let state = Arc::new(GcState::default());
    state.raise(Timestamp::from_u64(100));
    state.set_region_fence(&region(1, b"", b""), 1_000);
    let key = version_key(b"a", Timestamp::from_u64(1));
    let read = state.begin_read(Timestamp::from_u64(150), Timestamp::ZERO).expect("above the safe point");
    assert!(state.raise(Timestamp::from_u64(400)));
    assert_eq!(state.collection_bound().limit(&key), 149, "the read at 150 still needs what it sees");
    drop(read);
    assert_eq!(state.collection_bound().limit(&key), 400);
    assert_eq!(
        state.begin_read(Timestamp::from_u64(400), Timestamp::ZERO).map(|_| ()),
        Err(BelowSafePoint { read_ts: 400, safe_point: 400 })
    );
    assert_eq!(
        state.begin_read(Timestamp::from_u64(500), Timestamp::from_u64(600)).map(|_| ()),
        Err(BelowSafePoint { read_ts: 500, safe_point: 600 }),
        "at or below the region's applied fence too"
    );
    assert!(!state.raise(Timestamp::from_u64(300)), "the safe point never goes back");
    assert_eq!(state.safe_point(), Timestamp::from_u64(400));
}

/// Commits `value` at `commit_ts` for a transaction that started at `start_ts`.
fn commit_value(engine: &Engine, key: &[u8], value: &[u8], start_ts: u64, commit_ts: u64) {
    let mut batch = ApplyBatch::default();
    let prewrite = crate::txn::single_put_prewrite(key, value, start_ts);
    let fence = Timestamp::ZERO;
    let result = crate::txn::prewrite(engine, &mut batch, fence, &prewrite).expect("applied");
    assert!(result.errors.is_empty(), "{result:?}");
    let commit = Commit { start_ts, commit_ts, keys: vec![key.to_vec()] };
    let result = crate::txn::commit(engine, &mut batch, fence, &commit).expect("applied");
    assert!(result.errors.is_empty(), "{result:?}");
    engine.write(batch.take(), false).expect("written");
}

fn count(engine: &Engine, cf: Cf) -> usize {
    let handle = engine.cf(cf).expect("family");
    engine.db().iterator_cf(handle, rocksdb::IteratorMode::Start).count()
}

fn flush_and_compact(engine: &Engine) {
    for cf in [Cf::Write, Cf::Versions] {
        engine.db().flush_cf(engine.cf(cf).expect("family")).expect("flushed");
    }
    engine.compact_versions().expect("compacted");
}

#[test]
fn compaction_removes_shadowed_versions_and_their_values_and_reads_above_the_safe_point_are_unchanged() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let engine = Engine::open(dir.path()).expect("opens");
    let long = vec![7u8; 1_000];
    // Key a: versions at 20, 40, 60 (long values, in the versions family), 80 (short).
    for (start_ts, commit_ts) in [(10, 20), (30, 40), (50, 60)] {
        commit_value(&engine, b"a", &long, start_ts, commit_ts);
    }
    commit_value(&engine, b"a", b"newest", 70, 80);
    assert_eq!((count(&engine, Cf::Write), count(&engine, Cf::Versions)), (4, 3));

    // Nothing is collected before the store knows a safe point and a fence.
    flush_and_compact(&engine);
    assert_eq!(count(&engine, Cf::Write), 4);

    engine.gc().set_region_fence(&region(1, b"", b""), 65);
    assert!(engine.advance_gc_safe_point(Timestamp::from_u64(65)).expect("persisted"));
    flush_and_compact(&engine);
    assert_eq!(count(&engine, Cf::Write), 2, "the versions at 20 and 40 are shadowed by 60");
    assert_eq!(engine.delete_unreachable_values().expect("deleted"), 2);
    flush_and_compact(&engine);
    assert_eq!(count(&engine, Cf::Versions), 1, "only the value committed at 60 is left");
    assert_eq!(engine.gc().removed_records(), 2);

    let reader = MvccReader::new(&engine);
    assert_eq!(reader.get(b"a", Timestamp::from_u64(66)).expect("reads"), Some(long.clone()));
    assert_eq!(reader.get(b"a", Timestamp::from_u64(90)).expect("reads"), Some(b"newest".to_vec()));
    assert!(
        engine.gc().begin_read(Timestamp::from_u64(65), Timestamp::ZERO).is_err(),
        "at the safe point: refused"
    );

    // The safe point survives a restart.
    drop(reader);
    drop(engine);
    let engine = Engine::open(dir.path()).expect("opens again");
    assert_eq!(engine.gc().safe_point(), Timestamp::from_u64(65));
}
