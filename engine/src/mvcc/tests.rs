//! Reads at a timestamp against a real RocksDB, with records written as a committed
//! (or prewritten) transaction leaves them.

use prost::Message as _;
use rocksdb::WriteBatch;

use super::key::{lock_key, version_key};
use super::reader::{MvccError, MvccReader, RecordDefect};
use super::refresh::Refresh;
use crate::proto::mvcc::{Lock, Mutation, Write, WriteKind};
use crate::storage::{Cf, Engine};
use crate::timestamp::Timestamp;

fn ts(value: u64) -> Timestamp {
    Timestamp::from_u64(value)
}

struct Fixture {
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let engine = Engine::open(dir.path()).expect("the engine opens");
        Fixture { engine, _dir: dir }
    }

    fn write(&self, fill: impl FnOnce(&Engine, &mut WriteBatch)) {
        let mut batch = WriteBatch::default();
        fill(&self.engine, &mut batch);
        self.engine.write(batch, false).expect("written");
    }

    /// What a transaction that started at `start` and committed at `commit` leaves.
    fn commit(&self, key: &[u8], kind: WriteKind, value: Option<&[u8]>, start: u64, commit: u64) {
        self.write(|engine, batch| {
            if let Some(value) = value {
                batch.put_cf(engine.cf(Cf::Versions).unwrap(), version_key(key, ts(start)), value);
            }
            let record = Write { kind: kind as i32, start_ts: start, short_value: None };
            batch.put_cf(engine.cf(Cf::Write).unwrap(), version_key(key, ts(commit)), record.encode_to_vec());
        });
    }

    fn put(&self, key: &[u8], value: &[u8], start: u64, commit: u64) {
        self.commit(key, WriteKind::WritePut, Some(value), start, commit);
    }

    /// A prewrite's lock, not yet committed.
    fn lock(&self, key: &[u8], primary: &[u8], start: u64, mutation: Mutation) {
        self.write(|engine, batch| {
            let lock = Lock {
                primary: primary.to_vec(),
                start_ts: start,
                ttl_ms: 3000,
                mutation: mutation as i32,
                short_value: None,
            };
            batch.put_cf(engine.cf(Cf::Lock).unwrap(), lock_key(key), lock.encode_to_vec());
        });
    }

    fn reader(&self) -> MvccReader<'_> {
        MvccReader::new(&self.engine)
    }
}

fn value(bytes: &[u8]) -> Option<Vec<u8>> {
    Some(bytes.to_vec())
}

#[test]
fn a_read_sees_the_newest_commit_at_or_below_its_timestamp() {
    let fixture = Fixture::new();
    fixture.put(b"k", b"v1", 10, 11);
    fixture.put(b"k", b"v2", 20, 21);
    fixture.commit(b"k", WriteKind::WriteDelete, None, 30, 31);
    fixture.put(b"k", b"v4", 40, 41);
    let reader = fixture.reader();
    let at = |read: u64| reader.get(b"k", ts(read)).expect("no lock");
    assert_eq!(at(10), None, "before the first commit");
    assert_eq!(at(11), value(b"v1"), "a commit is visible at its own timestamp");
    assert_eq!(at(20), value(b"v1"));
    assert_eq!(at(21), value(b"v2"));
    assert_eq!(at(31), None, "deleted");
    assert_eq!(at(40), None);
    assert_eq!(at(u64::MAX), value(b"v4"));
    assert_eq!(reader.get(b"k\x00", ts(u64::MAX)).expect("no lock"), None, "another key's versions");
}

#[test]
fn records_of_locked_reads_and_rollbacks_are_passed_over() {
    let fixture = Fixture::new();
    fixture.put(b"k", b"v1", 10, 11);
    fixture.commit(b"k", WriteKind::WriteLock, None, 20, 21);
    fixture.commit(b"k", WriteKind::WriteRollback, None, 30, 30);
    assert_eq!(fixture.reader().get(b"k", ts(50)).expect("no lock"), value(b"v1"));
}

