//! `Kv.Watch`: a key range's changes for a client in any language, merged across the
//! range's regions by the store serving the call (through the client library's watch,
//! `crate::client::watch`, which talks to each region's leader).
//!
//! The first response announces the watch's start as a progress notification; then
//! transactions, one per response, and progress. A watch that cannot go on ends with a
//! status: OUT_OF_RANGE with a `below_safe_point` failure when the history is
//! compacted, UNAVAILABLE when the cluster did not answer or this store is stopping
//! (resume from the last timestamp received), INVALID_ARGUMENT for a bad request.

use std::sync::Arc;
use std::time::Duration;

use tessera_engine::gc::BelowSafePoint;
use tessera_engine::store::StoreError;
use tessera_engine::timestamp::Timestamp;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::client::{ChangeEvent, Client, ClientError, Watch, WatchError, WatchMessage, WatchOptions};
use crate::failure::{invalid_kv_request, kv_status};
use crate::proto::{WatchRequest, WatchResponse};
use crate::service::feed::{CATCH_UP_BATCH_BYTES, STREAM_BUFFER_MESSAGES, split_by_bytes};

/// The longest progress interval a watch may ask for: a day.
const MAX_PROGRESS_INTERVAL_MS: u32 = 24 * 60 * 60 * 1000;

/// Starts the watch a request asks for; answers its responses through a receiver.
pub(crate) async fn start(
    client: &Arc<Client>,
    request: WatchRequest,
    stopping: CancellationToken,
) -> Result<mpsc::Receiver<Result<WatchResponse, Status>>, Status> {
    if request.progress_interval_ms > MAX_PROGRESS_INTERVAL_MS {
        return Err(invalid_kv_request(&format!(
            "a progress interval of {} ms is over the limit of {MAX_PROGRESS_INTERVAL_MS} ms",
            request.progress_interval_ms
        )));
    }
    let options = WatchOptions {
        start: request.start_key,
        end: request.end_key,
        from: (request.start_ts != 0).then(|| Timestamp::from_u64(request.start_ts)),
        prev_values: request.prev_values,
        progress_interval: (request.progress_interval_ms != 0)
            .then(|| Duration::from_millis(u64::from(request.progress_interval_ms))),
    };
    let watch = client.watch(options).await.map_err(status)?;
    let (out, answers) = mpsc::channel(STREAM_BUFFER_MESSAGES);
    tokio::spawn(deliver(watch, out, stopping));
    Ok(answers)
}

/// Sends what the watch delivers until it ends, the caller goes away or the store
/// stops.
async fn deliver(
    mut watch: Watch,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    stopping: CancellationToken,
) {
    let announcement = WatchResponse { resolved_ts: watch.from().as_u64(), ..WatchResponse::default() };
    if out.send(Ok(announcement)).await.is_err() {
        return;
    }
    loop {
        let message = tokio::select! {
            message = watch.next() => message,
            // The caller went away: dropping the watch stops its tasks.
            () = out.closed() => return,
            () = stopping.cancelled() => {
                let stopped = Status::unavailable("the store serving the watch is stopping: resume it from the last timestamp received");
                let _ = out.send(Err(stopped)).await;
                return;
            }
        };
        let responses = match message {
            Some(Ok(WatchMessage::Transaction { events, .. })) => transaction(events),
            Some(Ok(WatchMessage::Progress(at))) => {
                vec![WatchResponse { resolved_ts: at.as_u64(), ..WatchResponse::default() }]
            }
            Some(Err(error)) => {
                let _ = out.send(Err(status(error))).await;
                return;
            }
            None => return,
        };
        for response in responses {
            if out.send(Ok(response)).await.is_err() {
                return;
            }
        }
    }
}

/// The responses carrying one transaction's events: one, or consecutive ones marked
/// `continued` when the events are more than a message carries.
fn transaction(events: Vec<ChangeEvent>) -> Vec<WatchResponse> {
    let parts = split_by_bytes(events.into_iter().map(Into::into).collect(), CATCH_UP_BATCH_BYTES);
    let last = parts.len().saturating_sub(1);
    parts
        .into_iter()
        .enumerate()
        .map(|(index, events)| WatchResponse { events, resolved_ts: 0, continued: index < last })
        .collect()
}

/// The status a watch's end is told with.
fn status(error: WatchError) -> Status {
    match error {
        WatchError::Compacted { from, safe_point } => {
            let below = BelowSafePoint { read_ts: from.as_u64(), safe_point: safe_point.as_u64() };
            kv_status(StoreError::BelowSafePoint(below), |_| None)
        }
        WatchError::Client(ClientError::InvalidArgument(refusal)) => invalid_kv_request(&refusal.to_string()),
        WatchError::Client(ClientError::ProtocolViolation { .. }) => Status::internal(error.to_string()),
        WatchError::FeedsKeepFailing { .. } | WatchError::TooManyHeld | WatchError::Client(_) => {
            Status::unavailable(error.to_string())
        }
    }
}
