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
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval};
use tonic::Streaming;

use super::hub::{Attention, FeedHub, FeedNews, FirstFeed, Found, Interest, Opening, Subscription};
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

/// How long a span dropped for lagging waits before it subscribes again: at first, and
/// at most after being dropped again and again. Each reopen may cost a catch-up from the
/// store, so a reader that cannot keep up must not reopen feeds in a loop.
const LAG_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LAG_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A span that kept up for this long before being dropped for lagging starts its
/// backoff afresh: it fell behind once, not again and again.
const LAG_FORGIVEN_AFTER: Duration = Duration::from_secs(10);

/// How often a span on a feed other than its region's first looks whether the first
/// has caught up, and then asks its own feed for the latest resolved timestamp, to
/// move over with it (an inattentive watch without events is sent none otherwise).
const MOVE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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
#[derive(Debug, PartialEq, Eq)]
enum Reopen {
    /// The feed dropped the span for not keeping up, or the store ended the feed as
    /// congested before the span was sent a resolved timestamp on it (its reader was
    /// slower than the region's writes), after keeping up for `kept_up_for` (from the
    /// first resolved timestamp it was sent): back off (the reader is slow), longer
    /// each time it lags again soon.
    AfterLagging { kept_up_for: Duration },
    /// The feed broke after catching up (a broken connection, a congested client):
    /// join again from where the span is.
    AtOnce,
    /// The region is changing (a leader change, a split, a replica moved): give it a
    /// moment to settle.
    AfterPause,
    /// The feed broke before catching up: back off, and give up after many such in a
    /// row.
    Failed,
}

impl Reopen {
    /// How a subscription ended that kept up for `kept_up_for` (from the first resolved
    /// timestamp the span was sent on it, if any, until it was dropped or ended):
    /// dropped for lagging or not, the feed's close reason if it ended, and whether
    /// the feed had caught up.
    fn after(
        dropped_for_lag: bool,
        ended: Option<FeedCloseReason>,
        caught_up: bool,
        kept_up_for: Option<Duration>,
    ) -> Reopen {
        let live = kept_up_for.is_some();
        let kept_up_for = kept_up_for.unwrap_or_default();
        if dropped_for_lag {
            // Whatever the feed did after: one whose only subscriber this was ends for
            // want of subscribers, which is no failure of the feed.
            return Reopen::AfterLagging { kept_up_for };
        }
        match ended {
            // Only lagging drops a subscriber from a feed that goes on.
            None => Reopen::AfterLagging { kept_up_for },
            // The store's queue for the feed filled before the span knew where it was
            // (the catch-up, or the burst after it, went at the span's pace).
            Some(FeedCloseReason::Congested) if !live => Reopen::AfterLagging { kept_up_for },
            Some(FeedCloseReason::Unspecified) if !caught_up => Reopen::Failed,
            Some(FeedCloseReason::Unspecified | FeedCloseReason::Congested) => Reopen::AtOnce,
            Some(_) => Reopen::AfterPause,
        }
    }
}

/// The waits between subscriptions, by cause.
struct Backoffs {
    failure: Duration,
    failed_in_a_row: u32,
    lag: Duration,
}

impl Backoffs {
    fn new() -> Backoffs {
        Backoffs { failure: BACKOFF_MIN, failed_in_a_row: 0, lag: LAG_BACKOFF_MIN }
    }

