//! What the client library answers when a request fails, and why.
//!
//! Each kind says what the caller may do: fix the request ([`ClientError::InvalidArgument`],
//! never retried: no retry could succeed), find out whether a write happened
//! ([`ClientError::OutcomeUnknown`], never retried: a second try could apply twice), or
//! try later ([`ClientError::Unavailable`], retried until the deadline, with the last
//! reason). Text appears only where it comes from another process: what a store or the
//! transport wrote in a status.

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
}

/// Why a request is refused for good: no retry of it can succeed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("the start of a range must be before its end")]
    EmptyRange,
    #[error("the start of a range is after its end")]
    InvertedRange,
    /// A store refused it (an invalid key or value, a refused change), in the store's
    /// words: text from another process.
    #[error("{reason}")]
    Store { region_id: u64, reason: String },
}

/// Why a write's outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
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
}
