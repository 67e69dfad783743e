//! Percolator's rules against a real RocksDB: each command applied through an apply
//! batch as the store applies it, and the outcome read back at timestamps.

use prost::Message as _;

use super::*;
use crate::kv::KvError;
use crate::mvcc::key::lock_key;
use crate::mvcc::reader::{MvccError, MvccReader};
use crate::proto::command::{
    CheckTxnStatus, Commit, KeyError, Mutation, Prewrite, Rollback, TxnHeartBeat, TxnResult, TxnState,
    key_error, write,
};
use crate::proto::metadata::{Region, RegionEpoch};
use crate::proto::mvcc::{self, Lock};
use crate::storage::{ApplyBatch, Cf, Engine};
use crate::timestamp::Timestamp;

const TTL_MS: u64 = 3000;

/// A timestamp at `milliseconds` past some epoch, logical 0.
fn at_ms(milliseconds: u64) -> u64 {
    Timestamp::new(1_000_000 + milliseconds, 0).expect("fits").as_u64()
}

struct Fixture {
    engine: Engine,
    /// The region's garbage-collection fence, as fence commands raise it.
    fence: std::cell::Cell<Timestamp>,
    _dir: tempfile::TempDir,
}

fn put(key: &str, value: &str) -> Mutation {
    Mutation { op: mvcc::Mutation::Put as i32, key: key.into(), value: value.into() }
}

fn delete(key: &str) -> Mutation {
    Mutation { op: mvcc::Mutation::Delete as i32, key: key.into(), value: Vec::new() }
}

fn lock_only(key: &str) -> Mutation {
    Mutation { op: mvcc::Mutation::Lock as i32, key: key.into(), value: Vec::new() }
}

fn prewrite_of(start_ts: u64, primary: &str, mutations: Vec<Mutation>) -> Prewrite {
    Prewrite { start_ts, primary: primary.into(), lock_ttl_ms: TTL_MS, mutations, one_phase_commit_ts: 0 }
}

