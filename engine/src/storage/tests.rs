//! The storage layer against a real RocksDB in a temporary directory.

use prost::Message as _;
use rocksdb::WriteBatch;

use super::*;
use crate::proto::frame::RegionSnapshotData;
use crate::proto::metadata::{Peer, Region, RegionEpoch};
use crate::raft::proto::{Entry, HardState, Snapshot, SnapshotMetadata};
use crate::raft::{Storage, StorageError};

fn region(id: u64, start: &[u8], end: &[u8]) -> Region {
    Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        epoch: Some(RegionEpoch { conf_version: 1, version: 1 }),
        peers: vec![Peer { id: id * 10 + 1, store_id: 1, role: 0 }],
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range
        .map(|index| Entry { index, term, data: format!("{index}@{term}").into_bytes(), ..Entry::default() })
        .collect()
}

fn founded(engine: &Engine, region: &Region) -> PeerStorage {
    let mut batch = WriteBatch::default();
    PeerStorage::initialize(engine, region, region.peers[0].id, 0, &mut batch).unwrap();
    engine.write(batch, true).unwrap();
    PeerStorage::open(engine, region.id).unwrap()
}

fn append(engine: &Engine, storage: &mut PeerStorage, new: &[Entry]) {
    let mut batch = WriteBatch::default();
    storage.append(new, &mut batch).unwrap();
    engine.write(batch, true).unwrap();
}

#[test]
fn the_log_and_hard_state_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path()).unwrap();
        let mut storage = founded(&engine, &region(1, b"", b""));
        let mut batch = WriteBatch::default();
        storage.append(&entries(INITIAL_INDEX + 1..=INITIAL_INDEX + 4, 6), &mut batch).unwrap();
        storage
            .set_hard_state(HardState { term: 6, vote: 11, commit: INITIAL_INDEX + 2 }, &mut batch)
            .unwrap();
        engine.write(batch, true).unwrap();
    }
    let engine = Engine::open(dir.path()).unwrap();
    let storage = PeerStorage::open(&engine, 1).unwrap();
    let state = storage.initial_state().unwrap();
    assert_eq!(state.hard_state, HardState { term: 6, vote: 11, commit: INITIAL_INDEX + 2 });
    assert_eq!(state.conf_state.voters, vec![11]);
    assert_eq!(storage.first_index().unwrap(), INITIAL_INDEX + 1);
    assert_eq!(storage.last_index().unwrap(), INITIAL_INDEX + 4);
    assert_eq!(storage.term(INITIAL_INDEX).unwrap(), INITIAL_TERM);
    assert_eq!(storage.term(INITIAL_INDEX + 3).unwrap(), 6);
    let read = storage.entries(INITIAL_INDEX + 1, INITIAL_INDEX + 5, None).unwrap();
    assert_eq!(read, entries(INITIAL_INDEX + 1..=INITIAL_INDEX + 4, 6));
}

#[test]
fn appending_over_a_longer_suffix_removes_the_rest_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let mut storage = founded(&engine, &region(1, b"", b""));
    append(&engine, &mut storage, &entries(6..=10, 6));
    append(&engine, &mut storage, &entries(8..=8, 7));
    assert_eq!(storage.last_index().unwrap(), 8);
    assert_eq!(storage.term(8).unwrap(), 7);
    assert_eq!(
        storage.entries(6, 9, None).unwrap().iter().map(|e| e.term).collect::<Vec<_>>(),
        vec![6, 6, 7]
    );
    assert_eq!(storage.entries(6, 10, None), Err(StorageError::Unavailable));
    assert_eq!(engine.get(Cf::Raft, &keys::log_key(1, 9)).unwrap(), None, "the replaced suffix is deleted");
    let reopened = PeerStorage::open(&engine, 1).unwrap();
    assert_eq!(reopened.last_index().unwrap(), 8);
}

