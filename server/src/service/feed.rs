//! One region's change feed served to a watcher (`Kv.RegionFeed`), from the region's
//! leader.
//!
//! In this order, so that no version is lost between the two sources:
//! 1. The leader takes a [`QueueSubscriber`]: from then on what applies in the region
//!    queues up for the watcher (a bounded queue of events; a watcher that lets it fill
//!    is dropped as congested and reopens), and its resolved timestamps are kept, the
//!    latest only, beside the queue. The leader also registers the watcher's start as
//!    a read, so that garbage collection keeps what the catch-up needs.
//! 2. The catch-up reads MVCC at a snapshot taken after that: every version committed
//!    after the start that had applied. A version that applied in between is both read
//!    and queued; the watcher drops the second copy.
//! 3. Unless the feed closed meanwhile (the replica may have been destroyed under the
//!    scan, which then proves nothing), `caught_up`, then the queue forwarded: events,
//!    and resolved timestamps, each after every event queued before it was published.
//! 4. When the leader ends the feed, a last message says why.
//!
//! A watcher that stops reading holds a catch-up at most [`STALLED_WATCHER_TIMEOUT`];
//! one that goes away ends its stream at once. The store is held weakly: a stopping
//! store closes its feeds, and its streams end.
//!
//! This module serves the stream; it never decides what is resolved (the region's
//! feed, `tessera_engine::feed`, does) nor merges regions (`crate::client::watch`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tessera_engine::feed::{FeedClosed, FeedEvent, FeedMessage, FeedStart, FeedSubscriber};
use tessera_engine::mvcc::reader::{MvccError, MvccReader, Version};
use tessera_engine::region::{KeyRange, RegionError};
use tessera_engine::store::{Store, StoreError};
use tessera_engine::timestamp::Timestamp;
use tokio::sync::{Notify, mpsc};
use tonic::Status;

use crate::failure::kv_status;
use crate::proto::{self, FeedCloseReason, RegionFeedRequest, RegionFeedResponse};

/// Events per catch-up message, and the bytes of values past which a message is sent
/// with fewer: far below the frame limit, and enough to amortise a message's cost.
const CATCH_UP_BATCH_EVENTS: usize = 256;
pub(crate) const CATCH_UP_BATCH_BYTES: usize = 1 << 20;

/// Messages a stream buffers before the catch-up or the forwarding waits for the
/// watcher to read.
pub(crate) const STREAM_BUFFER_MESSAGES: usize = 16;

/// How long a catch-up waits for a watcher that does not read before giving up on it:
/// the catch-up holds a snapshot and garbage collection meanwhile.
const STALLED_WATCHER_TIMEOUT: Duration = Duration::from_secs(30);

type Answers = mpsc::Sender<Result<RegionFeedResponse, Status>>;

/// What the leader's side and the stream's side of one watcher share.
#[derive(Default)]
struct Shared {
    /// The latest resolved timestamp the leader published (zero: none).
    resolved: AtomicU64,
    /// Woken when a resolved timestamp is published or the feed closes.
    published: Notify,
    reason: Mutex<Option<FeedClosed>>,
    /// Set, with the reason, before the leader drops the queue: the catch-up checks it.
    closed: AtomicBool,
}

/// Where the leader delivers a watcher's messages; it never waits.
struct QueueSubscriber {
    events: mpsc::Sender<Vec<FeedEvent>>,
    shared: Arc<Shared>,
}

impl FeedSubscriber for QueueSubscriber {
    fn offer(&mut self, message: FeedMessage) -> bool {
        match message {
            FeedMessage::Events(events) => self.events.try_send(events).is_ok(),
            FeedMessage::Resolved(at) => {
                // After every event offered before it, which the queue already holds.
                self.shared.resolved.fetch_max(at.as_u64(), Ordering::SeqCst);
                self.shared.published.notify_one();
                !self.events.is_closed()
            }
        }
    }

    fn close(self: Box<Self>, reason: FeedClosed) {
        *self.shared.reason.lock() = Some(reason);
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.published.notify_one();
    }
}

