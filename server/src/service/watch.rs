//! `Kv.Watch`: a key range's changes for a client in any language, merged across the
//! range's regions by the store serving the call (through the client library's watch,
//! `crate::client::watch`, which talks to each region's leader).
//!
//! The first response announces the watch's start as a progress notification; then
//! transactions, one per response, and progress. A watch that cannot go on ends with a
//! status: OUT_OF_RANGE with a `below_safe_point` failure when the history is
//! compacted, UNAVAILABLE when the cluster did not answer or this store is stopping
//! (resume from the last timestamp received), INVALID_ARGUMENT for a bad request.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, future, stream};

use tessera_engine::gc::BelowSafePoint;
use tessera_engine::store::StoreError;
use tessera_engine::timestamp::Timestamp;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::client::{ChangeEvent, Client, ClientError, Watch, WatchError, WatchMessage, WatchOptions};
use crate::failure::{invalid_kv_request, kv_status};
use crate::proto::{WatchRequest, WatchResponse};
use crate::service::feed::{CATCH_UP_BATCH_BYTES, split_by_bytes};

/// The longest progress interval a watch may ask for: a day.
const MAX_PROGRESS_INTERVAL_MS: u32 = 24 * 60 * 60 * 1000;

/// What a `Kv.Watch` call streams.
pub(crate) type WatchResponses = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

/// Starts the watch a request asks for; answers its responses as a stream, which
/// tonic polls as the caller takes them (no task or queue of its own: an idle watch
/// costs what its client watch does). Dropping the stream (the caller went away)
/// drops the watch, which stops its tasks; once the store stops, the stream ends with
/// UNAVAILABLE.
pub(crate) async fn start(
    client: &Arc<Client>,
    request: WatchRequest,
    stopping: CancellationToken,
) -> Result<WatchResponses, Status> {
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
    Ok(Box::pin(responses(watch, stopping)))
}

/// The announcement of the watch's start, then what it delivers until it ends or the
/// store stops.
fn responses(watch: Watch, stopping: CancellationToken) -> impl Stream<Item = Result<WatchResponse, Status>> {
    let announcement = WatchResponse { resolved_ts: watch.from().as_u64(), ..WatchResponse::default() };
    let delivered = watch
        .flat_map(|message| stream::iter(responses_of(message)))
        .take_until(stopping.clone().cancelled_owned());
    let stopped = stream::once(async move { stopping.is_cancelled() }).filter_map(|stopped| {
        let status = Status::unavailable(
            "the store serving the watch is stopping: resume it from the last timestamp received",
        );
        future::ready(stopped.then(|| Err(status)))
    });
    stream::once(future::ready(Ok(announcement))).chain(delivered).chain(stopped)
}

/// The responses one message of a watch makes (after an error, the watch ends).
fn responses_of(message: Result<WatchMessage, WatchError>) -> Vec<Result<WatchResponse, Status>> {
    match message {
        Ok(WatchMessage::Transaction { events, .. }) => transaction(events).into_iter().map(Ok).collect(),
        Ok(WatchMessage::Progress(at)) => {
            vec![Ok(WatchResponse { resolved_ts: at.as_u64(), ..WatchResponse::default() })]
        }
        Err(error) => vec![Err(status(error))],
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
