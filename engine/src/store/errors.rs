//! Errors a store returns for a request. Each says what the client should do next:
//! retry elsewhere (not leader, with a hint), refresh its region cache (epoch, region
//! not found, key outside the region), or fix the request (limits).

use thiserror::Error;

use crate::kv::KvError;
use crate::proto::metadata::Peer;
use crate::region::RegionError;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum StoreError {
    #[error("region {region_id} is not led by this store (leader: {leader:?})")]
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
    #[error("raft refused the request: {0}")]
    Raft(String),
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("the store is shutting down")]
    ShuttingDown,
    #[error("region {0} already exists on this store")]
    RegionExists(u64),
    #[error("invalid change of peers: {0}")]
    InvalidChange(String),
}

impl From<crate::storage::EngineError> for StoreError {
    fn from(error: crate::storage::EngineError) -> Self {
        StoreError::Storage(error.to_string())
    }
}