/// A watcher's request, checked.
struct FeedRequest {
    start_ts: Timestamp,
    /// Inside the region the leader had when it took the watcher; an empty end: the end
    /// of the key space.
    range: (Vec<u8>, Vec<u8>),
    prev_values: bool,
}

/// What a watcher's stream is served from once the leader has taken it.
pub(crate) struct Queued {
    events: mpsc::Receiver<Vec<FeedEvent>>,
    shared: Arc<Shared>,
}

/// A subscriber for the leader to take, and the queue it fills.
pub(crate) fn subscriber() -> (Box<dyn FeedSubscriber>, Queued) {
    let (events, queued) = mpsc::channel(tessera_engine::feed::SUBSCRIBER_CHANNEL_MESSAGES);
    let shared = Arc::new(Shared::default());
    (Box::new(QueueSubscriber { events, shared: shared.clone() }), Queued { events: queued, shared })
}

/// Checks a request's range before the leader is asked: not inverted.
pub(crate) fn check_range(request: &RegionFeedRequest) -> Result<(), Status> {
    if KeyRange::new(&request.start_key, &request.end_key).is_inverted() {
        let (start, end) = (request.start_key.clone(), request.end_key.clone());
        return Err(kv_status(StoreError::Region(RegionError::InvertedRange { start, end }), |_| None));
    }
    Ok(())
}

/// Starts serving a watcher the leader took (`start`): answers the stream's messages
/// through a receiver, or refuses a range that is not inside the region.
pub(crate) fn serve_watcher(
    store: &Arc<Store>,
    start: FeedStart,
    request: RegionFeedRequest,
    queued: Queued,
) -> Result<mpsc::Receiver<Result<RegionFeedResponse, Status>>, Status> {
    if !KeyRange::of(&start.region).encloses(&KeyRange::new(&request.start_key, &request.end_key)) {
        let outside = RegionError::KeyNotInRegion {
            key: request.start_key.clone(),
            region_id: start.region.id,
            start: start.region.start_key.clone(),
            end: start.region.end_key.clone(),
        };
        return Err(kv_status(StoreError::Region(outside), |_| None));
    }
    let request = FeedRequest {
        start_ts: Timestamp::from_u64(request.start_ts),
        range: (request.start_key, request.end_key),
        prev_values: request.prev_values,
    };
    let (out, answers) = mpsc::channel(STREAM_BUFFER_MESSAGES);
    tokio::spawn(serve(Arc::downgrade(store), start, Arc::new(request), queued, out));
    Ok(answers)
}

/// How a catch-up ended.
enum CatchUp {
    Done,
    /// The feed closed under it: what it read proves nothing.
    FeedClosed,
    /// The watcher went away, or stopped reading.
    WatcherGone,
}

/// Catches up, then forwards the queue, then says why the feed ended; stops early when
/// the watcher goes away.
async fn serve(
    store: Weak<Store>,
    start: FeedStart,
    request: Arc<FeedRequest>,
    queued: Queued,
    out: Answers,
) {
    let Queued { events, shared } = queued;
    let caught_up = {
        let (store, request, out, shared) = (store.clone(), request.clone(), out.clone(), shared.clone());
        tokio::task::spawn_blocking(move || catch_up(&store, start, &request, &shared, &out)).await
    };
    let caught_up = match caught_up {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) => Err(Status::internal(format!("the feed's catch-up failed: {error}"))),
        Err(error) => Err(Status::internal(format!("the feed's catch-up task failed: {error}"))),
    };
    match caught_up {
        Ok(CatchUp::Done) => {
            let message = RegionFeedResponse { caught_up: true, ..RegionFeedResponse::default() };
            if out.send(Ok(message)).await.is_err()
                || !forward(&store, &request, (events, &shared), &out).await
            {
                return;
            }
        }
        Ok(CatchUp::FeedClosed) => {}
        Ok(CatchUp::WatcherGone) => return,
        Err(status) => {
            let _ = out.send(Err(status)).await;
            return;
        }
    }
    let reason = shared.reason.lock().clone().unwrap_or(FeedClosed::RegionGone);
    let last = RegionFeedResponse { closed: close_reason(&reason) as i32, ..RegionFeedResponse::default() };
    let _ = out.send(Ok(last)).await;
}

