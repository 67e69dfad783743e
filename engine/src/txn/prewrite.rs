//! Prewrite: the first phase, and the one-phase commit.
//!
//! For each key, in order of the checks:
//! 1. Our own lock means this prewrite already applied (a resent request): nothing to
//!    do for the key.
//! 2. Our own record at or after our start timestamp decides next, before anyone
//!    else's lock or commit: a commit record means the transaction already committed
//!    the key (a request resent after the commit, which answers the recorded commit
//!    timestamp), a rollback record that a resolver rolled it back (`rolled_back`: the
//!    transaction can no longer commit).
//! 3. A lock of another transaction refuses the key (`locked`): the caller resolves it
//!    through its primary, or gives up. Another transaction's commit at or after our
//!    start is a write-write conflict (`conflict_commit_ts`); another's rollback changes
//!    nothing.
//! 4. Otherwise the key is locked (naming the primary) and a put's value staged under
//!    the start timestamp; on the one-phase path the commit record is written instead
//!    of the lock.
//!
//! A transaction that started at or below the region's garbage-collection fence is
//! refused whole (`fence.rs`).
//!
//! If any key is refused, nothing is written and every refusal is answered, so that
//! the caller can resolve all the locks in its way at once.

use crate::proto::command::{
    KeyError, Mutation as KeyMutation, Prewrite, TxnResult, TxnState, TxnStatus, key_error,
};
use crate::proto::mvcc::{Lock, WriteKind};
use crate::storage::{ApplyBatch, Engine, EngineError};
use crate::timestamp::Timestamp;

use super::fence;
use super::records::{self, committed_kind};

/// What the checks found for one key.
enum KeyState {
    /// Nothing stands in the way: write it.
    Free,
    /// This transaction already locked it (a resent request).
    Done,
    /// This transaction already committed it, at this timestamp.
    Committed(Timestamp),
    Refused(key_error::Kind),
}

pub fn prewrite(
    engine: &Engine,
    batch: &mut ApplyBatch,
    fence: Timestamp,
    prewrite: &Prewrite,
) -> Result<TxnResult, EngineError> {
    if fence::below(fence, prewrite.start_ts) {
        return Ok(fence::refused(fence));
    }
    let start_ts = Timestamp::from_u64(prewrite.start_ts);
    let mut free = Vec::with_capacity(prewrite.mutations.len());
    let mut errors = Vec::new();
    let mut recorded = None;
    for mutation in &prewrite.mutations {
        match key_state(engine, batch, start_ts, &mutation.key)? {
            KeyState::Free => free.push(mutation),
            KeyState::Done => {}
            KeyState::Committed(commit_ts) => recorded = Some(commit_ts),
            KeyState::Refused(kind) => errors.push(KeyError { key: mutation.key.clone(), kind: Some(kind) }),
        }
    }
    if !errors.is_empty() {
        return Ok(TxnResult { errors, ..TxnResult::default() });
    }
    // The transaction's commit timestamp, when it is committed: the one recorded by an
    // earlier request if there was one (all its keys share it), else this one-phase
    // commit's.
    let one_phase = (prewrite.one_phase_commit_ts != 0)
        .then(|| recorded.unwrap_or(Timestamp::from_u64(prewrite.one_phase_commit_ts)));
    for mutation in free {
        write_key(engine, batch, prewrite, start_ts, one_phase, mutation)?;
    }
    let status = recorded.or(one_phase).map(|commit_ts| TxnStatus {
        state: TxnState::Committed as i32,
        commit_ts: commit_ts.as_u64(),
        ttl_ms: 0,
    });
    Ok(TxnResult { status, ..TxnResult::default() })
}

fn key_state(
    engine: &Engine,
    batch: &ApplyBatch,
    start_ts: Timestamp,
    key: &[u8],
) -> Result<KeyState, EngineError> {
    let lock = records::lock(engine, batch, key)?;
    if lock.as_ref().is_some_and(|lock| lock.start_ts == start_ts.as_u64()) {
        return Ok(KeyState::Done);
    }
    let records = records::records_since(engine, batch, key, start_ts)?;
    // This transaction's own record decides before anyone else's lock or commit: a
    // prewrite sent again after the transaction committed (and others wrote the key
    // since) must find that it committed, not a conflict.
    if let Some((commit_ts, record)) = records.iter().find(|(_, record)| record.start_ts == start_ts.as_u64())
    {
        return Ok(match record.kind() {
            WriteKind::WriteRollback => KeyState::Refused(key_error::Kind::RolledBack(true)),
            _ => KeyState::Committed(*commit_ts),
        });
    }
    if let Some(lock) = lock {
        return Ok(KeyState::Refused(key_error::Kind::Locked(crate::mvcc::lock_info(key, &lock))));
    }
    let conflict = records.iter().find(|(_, record)| record.kind() != WriteKind::WriteRollback);
    Ok(match conflict {
        Some((commit_ts, _)) => KeyState::Refused(key_error::Kind::ConflictCommitTs(commit_ts.as_u64())),
        None => KeyState::Free,
    })
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
