//! One span of a watch: a part of the range that lies in one region, followed through
//! that region's feed on its leader and reopened, from the span's resolved timestamp,
//! whenever the feed ends (a leader change, a split, a replica moved, a store stopped,
//! a watcher that fell behind, a broken connection).
//!
//! A span reports the events it receives, and its resolved timestamp once the feed has
//! caught up (never lower than before). When the region it opens in ends before the
//! span does (the region split, or the span was never cut to regions), the span keeps
//! the part in the region and hands the rest to the coordinator as a new span from
//! its own resolved timestamp: what either part may still receive is above it.

use std::sync::Arc;
use std::time::Duration;

use tessera_engine::proto::metadata::Region;
use tessera_engine::region::KeyRange;
use tessera_engine::timestamp::Timestamp;
use tokio::sync::mpsc;
use tonic::Streaming;

use super::{ChangeEvent, SpanId, WatchError};
use crate::client::{BACKOFF_MAX, BACKOFF_MIN, Client, ClientError, Refusal, Resend};
use crate::proto::{FeedCloseReason, RegionFeedRequest, RegionFeedResponse};

/// Feeds that may end before catching up, one after the other, before the span gives
/// up: a catch-up that keeps failing (say, a corrupt record) must not be retried
/// forever.
const FAILED_FEEDS_IN_A_ROW: u32 = 20;

/// How long a span waits before reopening a feed its leader ended (a leader change, a
/// split, a replica moved), for the region to settle.
const REOPEN_PAUSE: Duration = Duration::from_millis(10);

/// What a span tells the coordinator.
pub(super) enum Report {
    Events(Vec<ChangeEvent>),
    Resolved {
        span: SpanId,
        at: Timestamp,
    },
    /// The span now ends at `at`; the rest of what it covered is a new span, which has
    /// seen everything up to `resolved`.
    Split {
        at: Vec<u8>,
        end: Vec<u8>,
        resolved: Timestamp,
    },
    /// The span cannot go on: the watch ends with this error.
    Failed(WatchError),
}

pub(super) struct Span {
    pub id: SpanId,
    pub start: Vec<u8>,
    /// Empty: to the end of the key space.
    pub end: Vec<u8>,
    /// Every version of the span committed at or below this has been reported.
    pub resolved: Timestamp,
}

/// How one region feed ended.
enum Ended {
    /// Reopen. `failed`: the feed broke (an error, or an end without a reason) before
    /// catching up; the span pauses, and gives up after many such in a row.
    Reopen { failed: bool },
    /// The coordinator is gone: the watch ended.
    WatchGone,
}

/// Follows `span` until the watch ends or the span fails.
pub(super) async fn follow(
    client: Arc<Client>,
    mut span: Span,
    prev_values: bool,
    reports: mpsc::Sender<Report>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut failed_in_a_row = 0;
    loop {
        let (stream, region) = match open(&client, &span, prev_values).await {
            Ok(opened) => opened,
            Err(error) => {
                let _ = reports.send(Report::Failed(error)).await;
                return;
            }
        };
        if !KeyRange::of(&region).reaches(&span.end) {
            let split =
                Report::Split { at: region.end_key.clone(), end: span.end.clone(), resolved: span.resolved };
            if reports.send(split).await.is_err() {
                return;
            }
            span.end = region.end_key.clone();
        }
        match receive(&mut span, stream, &reports).await {
            Ended::WatchGone => return,
            Ended::Reopen { failed: false } => {
                backoff = BACKOFF_MIN;
                failed_in_a_row = 0;
            }
            Ended::Reopen { failed: true } => {
                failed_in_a_row += 1;
                if failed_in_a_row >= FAILED_FEEDS_IN_A_ROW {
                    let error =
                        WatchError::FeedsKeepFailing { region_id: region.id, attempts: failed_in_a_row };
                    let _ = reports.send(Report::Failed(error)).await;
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        // Wherever the region's leader is now: the driver says.
        client.cache.invalidate(region.id);
    }
}

/// Opens the feed of the region holding the span's start, for the span's part in it.
async fn open(
    client: &Client,
    span: &Span,
    prev_values: bool,
) -> Result<(Streaming<RegionFeedResponse>, Region), WatchError> {
    let opened = client
        .on_region(&span.start, Resend::Always, |mut kv, context, region| {
            let end = KeyRange::of(&region).clamp(&KeyRange::new(&span.start, &span.end)).end().to_vec();
            let request = RegionFeedRequest {
                context: Some(context),
                start_key: span.start.clone(),
                end_key: end,
                start_ts: span.resolved.as_u64(),
                prev_values,
            };
            async move { kv.region_feed(request).await }
        })
        .await;
    match opened {
        Ok((response, region)) => Ok((response.into_inner(), region)),
        Err(ClientError::InvalidArgument(Refusal::BelowSafePoint { safe_point })) => {
            Err(WatchError::Compacted { from: span.resolved, safe_point })
        }
        Err(error) => Err(WatchError::Client(error)),
    }
}

/// Reports what one region feed sends until it ends.
async fn receive(
    span: &mut Span,
    mut stream: Streaming<RegionFeedResponse>,
    reports: &mpsc::Sender<Report>,
) -> Ended {
    let mut caught_up = false;
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            // The connection broke, or the store ended the stream without a word.
            Ok(None) | Err(_) => return Ended::Reopen { failed: !caught_up },
        };
        if !message.events.is_empty() {
            let events = message.events.into_iter().map(ChangeEvent::from).collect();
            if reports.send(Report::Events(events)).await.is_err() {
                return Ended::WatchGone;
            }
        }
        caught_up |= message.caught_up;
        let resolved = Timestamp::from_u64(message.resolved_ts);
        if caught_up && resolved > span.resolved {
            span.resolved = resolved;
            if reports.send(Report::Resolved { span: span.id, at: resolved }).await.is_err() {
                return Ended::WatchGone;
            }
        }
        if message.closed != FeedCloseReason::Unspecified as i32 {
            // A watcher that fell behind reopens at once, unless it fell behind in its
            // catch-up (which would then be read again and again without a pause, and
            // counts as a failure); the others give the region a moment to settle on
            // its new leader or range.
            if message.closed == FeedCloseReason::Congested as i32 {
                return Ended::Reopen { failed: !caught_up };
            }
            tokio::time::sleep(REOPEN_PAUSE).await;
            return Ended::Reopen { failed: false };
        }
    }
}
