//! Prewrite: the first phase, and the one-phase commit.
//!
//! For each key, in order of the checks:
//! 1. A lock of another transaction refuses the key (`locked`): the caller resolves it
//!    through its primary, or gives up. Our own lock means this prewrite already
//!    applied (a resent request): nothing to do for the key.
//! 2. The records at or after our start timestamp: our own commit record means the
//!    transaction already committed the key (a resent request after the commit), our
//!    rollback record that a resolver rolled it back (`rolled_back`: the transaction
//!    can no longer commit). Another transaction's commit at or after our start is a
//!    write-write conflict (`conflict_commit_ts`); another's rollback changes nothing.
//! 3. Otherwise the key is locked (naming the primary) and a put's value staged under
//!    the start timestamp; on the one-phase path the commit record is written instead
//!    of the lock.
//!
//! If any key is refused, nothing is written and every refusal is answered, so that
//! the caller can resolve all the locks in its way at once.

use crate::proto::command::{KeyError, Mutation as KeyMutation, Prewrite, TxnResult, key_error};
use crate::proto::mvcc::{Lock, WriteKind};
use crate::storage::{ApplyBatch, Engine, EngineError};
use crate::timestamp::Timestamp;

use super::records::{self, committed_kind};

/// What the checks found for one key.
enum KeyState {
    /// Nothing stands in the way: write it.
    Free,
    /// This transaction already did it (a resent request).
    Done,
    Refused(key_error::Kind),
}

pub fn prewrite(
    engine: &Engine,
    batch: &mut ApplyBatch,
    prewrite: &Prewrite,
) -> Result<TxnResult, EngineError> {
    let start_ts = Timestamp::from_u64(prewrite.start_ts);
    let mut free = Vec::with_capacity(prewrite.mutations.len());
    let mut errors = Vec::new();
    for mutation in &prewrite.mutations {
        match key_state(engine, batch, start_ts, &mutation.key)? {
            KeyState::Free => free.push(mutation),
            KeyState::Done => {}
            KeyState::Refused(kind) => errors.push(KeyError { key: mutation.key.clone(), kind: Some(kind) }),
        }
    }
    if !errors.is_empty() {
        return Ok(TxnResult { errors, ..TxnResult::default() });
    }
    let one_phase =
        (prewrite.one_phase_commit_ts != 0).then(|| Timestamp::from_u64(prewrite.one_phase_commit_ts));
    for mutation in free {
        write_key(engine, batch, prewrite, start_ts, one_phase, mutation)?;
    }
    Ok(TxnResult::default())
}

fn key_state(
    engine: &Engine,
    batch: &ApplyBatch,
    start_ts: Timestamp,
    key: &[u8],
) -> Result<KeyState, EngineError> {
    if let Some(lock) = records::lock(engine, batch, key)? {
        if lock.start_ts == start_ts.as_u64() {
            return Ok(KeyState::Done);
        }
        return Ok(KeyState::Refused(key_error::Kind::Locked(crate::mvcc::lock_info(key, &lock))));
    }
    for (commit_ts, record) in records::records_since(engine, batch, key, start_ts)? {
        let ours = record.start_ts == start_ts.as_u64();
        match (ours, record.kind()) {
            (true, WriteKind::WriteRollback) => {
                return Ok(KeyState::Refused(key_error::Kind::RolledBack(true)));
            }
            (true, _) => return Ok(KeyState::Done),
            (false, WriteKind::WriteRollback) => {}
            (false, _) => {
                return Ok(KeyState::Refused(key_error::Kind::ConflictCommitTs(commit_ts.as_u64())));
            }
        }
    }
    Ok(KeyState::Free)
}

fn write_key(
    engine: &Engine,
    batch: &mut ApplyBatch,
    prewrite: &Prewrite,
    start_ts: Timestamp,
    one_phase: Option<Timestamp>,
    mutation: &KeyMutation,
) -> Result<(), EngineError> {
    let op = mutation.op();
    let short_value = match op {
        crate::proto::mvcc::Mutation::Put => {
            records::stage_value(engine, batch, &mutation.key, start_ts, &mutation.value)?
        }
        crate::proto::mvcc::Mutation::Delete | crate::proto::mvcc::Mutation::Lock => None,
    };
    match one_phase {
        Some(commit_ts) => {
            let record = (committed_kind(op), short_value);
            records::put_commit_record(engine, batch, &mutation.key, commit_ts, record, start_ts)
        }
        None => {
            let lock = Lock {
                primary: prewrite.primary.clone(),
                start_ts: start_ts.as_u64(),
                ttl_ms: prewrite.lock_ttl_ms,
                mutation: op as i32,
                short_value,
            };
            records::put_lock(engine, batch, &mutation.key, &lock)
        }
    }
}
