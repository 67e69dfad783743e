//! Typed failures across gRPC, in gRPC's rich error model: a [`StoreError`] or
//! [`PdError`] travels as a status whose `grpc-status-details-bin` trailer holds a
//! `google.rpc.Status` with the typed failure ([`KvFailure`], [`PdFailure`]) and a
//! `google.rpc.ErrorInfo` packed in its details. Any gRPC library decodes that with its
//! stock helpers (Python's `grpcio-status`, Go's `status.FromError`); our client reads
//! the same kind back, so that it acts on what happened, never on message text.
//!
//! The code follows what the client can do (`proto/service.proto` documents each, with
//! whether the request may have applied): what no retry can fix (an invalid request, an
//! invalid membership change, a refused leader transfer, a region that exists) travels
//! as `invalid_argument`; a request routed on stale knowledge (not the leader, a stale
//! epoch, a key outside the region) as `failed_precondition`, so that a stock retry
//! policy that resends `unavailable` never takes it for a broken connection;
//! `unavailable` is kept for what did not apply and may succeed later (shutting down,
//! Raft busy with a transfer or a membership change, a failed disk on this replica).

use std::collections::HashMap;

use prost::{Message, Name};
use prost_types::Any;
use tessera_engine::kv::KvError;
use tessera_engine::region::RegionError;
use tessera_engine::store::{Retry, StoreError};
use tessera_placement::{Corruption, InvalidRequest, PdError, Unavailability};
use tonic::{Code, Status};
use tonic_types::pb::{ErrorInfo, Status as RpcStatus};

use crate::proto::{
    DuplicateAddress, KvFailure, NotLeader, PdFailure, PdNotLeader, RequestEffect, kv_failure, pd_failure,
};

/// The `domain` of every `google.rpc.ErrorInfo` Tessera sends.
pub const ERROR_DOMAIN: &str = "tessera";

/// `google.rpc.ErrorInfo`'s type URL in an `Any`.
const ERROR_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// A status in the rich error model: `failure` and an `ErrorInfo` naming `reason`.
fn rich_status(
    code: Code,
    message: String,
    failure: Any,
    reason: &str,
    metadata: HashMap<String, String>,
) -> Status {
    let error_info = ErrorInfo { reason: reason.to_string(), domain: ERROR_DOMAIN.to_string(), metadata };
    let error_info = Any { type_url: ERROR_INFO_TYPE_URL.to_string(), value: error_info.encode_to_vec() };
    let details =
        RpcStatus { code: code as i32, message: message.clone(), details: vec![failure, error_info] };
    Status::with_details(code, message, details.encode_to_vec().into())
}

fn packed<M: Message + Name>(message: &M) -> Any {
    Any { type_url: M::type_url(), value: message.encode_to_vec() }
}

/// The detail of type `M` in a rich status, if it carries one.
fn unpacked<M: Message + Name + Default>(status: &Status) -> Option<M> {
    let details = RpcStatus::decode(status.details()).ok()?;
    let any = details.details.iter().find(|any| any.type_url == M::type_url())?;
    M::decode(any.value.as_slice()).ok()
}

/// A key-value request refused before it reached a region: it is malformed.
pub(crate) fn invalid_kv_request(message: &str) -> Status {
    let kind = kv_failure::Kind::InvalidArgument(message.to_string());
    kv_failure_status(Code::InvalidArgument, message.to_string(), kind, 0)
}

/// A key-value request whose sender may not do it (PERMISSION_DENIED), carried as a
/// refusal that no retry can change.
pub(crate) fn forbidden_kv_request(message: &str) -> Status {
    let kind = kv_failure::Kind::InvalidArgument(message.to_string());
    kv_failure_status(Code::PermissionDenied, message.to_string(), kind, 0)
}

