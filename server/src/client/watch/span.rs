//! One span of a watch: a part of the range that lies in one region, followed through
//! the client's shared feed of that region (`hub.rs`) and subscribed again, from the
//! span's resolved timestamp, whenever the feed ends (a leader change, a split, a
//! replica moved, a store stopped, a broken connection) or drops the span (it fell
//! behind).
//!
//! A span reports the events it receives, and the resolved timestamps the feed sends it
//! (never lower than before; only while its watch is attentive). When the region it opens in ends before the
//! span does (the region split, or the span was never cut to regions), the span keeps
//! the part in the region and hands the rest to the coordinator as a new span from
//! its own resolved timestamp: what either part may still receive is above it.

use std::sync::Arc;
use std::time::Duration;

use tessera_engine::proto::metadata::Region;
use tessera_engine::region::KeyRange;
use tessera_engine::timestamp::Timestamp;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::mpsc;
use tonic::Streaming;

use super::hub::{Attention, FeedNews, Found, Interest, Opening, Subscription};
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

/// How long a span waits for another span opening its region's feed before it looks
/// again.
const OPENING_WAIT: Duration = Duration::from_millis(200);

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
    Failed(Box<WatchError>),
}

pub(super) struct Span {
    pub id: SpanId,
    pub start: Vec<u8>,
    /// Empty: to the end of the key space.
    pub end: Vec<u8>,
    /// Every version of the span committed at or below this has been reported.
    pub resolved: Timestamp,
}

/// How one subscription ended.
enum Ended {
    Reopen(Reopen),
    /// The coordinator is gone: the watch ended.
    WatchGone,
}

/// When to subscribe again.
enum Reopen {
    /// The span was dropped for falling behind after it made progress: join again
    /// from where it is.
    AtOnce,
    /// The region is changing (a leader change, a split, a replica moved): give it a
    /// moment to settle.
    AfterPause,
    /// The span was dropped for falling behind before it made any progress: back off
    /// (its reader is slow), so that a span that cannot keep up does not reopen feeds
    /// in a loop.
    AfterBackoff,
    /// The feed broke before catching up: back off, and give up after many such in a
    /// row.
    Failed,
}

