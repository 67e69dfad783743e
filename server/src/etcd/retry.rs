//! Running a transaction of the etcd API again after it conflicted with another: each
//! attempt begins anew (a new start timestamp, reads again), as etcd would have
//! serialized the two, up to a bound past which the caller is told to retry. Attempts
//! are spaced by a pause that doubles and is drawn at random below it, so that two
//! transactions that keep failing each other (each met the other's lock) stop meeting.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::errors::EtcdError;
use crate::client::Transaction;

/// How many times a transaction runs before the caller is answered `Contended`.
pub(super) const MAX_ATTEMPTS: u32 = 32;

/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Runs `attempt` until it answers anything but [`EtcdError::Conflict`], at most
/// [`MAX_ATTEMPTS`] times.
pub(super) async fn until_no_conflict<T, Attempt>(
    mut attempt: impl FnMut() -> Attempt,
) -> Result<T, EtcdError>
where
    Attempt: Future<Output = Result<T, EtcdError>>,
{
    for attempt_number in 0..MAX_ATTEMPTS {
        match attempt().await {
            Err(EtcdError::Conflict) => tokio::time::sleep(pause_after(attempt_number)).await,
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

/// A pause drawn at random below 1 ms doubled per attempt so far, at most [`MAX_PAUSE`].
fn pause_after(attempt_number: u32) -> Duration {
    let ceiling_micros = (1_000u64 << attempt_number.min(16)).min(MAX_PAUSE.as_micros() as u64);
    // Random bits from std's per-process random hashing keys: no generator to keep.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    Duration::from_micros(random % ceiling_micros + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_stay_below_a_ceiling_that_doubles_up_to_the_most() {
        for attempt_number in 0..40 {
            let ceiling = Duration::from_micros(1_000 << attempt_number.min(16)).min(MAX_PAUSE);
            for _ in 0..50 {
                let pause = pause_after(attempt_number);
                assert!(
                    pause > Duration::ZERO && pause <= ceiling,
                    "{pause:?} after attempt {attempt_number}"
                );
            }
        }
    }
}