fn kv_failure_status(code: Code, message: String, kind: kv_failure::Kind, region_id: u64) -> Status {
    let reason = kv_reason(&kind);
    let effect = match kind {
        kv_failure::Kind::OutcomeUnknown(_) => RequestEffect::Unknown,
        _ => RequestEffect::NotApplied,
    };
    let failure = KvFailure { kind: Some(kind), effect: effect as i32 };
    let metadata = if region_id == 0 {
        HashMap::new()
    } else {
        HashMap::from([("region_id".to_string(), region_id.to_string())])
    };
    rich_status(code, message, packed(&failure), reason, metadata)
}

/// The `ErrorInfo` reason of a failure kind: its name in the proto, upper case.
fn kv_reason(kind: &kv_failure::Kind) -> &'static str {
    match kind {
        kv_failure::Kind::NotLeader(_) => "NOT_LEADER",
        kv_failure::Kind::EpochNotMatch(_) => "EPOCH_NOT_MATCH",
        kv_failure::Kind::RegionNotFound(_) => "REGION_NOT_FOUND",
        kv_failure::Kind::KeyNotInRegion(_) => "KEY_NOT_IN_REGION",
        kv_failure::Kind::InvalidArgument(_) => "INVALID_ARGUMENT",
        kv_failure::Kind::NotCommitted(_) => "NOT_COMMITTED",
        kv_failure::Kind::OutcomeUnknown(_) => "OUTCOME_UNKNOWN",
        kv_failure::Kind::Unavailable(_) => "UNAVAILABLE",
        kv_failure::Kind::ReplicaBehind(_) => "REPLICA_BEHIND",
        kv_failure::Kind::BelowSafePoint(_) => "BELOW_SAFE_POINT",
    }
}

/// A store's error as the status a client receives; `address_of` names the leader's
/// store address when the error points to another store.
pub(crate) fn kv_status(error: StoreError, address_of: impl Fn(u64) -> Option<String>) -> Status {
    let message = error.to_string();
    let region_id = region_of(&error);
    let (code, kind) = kv_code_and_kind(error, message.clone(), address_of);
    kv_failure_status(code, message, kind, region_id)
}

/// The region an error names, or 0.
fn region_of(error: &StoreError) -> u64 {
    match error {
        StoreError::NotLeader { region_id, .. } | StoreError::RegionNotFound(region_id) => *region_id,
        StoreError::Region(
            RegionError::EpochNotMatch { region_id, .. }
            | RegionError::EpochAhead { region_id, .. }
            | RegionError::KeyNotInRegion { region_id, .. },
        ) => *region_id,
        _ => 0,
    }
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
            let not_leader = NotLeader { region_id, leader, leader_address };
            (Code::FailedPrecondition, kv_failure::Kind::NotLeader(not_leader))
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
        | StoreError::FeedNotReady { .. }
        | StoreError::ShuttingDown => (Code::Unavailable, kv_failure::Kind::Unavailable(message)),
        // Out of the range of timestamps that can still be read, for good.
        StoreError::BelowSafePoint(below) => {
            (Code::OutOfRange, kv_failure::Kind::BelowSafePoint(below.safe_point))
        }
        // Not proposed: the same leader serves it once its queue drains (the client keeps
        // the route and backs off).
        StoreError::Busy { .. } => (Code::ResourceExhausted, kv_failure::Kind::NotCommitted(message)),
        // Only opening a store meets it; another replica can serve meanwhile.
        StoreError::InvalidConfig(_) => (Code::Unavailable, kv_failure::Kind::Unavailable(message)),
    }
}

