//! Watches of a transactional key range: every version the range commits after a
//! timestamp, in commit-timestamp order, each exactly once, a transaction's versions
//! together, with progress notifications; through splits, leader changes, replica
//! moves and store restarts.
//!
//! A watch is a coordinator task and one task per **span** (`span.rs`: a part of the
//! range in one region, followed through the client's feed of that region, which all
//! its watches share: `hub.rs`). Spans report events and resolved timestamps; the
//! coordinator merges them (`merge.rs`), releases what the lowest resolved timestamp
//! over the spans has passed, and sends progress. A span whose feed ends reopens from
//! its own resolved timestamp, so that nothing it has not promised is skipped; what it
//! receives twice is dropped by the merge.
//!
//! A watch is **attentive** while it holds events (it needs every span's resolved
//! timestamp to release them) and, after each progress tick and every
//! [`REFRESH_EVERY`], until its frontier moves; otherwise its spans are not sent
//! resolved timestamps at all, so an idle watch costs nothing per resolve. Progress
//! goes out when the frontier moves after a tick. A caller may also ask for progress up
//! to a timestamp ([`ProgressAsker`]): the watch is attentive until its frontier passes
//! it, then notifies. A watch that ends with an error can be resumed from the last
//! timestamp it delivered (a transaction's commit timestamp, or a progress
//! notification): nothing at or below it is left to see.
//!
//! While a client has watches it holds garbage collection below the lowest point any
//! of them may reopen or resume from (`hold.rs`).
//!
//! This module owns the watch's tasks and the stream a caller reads; the region's side
//! is the store's (`crate::service::feed`, `tessera_engine::feed`).

mod hold;
mod hub;
mod merge;
mod progress;
mod span;
#[cfg(test)]
mod testing;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tessera_engine::region::KeyRange;
use tessera_engine::timestamp::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::{Client, ClientError, Refusal};
pub(crate) use hold::GcHolds;
use hold::HoldEntry;
use hub::Attention;
pub(crate) use hub::FeedHub;
use merge::Merger;
use progress::Progress;
use span::{Report, Span};

/// A span's identity within its watch.
type SpanId = u64;

/// The most events a watch holds while one of its spans has not resolved past them
/// (a region held back by a lock, say); beyond it the watch ends with
/// [`WatchError::TooManyHeld`] rather than use memory without bound.
pub const MAX_HELD_EVENTS: usize = 1_000_000;

/// How often an idle watch asks its spans for their resolved timestamps, so that its
/// frontier, and with it the client's hold on garbage collection, moves on.
const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// Reports and messages in flight between a watch's tasks and its reader: a reader
/// that does not keep up holds the spans back, and their stores then drop them as
/// congested (they reopen from their resolved timestamps, and wait for the reader
/// again).
const CHANNEL_MESSAGES: usize = 64;

/// What a watch's channel carries. Errors are boxed: a channel allocates its first 32
/// slots when it is made, so every byte of a slot costs 32 per idle watch.
type Delivery = Result<WatchMessage, Box<WatchError>>;

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub start: Vec<u8>,
    /// Empty: to the end of the key space.
    pub end: Vec<u8>,
    /// Versions committed after this; `None`: from now (a timestamp from the oracle).
    pub from: Option<Timestamp>,
    /// Send each version with the value it replaced.
    pub prev_values: bool,
    /// How often to notify progress when the watch's resolved timestamp has moved
    /// (`None`: never).
    pub progress_interval: Option<Duration>,
}

/// A committed version of a watched key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    pub key: Vec<u8>,
    /// None: deleted.
    pub value: Option<Vec<u8>>,
    /// The value it replaced, if asked for (None: the key had none, or not asked).
    pub prev_value: Option<Vec<u8>>,
    /// When the replaced version was committed (with `prev_value`).
    pub prev_commit_ts: Option<Timestamp>,
    pub start_ts: Timestamp,
    pub commit_ts: Timestamp,
}