/// Sends every version of the watcher's range committed after its start that the
/// snapshot holds.
fn catch_up(
    store: &Weak<Store>,
    start: FeedStart,
    request: &FeedRequest,
    shared: &Shared,
    out: &Answers,
) -> Result<Result<CatchUp, Status>, MvccError> {
    let Some(store) = store.upgrade() else { return Ok(Ok(CatchUp::FeedClosed)) };
    let runtime = tokio::runtime::Handle::current();
    let reader = MvccReader::new(store.engine());
    let range = (request.range.0.as_slice(), request.range.1.as_slice());
    let (mut failed, mut watcher_gone) = (None, false);
    let mut send = |events: Vec<FeedEvent>| match with_previous_values(&reader, request, events) {
        // Previous values may double a batch: cut again.
        Ok(events) => split_by_bytes(events, CATCH_UP_BATCH_BYTES).into_iter().all(|events| {
            let message = Ok(RegionFeedResponse { events, ..RegionFeedResponse::default() });
            let sent = runtime.block_on(tokio::time::timeout(STALLED_WATCHER_TIMEOUT, out.send(message)));
            watcher_gone = !matches!(sent, Ok(Ok(())));
            !watcher_gone
        }),
        Err(error) => {
            failed = Some(error);
            false
        }
    };
    let batches = (CATCH_UP_BATCH_EVENTS, CATCH_UP_BATCH_BYTES);
    let finished = reader.committed_after(range, request.start_ts, batches, |events| {
        // A feed closed meanwhile makes the rest of the scan worthless.
        !shared.closed.load(Ordering::SeqCst) && send(events)
    })?;
    // Held until the scan is over: the versions it read were kept for it.
    drop(start.read);
    if let Some(error) = failed {
        return Err(error);
    }
    let outcome = if watcher_gone {
        CatchUp::WatcherGone
    } else if !finished || shared.closed.load(Ordering::SeqCst) {
        // The scan proves nothing if the replica's data may have gone under it.
        CatchUp::FeedClosed
    } else {
        CatchUp::Done
    };
    Ok(Ok(outcome))
}

/// Forwards what the leader queues and publishes until it ends the feed (true) or the
/// watcher goes away (false).
async fn forward(
    store: &Weak<Store>,
    request: &Arc<FeedRequest>,
    (mut events, shared): (mpsc::Receiver<Vec<FeedEvent>>, &Shared),
    out: &Answers,
) -> bool {
    let mut resolved = request.start_ts;
    loop {
        tokio::select! {
            queued = events.recv() => match queued {
                Some(batch) => {
                    if !send_events(store, request, batch, out).await {
                        return false;
                    }
                }
                None => return true,
            },
            () = shared.published.notified() => {
                // Every event offered before this timestamp was published is queued.
                let at = Timestamp::from_u64(shared.resolved.load(Ordering::SeqCst));
                while let Ok(batch) = events.try_recv() {
                    if !send_events(store, request, batch, out).await {
                        return false;
                    }
                }
                if at > resolved {
                    resolved = at;
                    let message = RegionFeedResponse { resolved_ts: at.as_u64(), ..RegionFeedResponse::default() };
                    if out.send(Ok(message)).await.is_err() {
                        return false;
                    }
                }
            }
            () = out.closed() => return false,
        }
    }
}

