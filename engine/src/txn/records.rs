//! A key's lock and commit records as the apply round sees them: the database with the
//! round's batch over it ([`ApplyBatch`]), so that a command sees the commands applied
//! before it in the same round. Decoding failures are corruption of the node's
//! database, reported as such. The writes every action shares are here too.

use std::collections::BTreeMap;

use prost::Message as _;
use rocksdb::{Direction, IteratorMode, ReadOptions};

use crate::feed::{Change, FeedEvent};
use crate::mvcc::key::{lock_key, split_version_key, version_key};
use crate::mvcc::reader::RecordDefect;
use crate::proto::mvcc::{Lock, Mutation, Write, WriteKind};
use crate::storage::{ApplyBatch, Cf, Engine, EngineError, Record};
use crate::timestamp::Timestamp;

fn corrupt(cf: Cf, key: &[u8], error: prost::DecodeError) -> EngineError {
    EngineError::corrupt(Record::Key { cf, key: key.to_vec() }, error)
}

/// The lock on `key`, if any.
pub(super) fn lock(engine: &Engine, batch: &ApplyBatch, key: &[u8]) -> Result<Option<Lock>, EngineError> {
    let stored = lock_key(key);
    let Some(bytes) = batch.get(engine, Cf::Lock, &stored)? else { return Ok(None) };
    Lock::decode(bytes.as_slice()).map(Some).map_err(|error| corrupt(Cf::Lock, &stored, error))
}

/// The lock on `key` if it is the transaction's that started at `start_ts`.
pub(super) fn own_lock(
    engine: &Engine,
    batch: &ApplyBatch,
    key: &[u8],
    start_ts: Timestamp,
) -> Result<Option<Lock>, EngineError> {
    Ok(lock(engine, batch, key)?.filter(|lock| lock.start_ts == start_ts.as_u64()))
}

/// The commit and rollback records of `key` at or after `since`, newest first.
pub(super) fn records_since(
    engine: &Engine,
    batch: &ApplyBatch,
    key: &[u8],
    since: Timestamp,
) -> Result<Vec<(Timestamp, Write)>, EngineError> {
    // Newer versions sort first: [version(MAX), version(since)] is the span.
    let lower = version_key(key, Timestamp::MAX);
    let mut upper = version_key(key, since);
    upper.push(0);
    let mut options = ReadOptions::default();
    options.set_iterate_upper_bound(upper.clone());
    let mode = IteratorMode::From(&lower, Direction::Forward);
    let mut stored: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for item in engine.db().iterator_cf_opt(engine.cf(Cf::Write)?, options, mode) {
        let (encoded, value) = item?;
        if !batch.in_deleted_range(Cf::Write, &encoded) {
            stored.insert(encoded.to_vec(), value.to_vec());
        }
    }
    for (encoded, staged) in batch.overlay_range(Cf::Write, &lower, &upper) {
        match staged {
            Some(value) => stored.insert(encoded.to_vec(), value.clone()),
            None => stored.remove(encoded),
        };
    }
    stored
        .into_iter()
        .map(|(encoded, value)| {
            let (_, commit_ts) = split_version_key(&encoded).map_err(|defect| {
                let record = Record::Key { cf: Cf::Write, key: encoded.clone() };
                EngineError::corrupt(record, RecordDefect::Key(defect))
            })?;
            let record =
                Write::decode(value.as_slice()).map_err(|error| corrupt(Cf::Write, &encoded, error))?;
            Ok((commit_ts, record))
        })
        .collect()
}

/// What the transaction that started at `start_ts` left on `key`: its commit record
/// (with the commit timestamp) or its rollback record, if either is there.
pub(super) fn outcome(
    engine: &Engine,
    batch: &ApplyBatch,
    key: &[u8],
    start_ts: Timestamp,
) -> Result<Option<(Timestamp, Write)>, EngineError> {
    let records = records_since(engine, batch, key, start_ts)?;
    Ok(records.into_iter().find(|(_, record)| record.start_ts == start_ts.as_u64()))
}

/// Takes a lock on `key` for the transaction described by `lock`.
pub(super) fn put_lock(
    engine: &Engine,
    batch: &mut ApplyBatch,
    key: &[u8],
    lock: &Lock,
) -> Result<(), EngineError> {
    batch.put(engine, Cf::Lock, lock_key(key), lock.encode_to_vec())?;
    batch.capture(Change::Locked { key: key.to_vec(), start_ts: Timestamp::from_u64(lock.start_ts) });
    Ok(())
}

/// Deletes the lock the transaction that started at `start_ts` holds on `key` (its
/// staged value stays: it committed).
pub(super) fn release_lock(
    engine: &Engine,
    batch: &mut ApplyBatch,
    key: &[u8],
    start_ts: Timestamp,
) -> Result<(), EngineError> {
    batch.delete(engine, Cf::Lock, lock_key(key))?;
    batch.capture(Change::Unlocked { key: key.to_vec(), start_ts });
    Ok(())
}