impl From<crate::proto::FeedEvent> for ChangeEvent {
    fn from(event: crate::proto::FeedEvent) -> ChangeEvent {
        ChangeEvent {
            key: event.key,
            value: event.value,
            prev_commit_ts: event.prev_value.is_some().then(|| Timestamp::from_u64(event.prev_commit_ts)),
            prev_value: event.prev_value,
            start_ts: Timestamp::from_u64(event.start_ts),
            commit_ts: Timestamp::from_u64(event.commit_ts),
        }
    }
}

impl From<ChangeEvent> for crate::proto::FeedEvent {
    fn from(event: ChangeEvent) -> crate::proto::FeedEvent {
        crate::proto::FeedEvent {
            key: event.key,
            value: event.value,
            start_ts: event.start_ts.as_u64(),
            commit_ts: event.commit_ts.as_u64(),
            prev_value: event.prev_value,
            prev_commit_ts: event.prev_commit_ts.map_or(0, Timestamp::as_u64),
        }
    }
}

/// What a watch delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// The versions of the range one transaction committed, in key order.
    Transaction { commit_ts: Timestamp, events: Vec<ChangeEvent> },
    /// Every version of the range committed at or below this has been delivered.
    Progress(Timestamp),
}

/// Why a watch ended. Resume it from the last timestamp it delivered.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Garbage collection has passed where the watch would start: the versions it
    /// would deliver are gone. Not retryable from there; watch from a newer timestamp
    /// (after reading the range at it).
    #[error(
        "the history after {from} is compacted (garbage-collection safe point {safe_point}): watch from a newer timestamp"
    )]
    Compacted { from: Timestamp, safe_point: Timestamp },
    /// A region's feed kept breaking before it caught up.
    #[error("the feed of region {region_id} broke {attempts} times in a row before catching up")]
    FeedsKeepFailing { region_id: u64, attempts: u32 },
    /// Part of the range has not resolved for so long that too many events wait for
    /// it; retryable once the region is no longer held back.
    #[error("more than {MAX_HELD_EVENTS} events wait for part of the range to resolve")]
    TooManyHeld,
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A running watch: a stream of [`WatchMessage`]s, ending with an error only. Dropping
/// it stops every task of the watch.
pub struct Watch {
    from: Timestamp,
    messages: mpsc::Receiver<Delivery>,
    coordinator: tokio::task::JoinHandle<()>,
    asker: ProgressAsker,
}

/// Asks a watch for a progress notification up to a timestamp; any number of copies
/// may ask, for as long as the watch runs.
#[derive(Debug, Clone)]
pub struct ProgressAsker(Arc<watch::Sender<Timestamp>>);

impl ProgressAsker {
    /// Asks for a [`WatchMessage::Progress`] at `at` or above, sent once everything the
    /// range committed up to `at` has been delivered. Asks made before it is sent are
    /// answered together, by the highest.
    pub fn ask(&self, at: Timestamp) {
        self.0.send_if_modified(|asked| {
            let raised = at > *asked;
            *asked = (*asked).max(at);
            raised
        });
    }
}

impl Watch {
    /// Where the watch started: it delivers versions committed after this.
    pub fn from(&self) -> Timestamp {
        self.from
    }

    /// Asks this watch for progress notifications (see [`ProgressAsker::ask`]).
    pub fn progress_asker(&self) -> ProgressAsker {
        self.asker.clone()
    }

    /// Whether the watch has ended (its last message may still wait to be read).
    pub fn has_ended(&self) -> bool {
        self.coordinator.is_finished()
    }

    /// The next message; `None` once the watch has ended (after delivering the error
    /// that ended it, unless its coordinator failed on a broken invariant).
    pub async fn next(&mut self) -> Option<Result<WatchMessage, WatchError>> {
        self.messages.recv().await.map(|delivery| delivery.map_err(|error| *error))
    }
}

impl futures::Stream for Watch {
    type Item = Result<WatchMessage, WatchError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.messages
            .poll_recv(context)
            .map(|delivery| delivery.map(|delivery| delivery.map_err(|error| *error)))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.coordinator.abort();
    }
}

impl Client {
    /// How many region feeds this client's watches follow: one per region they cover,
    /// shared, once their catch-ups are over.
    pub fn watch_feeds(&self) -> usize {
        self.feed_hub.feeds()
    }

