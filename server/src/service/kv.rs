//! The key-value API of a store: each request goes to the store's replica of the region
//! named in its context, which checks epoch and range and answers once the write is
//! applied or the read is linearizable. The raft workers answer through callbacks that
//! complete a oneshot channel: a request waiting costs a parked future, not a thread.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tessera_engine::kv::{scan_page_is_cut, scanned_bytes};
use tessera_engine::log_limit::LogLimit;
use tessera_engine::mvcc::refresh::Refresh;
use tessera_engine::proto::command::write;
use tessera_engine::proto::{frame::KeyValue, metadata::RegionEpoch};
use tessera_engine::store::{ReadRequest, ReadResponse, Responder, Store, StoreError};
use tessera_engine::timestamp::Timestamp;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::failure::{invalid_kv_request, kv_status};
use crate::proto::kv_server::Kv;
use crate::proto::{
    BatchGetRequest, BatchGetResponse, GetRequest, GetResponse, RegionContext, RegionFeedRequest,
    RegionFeedResponse, ScanRequest, ScanResponse, TxnGetRequest, TxnGetResponse, TxnRefreshRequest,
    TxnRefreshResponse, TxnScanRequest, TxnScanResponse, VersionedPair, WatchRequest, WriteRequest,
    WriteResponse,
};
use crate::transport::AddressBook;

use super::reserved;

pub(crate) struct KvService {
    /// Weak: the node closes the store when it stops, whatever connections linger.
    store: Weak<Store>,
    /// What `Watch` merges the regions of a range with.
    client: Arc<Client>,
    /// Cancelled when the node stops: watches end then.
    stopping: CancellationToken,
    addresses: Arc<dyn AddressBook>,
    timeout: Duration,
    /// Requests slower than this are logged.
    slow_request_threshold: Duration,
}

/// The most keys one batch get may ask a region for: each is read on the region's
/// raft worker and answered in one message (the client sends more in several).
pub const MAX_BATCH_GET_KEYS: usize = 1024;

fn context(context: Option<RegionContext>) -> Result<(u64, RegionEpoch), Status> {
    let context = context.ok_or_else(|| invalid_kv_request("the request names no region (no context)"))?;
    let epoch = context.epoch.ok_or_else(|| invalid_kv_request("the request names no region epoch"))?;
    Ok((context.region_id, epoch))
}

/// A responder that completes a oneshot channel.
fn responder<T: Send + 'static>() -> (Responder<T>, oneshot::Receiver<Result<T, StoreError>>) {
    let (sender, receiver) = oneshot::channel();
    // The request may have been abandoned (the client went away): nobody to tell.
    (Responder::new(move |result| drop(sender.send(result))), receiver)
}

impl KvService {
    pub(crate) fn new(
        store: &Arc<Store>,
        (client, stopping): (Arc<Client>, CancellationToken),
        addresses: Arc<dyn AddressBook>,
        timeout: Duration,
        slow_request_threshold: Duration,
    ) -> KvService {
        KvService {
            store: Arc::downgrade(store),
            client,
            stopping,
            addresses,
            timeout,
            slow_request_threshold,
        }
    }

    fn store(&self) -> Result<Arc<Store>, Status> {
        self.store.upgrade().ok_or_else(|| kv_status(StoreError::ShuttingDown, |_| None))
    }