fn region_failure(error: RegionError, message: String) -> (Code, kv_failure::Kind) {
    match error {
        RegionError::EpochNotMatch { current_region, .. } => {
            (Code::FailedPrecondition, kv_failure::Kind::EpochNotMatch(*current_region))
        }
        RegionError::EpochAhead { region_id, .. } => {
            (Code::Unavailable, kv_failure::Kind::ReplicaBehind(region_id))
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
    unpacked::<KvFailure>(status)?.kind
}

/// A driver's error as a status; `address_of` names a driver member's address.
pub(crate) fn pd_status(error: PdError, address_of: impl Fn(u64) -> Option<String>) -> Status {
    let message = error.to_string();
    let (code, kind) = match error {
        PdError::NotLeader { leader } => {
            let leader_address = leader.and_then(&address_of).unwrap_or_default();
            let not_leader = PdNotLeader { leader: leader.unwrap_or(0), leader_address };
            (Code::FailedPrecondition, pd_failure::Kind::NotLeader(not_leader))
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
    let reason = pd_reason(&kind);
    rich_status(code, message, packed(&PdFailure { kind: Some(kind) }), reason, HashMap::new())
}

/// The `ErrorInfo` reason of a driver failure kind: its name in the proto, upper case.
fn pd_reason(kind: &pd_failure::Kind) -> &'static str {
    match kind {
        pd_failure::Kind::NotLeader(_) => "NOT_LEADER",
        pd_failure::Kind::NotBootstrapped(_) => "NOT_BOOTSTRAPPED",
        pd_failure::Kind::UnknownStore(_) => "UNKNOWN_STORE",
        pd_failure::Kind::StoreRemoved(_) => "STORE_REMOVED",
        pd_failure::Kind::UnknownRegion(_) => "UNKNOWN_REGION",
        pd_failure::Kind::DuplicateAddress(_) => "DUPLICATE_ADDRESS",
        pd_failure::Kind::InvalidArgument(_) => "INVALID_ARGUMENT",
        pd_failure::Kind::RegionBusy(_) => "REGION_BUSY",
        pd_failure::Kind::Unavailable(_) => "UNAVAILABLE",
        pd_failure::Kind::Corrupt(_) => "CORRUPT",
    }
}

/// A status from a driver, back as the error it was; `leader_address` is set for a
/// redirect that named the leader's address. What travels as text comes back as the
/// `Remote` variant of its kind.
pub(crate) fn pd_error(status: &Status) -> (PdError, Option<String>) {
    let Some(failure) = unpacked::<PdFailure>(status) else {
        let text = format!("{}: {}", status.code(), status.message());
        // Refused for the caller's certificate: asking again (or another replica) is
        // refused the same way.
        if matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) {
            return (InvalidRequest::Remote(text).into(), None);
        }
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

    /// A busy worker's refusal keeps the client on its route (not committed: it backs
    /// off and sends again to the same leader), never final.
    #[test]
    fn a_busy_worker_s_refusal_is_retried_on_the_same_route() {
        let error = StoreError::Busy { region_id: 4, queued: 32_768 };
        assert_eq!(error.retry(), Retry::Possible);
        let status = kv_status(error, |_| None);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(matches!(kv_failure(&status), Some(kv_failure::Kind::NotCommitted(_))), "{status:?}");
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

    fn effect(status: &Status) -> RequestEffect {
        let failure = unpacked::<KvFailure>(status).expect("a typed failure");
        RequestEffect::try_from(failure.effect).expect("a known effect")
    }

    /// Refusals that certainly did not apply never travel as `unavailable`, which a
    /// broken connection also produces; each says it did not apply.
    #[test]
    fn stale_routes_are_failed_preconditions_that_did_not_apply() {
        let region = tessera_engine::proto::metadata::Region { id: 5, ..Default::default() };
        let stale = RegionError::EpochNotMatch {
            region_id: 5,
            requested: Default::default(),
            current: Default::default(),
            current_region: Box::new(region),
        };
        let outside =
            RegionError::KeyNotInRegion { key: b"k".to_vec(), region_id: 5, start: vec![], end: vec![] };
        let cases = [
            (
                StoreError::NotLeader { region_id: 5, leader: None },
                Code::FailedPrecondition,
                "NOT_LEADER",
                Some("5"),
            ),
            (StoreError::Region(stale), Code::FailedPrecondition, "EPOCH_NOT_MATCH", Some("5")),
            (StoreError::Region(outside), Code::FailedPrecondition, "KEY_NOT_IN_REGION", Some("5")),
            (StoreError::RegionNotFound(5), Code::NotFound, "REGION_NOT_FOUND", Some("5")),
            (StoreError::ProposalDropped, Code::Aborted, "NOT_COMMITTED", None),
        ];
        for (error, code, reason, region) in cases {
            let status = kv_status(error.clone(), |_| None);
            assert_eq!(status.code(), code, "{error}");
            assert_eq!(effect(&status), RequestEffect::NotApplied, "{error}");
            let info = error_info(&status);
            assert_eq!((info.reason.as_str(), info.domain.as_str()), (reason, ERROR_DOMAIN), "{error}");
            assert_eq!(info.metadata.get("region_id").map(String::as_str), region, "{error}");
        }
        let unknown = kv_status(StoreError::OutcomeUnknown, |_| None);
        assert_eq!(unknown.code(), Code::Unknown);
        assert_eq!(effect(&unknown), RequestEffect::Unknown);
    }

    fn error_info(status: &Status) -> ErrorInfo {
        let details = RpcStatus::decode(status.details()).expect("a google.rpc.Status");
        let any =
            details.details.iter().find(|any| any.type_url == ERROR_INFO_TYPE_URL).expect("an ErrorInfo");
        ErrorInfo::decode(any.value.as_slice()).expect("an ErrorInfo")
    }

    /// The trailer is what every gRPC library's rich-error helper expects: a
    /// google.rpc.Status with the same code and message as the status itself, whose
    /// details are `Any`s with standard type URLs.
    #[test]
    fn the_details_are_a_google_rpc_status_that_matches_the_status() {
        let status = kv_status(StoreError::RegionNotFound(9), |_| None);
        let details = RpcStatus::decode(status.details()).expect("a google.rpc.Status");
        assert_eq!(details.code, Code::NotFound as i32);
        assert_eq!(details.message, status.message());
        let type_urls: Vec<&str> = details.details.iter().map(|any| any.type_url.as_str()).collect();
        assert_eq!(type_urls, ["type.googleapis.com/tessera.service.KvFailure", ERROR_INFO_TYPE_URL]);

        let pd = pd_status(PdError::UnknownRegion(3), |_| None);
        let details = RpcStatus::decode(pd.details()).expect("a google.rpc.Status");
        assert_eq!((details.code, details.message.as_str()), (Code::NotFound as i32, pd.message()));
        assert_eq!(details.details[0].type_url, "type.googleapis.com/tessera.service.PdFailure");
        assert_eq!(error_info(&pd).reason, "UNKNOWN_REGION");
    }

    /// A bare failure message (the old, non-standard trailer) is not mistaken for one.
    #[test]
    fn a_bare_failure_in_the_trailer_is_not_a_typed_failure() {
        let bare = KvFailure { kind: Some(kv_failure::Kind::RegionNotFound(4)), effect: 0 };
        let status = Status::with_details(Code::NotFound, "no region", bare.encode_to_vec().into());
        assert_eq!(kv_failure(&status), None);
    }

    #[test]
    fn messages_read_without_debug_formatting() {
        let leader = tessera_engine::proto::metadata::Peer { id: 198, store_id: 2, role: 0 };
        let status = kv_status(StoreError::NotLeader { region_id: 5, leader: Some(leader) }, |_| None);
        assert_eq!(status.message(), "region 5 is not led by this store (its leader: peer 198 on store 2)");
        let outside = RegionError::KeyNotInRegion {
            key: b"k\x01".to_vec(),
            region_id: 5,
            start: b"a".to_vec(),
            end: vec![],
        };
        assert_eq!(
            kv_status(StoreError::Region(outside), |_| None).message(),
            r#"key "k\x01" is outside region 5 ["a", end)"#
        );
        let invalid = invalid_kv_request("the request names no region (no context)");
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert!(matches!(kv_failure(&invalid), Some(kv_failure::Kind::InvalidArgument(_))));
    }
}
