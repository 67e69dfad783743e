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
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExists,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExists,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    #[error("etcdserver: permission type {0} is none of READ, WRITE, READWRITE")]
    InvalidPermissionType(i32),
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthManagement,
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// A password (or its hash) that cannot be used, and why.
    #[error("etcdserver: {0}")]
    InvalidPassword(String),
    #[error("etcdserver: permission denied")]
    PermissionDenied,
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
    /// Whether this refuses a caller for who it is or what it may do (worth judging
    /// again on a fresher auth state: a grant, or authentication turned off, made
    /// through another store). Such re-reads are shared by the refusals waiting.
    pub(crate) fn is_refusal_by_auth(&self) -> bool {
        matches!(self, EtcdError::PermissionDenied | EtcdError::InvalidAuthToken | EtcdError::UserEmpty)
    }

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
            | EtcdError::EmptyOperation
            | EtcdError::UserEmpty
            | EtcdError::RoleEmpty
            | EtcdError::PermissionNotGiven
            | EtcdError::InvalidPermissionType(_)
            | EtcdError::AuthFailed
            | EtcdError::InvalidAuthManagement
            | EtcdError::InvalidPassword(_) => Status::invalid_argument(message),
            EtcdError::UserAlreadyExists
            | EtcdError::UserNotFound
            | EtcdError::RoleAlreadyExists
            | EtcdError::RoleNotFound
            | EtcdError::RoleNotGranted
            | EtcdError::PermissionNotGranted
            | EtcdError::AuthNotEnabled
            | EtcdError::RootUserNotExist
            | EtcdError::RootRoleNotExist => Status::failed_precondition(message),
            EtcdError::InvalidAuthToken => Status::unauthenticated(message),
            EtcdError::PermissionDenied => Status::permission_denied(message),
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
