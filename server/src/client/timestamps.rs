//! Timestamps from the placement driver's oracle, batched as PD's clients batch them:
//! one request in flight per client, on a stream kept open to the oracle's leader.
//! Every caller that asks while a request is in flight waits for the next one, which
//! carries all of them; a batch of `n` costs one round trip and one lock on the driver,
//! so throughput grows with the callers while latency stays one round trip.
//!
//! A batch's answer is a run of consecutive timestamps; each caller gets one of them
//! (or a run of its own inside it, when it asked for several).
//! The callers of one batch are concurrent, so which of them gets the smaller is of no
//! consequence; a caller that asks after another was answered gets a larger one, since
//! its request reaches the oracle after the earlier answer left it.
//!
//! When the stream breaks (the leader stepped down, crashed or went silent), it is
//! opened again to whichever replica serves, and the batch is sent again. Timestamps
//! the oracle handed out for a request whose answer was lost reach nobody and are
//! never used, which is harmless: only the order of those used matters.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tessera_engine::timestamp::{Timestamp, TimestampRun};
use tessera_placement::driver::MAX_TIMESTAMPS_PER_REQUEST;
use tessera_placement::{InvalidRequest, PdError, Unavailability};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Streaming;

use super::pd::GrpcPdClient;
use crate::failure::pd_error;
use crate::proto::{TsoRequest, TsoResponse};

/// How long an answer may take before the stream is thought broken (a paused or cut
/// off leader): well above a round trip, well below a caller's deadline.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause before opening the stream again after it broke.
const REOPEN_BACKOFF: Duration = Duration::from_millis(20);

/// A caller waiting for a run of `count` timestamps.
struct Waiter {
    give_up: Instant,
    count: u32,
    answer: oneshot::Sender<Result<TimestampRun, PdError>>,
}

/// The handle callers ask through; the stream lives in a task of its own, which ends
/// when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct TimestampClient {
    waiters: mpsc::UnboundedSender<Waiter>,
    deadline: Duration,
}

impl TimestampClient {
    /// Starts the client's stream task on `pd`'s runtime; callers give up after
    /// `deadline`.
    pub(crate) fn start(pd: Arc<GrpcPdClient>, deadline: Duration) -> TimestampClient {
        let (waiters, queue) = mpsc::unbounded_channel();
        pd.runtime().spawn(run(pd.clone(), queue));
        TimestampClient { waiters, deadline }
    }

    /// One timestamp, above every timestamp any caller of any client was answered with
    /// before this call.
    pub(crate) async fn timestamp(&self) -> Result<Timestamp, PdError> {
        self.request().await
    }

    /// Asks for one timestamp now, without waiting: the answer is awaited later. It is
    /// above every timestamp answered before this call, and below every timestamp this
    /// client is asked for after it (requests leave in the order they are made).
    pub(crate) fn request(&self) -> impl Future<Output = Result<Timestamp, PdError>> + Send + 'static {
        let run = self.request_run(1);
        async move { run.await.map(|run| run.first) }
    }

    /// Asks for `count` consecutive timestamps now, as [`TimestampClient::request`]
    /// asks for one: nobody else is handed any of them.
    pub(crate) fn request_run(
        &self,
        count: u32,
    ) -> impl Future<Output = Result<TimestampRun, PdError>> + Send + 'static {
        let (answer, answered) = oneshot::channel();
        let give_up = Instant::now() + self.deadline;
        let counted = count > 0 && count <= MAX_TIMESTAMPS_PER_REQUEST;
        let queued = counted && self.waiters.send(Waiter { give_up, count, answer }).is_ok();
        async move {
            if !counted {
                return Err(InvalidRequest::TimestampCount { count, max: MAX_TIMESTAMPS_PER_REQUEST }.into());
            }
            if !queued {
                return Err(Unavailability::Stopping.into());
            }
            match tokio::time::timeout_at(give_up, answered).await {
                Ok(answer) => answer.unwrap_or_else(|_| Err(Unavailability::Stopping.into())),
                Err(_) => Err(Unavailability::NoReplicaAnswered.into()),
            }
        }
    }
}

/// An open stream to the oracle.
struct OracleStream {
    requests: mpsc::Sender<TsoRequest>,
    answers: Streaming<TsoResponse>,
}