#[test]
fn a_lock_blocks_reads_at_or_above_its_start_and_only_those() {
    let fixture = Fixture::new();
    fixture.put(b"k", b"v1", 10, 11);
    fixture.lock(b"k", b"primary", 20, Mutation::Put);
    fixture.lock(b"read-only", b"primary", 20, Mutation::Lock);
    let reader = fixture.reader();
    assert_eq!(reader.get(b"k", ts(19)).expect("a later lock is invisible"), value(b"v1"));
    match reader.get(b"k", ts(20)) {
        Err(MvccError::Locked(lock)) => {
            assert_eq!(
                (lock.key.as_slice(), lock.primary.as_slice(), lock.start_ts),
                (&b"k"[..], &b"primary"[..], 20)
            );
        }
        other => panic!("a read at the lock's start must wait for it: {other:?}"),
    }
    assert_eq!(reader.get(b"read-only", ts(30)).expect("a read's lock writes nothing"), None);
}

#[test]
fn scans_at_a_timestamp_go_both_ways_and_skip_what_is_not_visible() {
    let fixture = Fixture::new();
    for (index, key) in [&b"a"[..], b"b", b"c", b"d", b"e"].into_iter().enumerate() {
        let start = 10 * (index as u64 + 1);
        fixture.put(key, &[b"v-", key].concat(), start, start + 1);
    }
    fixture.commit(b"c", WriteKind::WriteDelete, None, 60, 61);
    fixture.put(b"d", b"new", 70, 71);
    let reader = fixture.reader();
    let keys = |pairs: Vec<(Vec<u8>, Vec<u8>)>| pairs.into_iter().map(|(key, _)| key).collect::<Vec<_>>();
    let all = reader.scan(b"", b"", ts(65), 0, false).expect("no lock");
    assert_eq!(keys(all.clone()), [b"a".to_vec(), b"b".to_vec(), b"d".to_vec(), b"e".to_vec()]);
    assert_eq!(all[2].1, b"v-d".to_vec(), "the version at the read timestamp, not the newest");
    assert_eq!(
        keys(reader.scan(b"b", b"e", ts(35), 0, false).expect("no lock")),
        [b"b".to_vec(), b"c".to_vec()]
    );
    let backwards = reader.scan(b"", b"", ts(100), 2, true).expect("no lock");
    assert_eq!(backwards, [(b"e".to_vec(), b"v-e".to_vec()), (b"d".to_vec(), b"new".to_vec())]);
    assert_eq!(
        keys(reader.scan(b"a", b"d", ts(100), 0, true).expect("no lock")),
        [b"b".to_vec(), b"a".to_vec()]
    );
}

#[test]
fn a_scan_is_blocked_by_a_lock_only_inside_what_it_returns() {
    let fixture = Fixture::new();
    for (start, key) in [(10, &b"a"[..]), (20, b"b"), (30, b"c")] {
        fixture.put(key, b"v", start, start + 1);
    }
    fixture.lock(b"bb", b"bb", 40, Mutation::Delete);
    let reader = fixture.reader();
    assert_eq!(reader.scan(b"", b"", ts(50), 2, false).expect("the lock is past the answer").len(), 2);
    assert!(matches!(reader.scan(b"", b"", ts(50), 3, false), Err(MvccError::Locked(_))));
    assert!(matches!(reader.scan(b"", b"", ts(50), 0, true), Err(MvccError::Locked(_))));
    assert_eq!(reader.scan(b"", b"", ts(50), 1, true).expect("past the answer backwards").len(), 1);
    assert_eq!(reader.scan(b"", b"", ts(39), 0, false).expect("a later lock").len(), 3);
    assert!(
        matches!(reader.scan(b"bb", b"bc", ts(50), 0, false), Err(MvccError::Locked(_))),
        "a lock on a key with no commit yet"
    );
}

/// The last key of the range reaches the limit after the walk over the records ended:
/// the answer still speaks only up to it.
#[test]
fn a_scan_whose_last_key_reaches_its_limit_is_not_blocked_by_a_lock_past_it() {
    let fixture = Fixture::new();
    for (start, key) in [(10, &b"a"[..]), (20, b"b")] {
        fixture.put(key, b"v", start, start + 1);
    }
    fixture.lock(b"c", b"c", 40, Mutation::Put);
    let reader = fixture.reader();
    assert_eq!(reader.scan(b"", b"", ts(50), 2, false).expect("the lock is past the answer").len(), 2);
    assert!(matches!(reader.scan(b"", b"", ts(50), 3, false), Err(MvccError::Locked(_))));
}

