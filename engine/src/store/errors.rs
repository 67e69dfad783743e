//! Errors a store returns for a request. Each says what the client should do next:
//! retry elsewhere (not leader, with a hint), refresh its region cache (epoch, region
//! not found, key outside the region), wait for the group to finish what it is busy
//! with, or give up because no retry can succeed (an invalid request, a refused change).
//! [`StoreError::retry`] says which, per variant; the server maps it onto the wire.
//!
//! Every variant is typed: the causes from Raft and the disk are kept as sources, never
//! flattened into text.

use thiserror::Error;

use crate::kv::KvError;
use crate::proto::metadata::Peer;
use crate::raft::{self, OpaqueError};
use crate::region::{DisplayLeader, RegionError};
use crate::storage::EngineError;

use super::config::InvalidStoreConfig;

/// Whether the same request, sent again, can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The request did not take effect, and sent again it may succeed: to the leader,
    /// after refreshing the region's route, or once the group is done with an
    /// election, a leader transfer or a membership change.
    Possible,
    /// The request may have taken effect: only one that is safe to apply twice (a read)
    /// may be sent again.
    IfIdempotent,
    /// Refused for good: the same request can never succeed. The request, or the state
    /// it asks to change, must change first.
    Never,
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum StoreError {
    #[error("region {region_id} is not led by this store (its leader: {})", DisplayLeader(*leader))]
    NotLeader { region_id: u64, leader: Option<Peer> },
    #[error("region {0} has no peer on this store")]
    RegionNotFound(u64),
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("the command was superseded by a new leader's log before it committed")]
    ProposalDropped,
    #[error("the replica caught up by snapshot past the command: it may or may not have been applied")]
    OutcomeUnknown,
    /// The Raft core refused the request: busy (a leader transfer or a membership change
    /// in flight), or for good (an invalid membership change, a refused transfer).
    #[error("raft refused the request: {0}")]
    Raft(#[from] raft::Error),
    #[error("storage failure: {0}")]
    Storage(#[from] EngineError),
    /// A committed entry does not decode as its type says; it is refused identically on
    /// every replica. Only a proposer that skipped the store's encoding could cause it.
    #[error("entry {index} does not decode as {expected}: {source}")]
    MalformedEntry {
        index: u64,
        expected: EntryKind,
        #[source]
        source: prost::DecodeError,
    },
    /// A thread of the store could not be started (the operating system refused it).
    #[error("cannot start the {thread} thread: {source}")]
    ThreadSpawn {
        thread: &'static str,
        #[source]
        source: OpaqueError,
    },
    #[error("the store is shutting down")]
    ShuttingDown,
    /// The raft worker of the region has this many messages waiting: the request was
    /// not proposed; send it again after a pause.
    #[error("region {region_id}'s raft worker is busy ({queued} messages waiting); try again")]
    Busy { region_id: u64, queued: usize },
    #[error("region {0} already exists on this store")]
    RegionExists(u64),
    #[error("invalid change of peers: {0}")]
    InvalidChange(#[from] InvalidChange),
    #[error("invalid store configuration: {0}")]
    InvalidConfig(#[from] InvalidStoreConfig),
    /// A snapshot read at or below the garbage-collection safe point.
    #[error(transparent)]
    BelowSafePoint(#[from] crate::gc::BelowSafePoint),
    /// A change feed asked of a leader that has not applied an entry of its own term
    /// yet: its predecessors' locks may still be in its log.
    #[error("region {region_id}'s leader is not ready to serve change feeds yet")]
    FeedNotReady { region_id: u64 },
}

/// What a committed entry was expected to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Command,
    MembershipChange,
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EntryKind::Command => "a command",
            EntryKind::MembershipChange => "a membership change",
        })
    }
}

/// Why the store refuses a change of a region's peers before it reaches Raft.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidChange {
    #[error("no peer given")]
    NoPeer,
    #[error("store {store_id} already holds a peer of region {region_id}")]
    StoreHoldsPeer { store_id: u64, region_id: u64 },
}

impl StoreError {
    /// Whether sending the same request again can succeed; see each variant's arm.
    pub fn retry(&self) -> Retry {
        match self {
            // At the leader named, or found through the driver.
            StoreError::NotLeader { .. }
            // After refreshing the route: the region moved or is being created.
            | StoreError::RegionNotFound(_)
            // Another leader's log replaced the command: it never applied.
            | StoreError::ProposalDropped
            // Another replica serves once this store is gone or its disk is replaced.
            | StoreError::Storage(_)
            | StoreError::ShuttingDown
            // Once the worker's queue has drained.
            | StoreError::Busy { .. }
            | StoreError::ThreadSpawn { .. }
            // Once the leader applied its first entry, in a moment.
            | StoreError::FeedNotReady { .. } => Retry::Possible,
            StoreError::Region(error) | StoreError::Kv(KvError::Region(error)) => region_retry(error),
            // Empty keys, sizes over the limits: the request itself is wrong.
            StoreError::Kv(_) => Retry::Never,
            StoreError::OutcomeUnknown => Retry::IfIdempotent,
            StoreError::Raft(error) => raft_retry(error),
            // The same bytes decode the same way on every try.
            StoreError::MalformedEntry { .. }
            | StoreError::RegionExists(_)
            | StoreError::InvalidChange(_)
            // The safe point never goes back: only a newer timestamp reads.
            | StoreError::BelowSafePoint(_)
            // Settings that cannot work stay so until they are changed.
            | StoreError::InvalidConfig(_) => Retry::Never,
        }
    }

    /// Whether the request certainly did not take effect and may succeed if sent again.
    pub fn is_retryable(&self) -> bool {
        self.retry() == Retry::Possible
    }
}

fn region_retry(error: &RegionError) -> Retry {
    match error {
        // The client's route is stale: refreshed, the same request goes through.
        RegionError::EpochNotMatch { .. } | RegionError::KeyNotInRegion { .. } => Retry::Possible,
        // This replica catches up (or loses leadership to one that has).
        RegionError::EpochAhead { .. } => Retry::Possible,
        RegionError::InvalidSplitKey { .. }
        | RegionError::SplitPeerCount { .. }
        | RegionError::InvertedRange { .. } => Retry::Never,
    }
}

fn raft_retry(error: &raft::Error) -> Retry {
    match error {
        // Busy, or led elsewhere: the group is in a state that ends by itself.
        raft::Error::NotLeader { .. }
        | raft::Error::LeaderTransferInProgress { .. }
        | raft::Error::ConfChangeInProgress
        | raft::Error::Storage(_) => Retry::Possible,
        // Judged against the configuration, which no retry changes.
        raft::Error::InvalidConfChange(_)
        | raft::Error::TransferRefused { .. }
        | raft::Error::LeaseReadWithoutCheckQuorum
        | raft::Error::InvalidConfig(_)
        | raft::Error::InvalidMessage(_) => Retry::Never,
    }
}
