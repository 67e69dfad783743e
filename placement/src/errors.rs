//! Errors of the placement driver's API. Each says what the caller should do: go to the
//! leader, register first, wait for the cluster to bootstrap, or fix the request.

use thiserror::Error;

use crate::proto::RegionRoute;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum PdError {
    /// Only the leader of the driver's Raft group answers; `leader` is its member id
    /// when known.
    #[error("this placement driver replica is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("the cluster is not bootstrapped yet: it waits for enough stores to register")]
    NotBootstrapped,
    #[error("store {0} is not registered")]
    UnknownStore(u64),
    #[error("store {0} was removed from the cluster")]
    StoreRemoved(u64),
    #[error("region {0} is unknown to the placement driver")]
    UnknownRegion(u64),
    #[error("address {address} is already registered by store {store_id}")]
    DuplicateAddress { address: String, store_id: u64 },
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The region already has an operator in flight.
    #[error("region {} is busy with another operator", .0.region.as_ref().map_or(0, |r| r.id))]
    RegionBusy(Box<RegionRoute>),
    /// The change could not be replicated (no quorum, leadership lost, timeout); it may
    /// or may not have happened.
    #[error("the placement driver is unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt placement metadata: {0}")]
    Corrupt(String),
}
