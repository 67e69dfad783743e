//! Errors the Raft core returns to its caller.
//!
//! Every refusal is typed and explains itself with the numbers involved: a caller can
//! always tell a proposal that must go to another replica from one that is malformed or
//! one that must wait. No variant carries free text: what went wrong is a variant, and
//! a failure of the log storage's backend (whose types the core does not know) is kept
//! whole as the source.

use std::sync::Arc;

use thiserror::Error;

/// An error of a layer the Raft core does not know (the log storage's backend, a thread
/// the application could not start), kept whole as the source so that a caller who
/// knows its type can downcast it. Cloneable, since one failure may be reported to many
/// waiting callers; two are equal only when they are the same occurrence.
#[derive(Debug, Clone)]
pub struct OpaqueError(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl OpaqueError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> OpaqueError {
        OpaqueError(Arc::new(error))
    }

    /// The error as its own type, if it is a `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Display for OpaqueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for OpaqueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for OpaqueError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for OpaqueError {}

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
    /// The storage itself failed (I/O, corruption); its own error is the source. The
    /// Raft core stops on this: a replica that cannot read its own log cannot vote or
    /// replicate safely.
    #[error("log storage failed: {0}")]
    Io(#[source] OpaqueError),
    /// The persisted hard state commits entries the persisted log does not hold: the
    /// log was lost or truncated behind the core's back.
    #[error("persisted commit index {commit} is beyond the last persisted entry {last_index}")]
    CommitBeyondLog { commit: u64, last_index: u64 },
}

impl StorageError {
    /// A failure of the storage's backend, kept as the source.
    pub fn io(error: impl std::error::Error + Send + Sync + 'static) -> StorageError {
        StorageError::Io(OpaqueError::new(error))
    }
}

/// Why a membership change is not valid against the current configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfChangeRefusal {
    #[error("the group is in a joint configuration; leave it before another change")]
    InJointConfiguration,
    #[error("not in a joint configuration: there is nothing to leave")]
    NotInJointConfiguration,
    #[error("node id 0 is reserved")]
    ReservedNodeId,
    #[error("unknown change type {change_type} for node {node_id}")]
    UnknownChangeType { change_type: i32, node_id: u64 },
    #[error("the change would remove every voter")]
    NoVoterLeft,
    #[error("{node_id} would be both a voter and a learner")]
    VoterAndLearner { node_id: u64 },
    #[error("{node_id} cannot become a learner on leaving the joint configuration")]
    LearnerNextNotOutgoingVoter { node_id: u64 },
    /// A broken invariant of the configuration computed, refused rather than applied.
    #[error("invariant: member {node_id} has no progress")]
    MemberWithoutProgress { node_id: u64 },
}

/// Why a leader transfer cannot be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TransferRefusal {
    #[error("it is already the leader")]
    AlreadyLeader,
    #[error("it is not a voter")]
    NotAVoter,
}

/// Which setting of the configuration is inconsistent, with the values given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("id must not be 0")]
    ZeroId,
    #[error("heartbeat_ticks must be at least 1")]
    ZeroHeartbeatTicks,
    #[error("election_ticks ({election_ticks}) must be greater than heartbeat_ticks ({heartbeat_ticks})")]
    ElectionNotAboveHeartbeat { election_ticks: u64, heartbeat_ticks: u64 },
    #[error("max_inflight_msgs must be at least 1")]
    ZeroInflight,
    #[error(
        "max_clock_drift_ticks ({max_clock_drift_ticks}) must be below election_ticks - 1 ({}) so that a \
         lease remains",
        election_ticks - 1
    )]
    DriftLeavesNoLease { max_clock_drift_ticks: u64, election_ticks: u64 },
    #[error("an observed lease clock needs a tick length of at least 1 unit")]
    ZeroTickLength,
    #[error("applied index {applied} is beyond the commit index {committed}")]
    AppliedBeyondCommit { applied: u64, committed: u64 },
}

/// What is wrong with a received message. A correct replica never sends one of these.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageDefect {
    #[error(
        "message of type {message_type} from {from} with term {term}: every message carries a sender and a term"
    )]
    NoSenderOrTerm { message_type: i32, from: u64, term: u64 },
    #[error("message for replica {to} delivered to replica {id}")]
    WrongRecipient { to: u64, id: u64 },
    #[error("unknown message type {message_type} from {from}")]
    UnknownType { message_type: i32, from: u64 },
    #[error(
        "heartbeat commits {commit} but the log ends at {last_index}; the leader only commits what we hold"
    )]
    HeartbeatCommitsUnheld { commit: u64, last_index: u64 },
    #[error("snapshot message without a snapshot")]
    NoSnapshot,
    #[error(
        "snapshot at index {index} term {term} (message term {message_term}, configuration {}) is malformed",
        if *has_conf_state { "present" } else { "missing" }
    )]
    MalformedSnapshot { index: u64, term: u64, message_term: u64, has_conf_state: bool },
    #[error(
        "append after index {index} term {log_term} carries entry {entry_index} of term {entry_term} out of \
         order (message term {message_term})"
    )]
    EntriesOutOfOrder { index: u64, log_term: u64, entry_index: u64, entry_term: u64, message_term: u64 },
}

/// Errors returned by the Raft core's API.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The operation needs the leader and this replica is not it.
    #[error("not the leader (the leader: {})", leader_hint.map_or("not known here".to_string(), |id| format!("peer {id}")))]
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
    InvalidConfChange(#[from] ConfChangeRefusal),
    /// The leader transfer cannot be started.
    #[error("leader transfer to {target} refused: {reason}")]
    TransferRefused { target: u64, reason: TransferRefusal },
    /// Lease reads are only sound when the leader steps down on losing its quorum.
    #[error("lease reads require check_quorum")]
    LeaseReadWithoutCheckQuorum,
    /// The configuration is inconsistent.
    #[error("invalid raft config: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// A received message is malformed; it was ignored.
    #[error("invalid message: {0}")]
    InvalidMessage(#[from] MessageDefect),
    /// The log storage could not answer.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Result alias of the Raft core.
pub type Result<T> = std::result::Result<T, Error>;
