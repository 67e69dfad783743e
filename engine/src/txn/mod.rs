//! Transactional commands: Percolator's actions (as TiKV implements them) on one
//! region's MVCC column families, applied from the Raft log.
//!
//! A transaction's coordinator (the client) takes a start timestamp from the oracle,
//! buffers its writes, then commits in two phases:
//! - **Prewrite** (`prewrite.rs`): each key is locked under the transaction's start
//!   timestamp, naming the primary key, and a put's value is staged under the same
//!   timestamp. A key another transaction has locked, or committed at or after our
//!   start, refuses the whole command: the transaction conflicts.
//! - **Commit** (`resolve.rs`): once every key is locked, a commit timestamp from the
//!   oracle turns the primary's lock into a commit record: that is the transaction's
//!   commit point. The secondaries follow; a reader that meets one of their locks first
//!   asks the primary (`status.rs`) and finishes the job.
//! - **Rollback** (`resolve.rs`): removes the transaction's locks and leaves a rollback
//!   record, so that a prewrite delayed in the network is refused when it arrives.
//! - **One phase** (`prewrite.rs`): when every key is in one region, the coordinator
//!   takes the commit timestamp first and the prewrite writes commit records directly.
//!
//! Everything here is deterministic: it reads only the database and the round's batch
//! (`records.rs`) and the command, never a clock, so every replica applies a command to
//! the same effect. Time enters through timestamps the command carries (a lock's time
//! to live is judged against the caller's `current_ts`). Every command is idempotent:
//! a coordinator whose request timed out sends it again. Each command touches all its
//! keys or none: a refused command answers its reasons per key and changes nothing.
//!
//! Garbage collection's fence (`fence.rs`) limits what a transaction that started long
//! ago may still do, so that collecting old records never changes what a command does.
//!
//! The checks a command passes before it is proposed are in `check.rs`; the reads at a
//! timestamp are [`crate::mvcc::reader`]'s.

mod check;
mod fence;
mod prewrite;
mod records;
mod resolve;
mod status;

#[cfg(test)]
mod tests;

/// A prewrite of one put, `key` its own primary, locked for a second: what tests of
/// other layers write with.
#[cfg(test)]
pub(crate) fn single_put_prewrite(
    key: &[u8],
    value: &[u8],
    start_ts: u64,
) -> crate::proto::command::Prewrite {
    let op = crate::proto::mvcc::Mutation::Put as i32;
    let mutation = crate::proto::command::Mutation { op, key: key.to_vec(), value: value.to_vec() };
    crate::proto::command::Prewrite {
        start_ts,
        primary: key.to_vec(),
        lock_ttl_ms: 1_000,
        mutations: vec![mutation],
        one_phase_commit_ts: 0,
    }
}

pub use check::{MAX_LOCK_TTL_MS, TxnCheckError, check};
pub use fence::fence;
pub use prewrite::prewrite;
pub use resolve::{commit, rollback};
pub use status::lock_expired;
pub use status::{check_txn_status, heart_beat};