#[test]
fn compaction_drops_the_prefix_with_a_range_delete() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let mut storage = founded(&engine, &region(1, b"", b""));
    append(&engine, &mut storage, &entries(6..=10, 6));
    let mut batch = WriteBatch::default();
    storage.set_applied(9, &mut batch).unwrap();
    assert!(!storage.compact_to(10, &mut batch).unwrap(), "unapplied entries are never compacted");
    assert!(storage.compact_to(8, &mut batch).unwrap());
    engine.write(batch, true).unwrap();
    assert_eq!(storage.first_index().unwrap(), 9);
    assert_eq!(storage.term(8).unwrap(), 6);
    assert_eq!(storage.term(7), Err(StorageError::Compacted));
    assert_eq!(storage.entries(8, 10, None), Err(StorageError::Compacted));
    assert_eq!(storage.entries(9, 11, None).unwrap().len(), 2);
    for index in 6..=8 {
        assert_eq!(engine.get(Cf::Raft, &keys::log_key(1, index)).unwrap(), None);
    }
    let reopened = PeerStorage::open(&engine, 1).unwrap();
    assert_eq!(reopened.first_index().unwrap(), 9);
}

#[test]
fn regions_in_one_batch_keep_their_logs_apart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let mut first = founded(&engine, &region(1, b"", b"m"));
    let mut second = founded(&engine, &region(2, b"m", b""));
    let mut batch = WriteBatch::default();
    first.append(&entries(6..=8, 6), &mut batch).unwrap();
    second.append(&entries(6..=6, 9), &mut batch).unwrap();
    engine.write(batch, true).unwrap();
    assert_eq!(first.entries(6, 9, None).unwrap(), entries(6..=8, 6));
    assert_eq!(second.entries(6, 7, None).unwrap(), entries(6..=6, 9));
    assert_eq!(second.entries(6, 8, None), Err(StorageError::Unavailable));
}

#[test]
fn entries_are_cut_at_the_size_limit_but_never_below_one() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let mut storage = founded(&engine, &region(1, b"", b""));
    append(&engine, &mut storage, &entries(6..=10, 6));
    let one = prost::Message::encoded_len(&entries(6..=6, 6)[0]) as u64;
    assert_eq!(storage.entries(6, 11, Some(1)).unwrap().len(), 1);
    assert_eq!(storage.entries(6, 11, Some(2 * one)).unwrap().len(), 2);
    assert_eq!(storage.entries(6, 11, Some(2 * one + 1)).unwrap().len(), 2);
    assert_eq!(storage.entries(6, 11, None).unwrap().len(), 5);
}

#[test]
fn a_snapshot_carries_the_region_range_and_installs_atomically() {
    let source_dir = tempfile::tempdir().unwrap();
    let source = Engine::open(source_dir.path()).unwrap();
    let donor_region = region(3, b"b", b"d");
    let mut donor = founded(&source, &donor_region);
    append(&source, &mut donor, &entries(6..=7, 6));
    let mut batch = WriteBatch::default();
    let data = source.cf(Cf::Data).unwrap();
    for key in [&b"a"[..], b"b", b"c", b"cz", b"d"] {
        batch.put_cf(data, keys::data_key(key), [b"v-", key].concat());
    }
    donor.set_applied(7, &mut batch).unwrap();
    source.write(batch, true).unwrap();

    let snapshot = donor.snapshot(0).unwrap();
    let metadata = snapshot.metadata.clone().unwrap();
    assert_eq!((metadata.index, metadata.term), (7, 6));
    assert_eq!(metadata.conf_state.unwrap().voters, vec![31]);

    let target_dir = tempfile::tempdir().unwrap();
    {
        let target = Engine::open(target_dir.path()).unwrap();
        let mut batch = WriteBatch::default();
        PeerStorage::initialize_empty(&target, 3, 32, &mut batch).unwrap();
        let data = target.cf(Cf::Data).unwrap();
        batch.put_cf(data, keys::data_key(b"bb"), b"stale");
        target.write(batch, true).unwrap();
        let mut empty = PeerStorage::open(&target, 3).unwrap();
        assert!(!empty.is_initialized());
        let mut batch = WriteBatch::default();
        snapshot::install(&target, &mut empty, &snapshot, &mut batch).unwrap();
        target.write(batch, true).unwrap();
    }
    let target = Engine::open(target_dir.path()).unwrap();
    let installed = PeerStorage::open(&target, 3).unwrap();
    assert!(installed.is_initialized());
    assert_eq!(installed.region(), donor_region);
    assert_eq!((installed.first_index().unwrap(), installed.last_index().unwrap()), (8, 7));
    assert_eq!(installed.term(7).unwrap(), 6);
    assert_eq!(installed.apply_state().applied_index, 7);
    for (key, expected) in [
        (&b"a"[..], None),
        (b"b", Some(b"v-b".to_vec())),
        (b"bb", None),
        (b"c", Some(b"v-c".to_vec())),
        (b"cz", Some(b"v-cz".to_vec())),
        (b"d", None),
    ] {
        assert_eq!(target.get(Cf::Data, &keys::data_key(key)).unwrap(), expected, "key {key:?}");
    }
}

