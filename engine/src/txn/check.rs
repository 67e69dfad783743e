//! The checks a transactional command passes before it is proposed: a command that
//! can never be right is refused at once with a typed error, never logged and applied.
//! Whether the command succeeds against the data is decided at apply (see the module
//! above); these checks are about the command alone and the region it was sent to.

use std::collections::HashSet;

use thiserror::Error;

use crate::kv::{self, KvError};
use crate::proto::command::{Mutation, Prewrite, write};
use crate::proto::metadata::Region;
use crate::proto::mvcc;
use crate::region;

/// The longest time to live a lock may be given: the default lifetime of old versions
/// before garbage collection (ten minutes), so that a lock never outlives the versions
/// that a reader waiting on it would need. A longer transaction keeps its locks alive
/// with heartbeats, each extending them by at most this much from their start.
pub const MAX_LOCK_TTL_MS: u64 = 10 * 60 * 1000;

/// What makes a transactional command wrong in itself.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TxnCheckError {
    #[error("a transaction's start timestamp must not be zero")]
    ZeroStartTs,
    #[error("commit timestamp {commit_ts} is not after the start timestamp {start_ts}")]
    CommitNotAfterStart { start_ts: u64, commit_ts: u64 },
    #[error("the command names no key")]
    NoKeys,
    #[error("the transaction has no primary key")]
    NoPrimary,
    #[error("key {} appears twice in one command", crate::storage::hex(.0))]
    DuplicateKey(Vec<u8>),
    #[error("a {op} of key {} carries a value; only a put does", crate::storage::hex(key))]
    ValueWithoutPut { op: &'static str, key: Vec<u8> },
    #[error("unknown mutation {0}")]
    UnknownMutation(i32),
    #[error("lock time to live {ttl_ms} ms is over the limit of {max_ms} ms")]
    LockTtlTooLong { ttl_ms: u64, max_ms: u64 },
    #[error("a one-phase commit must name its primary among its keys")]
    OnePhaseWithoutPrimary,
    #[error("a garbage-collection fence must not be zero")]
    ZeroFence,
}

/// Checks a transactional command against the limits and `region`'s range; raw writes
/// pass (they are `kv::check_write`'s).
pub fn check(region: &Region, command: &write::Kind) -> Result<(), KvError> {
    match command {
        write::Kind::Prewrite(prewrite) => check_prewrite(region, prewrite),
        write::Kind::Commit(commit) => {
            check_start(commit.start_ts)?;
            if commit.commit_ts <= commit.start_ts {
                let (start_ts, commit_ts) = (commit.start_ts, commit.commit_ts);
                return Err(TxnCheckError::CommitNotAfterStart { start_ts, commit_ts }.into());
            }
            check_keys(region, commit.keys.iter().map(Vec::as_slice))
        }
        write::Kind::Rollback(rollback) => {
            check_start(rollback.start_ts)?;
            check_keys(region, rollback.keys.iter().map(Vec::as_slice))
        }
        write::Kind::CheckTxnStatus(check) => {
            check_start(check.start_ts)?;
            check_keys(region, std::iter::once(check.primary.as_slice()))
        }
        write::Kind::TxnHeartBeat(heart_beat) => {
            check_start(heart_beat.start_ts)?;
            check_ttl(heart_beat.ttl_ms)?;
            check_keys(region, std::iter::once(heart_beat.primary.as_slice()))
        }
        write::Kind::TxnFence(fence) => {
            if fence.fence_ts == 0 {
                return Err(TxnCheckError::ZeroFence.into());
            }
            Ok(())
        }
        write::Kind::Put(_)
        | write::Kind::Delete(_)
        | write::Kind::DeleteRange(_)
        | write::Kind::CompareAndSwap(_) => Ok(()),
    }
}

fn check_start(start_ts: u64) -> Result<(), TxnCheckError> {
    if start_ts == 0 { Err(TxnCheckError::ZeroStartTs) } else { Ok(()) }
}

fn check_ttl(ttl_ms: u64) -> Result<(), TxnCheckError> {
    if ttl_ms > MAX_LOCK_TTL_MS {
        return Err(TxnCheckError::LockTtlTooLong { ttl_ms, max_ms: MAX_LOCK_TTL_MS });
    }
    Ok(())
}

/// Every key valid, inside the region, and named once.
fn check_keys<'a>(region: &Region, keys: impl Iterator<Item = &'a [u8]>) -> Result<(), KvError> {
    let mut seen = HashSet::new();
    for key in keys {
        kv::check_key(key)?;
        region::check_key(region, key)?;
        if !seen.insert(key) {
            return Err(TxnCheckError::DuplicateKey(key.to_vec()).into());
        }
    }
    if seen.is_empty() {
        return Err(TxnCheckError::NoKeys.into());
    }
    Ok(())
}

fn check_prewrite(region: &Region, prewrite: &Prewrite) -> Result<(), KvError> {
    check_start(prewrite.start_ts)?;
    check_ttl(prewrite.lock_ttl_ms)?;
    if prewrite.primary.is_empty() {
        return Err(TxnCheckError::NoPrimary.into());
    }
    kv::check_key(&prewrite.primary)?;
    if prewrite.one_phase_commit_ts != 0 {
        if prewrite.one_phase_commit_ts <= prewrite.start_ts {
            let (start_ts, commit_ts) = (prewrite.start_ts, prewrite.one_phase_commit_ts);
            return Err(TxnCheckError::CommitNotAfterStart { start_ts, commit_ts }.into());
        }
        if !prewrite.mutations.iter().any(|mutation| mutation.key == prewrite.primary) {
            return Err(TxnCheckError::OnePhaseWithoutPrimary.into());
        }
    }
    for mutation in &prewrite.mutations {
        check_mutation(mutation)?;
    }
    check_keys(region, prewrite.mutations.iter().map(|mutation| mutation.key.as_slice()))
}

fn check_mutation(mutation: &Mutation) -> Result<(), KvError> {
    let op =
        mvcc::Mutation::try_from(mutation.op).map_err(|_| TxnCheckError::UnknownMutation(mutation.op))?;
    let name = match op {
        mvcc::Mutation::Put => return kv::check_value(&mutation.value),
        mvcc::Mutation::Delete => "delete",
        mvcc::Mutation::Lock => "lock",
    };
    if !mutation.value.is_empty() {
        return Err(TxnCheckError::ValueWithoutPut { op: name, key: mutation.key.clone() }.into());
    }
    Ok(())
}