#[test]
fn a_commit_record_without_its_value_is_reported_corrupt() {
    let fixture = Fixture::new();
    fixture.commit(b"k", WriteKind::WritePut, None, 10, 11);
    match fixture.reader().get(b"k", ts(20)) {
        Err(MvccError::Corrupt { defect: RecordDefect::MissingValue { commit_ts, start_ts }, .. }) => {
            assert_eq!((commit_ts, start_ts), (ts(11), ts(10)));
        }
        other => panic!("{other:?}"),
    }
}

/// A committed version as a catch-up delivers it: key, value, commit timestamp.
type Version = (Vec<u8>, Option<Vec<u8>>, u64);

/// What a catch-up after `after` delivers, batch by batch.
fn history_after(fixture: &Fixture, after: u64, batch_events: usize) -> Vec<Vec<Version>> {
    let mut batches = Vec::new();
    let finished = fixture
        .reader()
        .committed_after((b"", b""), ts(after), (batch_events, usize::MAX), |batch| {
            batches.push(
                batch.into_iter().map(|event| (event.key, event.value, event.commit_ts.as_u64())).collect(),
            );
            true
        })
        .expect("the history reads");
    assert!(finished, "nothing stopped the catch-up");
    batches
}

#[test]
fn a_catch_up_reads_every_put_and_delete_after_its_start_and_nothing_else() {
    let fixture = Fixture::new();
    fixture.put(b"a", b"a-old", 10, 11);
    fixture.put(b"a", b"a-new", 20, 21);
    fixture.commit(b"b", WriteKind::WriteDelete, None, 22, 23);
    fixture.commit(b"c", WriteKind::WriteLock, None, 24, 25);
    // A rollback's record sits under its start timestamp, above the catch-up's start.
    fixture.commit(b"d", WriteKind::WriteRollback, None, 26, 26);
    fixture.lock(b"e", b"e", 27, Mutation::Put);
    let events = history_after(&fixture, 11, 10).concat();
    assert_eq!(events, vec![(b"a".to_vec(), value(b"a-new"), 21), (b"b".to_vec(), None, 23)]);
    assert_eq!(history_after(&fixture, 0, 10).concat().len(), 3, "from the beginning, the old put too");
    assert_eq!(history_after(&fixture, 23, 10).concat(), vec![], "nothing committed after the last commit");
}

#[test]
fn a_catch_up_comes_in_batches_and_stops_when_its_watcher_does() {
    let fixture = Fixture::new();
    for (index, key) in [b"a", b"b", b"c", b"d", b"e"].into_iter().enumerate() {
        let start = 10 + 2 * index as u64;
        fixture.put(key, b"v", start, start + 1);
    }
    let sizes: Vec<usize> = history_after(&fixture, 0, 2).iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    let mut delivered = 0;
    let finished = fixture
        .reader()
        .committed_after((b"", b""), ts(0), (2, usize::MAX), |batch| {
            delivered += batch.len();
            false
        })
        .expect("the history reads");
    assert!(!finished && delivered == 2, "a watcher that stops gets no more batches");
}

#[test]
fn a_version_s_previous_version_is_what_the_last_put_or_delete_below_it_left() {
    let fixture = Fixture::new();
    fixture.put(b"k", b"first", 10, 11);
    fixture.commit(b"k", WriteKind::WriteLock, None, 12, 13);
    fixture.put(b"k", b"second", 14, 15);
    fixture.commit(b"k", WriteKind::WriteDelete, None, 16, 17);
    fixture.put(b"k", b"third", 18, 19);
    let reader = fixture.reader();
    let before = |commit_ts: u64| {
        let version = reader.version_before(b"k", ts(commit_ts)).unwrap();
        version.map(|version| (version.value, version.commit_ts.as_u64()))
    };
    assert_eq!(before(11), None, "the first version replaced nothing");
    let first = value(b"first").map(|value| (value, 11));
    assert_eq!(before(15), first, "lock_keys changed nothing");
    assert_eq!(before(17), value(b"second").map(|value| (value, 15)));
    assert_eq!(before(19), None, "a delete leaves no value");
}

#[test]
fn a_catch_up_batch_is_cut_when_its_values_reach_the_byte_budget() {
    let fixture = Fixture::new();
    for (index, key) in [b"a", b"b", b"c"].into_iter().enumerate() {
        let start = 10 + 2 * index as u64;
        fixture.put(key, &[7; 100], start, start + 1);
    }
    let mut sizes = Vec::new();
    let finished = fixture
        .reader()
        .committed_after((b"", b""), ts(0), (10, 150), |batch| {
            sizes.push(batch.len());
            true
        })
        .expect("the history reads");
    assert!(finished);
    assert_eq!(sizes, vec![2, 1], "cut once 202 bytes passed the budget of 150");
}

