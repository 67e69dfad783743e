//! The read refresh a transaction runs before its commit point when it asked for
//! serializable reads of key ranges ([`super::Transaction::refresh_on_commit`]): each
//! range is checked, region by region, for a put or a delete committed between the
//! transaction's start and its commit timestamp (the store's `mvcc::refresh`). Any
//! such write fails the commit as a conflict. A lock in the way is resolved through its
//! primary when its transaction has finished (committed or abandoned), and the region
//! refreshed again; a live transaction's lock is a conflict too: the transaction runs
//! again from a new start rather than wait while it holds locks of its own (two such
//! transactions could wait for each other).

use tessera_engine::proto::metadata::Region;
use tessera_engine::region::KeyRange;
use tessera_engine::timestamp::Timestamp;

use super::resolve::Resolution;
use crate::client::scan::Page;
use crate::client::{Client, ClientError, Conflict, Refusal, Resend};
use crate::proto::TxnRefreshRequest;

/// A transaction's span of time to refresh: from its start to its commit timestamp.
#[derive(Debug, Clone, Copy)]
pub(super) struct RefreshSpan {
    pub start_ts: Timestamp,
    pub commit_ts: Timestamp,
}

/// How many locks of finished transactions one region's refresh resolves before it
/// gives up as a conflict.
const MAX_RESOLVED_LOCKS: usize = 8;

impl Client {
    /// Checks that nothing in `[start, end)` (an empty end: to the end of the key
    /// space) changed in `span`, other than by the transaction itself; a conflict
    /// naming the key if something did. A refresh refused because the region's
    /// versions below it may have been collected is a conflict too (the transaction is
    /// too old): running again from a new start can succeed.
    pub(super) async fn refresh_range(
        &self,
        start: &[u8],
        end: &[u8],
        span: RefreshSpan,
    ) -> Result<(), ClientError> {
        let refresh_region = |low: Vec<u8>, high: Vec<u8>, _wanted: usize| async move {
            let (conflict, region) = self.refresh_region(low, high, span).await?;
            Ok(Page { pairs: conflict.into_iter().collect::<Vec<_>>(), region, resume: None })
        };
        // The first conflict ends the walk.
        let conflicts = match self.scan_regions(start, end, 1, false, refresh_region).await {
            Ok(conflicts) => conflicts,
            Err(ClientError::InvalidArgument(Refusal::BelowSafePoint { safe_point })) => {
                vec![Conflict::TooOld { start_ts: span.start_ts, fence_ts: safe_point }]
            }
            Err(error) => return Err(error),
        };
        match conflicts.into_iter().next() {
            Some(conflict) => Err(ClientError::Conflict(conflict)),
            None => Ok(()),
        }
    }

    /// Refreshes the part of `[low, high)` in the region holding `low`: the conflict
    /// found there, if any, and the region. A lock of a transaction that has finished
    /// is resolved and the region asked again; a live one is a conflict.
    async fn refresh_region(
        &self,
        low: Vec<u8>,
        high: Vec<u8>,
        span: RefreshSpan,
    ) -> Result<(Option<Conflict>, Region), ClientError> {
        let mut resolved = 0;
        loop {
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
            if let Some(lock) = answer.locked {
                if resolved < MAX_RESOLVED_LOCKS
                    && matches!(self.resolve_lock(&lock).await?, Resolution::Resolved)
                {
                    resolved += 1;
                    continue;
                }
                let holder_start_ts = Timestamp::from_u64(lock.start_ts);
                return Ok((Some(Conflict::Locked { key: lock.key, holder_start_ts }), region));
            }
            let conflict = answer.changed.then_some(Conflict::RangeChanged {
                key: answer.changed_key,
                start_ts: span.start_ts,
                commit_ts: span.commit_ts,
            });
            return Ok((conflict, region));
        }
    }
}