impl OracleStream {
    /// `count` timestamps, answered by `give_up` at the latest: the first of the run.
    async fn request(&mut self, count: u32, give_up: Instant) -> Result<Timestamp, PdError> {
        let broken = || PdError::from(Unavailability::Remote("the timestamp stream closed".into()));
        self.requests.send(TsoRequest { count }).await.map_err(|_| broken())?;
        let answer_by = give_up.min(Instant::now() + ANSWER_TIMEOUT);
        let answer = tokio::time::timeout_at(answer_by, self.answers.message())
            .await
            .map_err(|_| Unavailability::Remote(format!("no timestamps within {ANSWER_TIMEOUT:?}")))?;
        let answer = match answer {
            Ok(Some(answer)) => answer,
            Ok(None) => return Err(broken()),
            Err(status) => return Err(pd_error(&status).0),
        };
        let fits = answer.first.checked_add(u64::from(count) - 1).is_some();
        if answer.count != count || !fits {
            let what =
                format!("asked for {count} timestamps, answered with {} from {}", answer.count, answer.first);
            return Err(Unavailability::Remote(what).into());
        }
        Ok(Timestamp::from_u64(answer.first))
    }
}

/// The stream task: takes the waiters queued, asks for as many timestamps as they
/// want together, hands them out; one batch at a time.
async fn run(pd: Arc<GrpcPdClient>, mut queue: mpsc::UnboundedReceiver<Waiter>) {
    let mut stream: Option<OracleStream> = None;
    // A waiter that did not fit in the last batch: it goes first in the next one.
    let mut carried: Option<Waiter> = None;
    loop {
        let first = match carried.take() {
            Some(waiter) => waiter,
            None => match queue.recv().await {
                Some(waiter) => waiter,
                None => return,
            },
        };
        let mut count = first.count;
        let mut batch = vec![first];
        while let Ok(waiter) = queue.try_recv() {
            if count + waiter.count > MAX_TIMESTAMPS_PER_REQUEST {
                carried = Some(waiter);
                break;
            }
            count += waiter.count;
            batch.push(waiter);
        }
        // Callers that gave up need no timestamp.
        batch.retain(|waiter| !waiter.answer.is_closed());
        if !batch.is_empty() {
            serve(&pd, &mut stream, batch).await;
        }
    }
}

/// Answers `batch`, opening the stream again as often as it breaks, until the last
/// of its callers' deadlines.
async fn serve(pd: &GrpcPdClient, stream: &mut Option<OracleStream>, mut batch: Vec<Waiter>) {
    let now = Instant::now();
    // Callers past their deadline were answered by their own timeout.
    batch.retain(|waiter| waiter.give_up > now);
    let Some(give_up) = batch.iter().map(|waiter| waiter.give_up).max() else { return };
    let count: u32 = batch.iter().map(|waiter| waiter.count).sum();
    assert!(
        count <= MAX_TIMESTAMPS_PER_REQUEST,
        "invariant: a batch asks for at most MAX_TIMESTAMPS_PER_REQUEST"
    );
    let failure = loop {
        let opened = match stream.take() {
            Some(open) => Ok(open),
            None => match tokio::time::timeout_at(give_up, pd.open_timestamp_stream()).await {
                Ok(opened) => opened.map(|(requests, answers)| OracleStream { requests, answers }),
                Err(_) => Err(Unavailability::NoReplicaAnswered.into()),
            },
        };
        let mut open = match opened {
            Ok(open) => open,
            Err(error) => break error,
        };
        match open.request(count, give_up).await {
            Ok(first) => {
                *stream = Some(open);
                let mut next = first.as_u64();
                for waiter in batch {
                    let run = TimestampRun { first: Timestamp::from_u64(next), count: waiter.count };
                    next += u64::from(waiter.count);
                    let _ = waiter.answer.send(Ok(run));
                }
                return;
            }
            Err(error) if !error.is_retryable() || Instant::now() + REOPEN_BACKOFF >= give_up => break error,
            Err(_) => tokio::time::sleep(REOPEN_BACKOFF).await,
        }
    };
    for waiter in batch {
        let _ = waiter.answer.send(Err(failure.clone()));
    }
}
