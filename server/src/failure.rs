//! Typed failures across gRPC: a [`StoreError`] or [`PdError`] travels as a status whose
//! details hold a [`KvFailure`] or [`PdFailure`], and comes back out as the same kind,
//! so that clients act on what happened, never on message text.

use prost::Message;
use tessera_engine::kv::KvError;
use tessera_engine::region::RegionError;
use tessera_engine::store::StoreError;
use tessera_placement::PdError;
use tonic::{Code, Status};

use crate::proto::{DuplicateAddress, KvFailure, NotLeader, PdFailure, PdNotLeader, kv_failure, pd_failure};

/// A store's error as the status a client receives; `address_of` names the leader's
/// store address when the error points to another store.
pub(crate) fn kv_status(error: StoreError, address_of: impl Fn(u64) -> Option<String>) -> Status {
    let message = error.to_string();
    let (code, kind) = match error {
        StoreError::NotLeader { region_id, leader } => {
            let leader_address = leader.and_then(|p| address_of(p.store_id)).unwrap_or_default();
            (Code::Unavailable, kv_failure::Kind::NotLeader(NotLeader { region_id, leader, leader_address }))
        }
        StoreError::RegionNotFound(region_id) => {
            (Code::NotFound, kv_failure::Kind::RegionNotFound(region_id))
        }
        StoreError::Region(error) | StoreError::Kv(KvError::Region(error)) => {
            region_failure(error, message.clone())
        }
        StoreError::Kv(_) | StoreError::InvalidChange(_) | StoreError::RegionExists(_) => {
            (Code::InvalidArgument, kv_failure::Kind::InvalidArgument(message.clone()))
        }
        StoreError::ProposalDropped => (Code::Aborted, kv_failure::Kind::NotCommitted(message.clone())),
        StoreError::OutcomeUnknown => (Code::Unknown, kv_failure::Kind::OutcomeUnknown(message.clone())),
        StoreError::Raft(_) | StoreError::Storage(_) | StoreError::ShuttingDown => {
            (Code::Unavailable, kv_failure::Kind::Unavailable(message.clone()))
        }
    };
    let details = KvFailure { kind: Some(kind) }.encode_to_vec();
    Status::with_details(code, message, details.into())
}

fn region_failure(error: RegionError, message: String) -> (Code, kv_failure::Kind) {
    match error {
        RegionError::EpochNotMatch { current_region, .. } => {
            (Code::FailedPrecondition, kv_failure::Kind::EpochNotMatch(*current_region))
        }
        RegionError::KeyNotInRegion { region_id, start, end, .. } => {
            let region = tessera_engine::proto::metadata::Region {
                id: region_id,
                start_key: start,
                end_key: end,
                ..Default::default()
            };
            (Code::FailedPrecondition, kv_failure::Kind::KeyNotInRegion(region))
        }
        RegionError::InvalidSplitKey { .. }
        | RegionError::SplitPeerCount { .. }
        | RegionError::InvertedRange { .. } => {
            (Code::InvalidArgument, kv_failure::Kind::InvalidArgument(message))
        }
    }
}

/// The typed failure in a status from a store, if it carries one.
pub fn kv_failure(status: &Status) -> Option<kv_failure::Kind> {
    KvFailure::decode(status.details()).ok()?.kind
}

/// A driver's error as a status; `address_of` names a driver member's address.
pub(crate) fn pd_status(error: PdError, address_of: impl Fn(u64) -> Option<String>) -> Status {
    let message = error.to_string();
    let (code, kind) = match error {
        PdError::NotLeader { leader } => {
            let leader_address = leader.and_then(&address_of).unwrap_or_default();
            let not_leader = PdNotLeader { leader: leader.unwrap_or(0), leader_address };
            (Code::Unavailable, pd_failure::Kind::NotLeader(not_leader))
        }
        PdError::NotBootstrapped => (Code::FailedPrecondition, pd_failure::Kind::NotBootstrapped(true)),
        PdError::UnknownStore(id) => (Code::NotFound, pd_failure::Kind::UnknownStore(id)),
        PdError::StoreRemoved(id) => (Code::FailedPrecondition, pd_failure::Kind::StoreRemoved(id)),
        PdError::UnknownRegion(id) => (Code::NotFound, pd_failure::Kind::UnknownRegion(id)),
        PdError::DuplicateAddress { address, store_id } => {
            (Code::AlreadyExists, pd_failure::Kind::DuplicateAddress(DuplicateAddress { address, store_id }))
        }
        PdError::InvalidArgument(text) => (Code::InvalidArgument, pd_failure::Kind::InvalidArgument(text)),
        PdError::RegionBusy(route) => (Code::Aborted, pd_failure::Kind::RegionBusy(*route)),
        PdError::Unavailable(text) => (Code::Unavailable, pd_failure::Kind::Unavailable(text)),
        PdError::Corrupt(text) => (Code::DataLoss, pd_failure::Kind::Corrupt(text)),
    };
    Status::with_details(code, message, PdFailure { kind: Some(kind) }.encode_to_vec().into())
}

/// A status from a driver, back as the error it was; `leader_address` is set for a
/// redirect that named the leader's address.
pub(crate) fn pd_error(status: &Status) -> (PdError, Option<String>) {
    let Ok(failure) = PdFailure::decode(status.details()) else {
        return (PdError::Unavailable(format!("{}: {}", status.code(), status.message())), None);
    };
    let error = match failure.kind {
        Some(pd_failure::Kind::NotLeader(not_leader)) => {
            let address = Some(not_leader.leader_address).filter(|a| !a.is_empty());
            let leader = Some(not_leader.leader).filter(|&id| id != 0);
            return (PdError::NotLeader { leader }, address);
        }
        Some(pd_failure::Kind::NotBootstrapped(_)) => PdError::NotBootstrapped,
        Some(pd_failure::Kind::UnknownStore(id)) => PdError::UnknownStore(id),
        Some(pd_failure::Kind::StoreRemoved(id)) => PdError::StoreRemoved(id),
        Some(pd_failure::Kind::UnknownRegion(id)) => PdError::UnknownRegion(id),
        Some(pd_failure::Kind::DuplicateAddress(DuplicateAddress { address, store_id })) => {
            PdError::DuplicateAddress { address, store_id }
        }
        Some(pd_failure::Kind::InvalidArgument(text)) => PdError::InvalidArgument(text),
        Some(pd_failure::Kind::RegionBusy(route)) => PdError::RegionBusy(Box::new(route)),
        Some(pd_failure::Kind::Unavailable(text)) => PdError::Unavailable(text),
        Some(pd_failure::Kind::Corrupt(text)) => PdError::Corrupt(text),
        None => PdError::Unavailable(status.message().to_string()),
    };
    (error, None)
}