#[test]
fn reads_name_the_commit_timestamp_of_the_version_they_return() {
    let fixture = Fixture::new();
    fixture.put(b"a", b"old", 10, 11);
    fixture.put(b"a", b"new", 12, 13);
    fixture.put(b"b", b"only", 14, 15);
    let reader = fixture.reader();
    let version = |value: &[u8], commit_ts: u64| super::reader::Version {
        value: value.to_vec(),
        commit_ts: ts(commit_ts),
    };
    assert_eq!(reader.get_version(b"a", ts(12)).unwrap(), Some(version(b"old", 11)));
    assert_eq!(reader.get_version(b"a", ts(20)).unwrap(), Some(version(b"new", 13)));
    let pairs = reader.scan_versions(b"", b"", ts(20), 0, true).unwrap();
    let wanted = vec![(b"b".to_vec(), version(b"only", 15)), (b"a".to_vec(), version(b"new", 13))];
    assert_eq!(pairs, wanted, "backwards too, each key's newest visible version");
}

fn refresh(fixture: &Fixture, after: u64, up_to: u64, own: u64) -> Result<Refresh, MvccError> {
    fixture.reader().refresh((b"a", b"z"), ts(after), ts(up_to), ts(own))
}

#[test]
fn a_refresh_finds_a_key_created_changed_or_deleted_between_start_and_commit() {
    let fixture = Fixture::new();
    fixture.put(b"b", b"old", 5, 10);
    assert_eq!(refresh(&fixture, 10, 30, 10), Ok(Refresh::Unchanged), "committed at the start: read then");
    fixture.put(b"c", b"new", 15, 20);
    assert_eq!(refresh(&fixture, 10, 30, 10), Ok(Refresh::Changed(b"c".to_vec())), "a phantom");
    assert_eq!(refresh(&fixture, 10, 19, 10), Ok(Refresh::Unchanged), "after the commit: serialized later");
    fixture.commit(b"b", WriteKind::WriteDelete, None, 24, 25);
    assert_eq!(refresh(&fixture, 20, 30, 20), Ok(Refresh::Changed(b"b".to_vec())), "a delete");
    // Outside the range: no change of it.
    fixture.put(b"zz", b"v", 26, 27);
    assert_eq!(refresh(&fixture, 25, 30, 25), Ok(Refresh::Unchanged));
}

#[test]
fn a_refresh_passes_over_locked_reads_rollbacks_and_its_own_locks() {
    let fixture = Fixture::new();
    fixture.commit(b"b", WriteKind::WriteLock, None, 12, 14);
    fixture.commit(b"c", WriteKind::WriteRollback, None, 16, 16);
    fixture.lock(b"d", b"d", 10, Mutation::Put);
    fixture.lock(b"e", b"x", 18, Mutation::Lock);
    assert_eq!(refresh(&fixture, 10, 30, 10), Ok(Refresh::Unchanged));
}

#[test]
fn a_refresh_is_refused_by_another_transactions_lock_that_may_commit_below_its_end() {
    let fixture = Fixture::new();
    fixture.lock(b"d", b"p", 20, Mutation::Put);
    let Err(MvccError::Locked(lock)) = refresh(&fixture, 10, 30, 10) else {
        panic!("a live writer's lock in the range must stop the refresh");
    };
    assert_eq!((lock.key.as_slice(), lock.start_ts), (&b"d"[..], 20));
    assert_eq!(
        refresh(&fixture, 10, 19, 10),
        Ok(Refresh::Unchanged),
        "a lock above the end commits above it"
    );
}

#[test]
fn a_refresh_includes_its_end_and_a_lock_taken_at_its_end() {
    let fixture = Fixture::new();
    fixture.put(b"c", b"v", 25, 30);
    assert_eq!(refresh(&fixture, 10, 30, 10), Ok(Refresh::Changed(b"c".to_vec())), "committed at the end");
    assert_eq!(refresh(&fixture, 30, 40, 10), Ok(Refresh::Unchanged), "committed at the start");
    fixture.lock(b"d", b"d", 40, Mutation::Put);
    assert!(
        matches!(refresh(&fixture, 30, 40, 30), Err(MvccError::Locked(_))),
        "met, as a read at the end meets it"
    );
}