/// A snapshot carries the region's range of the transactional column families too
/// (locks, commit records, values), replaces what the target held there, and leaves
/// the neighbours' keys alone; a payload with a key outside its region is refused.
#[test]
fn a_snapshot_carries_the_transactional_families_within_the_region_only() {
    use crate::mvcc::key::{lock_key, version_key};
    use crate::timestamp::Timestamp;

    let source_dir = tempfile::tempdir().unwrap();
    let source = Engine::open(source_dir.path()).unwrap();
    let donor_region = region(3, b"b", b"d");
    let mut donor = founded(&source, &donor_region);
    append(&source, &mut donor, &entries(6..=7, 6));
    let ts = Timestamp::from_u64(77);
    // Records that decode as their family's (a snapshot is checked for that).
    let lock = crate::proto::mvcc::Lock { start_ts: 70, ..Default::default() }.encode_to_vec();
    let write = crate::proto::mvcc::Write { start_ts: 70, ..Default::default() }.encode_to_vec();
    let mut batch = WriteBatch::default();
    for key in [&b"a"[..], b"b", b"c\x00", b"d"] {
        batch.put_cf(source.cf(Cf::Lock).unwrap(), lock_key(key), &lock);
        batch.put_cf(source.cf(Cf::Write).unwrap(), version_key(key, ts), &write);
        batch.put_cf(source.cf(Cf::Versions).unwrap(), version_key(key, ts), b"value");
    }
    donor.set_applied(7, &mut batch).unwrap();
    source.write(batch, true).unwrap();
    let snapshot = donor.snapshot(0).unwrap();

    let target_dir = tempfile::tempdir().unwrap();
    let target = Engine::open(target_dir.path()).unwrap();
    let mut batch = WriteBatch::default();
    PeerStorage::initialize_empty(&target, 3, 32, &mut batch).unwrap();
    batch.put_cf(target.cf(Cf::Lock).unwrap(), lock_key(b"bb"), b"stale");
    batch.put_cf(target.cf(Cf::Lock).unwrap(), lock_key(b"e"), b"neighbour");
    target.write(batch, true).unwrap();
    let mut empty = PeerStorage::open(&target, 3).unwrap();
    let mut batch = WriteBatch::default();
    snapshot::install(&target, &mut empty, &snapshot, &mut batch).unwrap();
    target.write(batch, true).unwrap();
    for (key, inside) in [(&b"a"[..], false), (b"b", true), (b"c\x00", true), (b"d", false)] {
        let expect = |value: &[u8]| inside.then(|| value.to_vec());
        assert_eq!(target.get(Cf::Lock, &lock_key(key)).unwrap(), expect(&lock), "lock of {key:?}");
        assert_eq!(target.get(Cf::Write, &version_key(key, ts)).unwrap(), expect(&write), "{key:?}");
        assert_eq!(target.get(Cf::Versions, &version_key(key, ts)).unwrap(), expect(b"value"), "{key:?}");
    }
    assert_eq!(target.get(Cf::Lock, &lock_key(b"bb")).unwrap(), None, "replaced by the snapshot");
    assert_eq!(target.get(Cf::Lock, &lock_key(b"e")).unwrap(), Some(b"neighbour".to_vec()));

    let mut forged = snapshot.clone();
    let mut payload = RegionSnapshotData::decode(forged.data.as_slice()).unwrap();
    payload.writes.push(crate::proto::frame::KeyValue { key: version_key(b"z", ts), value: b"x".to_vec() });
    forged.data = payload.encode_to_vec();
    let mut batch = WriteBatch::default();
    let error = snapshot::install(&target, &mut empty, &forged, &mut batch).expect_err("a key outside");
    assert!(error.to_string().contains("outside its region"), "{error}");
}

