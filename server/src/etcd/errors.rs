//! What the etcd API answers when a request fails: etcd's gRPC codes and messages,
//! which etcd's clients match on (`etcdserver: ...`), and a retryable UNAVAILABLE for
//! what the cluster could not do in time.

use tessera_engine::kv::KvError;
use tessera_engine::timestamp::Timestamp;
use tonic::Status;

use crate::client::{ClientError, Refusal};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum EtcdError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOperations,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: an operation of the txn request names no request")]
    EmptyOperation,
    /// A transaction met another writing the same keys; run it again (never leaves the
    /// etcd layer: it retries, then answers [`EtcdError::Contended`]).
    #[error("etcdserver: the transaction conflicted with another; try again")]
    Conflict,
    /// Writers kept conflicting on the same keys: retryable.
    #[error("etcdserver: too many concurrent writes to the same keys ({attempts} attempts); try again")]
    Contended { attempts: u32 },
    /// The cluster did not answer in time, or refused for a reason a retry may clear.
    #[error("etcdserver: request timed out: {0}")]
    Unavailable(String),
    /// A request Tessera will not serve, named.
    #[error("{0}")]
    Unsupported(String),
    /// A broken invariant of the data the etcd API wrote.
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl EtcdError {
    pub(crate) fn unsupported(what: &str) -> EtcdError {
        EtcdError::Unsupported(format!("{what} is not supported by Tessera's etcd API"))
    }
}

impl EtcdError {
    /// Why a watch ended, as etcd would say it.
    pub(crate) fn from_watch(error: crate::client::WatchError) -> EtcdError {
        use crate::client::WatchError;
        match error {
            WatchError::Compacted { .. } => EtcdError::Compacted,
            WatchError::Client(error) => error.into(),
            other => EtcdError::Unavailable(other.to_string()),
        }
    }
}

impl From<ClientError> for EtcdError {
    fn from(error: ClientError) -> EtcdError {
        match error {
            ClientError::InvalidArgument(Refusal::BelowSafePoint { .. }) => EtcdError::Compacted,
            ClientError::InvalidArgument(Refusal::FutureTimestamp { .. }) => EtcdError::FutureRevision,
            ClientError::InvalidArgument(Refusal::Kv(
                KvError::KeyTooLarge { .. } | KvError::ValueTooLarge { .. },
            )) => EtcdError::RequestTooLarge,
            ClientError::InvalidArgument(Refusal::Kv(KvError::EmptyKey)) => EtcdError::EmptyKey,
            ClientError::ProtocolViolation { .. } => EtcdError::Internal(error.to_string()),
            other => EtcdError::Unavailable(other.to_string()),
        }
    }
}

impl From<EtcdError> for Status {
    fn from(error: EtcdError) -> Status {
        let message = error.to_string();
        match error {
            EtcdError::EmptyKey
            | EtcdError::KeyNotFound
            | EtcdError::RequestTooLarge
            | EtcdError::TooManyOperations
            | EtcdError::DuplicateKey
            | EtcdError::ValueProvided
            | EtcdError::LeaseProvided
            | EtcdError::EmptyOperation => Status::invalid_argument(message),
            EtcdError::LeaseNotFound => Status::not_found(message),
            EtcdError::LeaseExists => Status::failed_precondition(message),
            EtcdError::LeaseTtlTooLarge => Status::out_of_range(message),
            EtcdError::Compacted | EtcdError::FutureRevision => Status::out_of_range(message),
            EtcdError::Contended { .. } | EtcdError::Conflict | EtcdError::Unavailable(_) => {
                Status::unavailable(message)
            }
            EtcdError::Unsupported(_) => Status::unimplemented(message),
            EtcdError::Internal(_) => Status::internal(message),
        }
    }
}

/// A revision as etcd's messages carry it: the commit timestamp of the write that
/// made it (below 2^63 for as long as the oracle's clock is a wall clock).
pub(crate) fn revision(at: Timestamp) -> Result<i64, EtcdError> {
    i64::try_from(at.as_u64())
        .map_err(|_| EtcdError::Internal(format!("timestamp {at} is past every revision")))
}