fn keys(names: &[&str]) -> Vec<Vec<u8>> {
    names.iter().map(|name| name.as_bytes().to_vec()).collect()
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let engine = Engine::open(dir.path()).expect("the engine opens");
        Fixture { engine, fence: std::cell::Cell::new(Timestamp::ZERO), _dir: dir }
    }

    /// Applies commands in one batch, as one apply round does, and writes it.
    fn apply_all(&self, commands: &[write::Kind]) -> Vec<TxnResult> {
        let mut batch = ApplyBatch::default();
        let whole = Region::default();
        let results = commands
            .iter()
            .map(|command| {
                let fence = self.fence.get();
                match command {
                    write::Kind::Prewrite(c) => prewrite(&self.engine, &mut batch, fence, c),
                    write::Kind::Commit(c) => commit(&self.engine, &mut batch, fence, c),
                    write::Kind::Rollback(c) => rollback(&self.engine, &mut batch, fence, c),
                    write::Kind::CheckTxnStatus(c) => check_txn_status(&self.engine, &mut batch, fence, c),
                    write::Kind::TxnHeartBeat(c) => heart_beat(&self.engine, &mut batch, c),
                    write::Kind::TxnFence(c) => {
                        let mut raised = fence;
                        let result = super::fence(&self.engine, &batch, &whole, &mut raised, c);
                        self.fence.set(raised);
                        result
                    }
                    _ => panic!("not a transactional command"),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .expect("applied");
        self.engine.write(batch.take(), false).expect("written");
        results
    }

    fn apply(&self, command: write::Kind) -> TxnResult {
        self.apply_all(&[command]).pop().expect("one result")
    }

    fn prewrite(&self, start_ts: u64, primary: &str, mutations: Vec<Mutation>) -> TxnResult {
        self.apply(write::Kind::Prewrite(prewrite_of(start_ts, primary, mutations)))
    }

    fn commit(&self, start_ts: u64, commit_ts: u64, names: &[&str]) -> TxnResult {
        self.apply(write::Kind::Commit(Commit { start_ts, commit_ts, keys: keys(names) }))
    }

    fn rollback(&self, start_ts: u64, names: &[&str]) -> TxnResult {
        self.apply(write::Kind::Rollback(Rollback { start_ts, keys: keys(names) }))
    }

    fn status(&self, primary: &str, start_ts: u64, current_ts: u64, rollback_if_missing: bool) -> TxnResult {
        let check = CheckTxnStatus { primary: primary.into(), start_ts, current_ts, rollback_if_missing };
        self.apply(write::Kind::CheckTxnStatus(check))
    }

    fn get(&self, key: &str, read_ts: u64) -> Result<Option<Vec<u8>>, MvccError> {
        MvccReader::new(&self.engine).get(key.as_bytes(), Timestamp::from_u64(read_ts))
    }

    fn value(&self, key: &str, read_ts: u64) -> Option<String> {
        let value = self.get(key, read_ts).expect("no lock in the way");
        value.map(|bytes| String::from_utf8(bytes).expect("utf-8"))
    }

    fn stored_lock(&self, key: &str) -> Option<Lock> {
        let bytes = self.engine.get(Cf::Lock, &lock_key(key.as_bytes())).expect("readable")?;
        Some(Lock::decode(bytes.as_slice()).expect("decodes"))
    }
}

fn refusals(result: &TxnResult) -> Vec<(String, key_error::Kind)> {
    result
        .errors
        .iter()
        .map(|KeyError { key, kind }| {
            (String::from_utf8_lossy(key).into_owned(), kind.clone().expect("a kind"))
        })
        .collect()
}

fn state(result: &TxnResult) -> (TxnState, u64) {
    let status = result.status.expect("a status");
    (status.state(), status.commit_ts)
}

#[test]
fn a_committed_transaction_is_visible_from_its_commit_timestamp_on() {
    let fixture = Fixture::new();
    assert!(fixture.prewrite(10, "a", vec![put("a", "1"), put("b", "2")]).errors.is_empty());
    assert!(fixture.commit(10, 20, &["a", "b"]).errors.is_empty());
    assert_eq!(fixture.value("a", 19), None, "invisible before its commit");
    assert_eq!(fixture.value("a", 20).as_deref(), Some("1"));
    assert_eq!(fixture.value("b", 99).as_deref(), Some("2"));
    assert!(fixture.stored_lock("a").is_none() && fixture.stored_lock("b").is_none(), "locks released");
}

#[test]
fn a_prewritten_key_blocks_readers_at_or_after_its_start_until_resolved() {
    let fixture = Fixture::new();
    fixture.prewrite(10, "a", vec![put("a", "1")]);
    assert!(matches!(fixture.get("a", 10), Err(MvccError::Locked(lock)) if lock.start_ts == 10));
    assert_eq!(fixture.value("a", 9), None, "a reader before the transaction ignores its lock");
}

#[test]
fn prewrite_refuses_a_key_another_transaction_locked_and_writes_nothing() {
    let fixture = Fixture::new();
    fixture.prewrite(10, "a", vec![put("a", "1")]);
    let refused = fixture.prewrite(12, "b", vec![put("b", "2"), put("a", "3")]);
    let found = refusals(&refused);
    assert_eq!(found.len(), 1);
    assert!(matches!(&found[0], (key, key_error::Kind::Locked(lock)) if key == "a" && lock.start_ts == 10));
    assert!(fixture.stored_lock("b").is_none(), "no key of a refused prewrite is locked");
}

#[test]
fn a_write_committed_after_a_transactions_start_is_a_write_write_conflict() {
    let fixture = Fixture::new();
    fixture.prewrite(10, "a", vec![put("a", "1")]);
    fixture.commit(10, 20, &["a"]);
    let refused = fixture.prewrite(15, "a", vec![put("a", "late")]);
    assert_eq!(refusals(&refused), vec![("a".into(), key_error::Kind::ConflictCommitTs(20))]);
    // A transaction that started after the commit writes over it.
    assert!(fixture.prewrite(25, "a", vec![put("a", "2")]).errors.is_empty());
}

#[test]
fn a_locked_read_conflicts_with_a_write_committed_after_the_start_no_write_skew() {
    // T1 reads x and writes y; T2 writes x and commits first. Locking x makes T1's
    // commit fail instead of committing a decision based on a stale read of x.
    let fixture = Fixture::new();
    fixture.prewrite(12, "x", vec![put("x", "t2")]);
    fixture.commit(12, 14, &["x"]);
    let t1 = fixture.prewrite(10, "y", vec![put("y", "t1"), lock_only("x")]);
    assert_eq!(refusals(&t1), vec![("x".into(), key_error::Kind::ConflictCommitTs(14))]);
}

#[test]
fn a_committed_lock_only_key_keeps_its_value_and_reads_pass_its_lock() {
    let fixture = Fixture::new();
    fixture.prewrite(5, "x", vec![put("x", "v")]);
    fixture.commit(5, 6, &["x"]);
    fixture.prewrite(10, "x", vec![lock_only("x")]);
    assert_eq!(fixture.value("x", 11).as_deref(), Some("v"), "a read lock blocks no reader");
    fixture.commit(10, 12, &["x"]);
    assert_eq!(fixture.value("x", 13).as_deref(), Some("v"));
}

#[test]
fn a_committed_delete_hides_the_value_from_then_on() {
    let fixture = Fixture::new();
    fixture.prewrite(5, "x", vec![put("x", "v")]);
    fixture.commit(5, 6, &["x"]);
    fixture.prewrite(10, "x", vec![delete("x")]);
    fixture.commit(10, 12, &["x"]);
    assert_eq!(fixture.value("x", 11).as_deref(), Some("v"));
    assert_eq!(fixture.value("x", 12), None);
}

#[test]
fn prewrite_commit_and_rollback_are_idempotent() {
    let fixture = Fixture::new();
    let prewrite = || fixture.prewrite(10, "a", vec![put("a", "1")]);
    assert!(prewrite().errors.is_empty());
    assert!(prewrite().errors.is_empty(), "a resent prewrite finds its own lock");
    assert!(fixture.commit(10, 20, &["a"]).errors.is_empty());
    assert!(fixture.commit(10, 20, &["a"]).errors.is_empty(), "a resent commit finds its own record");
    assert!(prewrite().errors.is_empty(), "a prewrite resent after the commit changes nothing");
    assert!(fixture.stored_lock("a").is_none());
    assert_eq!(fixture.value("a", 30).as_deref(), Some("1"));

    fixture.prewrite(40, "b", vec![put("b", "1")]);
    assert!(fixture.rollback(40, &["b"]).errors.is_empty());
    assert!(fixture.rollback(40, &["b"]).errors.is_empty());
    assert_eq!(fixture.value("b", 50), None);
}

#[test]
fn a_rolled_back_transaction_can_neither_prewrite_late_nor_commit() {
    let fixture = Fixture::new();
    // The rollback comes before the prewrite it races with (a resolver gave up on it).
    assert!(fixture.rollback(10, &["a"]).errors.is_empty());
    let late = fixture.prewrite(10, "a", vec![put("a", "1")]);
    assert_eq!(refusals(&late), vec![("a".into(), key_error::Kind::RolledBack(true))]);
    assert!(fixture.stored_lock("a").is_none());
    let commit = fixture.commit(10, 20, &["a"]);
    assert_eq!(refusals(&commit), vec![("a".into(), key_error::Kind::RolledBack(true))]);
    assert_eq!(fixture.value("a", 30), None);
}

#[test]
fn a_committed_transaction_refuses_to_be_rolled_back() {
    let fixture = Fixture::new();
    fixture.prewrite(10, "a", vec![put("a", "1"), put("b", "2")]);
    fixture.commit(10, 20, &["a"]);
    let refused = fixture.rollback(10, &["b", "a"]);
    assert_eq!(refusals(&refused), vec![("a".into(), key_error::Kind::CommittedAt(20))]);
    assert!(fixture.stored_lock("b").is_some(), "a refused rollback changes nothing, on any key");
}

#[test]
fn a_commit_of_a_key_never_prewritten_is_refused() {
    let fixture = Fixture::new();
    let refused = fixture.commit(10, 20, &["a"]);
    assert_eq!(refusals(&refused), vec![("a".into(), key_error::Kind::LockMissing(true))]);
    // Another transaction's lock is not ours to commit.
    fixture.prewrite(30, "a", vec![put("a", "x")]);
    let refused = fixture.commit(10, 40, &["a"]);
    assert_eq!(refusals(&refused), vec![("a".into(), key_error::Kind::LockMissing(true))]);
    assert!(matches!(fixture.get("a", 50), Err(MvccError::Locked(_))), "the other lock stays");
}

#[test]
fn the_primary_decides_a_transactions_fate_for_every_resolver() {
    let fixture = Fixture::new();
    let start = at_ms(0);
    fixture.prewrite(start, "p", vec![put("p", "1"), put("s", "2")]);
    let live = fixture.status("p", start, at_ms(TTL_MS - 1), false);
    assert_eq!(state(&live), (TxnState::Locked, 0));
    assert_eq!(live.status.expect("status").ttl_ms, TTL_MS);
    fixture.commit(start, at_ms(10), &["p"]);
    assert_eq!(state(&fixture.status("p", start, at_ms(TTL_MS + 5), true)), (TxnState::Committed, at_ms(10)));
    assert!(fixture.stored_lock("p").is_none());
}

#[test]
fn an_expired_primary_is_rolled_back_by_the_status_check_and_the_coordinator_cannot_commit() {
    let fixture = Fixture::new();
    let start = at_ms(0);
    fixture.prewrite(start, "p", vec![put("p", "1")]);
    assert_eq!(state(&fixture.status("p", start, at_ms(TTL_MS), false)), (TxnState::RolledBack, 0));
    assert!(fixture.stored_lock("p").is_none());
    let commit = fixture.commit(start, at_ms(TTL_MS + 1), &["p"]);
    assert_eq!(refusals(&commit), vec![("p".into(), key_error::Kind::RolledBack(true))]);
    assert_eq!(fixture.value("p", at_ms(TTL_MS + 2)), None);
}

#[test]
fn a_missing_primary_is_left_alone_unless_asked_and_then_can_never_be_prewritten() {
    let fixture = Fixture::new();
    let start = at_ms(0);
    assert_eq!(state(&fixture.status("p", start, at_ms(1), false)), (TxnState::PrimaryMissing, 0));
    assert!(fixture.prewrite(start, "p", vec![put("p", "1")]).errors.is_empty(), "nothing was written");
    fixture.rollback(start, &["p"]);
    let other = at_ms(100);
    assert_eq!(state(&fixture.status("q", other, at_ms(TTL_MS * 2), true)), (TxnState::RolledBack, 0));
    let late = fixture.prewrite(other, "q", vec![put("q", "1")]);
    assert_eq!(refusals(&late), vec![("q".into(), key_error::Kind::RolledBack(true))]);
}

#[test]
fn a_heartbeat_extends_a_live_lock_and_never_shortens_it() {
    let fixture = Fixture::new();
    let start = at_ms(0);
    fixture.prewrite(start, "p", vec![put("p", "1")]);
    let beat = |ttl_ms| {
        fixture.apply(write::Kind::TxnHeartBeat(TxnHeartBeat {
            primary: "p".into(),
            start_ts: start,
            ttl_ms,
        }))
    };
    assert_eq!(beat(10_000).ttl_ms, 10_000);
    assert_eq!(beat(5_000).ttl_ms, 10_000, "never shortened");
    assert_eq!(state(&fixture.status("p", start, at_ms(9_999), false)), (TxnState::Locked, 0));
    fixture.commit(start, at_ms(20), &["p"]);
    assert_eq!(refusals(&beat(20_000)), vec![("p".into(), key_error::Kind::LockMissing(true))]);
}

#[test]
fn a_one_phase_commit_writes_records_and_no_locks() {
    let fixture = Fixture::new();
    let mut prewrite = prewrite_of(10, "a", vec![put("a", "1"), put("b", "2")]);
    prewrite.one_phase_commit_ts = 20;
    assert!(fixture.apply(write::Kind::Prewrite(prewrite.clone())).errors.is_empty());
    assert!(fixture.stored_lock("a").is_none() && fixture.stored_lock("b").is_none());
    assert_eq!(fixture.value("a", 19), None);
    assert_eq!(fixture.value("b", 20).as_deref(), Some("2"));
    assert!(fixture.apply(write::Kind::Prewrite(prewrite)).errors.is_empty(), "resent: already committed");
    let conflicting = fixture.prewrite(15, "a", vec![put("a", "x")]);
    assert_eq!(refusals(&conflicting), vec![("a".into(), key_error::Kind::ConflictCommitTs(20))]);
}

#[test]
fn a_command_sees_the_commands_applied_before_it_in_the_same_round() {
    let fixture = Fixture::new();
    let results = fixture.apply_all(&[
        write::Kind::Prewrite(prewrite_of(10, "a", vec![put("a", "1")])),
        write::Kind::Commit(Commit { start_ts: 10, commit_ts: 20, keys: keys(&["a"]) }),
        write::Kind::Prewrite(prewrite_of(15, "a", vec![put("a", "2")])),
        write::Kind::Prewrite(prewrite_of(30, "b", vec![put("b", "3")])),
        write::Kind::Rollback(Rollback { start_ts: 30, keys: keys(&["b"]) }),
    ]);
    assert!(results[0].errors.is_empty() && results[1].errors.is_empty());
    assert_eq!(refusals(&results[2]), vec![("a".into(), key_error::Kind::ConflictCommitTs(20))]);
    assert!(results[4].errors.is_empty());
    assert_eq!(fixture.value("a", 25).as_deref(), Some("1"));
    assert_eq!(fixture.value("b", 40), None);
    assert!(fixture.stored_lock("b").is_none());
}

#[test]
fn commands_that_can_never_be_right_are_refused_before_they_are_proposed() {
    let region = Region {
        id: 1,
        start_key: b"a".to_vec(),
        end_key: b"m".to_vec(),
        epoch: Some(RegionEpoch { conf_version: 1, version: 1 }),
        peers: Vec::new(),
    };
    let refused = |command: write::Kind| match check(&region, &command) {
        Err(KvError::Transaction(error)) => Some(error),
        Err(other) => panic!("expected a transaction refusal, got {other:?}"),
        Ok(()) => None,
    };
    assert_eq!(
        refused(write::Kind::Prewrite(prewrite_of(0, "b", vec![put("b", "1")]))),
        Some(TxnCheckError::ZeroStartTs)
    );
    assert_eq!(refused(write::Kind::Prewrite(prewrite_of(5, "b", vec![]))), Some(TxnCheckError::NoKeys));
    assert_eq!(
        refused(write::Kind::Prewrite(prewrite_of(5, "b", vec![put("b", "1"), delete("b")]))),
        Some(TxnCheckError::DuplicateKey(b"b".to_vec()))
    );
    let mut valued_delete = delete("c");
    valued_delete.value = b"x".to_vec();
    assert!(matches!(
        refused(write::Kind::Prewrite(prewrite_of(5, "b", vec![valued_delete]))),
        Some(TxnCheckError::ValueWithoutPut { .. })
    ));
    let mut long_lived = prewrite_of(5, "b", vec![put("b", "1")]);
    long_lived.lock_ttl_ms = MAX_LOCK_TTL_MS + 1;
    assert!(matches!(refused(write::Kind::Prewrite(long_lived)), Some(TxnCheckError::LockTtlTooLong { .. })));
    let mut one_phase = prewrite_of(5, "z", vec![put("b", "1")]);
    one_phase.one_phase_commit_ts = 9;
    assert_eq!(refused(write::Kind::Prewrite(one_phase)), Some(TxnCheckError::OnePhaseWithoutPrimary));
    let backwards = Commit { start_ts: 5, commit_ts: 5, keys: keys(&["b"]) };
    assert!(matches!(
        refused(write::Kind::Commit(backwards)),
        Some(TxnCheckError::CommitNotAfterStart { .. })
    ));
    // Outside the region: the region's refusal, so that the client refreshes its route.
    let outside = write::Kind::Rollback(Rollback { start_ts: 5, keys: keys(&["x"]) });
    assert!(matches!(check(&region, &outside), Err(KvError::Region(_))));
    // The primary may live in another region: only the mutations must be here.
    assert_eq!(refused(write::Kind::Prewrite(prewrite_of(5, "z", vec![put("b", "1")]))), None);
}

#[test]
fn long_values_live_in_the_versions_family_and_leave_with_a_rollback() {
    let fixture = Fixture::new();
    let long = "x".repeat(records::MAX_SHORT_VALUE_BYTES + 1);
    let versions = |fixture: &Fixture| {
        let family = fixture.engine.cf(Cf::Versions).expect("the family");
        fixture.engine.db().iterator_cf(family, rocksdb::IteratorMode::Start).count()
    };
    fixture.prewrite(10, "a", vec![put("a", &long), put("b", "short")]);
    assert_eq!(versions(&fixture), 1, "only the long value is staged apart");
    fixture.commit(10, 20, &["a", "b"]);
    assert_eq!(fixture.value("a", 25).as_deref(), Some(long.as_str()));
    assert_eq!(fixture.value("b", 25).as_deref(), Some("short"));
    fixture.prewrite(30, "a", vec![put("a", &format!("{long}2"))]);
    assert_eq!(versions(&fixture), 2);
    fixture.rollback(30, &["a"]);
    assert_eq!(versions(&fixture), 1, "a rollback removes the staged value");
    let mut one_phase = prewrite_of(40, "c", vec![put("c", &long)]);
    one_phase.one_phase_commit_ts = 41;
    fixture.apply(write::Kind::Prewrite(one_phase));
    assert_eq!(fixture.value("c", 41).as_deref(), Some(long.as_str()));
}

#[test]
fn a_prewrite_resent_after_its_commit_finds_it_though_others_wrote_the_key_since() {
    let fixture = Fixture::new();
    // One phase at 20, its answer lost; another transaction then writes the key.
    let mut one_phase = prewrite_of(10, "a", vec![put("a", "first")]);
    one_phase.one_phase_commit_ts = 20;
    fixture.apply(write::Kind::Prewrite(one_phase.clone()));
    fixture.prewrite(25, "a", vec![put("a", "second")]);
    // Resent while the other holds its lock: committed at 20, not a conflict.
    let mut resent = one_phase.clone();
    resent.one_phase_commit_ts = 27;
    let answer = fixture.apply(write::Kind::Prewrite(resent.clone()));
    assert!(answer.errors.is_empty(), "{:?}", answer.errors);
    assert_eq!(state(&answer), (TxnState::Committed, 20), "the recorded commit timestamp");
    fixture.commit(25, 30, &["a"]);
    // And after the other committed: still its own commit, at 20.
    assert_eq!(state(&fixture.apply(write::Kind::Prewrite(resent))), (TxnState::Committed, 20));
    // The two-phase fallback finds it too, and its commit answers the recorded time.
    assert!(fixture.prewrite(10, "a", vec![put("a", "first")]).errors.is_empty());
    assert_eq!(state(&fixture.commit(10, 40, &["a"])), (TxnState::Committed, 20));
    assert_eq!(fixture.value("a", 29).as_deref(), Some("first"));
    assert_eq!(fixture.value("a", 30).as_deref(), Some("second"));
}

fn fence_command(fence_ts: u64) -> write::Kind {
    write::Kind::TxnFence(crate::proto::command::TxnFence { fence_ts, lock_limit: 100 })
}

/// The start timestamps of the locks a fence answered.
fn fenced_locks(result: &TxnResult) -> Vec<u64> {
    let locked = result.errors.iter().filter_map(|error| match &error.kind {
        Some(key_error::Kind::Locked(info)) => Some(info.start_ts),
        _ => None,
    });
    locked.collect()
}

fn write_records(fixture: &Fixture) -> usize {
    let handle = fixture.engine.cf(Cf::Write).expect("family");
    fixture.engine.db().iterator_cf(handle, rocksdb::IteratorMode::Start).count()
}

#[test]
fn a_fence_answers_the_locks_at_or_below_it_even_those_taken_earlier_in_the_same_round() {
    let fixture = Fixture::new();
    fixture.prewrite(10, "a", vec![put("a", "1")]);
    fixture.prewrite(50, "b", vec![put("b", "1")]);
    let results = fixture
        .apply_all(&[write::Kind::Prewrite(prewrite_of(20, "c", vec![put("c", "1")])), fence_command(30)]);
    assert_eq!(fenced_locks(&results[1]), vec![10, 20], "b's lock started above the fence");
    // Never lowered: a late, lower fence leaves it at 30.
    fixture.apply(fence_command(5));
    assert_eq!(fixture.fence.get(), Timestamp::from_u64(30));
}

#[test]
fn below_the_fence_a_transaction_may_only_commit_or_remove_the_locks_it_still_holds() {
    let fixture = Fixture::new();
    fixture.prewrite(10, "a", vec![put("a", "1"), put("b", "1")]);
    fixture.prewrite(12, "c", vec![put("c", "1"), put("d", "1")]);
    fixture.apply(fence_command(20));
    let refused = |result: TxnResult| result.below_fence == 20 && result.errors.is_empty();

    // No new lock for a transaction that started at or below it.
    assert!(refused(fixture.prewrite(20, "e", vec![put("e", "1")])));
    assert_eq!(fixture.stored_lock("e"), None);
    // Its locks commit as usual.
    assert!(fixture.commit(10, 25, &["a"]).errors.is_empty());
    assert_eq!(fixture.value("a", 26).as_deref(), Some("1"));
    // Without the lock on every key, a commit is refused and writes nothing: whether
    // the transaction committed may be unknowable once old records are collected.
    let records = write_records(&fixture);
    assert!(refused(fixture.commit(10, 25, &["a", "b"])));
    assert_eq!(write_records(&fixture), records);
    assert!(fixture.stored_lock("b").is_some(), "b's lock is untouched");
    // A rollback removes the locks it finds and leaves no rollback record; a key
    // without the lock is answered as unverifiable, not as rolled back.
    let rolled = fixture.rollback(12, &["c", "d", "x"]);
    assert!(rolled.errors.is_empty() && rolled.below_fence == 20, "{rolled:?}");
    assert!(fixture.rollback(12, &["c"]).below_fence == 20, "the lock is gone: unverifiable");
    assert_eq!((fixture.stored_lock("c"), fixture.stored_lock("d")), (None, None));
    assert_eq!(write_records(&fixture), records, "no rollback record below the fence");
    // A status check without a lock writes nothing: the primary can never be locked now.
    let answer = fixture.status("x", 15, at_ms(1_000_000), true);
    assert_eq!(state(&answer).0, TxnState::RolledBack);
    assert_eq!(write_records(&fixture), records);
    // Above the fence, everything is as before.
    assert!(fixture.prewrite(21, "e", vec![put("e", "2")]).errors.is_empty());
}
