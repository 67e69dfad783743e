//! One region's change feed served to a watcher (`Kv.RegionFeed`), from the region's
//! leader.
//!
//! In this order, so that no version is lost between the two sources:
//! 1. The leader takes a [`QueueSubscriber`]: from then on what applies in the region
//!    queues up for the watcher (a bounded queue; a watcher that lets it fill is
//!    dropped as congested and reopens). The leader also registers the watcher's start
//!    as a read, so that garbage collection keeps what the catch-up needs.
//! 2. The catch-up reads MVCC at a snapshot taken after that: every version committed
//!    after the start that had applied. A version that applied in between is both read
//!    and queued; the watcher drops the second copy.
//! 3. Unless the feed closed meanwhile (the replica may have been destroyed under the
//!    scan, which then proves nothing), `caught_up`, then the queue forwarded: events,
//!    and resolved timestamps, which speak for the catch-up too from here on.
//! 4. When the leader ends the feed, a last message says why.
//!
//! This module serves the stream; it never decides what is resolved (the region's
//! feed, `tessera_engine::feed`, does) nor merges regions (`crate::client::watch`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tessera_engine::feed::{FeedClosed, FeedEvent, FeedMessage, FeedStart, FeedSubscriber};
use tessera_engine::mvcc::reader::{MvccError, MvccReader};
use tessera_engine::region::{KeyRange, RegionError};
use tessera_engine::store::{Store, StoreError};
use tessera_engine::timestamp::Timestamp;
use tokio::sync::mpsc;
use tonic::Status;

use crate::proto::{self, FeedCloseReason, RegionFeedRequest, RegionFeedResponse};

/// Events per catch-up message: a few hundred keep a message far below the frame
/// limit for short values and amortise the per-message cost.
const CATCH_UP_BATCH_EVENTS: usize = 256;

/// Messages a stream buffers before the catch-up or the forwarding waits for the
/// watcher to read.
pub(crate) const STREAM_BUFFER_MESSAGES: usize = 16;

/// How a feed ended, as the leader said it.
#[derive(Default)]
struct Ending {
    reason: Mutex<Option<FeedClosed>>,
    /// Set, with the reason, before the leader drops the queue: the catch-up checks it
    /// after its scan.
    closed: AtomicBool,
}

/// Where the leader delivers a watcher's messages: a bounded queue it never waits on.
struct QueueSubscriber {
    queue: mpsc::Sender<FeedMessage>,
    ending: Arc<Ending>,
}

impl FeedSubscriber for QueueSubscriber {
    fn offer(&mut self, message: FeedMessage) -> bool {
        self.queue.try_send(message).is_ok()
    }

    fn close(self: Box<Self>, reason: FeedClosed) {
        *self.ending.reason.lock() = Some(reason);
        self.ending.closed.store(true, Ordering::SeqCst);
    }
}

/// A watcher's request, checked.
struct Watcher {
    start_ts: Timestamp,
    /// Within the region the leader had when it took the watcher.
    range: (Vec<u8>, Vec<u8>),
    prev_values: bool,
}

/// What a watcher's stream is served from once the leader has taken it.
pub(crate) struct Queued {
    queue: mpsc::Receiver<FeedMessage>,
    ending: Arc<Ending>,
}

/// A subscriber for the leader to take, and the queue it fills.
pub(crate) fn subscriber() -> (Box<dyn FeedSubscriber>, Queued) {
    let (queue, queued) = mpsc::channel(tessera_engine::feed::SUBSCRIBER_CHANNEL_MESSAGES);
    let ending = Arc::new(Ending::default());
    (Box::new(QueueSubscriber { queue, ending: ending.clone() }), Queued { queue: queued, ending })
}

/// Starts serving a watcher the leader took (`start`): answers the stream's messages
/// through a receiver, or refuses a range that is not inside the region.
pub(crate) fn serve_watcher(
    store: Arc<Store>,
    start: FeedStart,
    request: RegionFeedRequest,
    queued: Queued,
) -> Result<mpsc::Receiver<Result<RegionFeedResponse, Status>>, Status> {
    let requested = KeyRange::new(&request.start_key, &request.end_key);
    let region = KeyRange::of(&start.region);
    if requested.is_inverted() || !region.encloses(&requested) {
        let outside = RegionError::KeyNotInRegion {
            key: request.start_key.clone(),
            region_id: start.region.id,
            start: start.region.start_key.clone(),
            end: start.region.end_key.clone(),
        };
        return Err(crate::failure::kv_status(StoreError::Region(outside), |_| None));
    }
    // An open end asks for the rest of the region.
    let end = if request.end_key.is_empty() { start.region.end_key.clone() } else { request.end_key };
    let watcher = Watcher {
        start_ts: Timestamp::from_u64(request.start_ts),
        range: (request.start_key, end),
        prev_values: request.prev_values,
    };
    let (out, answers) = mpsc::channel(STREAM_BUFFER_MESSAGES);
    tokio::spawn(serve(store, start, watcher, queued, out));
    Ok(answers)
}

