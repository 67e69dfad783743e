//! Typed failures across gRPC: a [`StoreError`] or [`PdError`] travels as a status whose
//! details hold a [`KvFailure`] or [`PdFailure`], and comes back out as the same kind,
//! so that clients act on what happened, never on message text.
//!
//! The kind follows the error's [`Retry`]: what no retry can fix (an invalid request, an
//! invalid membership change, a refused leader transfer, a region that exists) travels
//! as `invalid_argument`, which clients do not retry; `unavailable` is kept for what may
//! succeed later (not leader, shutting down, Raft busy with a transfer or a membership
//! change, a failed disk on this replica). Refusals have no kind of their own on the
//! wire yet (issue 15 gives them one); `invalid_argument` is what every client already
//! reads as "do not retry".

use prost::Message;
use tessera_engine::kv::KvError;
use tessera_engine::region::RegionError;
use tessera_engine::store::{Retry, StoreError};
use tessera_placement::{Corruption, InvalidRequest, PdError, Unavailability};
use tonic::{Code, Status};

use crate::proto::{DuplicateAddress, KvFailure, NotLeader, PdFailure, PdNotLeader, kv_failure, pd_failure};

/// A store's error as the status a client receives; `address_of` names the leader's
/// store address when the error points to another store.
pub(crate) fn kv_status(error: StoreError, address_of: impl Fn(u64) -> Option<String>) -> Status {
    let message = error.to_string();
    let (code, kind) = kv_code_and_kind(error, message.clone(), address_of);
    let details = KvFailure { kind: Some(kind) }.encode_to_vec();
    Status::with_details(code, message, details.into())
}

fn kv_code_and_kind(
    error: StoreError,
    message: String,
    address_of: impl Fn(u64) -> Option<String>,
) -> (Code, kv_failure::Kind) {
    let retry = error.retry();
    match error {
        StoreError::NotLeader { region_id, leader } => {
            let leader_address = leader.and_then(|p| address_of(p.store_id)).unwrap_or_default();
            (Code::Unavailable, kv_failure::Kind::NotLeader(NotLeader { region_id, leader, leader_address }))
        }
        StoreError::RegionNotFound(region_id) => {
            (Code::NotFound, kv_failure::Kind::RegionNotFound(region_id))
        }
        StoreError::Region(error) | StoreError::Kv(KvError::Region(error)) => region_failure(error, message),
        StoreError::ProposalDropped => (Code::Aborted, kv_failure::Kind::NotCommitted(message)),
        StoreError::OutcomeUnknown => (Code::Unknown, kv_failure::Kind::OutcomeUnknown(message)),
        // Refused for good: the request, or the state it asks to change, must change.
        StoreError::Kv(_)
        | StoreError::InvalidChange(_)
        | StoreError::RegionExists(_)
        | StoreError::MalformedEntry { .. } => {
            (Code::InvalidArgument, kv_failure::Kind::InvalidArgument(message))
        }
        // Raft's refusals are for good or for now, by kind.
        StoreError::Raft(_) if retry == Retry::Never => {
            (Code::InvalidArgument, kv_failure::Kind::InvalidArgument(message))
        }
        StoreError::Raft(_)
        | StoreError::Storage(_)
        | StoreError::ThreadSpawn { .. }
        | StoreError::ShuttingDown => (Code::Unavailable, kv_failure::Kind::Unavailable(message)),
    }
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
        PdError::InvalidArgument(invalid) => {
            (Code::InvalidArgument, pd_failure::Kind::InvalidArgument(invalid.to_string()))
        }
        // A refusal for good, read by every client as "do not retry".
        PdError::Refused(_) => (Code::InvalidArgument, pd_failure::Kind::InvalidArgument(message.clone())),
        PdError::RegionBusy(route) => (Code::Aborted, pd_failure::Kind::RegionBusy(*route)),
        PdError::Unavailable(why) => (Code::Unavailable, pd_failure::Kind::Unavailable(why.to_string())),
        PdError::Corrupt(corruption) => (Code::DataLoss, pd_failure::Kind::Corrupt(corruption.to_string())),
    };
    Status::with_details(code, message, PdFailure { kind: Some(kind) }.encode_to_vec().into())
}

/// A status from a driver, back as the error it was; `leader_address` is set for a
/// redirect that named the leader's address. What travels as text comes back as the
/// `Remote` variant of its kind.
pub(crate) fn pd_error(status: &Status) -> (PdError, Option<String>) {
    let Ok(failure) = PdFailure::decode(status.details()) else {
        let text = format!("{}: {}", status.code(), status.message());
        return (Unavailability::Remote(text).into(), None);
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
        Some(pd_failure::Kind::InvalidArgument(text)) => InvalidRequest::Remote(text).into(),
        Some(pd_failure::Kind::RegionBusy(route)) => PdError::RegionBusy(Box::new(route)),
        Some(pd_failure::Kind::Unavailable(text)) => Unavailability::Remote(text).into(),
        Some(pd_failure::Kind::Corrupt(text)) => Corruption::Remote(text).into(),
        None => Unavailability::Remote(status.message().to_string()).into(),
    };
    (error, None)
}

