//! What the client library answers when a request fails, and why.
//!
//! Each kind says what the caller may do: fix the request ([`ClientError::InvalidArgument`],
//! never retried: no retry could succeed), find out whether a write happened
//! ([`ClientError::OutcomeUnknown`], never retried: a second try could apply twice),
//! try later ([`ClientError::Unavailable`], retried until the deadline, with the last
//! reason), or run a transaction again from its start ([`ClientError::Conflict`]: it
//! did not commit, and a new start timestamp may well succeed). Text appears only
//! where it comes from another process: what a store or the transport wrote in a
//! status.

use tessera_engine::storage::hex;
use tessera_engine::timestamp::Timestamp;
use tessera_placement::PdError;
use thiserror::Error;
use tonic::Code;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum ClientError {
    #[error("invalid request: {0}")]
    InvalidArgument(Refusal),
    #[error("placement driver: {0}")]
    Pd(#[from] PdError),
    #[error("the write may or may not have been applied: {0}")]
    OutcomeUnknown(Uncertainty),
    #[error("gave up after {attempts} attempts; last error: {last}")]
    Unavailable { attempts: u32, last: Transient },
    /// The transaction did not commit: nothing of it is visible, now or later. Begin
    /// it again (with a new start timestamp).
    #[error("transaction conflict: {0}")]
    Conflict(Conflict),
    /// The stores answered what the transaction protocol rules out (a secondary key
    /// disagreeing with its primary): a bug, reported rather than acted on.
    #[error("transaction protocol broken for the transaction that started at {start_ts}: {detail}")]
    ProtocolViolation { start_ts: Timestamp, detail: String },
}

impl ClientError {
    /// Whether running the whole transaction again may succeed where this one failed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Conflict(_))
    }
}

/// Why a transaction did not commit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Conflict {
    /// Another transaction committed a key of ours after we started (first committer
    /// wins: snapshot isolation).
    #[error("key {} was committed at {commit_ts}, after the transaction started at {start_ts}", hex(key))]
    WriteConflict { key: Vec<u8>, start_ts: Timestamp, commit_ts: Timestamp },
    /// A key in a range the transaction read (and asked to refresh) was written
    /// between its start and its commit timestamp: committing would not be
    /// serializable.
    #[error(
        "key {} in a range the transaction read was written after its start {start_ts}, at or before its commit {commit_ts}",
        hex(key)
    )]
    RangeChanged { key: Vec<u8>, start_ts: Timestamp, commit_ts: Timestamp },
    /// A live transaction holds a key of ours.
    #[error("key {} is locked by the live transaction that started at {holder_start_ts}", hex(key))]
    Locked { key: Vec<u8>, holder_start_ts: Timestamp },
    /// Our locks were judged abandoned and rolled back before our commit point (the
    /// coordinator was slower than its locks' time to live).
    #[error("the transaction that started at {start_ts} was rolled back before it could commit")]
    RolledBack { start_ts: Timestamp },
    /// The transaction started at or below a region's garbage-collection fence: it ran
    /// longer than the versions it reads are kept, and may not write any more.
    #[error(
        "the transaction that started at {start_ts} is older than garbage collection allows (fence {fence_ts})"
    )]
    TooOld { start_ts: Timestamp, fence_ts: Timestamp },
}

/// Why a request is refused for good: no retry of it can succeed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Refusal {
    /// A key or value the stores would refuse, found before sending.
    #[error(transparent)]
    Kv(#[from] tessera_engine::kv::KvError),
    #[error("the start of a range must be before its end")]
    EmptyRange,
    #[error("the start of a range is after its end")]
    InvertedRange,
    #[error("an interval must be longer than zero")]
    ZeroInterval,
    #[error("timestamp {read_ts} is ahead of the oracle ({now}): reads there would not repeat")]
    FutureTimestamp { read_ts: Timestamp, now: Timestamp },
    /// A snapshot read at or below the garbage-collection safe point: the versions it
    /// would need may be gone. Read at a newer timestamp (a transaction: begin again).
    #[error("the read timestamp is at or below the garbage-collection safe point {safe_point}")]
    BelowSafePoint { safe_point: Timestamp },
    /// A store refused it (an invalid key or value, a refused change), in the store's
    /// words: text from another process.
    #[error("{reason}")]
    Store { region_id: u64, reason: String },
}

/// Why a write's outcome is unknown.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Uncertainty {
    /// The store said so (a snapshot overtook the command), in its words.
    #[error("{reason}")]
    Store { region_id: u64, reason: String },
    /// The connection failed after the request may have reached the store; the
    /// transport's status message.
    #[error("region {region_id}: {message}")]
    Connection { region_id: u64, code: Code, message: String },
    /// The caller leading the write's group went away, maybe after sending it.
    #[error("the request carrying this write was abandoned by its caller")]
    Abandoned,
    /// A transaction's commit of its primary key was sent and never answered before the
    /// deadline: it may have committed (readers will find out from the primary).
    #[error("the commit of the transaction that started at {start_ts} was not answered: {last}")]
    Commit { start_ts: Timestamp, last: Box<ClientError> },
}

/// Why a try failed when another may succeed: what the client gives up with at its
/// deadline.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Transient {
    #[error("placement driver: {0}")]
    Pd(PdError),
    #[error("the region's leader is not known yet")]
    LeaderUnknown,
    #[error("store {store_id} has no known address")]
    NoStoreAddress { store_id: u64 },
    #[error("bad store address {address}")]
    BadStoreAddress { address: String },
    /// The store (or the transport to it) answered with a failure worth retrying: not
    /// leader, a stale route, busy, unreachable. Its status message, as written there.
    #[error("region {region_id}: {message}")]
    Store { region_id: u64, code: Code, message: String },
    #[error("queued behind region {region_id}'s requests past the deadline; never sent")]
    QueuedPastDeadline { region_id: u64 },
    /// A read waited for a live transaction's lock to go until the deadline.
    #[error("key {} is locked by the live transaction that started at {holder_start_ts}", hex(key))]
    Locked { key: Vec<u8>, holder_start_ts: Timestamp },
}
