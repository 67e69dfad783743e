//! What became of a transaction, asked at its primary key; and the heartbeat that
//! keeps a live transaction's primary lock from being judged abandoned.
//!
//! A transaction's fate is decided at its primary alone: committed once its commit
//! record is there, rolled back once its rollback record is. While the primary is
//! locked the transaction is alive until its lock's time to live runs out, counted
//! from the physical part of its start timestamp to the physical part of the caller's
//! `current_ts` (both from the oracle: no store's clock is involved). An expired lock
//! is rolled back here, by the same command that found it expired, so that no two
//! resolvers can decide differently. Below the region's garbage-collection fence, no
//! record is written without a lock (`fence.rs`).

use crate::proto::command::{
    CheckTxnStatus, KeyError, TxnHeartBeat, TxnResult, TxnState, TxnStatus, key_error,
};
use crate::proto::mvcc::WriteKind;
use crate::storage::{ApplyBatch, Engine, EngineError};
use crate::timestamp::Timestamp;

use super::fence;
use super::records;

/// Whether a lock taken at `start_ts` with `ttl_ms` to live has expired at `current_ts`.
pub fn lock_expired(start_ts: Timestamp, ttl_ms: u64, current_ts: Timestamp) -> bool {
    current_ts.physical_milliseconds() >= start_ts.physical_milliseconds().saturating_add(ttl_ms)
}

fn answer(state: TxnState, commit_ts: u64, ttl_ms: u64) -> TxnResult {
    TxnResult { status: Some(TxnStatus { state: state as i32, commit_ts, ttl_ms }), ..TxnResult::default() }
}

pub fn check_txn_status(
    engine: &Engine,
    batch: &mut ApplyBatch,
    fence: Timestamp,
    check: &CheckTxnStatus,
) -> Result<TxnResult, EngineError> {
    let (start_ts, current_ts) = (Timestamp::from_u64(check.start_ts), Timestamp::from_u64(check.current_ts));
    let primary = check.primary.as_slice();
    if let Some(lock) = records::own_lock(engine, batch, primary, start_ts)? {
        if !lock_expired(start_ts, lock.ttl_ms, current_ts) {
            return Ok(answer(TxnState::Locked, 0, lock.ttl_ms));
        }
        records::roll_back_key(engine, batch, primary, start_ts, Some(&lock))?;
        return Ok(answer(TxnState::RolledBack, 0, 0));
    }
    let recorded = records::outcome(engine, batch, primary, start_ts)?;
    if fence::below(fence, check.start_ts) {
        // Answered from what the records still say, writing nothing: without its lock
        // the primary can never be prewritten again (`fence.rs`).
        return Ok(match recorded {
            Some((commit_ts, record)) if record.kind() != WriteKind::WriteRollback => {
                answer(TxnState::Committed, commit_ts.as_u64(), 0)
            }
            _ => answer(TxnState::RolledBack, 0, 0),
        });
    }
    match recorded {
        Some((_, record)) if record.kind() == WriteKind::WriteRollback => {
            Ok(answer(TxnState::RolledBack, 0, 0))
        }
        Some((commit_ts, _)) => Ok(answer(TxnState::Committed, commit_ts.as_u64(), 0)),
        None if check.rollback_if_missing => {
            records::roll_back_key(engine, batch, primary, start_ts, None)?;
            Ok(answer(TxnState::RolledBack, 0, 0))
        }
        None => Ok(answer(TxnState::PrimaryMissing, 0, 0)),
    }
}

pub fn heart_beat(
    engine: &Engine,
    batch: &mut ApplyBatch,
    heart_beat: &TxnHeartBeat,
) -> Result<TxnResult, EngineError> {
    let start_ts = Timestamp::from_u64(heart_beat.start_ts);
    let Some(mut lock) = records::own_lock(engine, batch, &heart_beat.primary, start_ts)? else {
        let error =
            KeyError { key: heart_beat.primary.clone(), kind: Some(key_error::Kind::LockMissing(true)) };
        return Ok(TxnResult { errors: vec![error], ..TxnResult::default() });
    };
    if heart_beat.ttl_ms > lock.ttl_ms {
        lock.ttl_ms = heart_beat.ttl_ms;
        records::put_lock(engine, batch, &heart_beat.primary, &lock)?;
    }
    Ok(TxnResult { ttl_ms: lock.ttl_ms, ..TxnResult::default() })
}