/// Catches up, then forwards the queue, then says why the feed ended; stops early when
/// the watcher goes away.
async fn serve(
    store: Arc<Store>,
    start: FeedStart,
    watcher: Watcher,
    Queued { queue: mut queued, ending }: Queued,
    out: mpsc::Sender<Result<RegionFeedResponse, Status>>,
) {
    let watcher = Arc::new(watcher);
    let caught_up = {
        let (store, watcher, out) = (store.clone(), watcher.clone(), out.clone());
        tokio::task::spawn_blocking(move || catch_up(&store, start, &watcher, &out)).await
    };
    match caught_up {
        Ok(Ok(true)) => {}
        // The watcher went away.
        Ok(Ok(false)) => return,
        Ok(Err(error)) => {
            let status = Status::internal(format!("the feed's catch-up failed: {error}"));
            let _ = out.send(Err(status)).await;
            return;
        }
        Err(error) => {
            let _ =
                out.send(Err(Status::internal(format!("the feed's catch-up task failed: {error}")))).await;
            return;
        }
    }
    // The scan proves nothing if the replica's data may have gone under it.
    if !ending.closed.load(Ordering::SeqCst) {
        let message = RegionFeedResponse { caught_up: true, ..RegionFeedResponse::default() };
        if out.send(Ok(message)).await.is_err() {
            return;
        }
        if !forward(&store, &watcher, &mut queued, &out).await {
            return;
        }
    }
    let reason = ending.reason.lock().clone().unwrap_or(FeedClosed::RegionGone);
    let last = RegionFeedResponse { closed: close_reason(&reason) as i32, ..RegionFeedResponse::default() };
    let _ = out.send(Ok(last)).await;
}

/// Sends every version of the watcher's range committed after its start that the
/// snapshot holds; false when the watcher went away.
fn catch_up(
    store: &Store,
    start: FeedStart,
    watcher: &Watcher,
    out: &mpsc::Sender<Result<RegionFeedResponse, Status>>,
) -> Result<bool, MvccError> {
    let reader = MvccReader::new(store.engine());
    let range = (watcher.range.0.as_slice(), watcher.range.1.as_slice());
    let mut failed = None;
    let delivered = reader.committed_after(range, watcher.start_ts, CATCH_UP_BATCH_EVENTS, |events| {
        match with_previous_values(&reader, watcher, events) {
            Ok(events) => {
                out.blocking_send(Ok(RegionFeedResponse { events, ..RegionFeedResponse::default() })).is_ok()
            }
            Err(error) => {
                failed = Some(error);
                false
            }
        }
    })?;
    // Held until the scan is over: the versions it read were kept for it.
    drop(start.read);
    match failed {
        Some(error) => Err(error),
        None => Ok(delivered),
    }
}

/// Forwards what the leader queues until it ends the feed (true) or the watcher goes
/// away (false).
async fn forward(
    store: &Arc<Store>,
    watcher: &Arc<Watcher>,
    queued: &mut mpsc::Receiver<FeedMessage>,
    out: &mpsc::Sender<Result<RegionFeedResponse, Status>>,
) -> bool {
    let mut resolved = Timestamp::ZERO;
    while let Some(message) = queued.recv().await {
        let response = match message {
            FeedMessage::Events(events) => {
                let range = KeyRange::new(&watcher.range.0, &watcher.range.1);
                let events: Vec<FeedEvent> = events
                    .into_iter()
                    .filter(|event| event.commit_ts > watcher.start_ts && range.contains(&event.key))
                    .collect();
                if events.is_empty() {
                    continue;
                }
                match live_events(store, watcher, events).await {
                    Ok(events) => RegionFeedResponse { events, ..RegionFeedResponse::default() },
                    Err(status) => {
                        let _ = out.send(Err(status)).await;
                        return false;
                    }
                }
            }
            FeedMessage::Resolved(at) if at > resolved => {
                resolved = at;
                RegionFeedResponse { resolved_ts: at.as_u64(), ..RegionFeedResponse::default() }
            }
            FeedMessage::Resolved(_) => continue,
        };
        if out.send(Ok(response)).await.is_err() {
            return false;
        }
    }
    true
}

/// Live events as sent, with their previous values read from MVCC when asked for.
async fn live_events(
    store: &Arc<Store>,
    watcher: &Arc<Watcher>,
    events: Vec<FeedEvent>,
) -> Result<Vec<proto::FeedEvent>, Status> {
    if !watcher.prev_values {
        return Ok(events.into_iter().map(|event| encode(event, None)).collect());
    }
    let (store, watcher) = (store.clone(), watcher.clone());
    tokio::task::spawn_blocking(move || {
        with_previous_values(&MvccReader::new(store.engine()), &watcher, events)
    })
    .await
    .map_err(|error| Status::internal(format!("reading previous values failed: {error}")))?
    .map_err(|error| Status::internal(format!("reading previous values failed: {error}")))
}

fn with_previous_values(
    reader: &MvccReader<'_>,
    watcher: &Watcher,
    events: Vec<FeedEvent>,
) -> Result<Vec<proto::FeedEvent>, MvccError> {
    events
        .into_iter()
        .map(|event| {
            let previous =
                if watcher.prev_values { reader.value_before(&event.key, event.commit_ts)? } else { None };
            Ok(encode(event, previous))
        })
        .collect()
}

fn encode(event: FeedEvent, prev_value: Option<Vec<u8>>) -> proto::FeedEvent {
    proto::FeedEvent {
        key: event.key,
        value: event.value,
        start_ts: event.start_ts.as_u64(),
        commit_ts: event.commit_ts.as_u64(),
        prev_value,
    }
}

fn close_reason(reason: &FeedClosed) -> FeedCloseReason {
    match reason {
        FeedClosed::NotLeader => FeedCloseReason::NotLeader,
        FeedClosed::RangeChanged => FeedCloseReason::RangeChanged,
        FeedClosed::RegionGone => FeedCloseReason::RegionGone,
        FeedClosed::Congested => FeedCloseReason::Congested,
        FeedClosed::ShuttingDown => FeedCloseReason::ShuttingDown,
    }
}