    /// Waits for the store's answers, all within one deadline. An answer that never
    /// comes (the deadline passed, or the store stopped without answering) is an
    /// unknown outcome: a write may still apply.
    async fn wait<T: Send + 'static>(
        &self,
        answers: Vec<oneshot::Receiver<Result<T, StoreError>>>,
    ) -> Result<Vec<T>, Status> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(Ok(value))) => results.push(value),
                Ok(Ok(Err(error))) => return Err(self.status(error).await),
                _ => return Err(self.status(StoreError::OutcomeUnknown).await),
            }
        }
        Ok(results)
    }

    /// The status for a refusal; the leader's address it names may take a question to
    /// the driver, so it is looked up off the async workers.
    async fn status(&self, error: StoreError) -> Status {
        let addresses = self.addresses.clone();
        tokio::task::spawn_blocking(move || kv_status(error, |store| addresses.resolve(store)))
            .await
            .unwrap_or_else(|e| Status::internal(format!("request task failed: {e}")))
    }

    async fn read(
        &self,
        region_id: u64,
        epoch: RegionEpoch,
        requests: Vec<ReadRequest>,
    ) -> Result<Vec<ReadResponse>, Status> {
        let store = self.store()?;
        let answers = requests
            .into_iter()
            .map(|request| {
                let (respond, answer) = responder();
                store.read_with(region_id, epoch, request, respond);
                answer
            })
            .collect();
        self.wait(answers).await
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let (started, request) = (Instant::now(), request.into_inner());
        let region_id = region_of(&request.context);
        let answer = self.get_value(request).await;
        self.observe("get", region_id, started, &answer);
        answer.map(Response::new)
    }

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let (started, request) = (Instant::now(), request.into_inner());
        let region_id = region_of(&request.context);
        let answer = self.get_values(request).await;
        self.observe("batch_get", region_id, started, &answer);
        answer.map(Response::new)
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let (started, request) = (Instant::now(), request.into_inner());
        let region_id = region_of(&request.context);
        let answer = self.scan_range(request).await;
        self.observe("scan", region_id, started, &answer);
        answer.map(Response::new)
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        reserved::check_writes(reserved::kept_out(&request), &request.get_ref().writes)?;
        let (started, request) = (Instant::now(), request.into_inner());
        let region_id = region_of(&request.context);
        let answer = self.apply_writes(request).await;
        self.observe("write", region_id, started, &answer);
        answer.map(Response::new)
    }

    async fn txn_get(&self, request: Request<TxnGetRequest>) -> Result<Response<TxnGetResponse>, Status> {
        reserved::check_key(reserved::kept_out(&request), &request.get_ref().key)?;
        let (started, request) = (Instant::now(), request.into_inner());
        let region_id = region_of(&request.context);
        let answer = self.txn_get_value(request).await;
        self.observe("txn_get", region_id, started, &answer);
        answer.map(Response::new)
    }

    async fn txn_scan(&self, request: Request<TxnScanRequest>) -> Result<Response<TxnScanResponse>, Status> {
        let range = request.get_ref();
        reserved::check_range(reserved::kept_out(&request), &range.start_key, &range.end_key)?;
        let (started, request) = (Instant::now(), request.into_inner());
        let region_id = region_of(&request.context);
        let answer = self.txn_scan_range(request).await;
        self.observe("txn_scan", region_id, started, &answer);
        answer.map(Response::new)
    }

    async fn txn_refresh(
        &self,
        request: Request<TxnRefreshRequest>,
    ) -> Result<Response<TxnRefreshResponse>, Status> {
        let range = request.get_ref();
        reserved::check_range(reserved::kept_out(&request), &range.start_key, &range.end_key)?;
        let (started, request) = (Instant::now(), request.into_inner());
        let region_id = region_of(&request.context);
        let answer = self.txn_refresh_range(request).await;
        self.observe("txn_refresh", region_id, started, &answer);
        answer.map(Response::new)
    }

    type RegionFeedStream = ReceiverStream<Result<RegionFeedResponse, Status>>;

    async fn region_feed(
        &self,
        request: Request<RegionFeedRequest>,
    ) -> Result<Response<Self::RegionFeedStream>, Status> {
        let range = request.get_ref();
        reserved::check_range(reserved::kept_out(&request), &range.start_key, &range.end_key)?;
        let (started, request) = (Instant::now(), request.into_inner());
        let region_id = region_of(&request.context);
        let answer = self.open_region_feed(request).await;
        self.observe("region_feed", region_id, started, &answer);
        answer.map(|answers| Response::new(ReceiverStream::new(answers)))
    }

    type WatchStream = super::watch::WatchResponses;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let range = request.get_ref();
        reserved::check_range(reserved::kept_out(&request), &range.start_key, &range.end_key)?;
        let responses =
            super::watch::start(&self.client, request.into_inner(), self.stopping.clone()).await?;
        Ok(Response::new(responses))
    }
}

/// How far ahead of this store's clock a read timestamp may be. The oracle's
/// timestamps follow the driver's clock, so a well-behaved client's are never much
/// ahead; one far ahead would raise the region's read watermark (see the store's
/// `one_phase.rs`) so high that no one-phase commit could pass it.
const MAX_READ_TS_AHEAD: Duration = Duration::from_secs(60);

/// A snapshot read's timestamp, refused when far ahead of this store's clock.
fn read_timestamp(read_ts: u64) -> Result<Timestamp, Status> {
    let read_ts = Timestamp::from_u64(read_ts);
    let now = std::time::SystemTime::now();
    match read_ts.wall_time().duration_since(now) {
        Ok(ahead) if ahead > MAX_READ_TS_AHEAD => Err(invalid_kv_request(&format!(
            "read timestamp {read_ts} is {} s ahead of this store's clock (at most {} s accepted)",
            ahead.as_secs(),
            MAX_READ_TS_AHEAD.as_secs()
        ))),
        _ => Ok(read_ts),
    }
}

