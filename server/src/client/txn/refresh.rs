//! The read refresh a transaction runs before its commit point when it asked for
//! serializable reads of key ranges ([`super::Transaction::refresh_on_commit`]): each
//! range is checked, region by region, for a put or a delete committed between the
//! transaction's start and its commit timestamp (the store's `mvcc::refresh`). Any
//! such write, or another transaction's lock in the way, fails the commit as a
//! conflict: the transaction runs again from a new start rather than wait while it
//! holds locks of its own.

use tessera_engine::region::KeyRange;
use tessera_engine::timestamp::Timestamp;

use crate::client::{Client, ClientError, Conflict, Resend};
use crate::proto::TxnRefreshRequest;

/// A transaction's span of time to refresh: from its start to its commit timestamp.
#[derive(Debug, Clone, Copy)]
pub(super) struct RefreshSpan {
    pub start_ts: Timestamp,
    pub commit_ts: Timestamp,
}

impl Client {
    /// Checks that nothing in `[start, end)` (an empty end: to the end of the key
    /// space) changed in `span`, other than by the transaction itself; a conflict
    /// naming the key if something did.
    pub(super) async fn refresh_range(
        &self,
        start: &[u8],
        end: &[u8],
        span: RefreshSpan,
    ) -> Result<(), ClientError> {
        let refresh_region = |low: Vec<u8>, high: Vec<u8>, _wanted: usize| async move {
            let (answer, region) = self
                .on_region(&low, Resend::Always, |mut kv, context, region| {
                    let request = TxnRefreshRequest {
                        context: Some(context),
                        start_key: low.clone(),
                        end_key: KeyRange::of(&region).clamp(&KeyRange::new(&low, &high)).end().to_vec(),
                        after_ts: span.start_ts.as_u64(),
                        up_to_ts: span.commit_ts.as_u64(),
                        own_start_ts: span.start_ts.as_u64(),
                    };
                    async move { kv.txn_refresh(request).await }
                })
                .await?;
            let answer = answer.into_inner();
            let conflict = match answer.locked {
                Some(lock) => Some(Conflict::Locked {
                    key: lock.key,
                    holder_start_ts: Timestamp::from_u64(lock.start_ts),
                }),
                None if answer.changed => Some(Conflict::RangeChanged {
                    key: answer.changed_key,
                    start_ts: span.start_ts,
                    commit_ts: span.commit_ts,
                }),
                None => None,
            };
            Ok((conflict.into_iter().collect::<Vec<_>>(), region))
        };
        // The first conflict ends the walk.
        let conflicts = self.scan_regions(start, end, 1, false, refresh_region).await?;
        match conflicts.into_iter().next() {
            Some(conflict) => Err(ClientError::Conflict(conflict)),
            None => Ok(()),
        }
    }
}