/// A snapshot of region 3, `[b, d)`, with the payload `change` made of it.
fn forged(change: impl FnOnce(&mut RegionSnapshotData)) -> Snapshot {
    let mut payload = RegionSnapshotData {
        region: Some(region(3, b"b", b"d")),
        pairs: vec![crate::proto::frame::KeyValue { key: b"c".to_vec(), value: b"v".to_vec() }],
        ..RegionSnapshotData::default()
    };
    change(&mut payload);
    Snapshot { data: payload.encode_to_vec(), metadata: Some(SnapshotMetadata::default()) }
}

#[test]
fn a_snapshot_that_would_not_install_is_refused_before_anything_is_written() {
    assert!(snapshot::check(3, &forged(|_| {})).is_ok(), "the unforged one passes");
    let inverted = forged(|payload| payload.region = Some(region(3, b"d", b"b")));
    assert!(matches!(snapshot::check(3, &inverted), Err(Defect::EmptyRange { .. })), "inverted");
    let empty = forged(|payload| payload.region = Some(region(3, b"b", b"b")));
    assert!(matches!(snapshot::check(3, &empty), Err(Defect::EmptyRange { .. })), "[b, b)");
    let unbounded = forged(|payload| payload.region = Some(region(3, b"b", b"")));
    assert!(snapshot::check(3, &unbounded).is_ok(), "an empty end is the end of the key space");
    let outside = forged(|payload| payload.pairs[0].key = b"z".to_vec());
    assert!(matches!(snapshot::check(3, &outside), Err(Defect::OutsideRegion { cf: "default", .. })));
    assert!(matches!(snapshot::check(4, &forged(|_| {})), Err(Defect::OtherRegion { found: 3 })));
    let undecodable = Snapshot { data: vec![0xff, 0xff], metadata: Some(SnapshotMetadata::default()) };
    assert!(matches!(snapshot::check(3, &undecodable), Err(Defect::Undecodable(_))));
    let broken_lock = forged(|payload| {
        let key = crate::mvcc::key::lock_key(b"c");
        payload.locks.push(crate::proto::frame::KeyValue { key, value: vec![0xff, 0xff] });
    });
    assert!(matches!(snapshot::check(3, &broken_lock), Err(Defect::Mvcc(_))), "a lock that does not decode");
    let no_metadata = Snapshot { metadata: None, ..forged(|_| {}) };
    assert!(matches!(snapshot::check(3, &no_metadata), Err(Defect::NoMetadata)));

    // Install refuses what check refuses, and adds nothing to the batch.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let mut batch = WriteBatch::default();
    PeerStorage::initialize_empty(&engine, 3, 32, &mut batch).unwrap();
    engine.write(batch, true).unwrap();
    let mut storage = PeerStorage::open(&engine, 3).unwrap();
    let mut batch = WriteBatch::default();
    let error = snapshot::install(&engine, &mut storage, &inverted, &mut batch).expect_err("inverted");
    assert!(error.to_string().contains("holds no key"), "{error}");
    assert_eq!(batch.len(), 0, "nothing staged");
}