/// A garbage-collection fence, refused when ahead of this store's clock: the driver
/// fences at the wall clock minus the versions' lifetime, and a fence in the future
/// would refuse every transaction until the clock caught up.
fn check_fence(fence_ts: u64) -> Result<(), Status> {
    let fence = Timestamp::from_u64(fence_ts);
    if fence.wall_time() > std::time::SystemTime::now() {
        return Err(invalid_kv_request(&format!(
            "garbage-collection fence {fence} is ahead of this store's clock"
        )));
    }
    Ok(())
}

/// The region a request names, for its log lines (0 if it names none).
fn region_of(context: &Option<RegionContext>) -> u64 {
    context.as_ref().map_or(0, |context| context.region_id)
}

/// Refusals and slow requests can come with every request under load: a few lines per
/// ten seconds of each.
static REFUSALS: LogLimit = LogLimit::new(10, Duration::from_secs(10));
static SLOW_REQUESTS: LogLimit = LogLimit::new(10, Duration::from_secs(10));

impl KvService {
    /// Logs a refused request, and a request slower than the threshold.
    fn observe<T>(&self, method: &'static str, region_id: u64, started: Instant, answer: &Result<T, Status>) {
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if let Err(status) = answer
            && let Some(admitted) = REFUSALS.admit()
        {
            let (code, message, suppressed_before) =
                (status.code(), status.message(), admitted.suppressed_before);
            tracing::info!(
                method,
                region_id,
                ?code,
                message,
                elapsed_ms,
                suppressed_before,
                "request refused"
            );
        }
        if started.elapsed() >= self.slow_request_threshold
            && let Some(admitted) = SLOW_REQUESTS.admit()
        {
            let suppressed_before = admitted.suppressed_before;
            let outcome = if answer.is_ok() { "answered" } else { "refused" };
            tracing::warn!(method, region_id, elapsed_ms, outcome, suppressed_before, "slow request");
        }
    }

    async fn get_value(&self, request: GetRequest) -> Result<GetResponse, Status> {
        let (region_id, epoch) = context(request.context)?;
        let answers = self.read(region_id, epoch, vec![ReadRequest::Get { key: request.key }]).await?;
        let value = match answers.into_iter().next() {
            Some(ReadResponse::Value(value)) => value,
            _ => return Err(Status::internal("a get answered with pairs")),
        };
        Ok(GetResponse { found: value.is_some(), value: value.unwrap_or_default() })
    }

    async fn get_values(&self, request: BatchGetRequest) -> Result<BatchGetResponse, Status> {
        let (region_id, epoch) = context(request.context)?;
        let keys = request.keys;
        if keys.len() > MAX_BATCH_GET_KEYS {
            return Err(invalid_kv_request(&format!(
                "a batch get of {} keys: at most {MAX_BATCH_GET_KEYS} in one request",
                keys.len()
            )));
        }
        let reads = keys.iter().map(|key| ReadRequest::Get { key: key.clone() }).collect();
        // Issued together, the reads share one ReadIndex round.
        let answers = self.read(region_id, epoch, reads).await?;
        let pairs = keys
            .into_iter()
            .zip(answers)
            .filter_map(|(key, answer)| match answer {
                ReadResponse::Value(Some(value)) => Some(KeyValue { key, value }),
                _ => None,
            })
            .collect();
        Ok(BatchGetResponse { pairs })
    }

    async fn scan_range(&self, request: ScanRequest) -> Result<ScanResponse, Status> {
        let (region_id, epoch) = context(request.context)?;
        let limit = request.limit as usize;
        let scan = ReadRequest::Scan {
            start: request.start_key,
            end: request.end_key,
            limit,
            reverse: request.reverse,
        };
        let answers = self.read(region_id, epoch, vec![scan]).await?;
        let pairs = match answers.into_iter().next() {
            Some(ReadResponse::Pairs(pairs)) => pairs,
            _ => return Err(Status::internal("a scan answered with a single value")),
        };
        let bytes = pairs.iter().map(|(key, value)| scanned_bytes(key, value)).sum();
        let more = scan_page_is_cut(pairs.len(), bytes, limit);
        let pairs = pairs.into_iter().map(|(key, value)| KeyValue { key, value }).collect();
        Ok(ScanResponse { pairs, more })
    }

    /// One read, answered by its only response.
    async fn read_one(
        &self,
        region_id: u64,
        epoch: RegionEpoch,
        request: ReadRequest,
    ) -> Result<ReadResponse, Status> {
        let answers = self.read(region_id, epoch, vec![request]).await?;
        answers.into_iter().next().ok_or_else(|| Status::internal("a read was answered with nothing"))
    }