/// Sends the events of the watcher's range and after its start, with their previous
/// values when asked for; false when the watcher went away.
async fn send_events(
    store: &Weak<Store>,
    request: &Arc<FeedRequest>,
    events: Vec<FeedEvent>,
    out: &Answers,
) -> bool {
    let range = KeyRange::new(&request.range.0, &request.range.1);
    let events: Vec<FeedEvent> = events
        .into_iter()
        .filter(|event| event.commit_ts > request.start_ts && range.contains(&event.key))
        .collect();
    if events.is_empty() {
        return true;
    }
    let events = match live_events(store, request, events).await {
        Ok(events) => events,
        Err(status) => {
            let _ = out.send(Err(status)).await;
            return false;
        }
    };
    for events in split_by_bytes(events, CATCH_UP_BATCH_BYTES) {
        if out.send(Ok(RegionFeedResponse { events, ..RegionFeedResponse::default() })).await.is_err() {
            return false;
        }
    }
    true
}

/// `events` in order, in parts of at most `budget` bytes of keys and values (an event
/// larger than that alone): a round's events, or a transaction's, may be more than one
/// message can carry.
pub(crate) fn split_by_bytes(events: Vec<proto::FeedEvent>, budget: usize) -> Vec<Vec<proto::FeedEvent>> {
    let size = |event: &proto::FeedEvent| {
        event.key.len()
            + event.value.as_ref().map_or(0, Vec::len)
            + event.prev_value.as_ref().map_or(0, Vec::len)
    };
    let mut parts: Vec<Vec<proto::FeedEvent>> = Vec::new();
    let mut part_bytes = 0;
    for event in events {
        let bytes = size(&event);
        match parts.last_mut() {
            Some(part) if part_bytes + bytes <= budget => part.push(event),
            _ => {
                parts.push(vec![event]);
                part_bytes = 0;
            }
        }
        part_bytes += bytes;
    }
    parts
}

/// Live events as sent, with their previous values read from MVCC when asked for.
async fn live_events(
    store: &Weak<Store>,
    request: &Arc<FeedRequest>,
    events: Vec<FeedEvent>,
) -> Result<Vec<proto::FeedEvent>, Status> {
    if !request.prev_values {
        return Ok(events.into_iter().map(|event| encode(event, None)).collect());
    }
    let Some(store) = store.upgrade() else {
        return Err(kv_status(StoreError::ShuttingDown, |_| None));
    };
    let request = request.clone();
    tokio::task::spawn_blocking(move || {
        with_previous_values(&MvccReader::new(store.engine()), &request, events)
    })
    .await
    .map_err(|error| Status::internal(format!("reading previous values failed: {error}")))?
    .map_err(|error| Status::internal(format!("reading previous values failed: {error}")))
}

fn with_previous_values(
    reader: &MvccReader<'_>,
    request: &FeedRequest,
    events: Vec<FeedEvent>,
) -> Result<Vec<proto::FeedEvent>, MvccError> {
    events
        .into_iter()
        .map(|event| {
            let previous =
                if request.prev_values { reader.version_before(&event.key, event.commit_ts)? } else { None };
            Ok(encode(event, previous))
        })
        .collect()
}

fn encode(event: FeedEvent, previous: Option<Version>) -> proto::FeedEvent {
    let prev_commit_ts = previous.as_ref().map_or(0, |previous| previous.commit_ts.as_u64());
    proto::FeedEvent {
        key: event.key,
        value: event.value,
        start_ts: event.start_ts.as_u64(),
        commit_ts: event.commit_ts.as_u64(),
        prev_value: previous.map(|previous| previous.value),
        prev_commit_ts,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, value_bytes: usize) -> proto::FeedEvent {
        proto::FeedEvent {
            key: key.as_bytes().to_vec(),
            value: Some(vec![0; value_bytes]),
            ..Default::default()
        }
    }

    #[test]
    fn events_are_split_by_bytes_in_order_and_a_large_one_goes_alone() {
        let events = vec![event("a", 40), event("b", 40), event("c", 200), event("d", 10), event("e", 10)];
        let parts = split_by_bytes(events, 100);
        let keys: Vec<Vec<&[u8]>> =
            parts.iter().map(|part| part.iter().map(|event| event.key.as_slice()).collect()).collect();
        assert_eq!(keys, vec![vec![&b"a"[..], b"b"], vec![b"c"], vec![b"d", b"e"]]);
        assert!(split_by_bytes(Vec::new(), 100).is_empty());
    }
}