#[cfg(test)]
mod tests {
    use tessera_engine::raft::{self, ConfChangeRefusal, TransferRefusal};
    use tessera_engine::store::InvalidChange;
    use tessera_placement::MetadataOperation;

    use super::*;

    /// What no retry can fix must reach the client as a refusal, never as
    /// unavailability, which clients retry until their deadline; a group busy with
    /// something that ends by itself is worth waiting for.
    #[test]
    fn refusals_for_good_travel_as_invalid_argument_and_busy_groups_as_unavailable() {
        let cases = [
            (StoreError::Raft(raft::Error::InvalidConfChange(ConfChangeRefusal::NoVoterLeft)), Retry::Never),
            (
                StoreError::Raft(raft::Error::TransferRefused {
                    target: 3,
                    reason: TransferRefusal::NotAVoter,
                }),
                Retry::Never,
            ),
            (StoreError::InvalidChange(InvalidChange::NoPeer), Retry::Never),
            (StoreError::RegionExists(7), Retry::Never),
            (StoreError::Raft(raft::Error::ConfChangeInProgress), Retry::Possible),
            (StoreError::Raft(raft::Error::LeaderTransferInProgress { transferee: 2 }), Retry::Possible),
            (StoreError::ShuttingDown, Retry::Possible),
        ];
        for (error, retry) in cases {
            assert_eq!(error.retry(), retry, "{error}");
            let status = kv_status(error.clone(), |_| None);
            let kind = kv_failure(&status);
            match retry {
                Retry::Never => {
                    assert_eq!(status.code(), Code::InvalidArgument, "{error}");
                    assert!(matches!(kind, Some(kv_failure::Kind::InvalidArgument(_))), "{error}: {kind:?}");
                }
                _ => {
                    assert_eq!(status.code(), Code::Unavailable, "{error}");
                    assert!(matches!(kind, Some(kv_failure::Kind::Unavailable(_))), "{error}: {kind:?}");
                }
            }
        }
    }

    #[test]
    fn not_leader_carries_the_leaders_address() {
        let leader = tessera_engine::proto::metadata::Peer { id: 12, store_id: 2, role: 0 };
        let error = StoreError::NotLeader { region_id: 5, leader: Some(leader) };
        let status = kv_status(error, |store_id| (store_id == 2).then(|| "127.0.0.1:7002".to_string()));
        match kv_failure(&status) {
            Some(kv_failure::Kind::NotLeader(not_leader)) => {
                assert_eq!((not_leader.region_id, not_leader.leader_address.as_str()), (5, "127.0.0.1:7002"));
                assert_eq!(not_leader.leader, Some(leader));
            }
            other => panic!("not leader decoded as {other:?}"),
        }
    }

    /// A driver's refusal for good comes back to a client as one it does not retry,
    /// and its unavailability as one it does.
    #[test]
    fn driver_errors_keep_their_retry_across_the_wire() {
        let refused = PdError::Refused(StoreError::Raft(raft::Error::InvalidConfChange(
            ConfChangeRefusal::VoterAndLearner { node_id: 4 },
        )));
        let (back, _) = pd_error(&pd_status(refused.clone(), |_| None));
        assert!(!refused.is_retryable() && !back.is_retryable(), "{back:?}");
        assert!(back.to_string().contains("both a voter and a learner"), "{back}");

        let unavailable = PdError::Unavailable(Unavailability::TimedOut(MetadataOperation::Write));
        let (back, _) = pd_error(&pd_status(unavailable, |_| None));
        assert!(back.is_retryable(), "{back:?}");

        let (back, address) =
            pd_error(&pd_status(PdError::NotLeader { leader: Some(2) }, |_| Some("127.0.0.1:2379".into())));
        assert_eq!(back, PdError::NotLeader { leader: Some(2) });
        assert_eq!(address.as_deref(), Some("127.0.0.1:2379"));
    }

    /// A status without a typed failure (a proxy, a broken connection) is treated as
    /// unavailability: retried, never taken for a refusal.
    #[test]
    fn an_untyped_status_is_unavailability() {
        let (error, _) = pd_error(&Status::unavailable("connection reset"));
        assert!(error.is_retryable(), "{error:?}");
        assert_eq!(kv_failure(&Status::unavailable("connection reset")), None);
    }
}
