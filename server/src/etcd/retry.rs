//! Running a transaction of the etcd API again after it conflicted with another: each
//! attempt begins anew (a new start timestamp, reads again), as etcd would have
//! serialized the two, up to a bound past which the caller is told to retry.

use super::errors::EtcdError;
use crate::client::Transaction;

/// How many times a transaction runs before the caller is answered `Contended`.
pub(super) const MAX_ATTEMPTS: u32 = 32;

/// Runs `attempt` until it answers anything but [`EtcdError::Conflict`], at most
/// [`MAX_ATTEMPTS`] times.
pub(super) async fn until_no_conflict<T, Attempt>(
    mut attempt: impl FnMut() -> Attempt,
) -> Result<T, EtcdError>
where
    Attempt: Future<Output = Result<T, EtcdError>>,
{
    for _ in 0..MAX_ATTEMPTS {
        match attempt().await {
            Err(EtcdError::Conflict) => continue,
            answer => return answer,
        }
    }
    Err(EtcdError::Contended { attempts: MAX_ATTEMPTS })
}

/// Commits `transaction`; answers its commit timestamp as a revision, or
/// [`EtcdError::Conflict`] when it conflicted with another (run it again).
pub(super) async fn commit(transaction: Transaction) -> Result<i64, EtcdError> {
    match transaction.commit().await {
        Ok(committed_at) => super::errors::revision(committed_at),
        Err(error) if error.is_conflict() => Err(EtcdError::Conflict),
        Err(error) => Err(error.into()),
    }
}
