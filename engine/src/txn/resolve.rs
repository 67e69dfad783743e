//! Commit and rollback: the second phase, as the coordinator and resolvers run it.
//!
//! - **Commit** turns the transaction's lock on each key into a commit record at
//!   `commit_ts`, of the kind its mutation says, and removes the lock. A key already
//!   committed by this transaction is done (the request was resent, or a resolver got
//!   there first). A key without the lock is refused: rolled back by a resolver
//!   (`rolled_back`), or never prewritten (`lock_missing`). On the primary, that
//!   refusal is the transaction's abort. The answer carries the transaction's commit
//!   timestamp: the one already recorded, if an earlier request committed a key.
//! - **Rollback** removes the transaction's lock and staged value and leaves a rollback
//!   record under the start timestamp, even on a key it never locked: a prewrite that
//!   arrives later is refused by it. A key the transaction committed refuses the
//!   rollback (`committed_at`): a committed transaction stays committed.
//!
//! Either touches all its keys or none. Below the region's garbage-collection fence,
//! both act on the transaction's locks alone (`fence.rs`).

use crate::proto::command::{Commit, KeyError, Rollback, TxnResult, TxnState, TxnStatus, key_error};
use crate::proto::mvcc::{Lock, WriteKind};
use crate::storage::{ApplyBatch, Engine, EngineError};
use crate::timestamp::Timestamp;

use super::fence;
use super::records::{self, committed_kind};

pub fn commit(
    engine: &Engine,
    batch: &mut ApplyBatch,
    fence: Timestamp,
    commit: &Commit,
) -> Result<TxnResult, EngineError> {
    let below_fence = fence::below(fence, commit.start_ts);
    let (start_ts, mut commit_ts) =
        (Timestamp::from_u64(commit.start_ts), Timestamp::from_u64(commit.commit_ts));
    let mut locked: Vec<(&[u8], Lock)> = Vec::with_capacity(commit.keys.len());
    let mut errors = Vec::new();
    for key in &commit.keys {
        if let Some(lock) = records::own_lock(engine, batch, key, start_ts)? {
            locked.push((key, lock));
            continue;
        }
        if below_fence {
            return Ok(fence::refused(fence));
        }
        let refusal = match records::outcome(engine, batch, key, start_ts)? {
            Some((committed_at, record)) if record.kind() != WriteKind::WriteRollback => {
                // Committed before (at one timestamp for all its keys): that is the
                // transaction's commit timestamp, whatever this request says.
                commit_ts = committed_at;
                continue;
            }
            Some(_) => key_error::Kind::RolledBack(true),
            None => key_error::Kind::LockMissing(true),
        };
        errors.push(KeyError { key: key.clone(), kind: Some(refusal) });
    }
    if !errors.is_empty() {
        return Ok(TxnResult { errors, ..TxnResult::default() });
    }
    for (key, lock) in locked {
        let record = (committed_kind(lock.mutation()), lock.short_value.clone());
        records::put_commit_record(engine, batch, key, commit_ts, record, start_ts)?;
        records::release_lock(engine, batch, key, start_ts)?;
    }
    let status = TxnStatus { state: TxnState::Committed as i32, commit_ts: commit_ts.as_u64(), ttl_ms: 0 };
    Ok(TxnResult { status: Some(status), ..TxnResult::default() })
}

pub fn rollback(
    engine: &Engine,
    batch: &mut ApplyBatch,
    fence: Timestamp,
    rollback: &Rollback,
) -> Result<TxnResult, EngineError> {
    let start_ts = Timestamp::from_u64(rollback.start_ts);
    if fence::below(fence, rollback.start_ts) {
        // A key without the lock cannot say, here, whether it committed: the answer
        // says so (`below_fence`) rather than "rolled back".
        let mut unverified = false;
        for key in &rollback.keys {
            match records::own_lock(engine, batch, key, start_ts)? {
                Some(lock) => records::remove_lock(engine, batch, key, start_ts, &lock)?,
                None => unverified = true,
            }
        }
        return Ok(if unverified { fence::refused(fence) } else { TxnResult::default() });
    }
    let mut targets: Vec<(&[u8], Option<Lock>)> = Vec::with_capacity(rollback.keys.len());
    let mut errors = Vec::new();
    for key in &rollback.keys {
        if let Some(lock) = records::own_lock(engine, batch, key, start_ts)? {
            targets.push((key, Some(lock)));
            continue;
        }
        match records::outcome(engine, batch, key, start_ts)? {
            Some((_, record)) if record.kind() == WriteKind::WriteRollback => {}
            Some((commit_ts, _)) => errors.push(KeyError {
                key: key.clone(),
                kind: Some(key_error::Kind::CommittedAt(commit_ts.as_u64())),
            }),
            None => targets.push((key, None)),
        }
    }
    if !errors.is_empty() {
        return Ok(TxnResult { errors, ..TxnResult::default() });
    }
    for (key, lock) in targets {
        records::roll_back_key(engine, batch, key, start_ts, lock.as_ref())?;
    }
    Ok(TxnResult::default())
}