    /// Watches `options.start .. options.end` from `options.from` (see [`Watch`]); a
    /// start garbage collection has passed is refused as compacted.
    pub async fn watch(self: &Arc<Self>, options: WatchOptions) -> Result<Watch, WatchError> {
        if KeyRange::new(&options.start, &options.end).is_inverted() {
            return Err(ClientError::InvalidArgument(Refusal::InvertedRange).into());
        }
        if options.progress_interval.is_some_and(|every| every.is_zero()) {
            return Err(ClientError::InvalidArgument(Refusal::ZeroInterval).into());
        }
        let from = match options.from {
            Some(from) => from,
            None => self.timestamp().await?,
        };
        let hold = self.gc_holds.register(&self.pd, from).await?;
        let (sender, messages) = mpsc::channel(CHANNEL_MESSAGES);
        let (asker, asked) = watch::channel(Timestamp::ZERO);
        let coordinator = tokio::spawn(coordinate(self.clone(), options, (from, hold), asked, sender));
        Ok(Watch { from, messages, coordinator, asker: ProgressAsker(Arc::new(asker)) })
    }
}

/// The watch's coordinator: starts the spans, merges what they report, delivers.
async fn coordinate(
    client: Arc<Client>,
    options: WatchOptions,
    (from, hold): (Timestamp, HoldEntry),
    mut asked: watch::Receiver<Timestamp>,
    out: mpsc::Sender<Delivery>,
) {
    let (reports_sender, mut reports) = mpsc::channel(CHANNEL_MESSAGES);
    let attentive = Arc::new(Attention::default());
    // Dropped with the coordinator: every span stops with it.
    let mut spans = JoinSet::new();
    let mut merge = Merger::new(from);
    let start_span =
        |spans: &mut JoinSet<()>, id: SpanId, start: Vec<u8>, end: Vec<u8>, resolved: Timestamp| {
            let span = Span { id, start, end, resolved };
            let follow = span::follow(
                client.clone(),
                span,
                options.prev_values,
                attentive.clone(),
                reports_sender.clone(),
            );
            spans.spawn(follow);
        };
    merge.add_span(0, from);
    start_span(&mut spans, 0, options.start.clone(), options.end.clone(), from);
    let mut next_span: SpanId = 1;
    let mut progress = options
        .progress_interval
        .map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + REFRESH_EVERY, REFRESH_EVERY);
    let mut notifications = Progress::new(from);
    loop {
        let report = tokio::select! {
            report = reports.recv() => report,
            Ok(()) = asked.changed() => {
                notifications.on_asked(*asked.borrow_and_update());
                attentive.set(true);
                continue;
            }
            _ = tick(&mut progress) => {
                notifications.on_tick(merge.frontier());
                attentive.set(true);
                continue;
            }
            _ = refresh.tick() => {
                notifications.on_refresh(merge.frontier());
                attentive.set(true);
                continue;
            }
        };
        match report {
            Some(Report::Events(events)) => merge.add_events(events),
            Some(Report::Resolved { span, at }) => merge.resolve(span, at),
            Some(Report::Split { at, end, resolved }) => {
                merge.add_span(next_span, resolved);
                start_span(&mut spans, next_span, at, end, resolved);
                next_span += 1;
            }
            Some(Report::Failed(error)) => {
                let _ = out.send(Err(error)).await;
                return;
            }
            // Every span holds a sender and the coordinator one: never.
            None => return,
        }
        for (commit_ts, events) in merge.release() {
            if out.send(Ok(WatchMessage::Transaction { commit_ts, events })).await.is_err() {
                return;
            }
        }
        if let Some(at) = notifications.due_notification(merge.released())
            && out.send(Ok(WatchMessage::Progress(at))).await.is_err()
        {
            return;
        }
        hold.advance(merge.released());
        if merge.held() > MAX_HELD_EVENTS {
            let _ = out.send(Err(Box::new(WatchError::TooManyHeld))).await;
            return;
        }
        attentive.set(notifications.attentive(merge.frontier(), merge.held()));
    }
}

/// The next progress tick; never, without progress notifications.
async fn tick(progress: &mut Option<tokio::time::Interval>) {
    match progress {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}
