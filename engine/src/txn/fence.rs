//! Garbage collection's fence in a region (see [`crate::gc`] for the whole protocol).
//!
//! A region's fence only rises, by a [`TxnFence`] command through Raft, so every
//! replica applies each command under the same fence. Garbage collection on a replica
//! never collects above the fence that replica applied, which makes the rule for a
//! transaction that started at or below the fence simple: what it may do must depend on
//! locks alone (the lock family is never collected), never on commit or rollback
//! records, which a replica may have collected and another not yet.
//! - **Prewrite**: refused (`below_fence`). The transaction began too long ago; no new
//!   lock of it may appear, which is what lets the fence's owner publish a safe point
//!   once it resolved the locks already there.
//! - **Commit**: done where every key still holds the transaction's lock; otherwise
//!   refused (`below_fence`), since whether it committed may be unknowable now.
//! - **Rollback**: removes the transaction's locks where it holds them and writes no
//!   rollback record (no prewrite of it can arrive any more); keys without its lock
//!   are left as they are, and the answer says `below_fence`: whether the transaction
//!   committed there cannot be told.
//! - **Status check and heartbeat**: decided by the primary's lock as usual; without a
//!   lock, nothing is written and the answer is what the records still say, or rolled
//!   back (the primary can no longer be prewritten).
//!
//! The fence command itself answers the region's locks at or below the new fence (up
//! to a limit), read through the round's batch, so that its owner resolves them.

use rocksdb::{Direction, IteratorMode, ReadOptions};

use crate::mvcc::key::{range_bounds, split_lock_key};
use crate::proto::command::{KeyError, TxnFence, TxnResult, key_error};
use crate::proto::metadata::Region;
use crate::proto::mvcc::Lock;
use crate::storage::{ApplyBatch, Cf, Engine, EngineError, Record};
use crate::timestamp::Timestamp;

/// Whether a transaction that started at `start_ts` is at or below `fence`.
pub(super) fn below(fence: Timestamp, start_ts: u64) -> bool {
    start_ts <= fence.as_u64()
}

/// The answer to a command refused by the fence (nothing was written), or to a
/// rollback that could not verify every key.
pub(super) fn refused(fence: Timestamp) -> TxnResult {
    TxnResult { below_fence: fence.as_u64(), ..TxnResult::default() }
}

/// Applies a fence command to `region`, whose fence is `*fence`: raises it, and answers
/// the locks at or below it.
pub fn fence(
    engine: &Engine,
    batch: &ApplyBatch,
    region: &Region,
    fence: &mut Timestamp,
    command: &TxnFence,
) -> Result<TxnResult, EngineError> {
    *fence = (*fence).max(Timestamp::from_u64(command.fence_ts));
    let limit = usize::try_from(command.lock_limit).unwrap_or(usize::MAX).max(1);
    let errors = locks_at_or_below(engine, batch, region, *fence, limit)?
        .into_iter()
        .map(|(key, lock)| {
            let info = crate::mvcc::lock_info(&key, &lock);
            KeyError { key, kind: Some(key_error::Kind::Locked(info)) }
        })
        .collect();
    Ok(TxnResult { errors, ..TxnResult::default() })
}

/// Up to `limit` locks of `region` (user key and lock) whose transaction started at or
/// below `fence`, as the database will hold them once `batch` is written.
fn locks_at_or_below(
    engine: &Engine,
    batch: &ApplyBatch,
    region: &Region,
    fence: Timestamp,
    limit: usize,
) -> Result<Vec<(Vec<u8>, Lock)>, EngineError> {
    let (start, end) = range_bounds(&region.start_key, &region.end_key);
    let mut found = Vec::new();
    let mut options = ReadOptions::default();
    options.set_iterate_upper_bound(end.clone());
    let mode = IteratorMode::From(&start, Direction::Forward);
    for item in engine.db().iterator_cf_opt(engine.cf(Cf::Lock)?, options, mode) {
        if found.len() >= limit {
            break;
        }
        let (encoded, value) = item?;
        // The batch's own entries are taken below, over these.
        if batch.in_deleted_range(Cf::Lock, &encoded)
            || batch.overlay_range(Cf::Lock, &encoded, &successor(&encoded)).next().is_some()
        {
            continue;
        }
        push_if_below(&mut found, &encoded, &value, fence)?;
    }
    for (encoded, staged) in batch.overlay_range(Cf::Lock, &start, &end) {
        if found.len() >= limit {
            break;
        }
        if let Some(value) = staged {
            push_if_below(&mut found, encoded, value, fence)?;
        }
    }
    Ok(found)
}

/// The smallest key after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

fn push_if_below(
    found: &mut Vec<(Vec<u8>, Lock)>,
    encoded: &[u8],
    value: &[u8],
    fence: Timestamp,
) -> Result<(), EngineError> {
    let corrupt = |defect: crate::storage::Defect| {
        EngineError::corrupt(Record::Key { cf: Cf::Lock, key: encoded.to_vec() }, defect)
    };
    let lock = <Lock as prost::Message>::decode(value).map_err(|error| corrupt(error.into()))?;
    if !below(fence, lock.start_ts) {
        return Ok(());
    }
    let user_key = split_lock_key(encoded)
        .map_err(|defect| corrupt(crate::mvcc::reader::RecordDefect::Key(defect).into()))?;
    found.push((user_key, lock));
    Ok(())
}