/// The longest value kept in its lock and commit record rather than in the versions
/// family.
pub(crate) const MAX_SHORT_VALUE_BYTES: usize = 255;

/// Stages the value a put of the transaction that started at `start_ts` writes: a
/// short value is answered back to go in the lock (or commit record), a longer one is
/// written to the versions family.
pub(super) fn stage_value(
    engine: &Engine,
    batch: &mut ApplyBatch,
    key: &[u8],
    start_ts: Timestamp,
    value: &[u8],
) -> Result<Option<Vec<u8>>, EngineError> {
    if value.len() <= MAX_SHORT_VALUE_BYTES {
        return Ok(Some(value.to_vec()));
    }
    batch.put(engine, Cf::Versions, version_key(key, start_ts), value.to_vec())?;
    Ok(None)
}

/// The commit record's kind for a mutation.
pub(super) fn committed_kind(mutation: Mutation) -> WriteKind {
    match mutation {
        Mutation::Put => WriteKind::WritePut,
        Mutation::Delete => WriteKind::WriteDelete,
        Mutation::Lock => WriteKind::WriteLock,
    }
}

/// Writes the record of the transaction that started at `start_ts` committing `key` at
/// `commit_ts` (with the put's value when it is short).
pub(super) fn put_commit_record(
    engine: &Engine,
    batch: &mut ApplyBatch,
    key: &[u8],
    commit_ts: Timestamp,
    (kind, short_value): (WriteKind, Option<Vec<u8>>),
    start_ts: Timestamp,
) -> Result<(), EngineError> {
    if batch.capturing() && matches!(kind, WriteKind::WritePut | WriteKind::WriteDelete) {
        let value = match (kind, &short_value) {
            (WriteKind::WritePut, Some(value)) => Some(value.clone()),
            (WriteKind::WritePut, None) => Some(staged_value(engine, batch, key, (start_ts, commit_ts))?),
            _ => None,
        };
        batch.capture(Change::Committed(FeedEvent { key: key.to_vec(), value, start_ts, commit_ts }));
    }
    let record = Write { kind: kind as i32, start_ts: start_ts.as_u64(), short_value };
    batch.put(engine, Cf::Write, version_key(key, commit_ts), record.encode_to_vec())
}

/// The long value the transaction that started at `start_ts` staged for `key` in the
/// versions family; it is there until the transaction's commit record is.
fn staged_value(
    engine: &Engine,
    batch: &ApplyBatch,
    key: &[u8],
    (start_ts, commit_ts): (Timestamp, Timestamp),
) -> Result<Vec<u8>, EngineError> {
    let stored = version_key(key, start_ts);
    batch.get(engine, Cf::Versions, &stored)?.ok_or_else(|| {
        let defect = RecordDefect::MissingValue { commit_ts, start_ts };
        EngineError::corrupt(Record::Key { cf: Cf::Versions, key: stored }, defect)
    })
}

/// Removes the lock `lock` the transaction that started at `start_ts` holds on `key`,
/// and the value it staged there.
pub(super) fn remove_lock(
    engine: &Engine,
    batch: &mut ApplyBatch,
    key: &[u8],
    start_ts: Timestamp,
    lock: &Lock,
) -> Result<(), EngineError> {
    release_lock(engine, batch, key, start_ts)?;
    if lock.mutation() == Mutation::Put && lock.short_value.is_none() {
        batch.delete(engine, Cf::Versions, version_key(key, start_ts))?;
    }
    Ok(())
}

/// Rolls back the transaction that started at `start_ts` on `key`: removes its lock
/// and staged value (the lock it holds there, if any, is `lock`) and leaves a rollback
/// record under its start timestamp.
pub(super) fn roll_back_key(
    engine: &Engine,
    batch: &mut ApplyBatch,
    key: &[u8],
    start_ts: Timestamp,
    lock: Option<&Lock>,
) -> Result<(), EngineError> {
    if let Some(lock) = lock {
        remove_lock(engine, batch, key, start_ts, lock)?;
    }
    // Timestamps are unique, so no other transaction's commit record sits at start_ts;
    // should one ever do, it is kept: a record that says "committed" must never be
    // overwritten, and a prewrite of ours is refused by it as a conflict anyway.
    let at_start = version_key(key, start_ts);
    if batch.get(engine, Cf::Write, &at_start)?.is_some() {
        return Ok(());
    }
    let record =
        Write { kind: WriteKind::WriteRollback as i32, start_ts: start_ts.as_u64(), short_value: None };
    batch.put(engine, Cf::Write, at_start, record.encode_to_vec())
}