/// Follows `span` until the watch ends or the span fails. `attentive` is the watch's:
/// whether it wants resolved timestamps now (`hub.rs`).
pub(super) async fn follow(
    client: Arc<Client>,
    mut span: Span,
    prev_values: bool,
    attentive: Arc<Attention>,
    reports: mpsc::Sender<Report>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut failed_in_a_row = 0;
    loop {
        let (subscription, region) = match subscribe(&client, &span, prev_values, &attentive).await {
            Ok(subscribed) => subscribed,
            Err(error) => {
                let _ = reports.send(Report::Failed(Box::new(error))).await;
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
        let ended =
            receive(&client, &mut span, (subscription, &region), (prev_values, &attentive), &reports).await;
        match ended {
            Ended::WatchGone => return,
            Ended::Reopen(Reopen::AtOnce) => {
                backoff = BACKOFF_MIN;
                failed_in_a_row = 0;
            }
            Ended::Reopen(Reopen::AfterPause) => {
                backoff = BACKOFF_MIN;
                failed_in_a_row = 0;
                tokio::time::sleep(REOPEN_PAUSE).await;
            }
            Ended::Reopen(Reopen::AfterBackoff) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Ended::Reopen(Reopen::Failed) => {
                failed_in_a_row += 1;
                if failed_in_a_row >= FAILED_FEEDS_IN_A_ROW {
                    let error =
                        WatchError::FeedsKeepFailing { region_id: region.id, attempts: failed_in_a_row };
                    let _ = reports.send(Report::Failed(Box::new(error))).await;
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// What one try to subscribe found.
enum Attempt {
    Joined(Subscription),
    Opened(Box<Streaming<RegionFeedResponse>>, Opening),
    Wait(OwnedNotified),
}

/// Subscribes the span's part in the region holding its start to a feed of that
/// region: one the client follows already, or one opened from the span's resolved
/// timestamp. Answers the region the part was cut to.
async fn subscribe(
    client: &Arc<Client>,
    span: &Span,
    prev_values: bool,
    attentive: &Arc<Attention>,
) -> Result<(Subscription, Region), WatchError> {
    let interest_in = |region: &Region| {
        let part = KeyRange::of(region).clamp(&KeyRange::new(&span.start, &span.end));
        let (start, end) = (part.start().to_vec(), part.end().to_vec());
        Interest { start, end, from: span.resolved, attentive: attentive.clone() }
    };
    loop {
        let attempt = client
            .on_region(&span.start, Resend::Always, |mut kv, context, region| {
                let found = client.feed_hub.join_or_open(&region, prev_values, &interest_in(&region));
                let start_ts = span.resolved.as_u64();
                async move {
                    match found {
                        Found::Joined(subscription) => Ok(Attempt::Joined(subscription)),
                        Found::Wait(opened) => Ok(Attempt::Wait(opened)),
                        Found::Open(opening) => {
                            let (start_key, end_key) = (region.start_key.clone(), region.end_key.clone());
                            let request = RegionFeedRequest {
                                context: Some(context),
                                start_key,
                                end_key,
                                start_ts,
                                prev_values,
                            };
                            let response = kv.region_feed(request).await?;
                            Ok(Attempt::Opened(Box::new(response.into_inner()), opening))
                        }
                    }
                }
            })
            .await;
        match attempt {
            Ok((Attempt::Joined(subscription), region)) => return Ok((subscription, region)),
            Ok((Attempt::Opened(stream, opening), region)) => {
                let subscription =
                    client.feed_hub.install(opening, region.clone(), *stream, &interest_in(&region));
                return Ok((subscription, region));
            }
            // Bounded: an opener that never says so must not hold this span for good.
            Ok((Attempt::Wait(opened), _)) => {
                let _ = tokio::time::timeout(OPENING_WAIT, opened).await;
            }
            Err(ClientError::InvalidArgument(Refusal::BelowSafePoint { safe_point })) => {
                return Err(WatchError::Compacted { from: span.resolved, safe_point });
            }
            Err(error) => return Err(WatchError::Client(error)),
        }
    }
}

/// Reports what a subscription sends until it ends; moves to the region's first feed
/// when it can (`hub.rs`), and asks its feed for the latest resolved timestamp when
/// the watch starts wanting them.
async fn receive(
    client: &Client,
    span: &mut Span,
    (mut subscription, region): (Subscription, &Region),
    (prev_values, attentive): (bool, &Arc<Attention>),
    reports: &mpsc::Sender<Report>,
) -> Ended {
    let subscribed_at = span.resolved;
    loop {
        let news = tokio::select! {
            news = subscription.news.recv() => news,
            () = attentive.raised() => {
                subscription.ask_resolved();
                continue;
            }
        };
        let Some(news) = news else { break };
        let report = match news {
            FeedNews::Events(events) => Report::Events(events),
            FeedNews::Resolved(resolved) if resolved > span.resolved => {
                span.resolved = resolved;
                Report::Resolved { span: span.id, at: resolved }
            }
            FeedNews::Resolved(_) => continue,
        };
        let resolved = matches!(report, Report::Resolved { .. });
        if reports.send(report).await.is_err() {
            return Ended::WatchGone;
        }
        if !resolved {
            continue;
        }
        let part = KeyRange::of(region).clamp(&KeyRange::new(&span.start, &span.end));
        let (start, end) = (part.start().to_vec(), part.end().to_vec());
        let interest = Interest { start, end, from: span.resolved, attentive: attentive.clone() };
        if let Some(moved) = client.feed_hub.join_first(&subscription.feed, region, prev_values, &interest) {
            subscription = moved;
        }
    }
    let feed = &subscription.feed;
    match feed.ended() {
        // Dropped by a feed that goes on: the span did not keep up. Join again from
        // what it has seen, at once if it got anywhere.
        None if span.resolved > subscribed_at => Ended::Reopen(Reopen::AtOnce),
        None => Ended::Reopen(Reopen::AfterBackoff),
        // The connection broke, or the client did not keep up with the feed: a failure
        // if it happens before the feed caught up (a catch-up that cannot finish).
        Some(FeedCloseReason::Unspecified | FeedCloseReason::Congested) if !feed.caught_up() => {
            Ended::Reopen(Reopen::Failed)
        }
        Some(FeedCloseReason::Unspecified | FeedCloseReason::Congested) => Ended::Reopen(Reopen::AtOnce),
        Some(_) => Ended::Reopen(Reopen::AfterPause),
    }
}