    /// How long to wait before subscribing again as `reopen` says; an error once
    /// feeds of `region_id` failed too often in a row.
    fn next_wait(&mut self, reopen: Reopen, region_id: u64) -> Result<Duration, WatchError> {
        let wait = match reopen {
            Reopen::AtOnce | Reopen::AfterPause => {
                self.failure = BACKOFF_MIN;
                self.failed_in_a_row = 0;
                if reopen == Reopen::AtOnce { Duration::ZERO } else { REOPEN_PAUSE }
            }
            Reopen::AfterLagging { kept_up_for } => {
                if kept_up_for >= LAG_FORGIVEN_AFTER {
                    self.lag = LAG_BACKOFF_MIN;
                }
                let wait = self.lag;
                self.lag = (self.lag * 2).min(LAG_BACKOFF_MAX);
                wait
            }
            Reopen::Failed => {
                self.failed_in_a_row += 1;
                if self.failed_in_a_row >= FAILED_FEEDS_IN_A_ROW {
                    return Err(WatchError::FeedsKeepFailing { region_id, attempts: self.failed_in_a_row });
                }
                let wait = self.failure;
                self.failure = (self.failure * 2).min(BACKOFF_MAX);
                wait
            }
        };
        Ok(wait)
    }
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
    let mut backoffs = Backoffs::new();
    let mut rises = attentive.rises();
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
        let watch = Watched { prev_values, attentive: &attentive, rises: &mut rises };
        let ended = receive(&client.feed_hub, &mut span, (subscription, &region), watch, &reports).await;
        let reopen = match ended {
            Ended::WatchGone => return,
            Ended::Reopen(reopen) => reopen,
        };
        match backoffs.next_wait(reopen, region.id) {
            Ok(wait) if wait.is_zero() => {}
            Ok(wait) => tokio::time::sleep(wait).await,
            Err(error) => {
                let _ = reports.send(Report::Failed(Box::new(error))).await;
                return;
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

/// What a span follows on its watch's behalf: whether with previous values, and the
/// watch's attention and the rises of it the span has seen.
struct Watched<'a> {
    prev_values: bool,
    attentive: &'a Arc<Attention>,
    rises: &'a mut watch::Receiver<u64>,
}

/// Reports what a subscription sends until it ends; moves to the region's first feed
/// when it can (`hub.rs`), asks its feed for the latest resolved timestamp when the
/// watch starts wanting them, and again for one withheld while its channel was full.
async fn receive(
    hub: &FeedHub,
    span: &mut Span,
    (mut subscription, region): (Subscription, &Region),
    watched: Watched<'_>,
    reports: &mpsc::Sender<Report>,
) -> Ended {
    // From the first resolved timestamp: the span kept up from there.
    let mut live_since = None;
    let Watched { prev_values, attentive, rises } = watched;
    // Armed only while the span is on a feed other than the region's first.
    let mut move_check = move_check_for(hub.first_feed(&subscription.feed, region, prev_values));
    loop {
        subscription.ask_withheld_resolved();
        let news = tokio::select! {
            news = subscription.news.recv() => news,
            Ok(()) = rises.changed() => {
                subscription.ask_resolved();
                continue;
            }
            () = tick(&mut move_check) => {
                let first = hub.first_feed(&subscription.feed, region, prev_values);
                if first == FirstFeed::Live {
                    subscription.ask_resolved();
                }
                if first == FirstFeed::NoneOther {
                    move_check = None;
                }
                continue;
            }
        };
        let Some(news) = news else { break };
        let report = match news {
            FeedNews::Events(events) => Report::Events(events),
            FeedNews::Resolved(resolved) if resolved > span.resolved => {
                live_since.get_or_insert_with(Instant::now);
                span.resolved = resolved;
                Report::Resolved { span: span.id, at: resolved }
            }
            FeedNews::Resolved(_) => continue,
        };
        let resolved = matches!(report, Report::Resolved { .. });
        if reports.send(report).await.is_err() {
            return Ended::WatchGone;
        }
        if !resolved || move_check.is_none() {
            continue;
        }
        let part = KeyRange::of(region).clamp(&KeyRange::new(&span.start, &span.end));
        let (start, end) = (part.start().to_vec(), part.end().to_vec());
        let interest = Interest { start, end, from: span.resolved, attentive: attentive.clone() };
        if let Some(moved) = hub.join_first(&subscription.feed, region, prev_values, &interest) {
            subscription = moved;
            move_check = None;
        }
    }
    let feed = &subscription.feed;
    let dropped_for_lag_at = subscription.dropped_for_lag_at();
    let ended_at = dropped_for_lag_at.unwrap_or_else(Instant::now);
    let kept_up_for = live_since.map(|since| ended_at.saturating_duration_since(since));
    let reopen = Reopen::after(dropped_for_lag_at.is_some(), feed.ended(), feed.caught_up(), kept_up_for);
    Ended::Reopen(reopen)
}

/// The timer of a span's checks for moving to its region's first feed: none when
/// there is no other feed to move to.
fn move_check_for(first: FirstFeed) -> Option<Interval> {
    if first == FirstFeed::NoneOther {
        return None;
    }
    let mut interval = tokio::time::interval(MOVE_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Some(interval)
}

/// The next tick of `interval`; never, without one.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