    async fn txn_get_value(&self, request: TxnGetRequest) -> Result<TxnGetResponse, Status> {
        let (region_id, epoch) = context(request.context)?;
        let read_ts = read_timestamp(request.read_ts)?;
        match self.read_one(region_id, epoch, ReadRequest::TxnGet { key: request.key, read_ts }).await? {
            ReadResponse::Version(Some(version)) => Ok(TxnGetResponse {
                found: true,
                value: version.value,
                locked: None,
                commit_ts: version.commit_ts.as_u64(),
            }),
            ReadResponse::Version(None) => Ok(TxnGetResponse::default()),
            ReadResponse::Locked(lock) => {
                Ok(TxnGetResponse { locked: Some(lock), ..TxnGetResponse::default() })
            }
            other => Err(Status::internal(format!("a transactional get was answered {other:?}"))),
        }
    }

    async fn txn_refresh_range(&self, request: TxnRefreshRequest) -> Result<TxnRefreshResponse, Status> {
        let (region_id, epoch) = context(request.context)?;
        let refresh = ReadRequest::TxnRefresh {
            start: request.start_key,
            end: request.end_key,
            after: Timestamp::from_u64(request.after_ts),
            up_to: read_timestamp(request.up_to_ts)?,
            own_start_ts: Timestamp::from_u64(request.own_start_ts),
        };
        match self.read_one(region_id, epoch, refresh).await? {
            ReadResponse::Refreshed(Refresh::Unchanged) => Ok(TxnRefreshResponse::default()),
            ReadResponse::Refreshed(Refresh::Changed(key)) => {
                Ok(TxnRefreshResponse { changed: true, changed_key: key, locked: None })
            }
            ReadResponse::Locked(lock) => Ok(TxnRefreshResponse { locked: Some(lock), ..Default::default() }),
            other => Err(Status::internal(format!("a read refresh was answered {other:?}"))),
        }
    }

    async fn txn_scan_range(&self, request: TxnScanRequest) -> Result<TxnScanResponse, Status> {
        let (region_id, epoch) = context(request.context)?;
        let limit = request.limit as usize;
        let scan = ReadRequest::TxnScan {
            start: request.start_key,
            end: request.end_key,
            read_ts: read_timestamp(request.read_ts)?,
            limit,
            reverse: request.reverse,
        };
        match self.read_one(region_id, epoch, scan).await? {
            ReadResponse::Versions(pairs) => {
                let bytes = pairs.iter().map(|(key, version)| scanned_bytes(key, &version.value)).sum();
                let more = scan_page_is_cut(pairs.len(), bytes, limit);
                let pairs = pairs
                    .into_iter()
                    .map(|(key, version)| VersionedPair {
                        key,
                        value: version.value,
                        commit_ts: version.commit_ts.as_u64(),
                    })
                    .collect();
                Ok(TxnScanResponse { pairs, locked: None, more })
            }
            ReadResponse::Locked(lock) => Ok(TxnScanResponse { locked: Some(lock), ..Default::default() }),
            other => Err(Status::internal(format!("a transactional scan was answered {other:?}"))),
        }
    }

    /// Has the region's leader here take a watcher, then serves it.
    async fn open_region_feed(
        &self,
        request: RegionFeedRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<RegionFeedResponse, Status>>, Status> {
        let (region_id, epoch) = context(request.context)?;
        super::feed::check_range(&request)?;
        let store = self.store()?;
        let (subscriber, queued) = super::feed::subscriber();
        let (respond, answer) = responder();
        let start_ts = Timestamp::from_u64(request.start_ts);
        store.subscribe_feed_with(region_id, epoch, start_ts, subscriber, respond);
        let start = self
            .wait(vec![answer])
            .await?
            .pop()
            .ok_or_else(|| Status::internal("no subscription answered"))?;
        super::feed::serve_watcher(&store, start, request, queued)
    }

    async fn apply_writes(&self, request: WriteRequest) -> Result<WriteResponse, Status> {
        let (region_id, epoch) = context(request.context)?;
        if request.writes.is_empty() {
            return Err(invalid_kv_request("a write request with no writes"));
        }
        for write in &request.writes {
            if let Some(write::Kind::TxnFence(fence)) = &write.kind {
                check_fence(fence.fence_ts)?;
            }
        }
        let (respond, answer) = responder();
        self.store()?.write_with(region_id, epoch, request.writes, respond);
        let answers = self.wait(vec![answer]).await?;
        Ok(WriteResponse { results: answers.into_iter().next().unwrap_or_default() })
    }
}
