//! Errors the Raft core returns to its caller.
//!
//! Every refusal is typed and explains itself: a caller can always tell a proposal that
//! must go to another replica from one that is malformed or one that must wait.

use thiserror::Error;

/// Why the log storage could not answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StorageError {
    /// The requested index is below the first index still held: it was compacted into a
    /// snapshot.
    #[error("log index is compacted")]
    Compacted,
    /// The requested index is above the last index held.
    #[error("log index is unavailable")]
    Unavailable,
    /// A snapshot is being generated; ask again later.
    #[error("snapshot is temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// The storage itself failed (I/O, corruption). The Raft core stops on this: a
    /// replica that cannot read its own log cannot vote or replicate safely.
    #[error("log storage failed: {0}")]
    Io(String),
}

/// Errors returned by the Raft core's API.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The operation needs the leader and this replica is not it.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The replica this one believes leads the group, if it knows one.
        leader_hint: Option<u64>,
    },
    /// Proposals are refused while leadership is being handed to another replica.
    #[error("leadership is being transferred to {transferee}")]
    LeaderTransferInProgress {
        /// The replica taking over.
        transferee: u64,
    },
    /// A membership change is proposed but not yet applied, or the group is in a joint
    /// configuration; only one change may be in flight at a time.
    #[error("a membership change is already in flight")]
    ConfChangeInProgress,
    /// The membership change is not valid against the current configuration.
    #[error("invalid membership change: {0}")]
    InvalidConfChange(String),
    /// The leader transfer cannot be started.
    #[error("leader transfer refused: {0}")]
    TransferRefused(String),
    /// Lease reads are only sound when the leader steps down on losing its quorum.
    #[error("lease reads require check_quorum")]
    LeaseReadWithoutCheckQuorum,
    /// The configuration is inconsistent.
    #[error("invalid raft config: {0}")]
    InvalidConfig(String),
    /// A received message is malformed; it was ignored.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The log storage could not answer.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Result alias of the Raft core.
pub type Result<T> = std::result::Result<T, Error>;
