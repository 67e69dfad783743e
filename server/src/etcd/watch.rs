//! etcd's Watch service over Tessera's change feeds: one bidirectional stream carries
//! any number of watches, each a client watch (`crate::client::watch`) of its range's
//! stored keys, so that every guarantee of etcd's watch (ordered, unique, atomic: one
//! response per transaction; reliable and resumable from a revision) is the change
//! feed's.
//!
//! - **Create** answers `created` in the order the requests came (etcd's clients match
//!   them so), with the revision the watch starts after; `start_revision` R delivers
//!   what was committed at R and after (a watch from R - 1). A start the compaction or
//!   garbage collection has passed is answered `created`, then canceled with the
//!   compact revision, as etcd does; a bad request is answered created and canceled
//!   with the reason.
//! - Filters drop puts or deletes; a transaction whose events are all dropped sends
//!   nothing. `prev_kv` asks the feed for previous values. `fragment` splits a response
//!   larger than [`MAX_RESPONSE_BYTES`] into fragments.
//! - **progress_notify**: a response without events, at the revision the watch has
//!   seen everything up to, every progress interval (`EtcdSettings`) in which it moved.
//! - **Progress requests**: a response (watch id -1) at the lowest revision every
//!   watch of the stream has delivered up to, sent behind what they delivered. Each
//!   watch is first asked to catch up to the revision current when the request came,
//!   and the answer waits for that (at most [`PROGRESS_WAIT`]): so it is at least that
//!   revision, as etcd's answer is its current revision once its watches are synced.
//!   That is what a client compares with a quorum read's revision to know its watch
//!   cache is fresh. One answer waits at a time: a request that comes meanwhile
//!   raises the revision it waits for, not its deadline, and is answered by it (etcd
//!   merges them too). Without the oracle, the answer is what the watches delivered,
//!   at once.
//! - **Cancel** stops the watch and answers `canceled`.
//!
//! This module owns the stream's watches and the translation of their messages; it
//! must never read a region itself (the change feed owns ordering and completeness).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use prost::Message as _;
use tessera_engine::timestamp::Timestamp;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Auth, Needs, Presented, Requirement};
use super::errors::{EtcdError, revision};
use super::keys::{self, KeyRange};
use super::kv;
use super::record;
use crate::client::{
    ChangeEvent, Client, ProgressAsker, VersionedKeyValue, WatchError, WatchMessage, WatchOptions,
};
use crate::etcd_proto::etcdserverpb::watch_create_request::FilterType;
use crate::etcd_proto::etcdserverpb::watch_request::RequestUnion;
use crate::etcd_proto::etcdserverpb::watch_server::Watch;
use crate::etcd_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use crate::etcd_proto::mvccpb::{Event, KeyValue, event::EventType};

/// How often a watch that asked for progress notifications gets one (when it has moved),
/// unless configured (`EtcdSettings`). etcd's default is ten minutes; shorter, as a
/// Tessera watch refreshes its progress every ten seconds anyway.
pub(crate) const DEFAULT_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(10);

/// The largest response a watch that asked for fragments gets in one piece (etcd's
/// default request limit).
const MAX_RESPONSE_BYTES: usize = 3 * 512 * 1024;

/// Responses in flight to one stream's reader; a reader that does not keep up holds
/// its watches back (their feeds reopen later from where they were).
const STREAM_RESPONSES: usize = 256;

/// The watch id of a stream-wide progress response.
const PROGRESS_WATCH_ID: i64 = -1;

/// How long a progress request waits for the stream's watches to catch up to the
/// revision current when it came; a watch still catching up from an old revision is
/// answered for what it has delivered by then.
const PROGRESS_WAIT: Duration = Duration::from_secs(3);

/// The watch id of a create refused for its sender's permissions (etcd's
/// `InvalidWatchID`).
const REFUSED_WATCH_ID: i64 = -1;

type Responses = mpsc::Sender<Result<WatchResponse, Status>>;

/// The Watch service of one store's etcd API.
pub(crate) struct EtcdWatch {
    client: Arc<Client>,
    auth: Arc<Auth>,
    member_id: u64,
    progress_notify_interval: Duration,
}

impl EtcdWatch {
    pub(crate) fn new(
        client: Arc<Client>,
        auth: Arc<Auth>,
        member_id: u64,
        progress_notify_interval: Duration,
    ) -> EtcdWatch {
        EtcdWatch { client, auth, member_id, progress_notify_interval }
    }
}

#[tonic::async_trait]
impl Watch for EtcdWatch {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (responses, stream) = mpsc::channel(STREAM_RESPONSES);
        let session = Session {
            client: self.client.clone(),
            auth: self.auth.clone(),
            presented: Presented::of(&request),
            member_id: self.member_id,
            progress_notify_interval: self.progress_notify_interval,
            watches: HashMap::new(),
            next_id: 0,
            responses,
            pending_progress: None,
        };
        tokio::spawn(session.serve(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }
}

/// One stream's watches.
struct Session {
    client: Arc<Client>,
    auth: Arc<Auth>,
    /// Who opened the stream: each create is checked against what it may read then.
    presented: Presented,
    member_id: u64,
    progress_notify_interval: Duration,
    watches: HashMap<i64, Running>,
    /// The next id to try for a watch that asks the server to pick one.
    next_id: i64,
    responses: Responses,
    /// The progress request waiting for the stream's watches, if one is.
    pending_progress: Option<PendingProgress>,
}

/// A progress request waiting for the stream's watches to deliver up to `current`.
struct PendingProgress {
    /// The oracle's timestamp when it came, and its revision.
    at: Timestamp,
    current: i64,
    /// Answered then, whatever the watches delivered.
    deadline: tokio::time::Instant,
}

/// What a stream's session does next.
enum Next {
    Request(Result<Option<WatchRequest>, Status>),
    ProgressDue,
    ReaderGone,
}

/// Where a new watch starts: after a timestamp (none: now), or nowhere, as its start
/// is below the revision Compact recorded (named).
enum Start {
    After(KeyRange, Option<Timestamp>),
    Compacted(i64),
}

/// A running watch: its task, the revision it has delivered everything up to, and how
/// to ask it for progress.
struct Running {
    task: JoinHandle<()>,
    delivered: tokio::sync::watch::Receiver<i64>,
    progress: ProgressAsker,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    fn header(&self, revision: i64) -> ResponseHeader {
        super::response_header(self.member_id, revision)
    }

    /// Serves the stream's requests until the client closes it or stops reading;
    /// every watch stops with it.
    async fn serve(mut self, mut requests: Streaming<WatchRequest>) {
        loop {
            let progress_due = self.progress_due();
            let next = tokio::select! {
                request = requests.message() => Next::Request(request),
                () = progress_due => Next::ProgressDue,
                () = self.responses.closed() => Next::ReaderGone,
            };
            let request = match next {
                Next::Request(Ok(Some(request))) => request,
                Next::ProgressDue => {
                    if !self.answer_progress().await {
                        return;
                    }
                    continue;
                }
                Next::Request(_) | Next::ReaderGone => return,
            };
            let answered = match request.request_union {
                Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
                Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => self.progress().await,
                None => true,
            };
            if !answered {
                return;
            }
        }
    }

    /// Answers false when the stream's reader is gone.
    async fn send(&self, response: WatchResponse) -> bool {
        self.responses.send(Ok(response)).await.is_ok()
    }

    async fn create(&mut self, create: WatchCreateRequest) -> bool {
        self.watches.retain(|_, running| !running.task.is_finished());
        let needs = Needs::watch(&create.key, &create.range_end);
        if let Err(refusal) = self.auth.check(&self.presented, Requirement::Access(&needs)).await {
            // As etcd answers it: no watch id, and the status's whole text, which Go's
            // clients match to sign in again when their token expired.
            let status = Status::from(refusal);
            let reason = format!("rpc error: code = {:?} desc = {}", status.code(), status.message());
            return self.refuse(REFUSED_WATCH_ID, &reason).await;
        }
        let id = match self.pick_id(create.watch_id) {
            Some(id) => id,
            None => {
                return self
                    .refuse(create.watch_id, "etcdserver: duplicate watch ID provided on the same stream")
                    .await;
            }
        };
        let (range, from) = match self.start_of(&create).await {
            Ok(Start::After(range, from)) => (range, from),
            Ok(Start::Compacted(compacted)) => return self.created_then_compacted(id, compacted).await,
            Err(error) => return self.refuse(id, &error.to_string()).await,
        };
        let (start, end) = range.bounds();
        let options = WatchOptions {
            start,
            end,
            from,
            prev_values: create.prev_kv,
            progress_interval: create.progress_notify.then_some(self.progress_notify_interval),
        };
        let watch = match self.client.watch(options).await {
            Ok(watch) => watch,
            Err(WatchError::Compacted { safe_point, .. }) => {
                let compact_revision = revision(safe_point).unwrap_or(i64::MAX);
                return self.created_then_compacted(id, compact_revision).await;
            }
            Err(error) => return self.refuse(id, &EtcdError::from_watch(error).to_string()).await,
        };
        let started = revision(watch.from()).unwrap_or(i64::MAX);
        let created = WatchResponse {
            header: Some(self.header(started)),
            watch_id: id,
            created: true,
            ..WatchResponse::default()
        };
        if !self.send(created).await {
            return false;
        }
        let (delivering, delivered) = tokio::sync::watch::channel(started);
        let pump = Pump {
            id,
            member_id: self.member_id,
            create,
            delivered: delivering,
            responses: self.responses.clone(),
        };
        let progress = watch.progress_asker();
        if let Some(pending) = &self.pending_progress {
            progress.ask(pending.at);
        }
        self.watches.insert(id, Running { task: tokio::spawn(pump.run(watch)), delivered, progress });
        true
    }

    /// The id a new watch gets: the one asked for if free, else the next free one.
    fn pick_id(&mut self, asked: i64) -> Option<i64> {
        if asked != 0 {
            return (!self.watches.contains_key(&asked)).then_some(asked);
        }
        while self.watches.contains_key(&self.next_id) || self.next_id == PROGRESS_WATCH_ID {
            self.next_id = self.next_id.wrapping_add(1);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        Some(id)
    }

    /// The stored range a create request watches, and the timestamp it watches after.
    async fn start_of(&self, create: &WatchCreateRequest) -> Result<Start, EtcdError> {
        let range = KeyRange::of(&create.key, &create.range_end)?;
        if create.start_revision <= 0 {
            return Ok(Start::After(range, None));
        }
        let compacted = kv::compacted_revision_now(&self.client).await?;
        if create.start_revision <= compacted {
            return Ok(Start::Compacted(compacted));
        }
        let after = u64::try_from(create.start_revision - 1).unwrap_or(0);
        Ok(Start::After(range, Some(Timestamp::from_u64(after))))
    }

    async fn created_then_compacted(&self, id: i64, compact_revision: i64) -> bool {
        let created = WatchResponse {
            header: Some(self.header(compact_revision)),
            watch_id: id,
            created: true,
            ..WatchResponse::default()
        };
        self.send(created).await
            && self.send(compacted_response(self.header(compact_revision), id, compact_revision)).await
    }

    /// Answers a create that cannot be served: created and canceled at once, saying why.
    async fn refuse(&self, id: i64, reason: &str) -> bool {
        let response = WatchResponse {
            header: Some(self.header(0)),
            watch_id: id,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..WatchResponse::default()
        };
        self.send(response).await
    }

    async fn cancel(&mut self, id: i64) -> bool {
        let delivered = self.watches.remove(&id).map_or(0, |running| *running.delivered.borrow());
        let response = WatchResponse {
            header: Some(self.header(delivered)),
            watch_id: id,
            canceled: true,
            ..WatchResponse::default()
        };
        self.send(response).await
    }

    /// Asks every watch of the stream to catch up to the revision current now; the
    /// answer goes out once they have (`serve`). A request while one waits raises the
    /// revision waited for, not the deadline: one answer for both.
    async fn progress(&mut self) -> bool {
        let now = self.client.timestamp().await.map_err(EtcdError::from);
        self.watches.retain(|_, running| !running.task.is_finished());
        let (at, current) = match now.and_then(|now| Ok((now, revision(now)?))) {
            Ok(now) => now,
            // What the watches delivered is still true: no need to end the stream.
            Err(_) if self.pending_progress.is_some() || !self.watches.is_empty() => {
                return self.answer_progress().await;
            }
            Err(error) => return self.responses.send(Err(error.into())).await.is_ok(),
        };
        for running in self.watches.values() {
            running.progress.ask(at);
        }
        let deadline = match &self.pending_progress {
            Some(pending) => pending.deadline,
            None => tokio::time::Instant::now() + PROGRESS_WAIT,
        };
        self.pending_progress = Some(PendingProgress { at, current, deadline });
        true
    }

    /// Resolves when the waiting progress request may be answered: every watch of the
    /// stream delivered up to its revision, or its deadline passed; never without one.
    fn progress_due(&self) -> impl Future<Output = ()> + 'static {
        let pending = self.pending_progress.as_ref().map(|pending| (pending.current, pending.deadline));
        let delivered: Vec<_> = match pending {
            Some(_) => self.watches.values().map(|running| running.delivered.clone()).collect(),
            None => Vec::new(),
        };
        async move {
            let Some((current, deadline)) = pending else { return std::future::pending().await };
            let caught_up = async {
                for mut watch in delivered {
                    // Err: the watch ended, and counts no more.
                    let _ = watch.wait_for(|delivered| *delivered >= current).await;
                }
            };
            let _ = tokio::time::timeout_at(deadline, caught_up).await;
        }
    }

    /// The stream-wide progress response: at the lowest revision the stream's watches
    /// have delivered everything up to (each stores it after queueing what it speaks
    /// for, so this goes behind it), and no higher than the waiting request's revision
    /// (a watch from a future revision has "delivered" up to it). A watch created since
    /// counts (it may lower the answer, never raise it past what it delivered); one
    /// canceled was answered before.
    async fn answer_progress(&mut self) -> bool {
        let pending = self.pending_progress.take().map(|pending| pending.current);
        self.watches.retain(|_, running| !running.task.is_finished());
        let lowest = self.watches.values().map(|running| *running.delivered.borrow()).min();
        let revision = match (lowest, pending) {
            (Some(lowest), Some(current)) => lowest.min(current),
            (Some(revision), None) | (None, Some(revision)) => revision,
            // `progress` answers only with a request waiting or a watch to speak for.
            (None, None) => return true,
        };
        let response = WatchResponse {
            header: Some(self.header(revision)),
            watch_id: PROGRESS_WATCH_ID,
            ..WatchResponse::default()
        };
        self.send(response).await
    }
}

fn compacted_response(header: ResponseHeader, id: i64, compact_revision: i64) -> WatchResponse {
    WatchResponse {
        header: Some(header),
        watch_id: id,
        canceled: true,
        compact_revision,
        cancel_reason: EtcdError::Compacted.to_string(),
        ..WatchResponse::default()
    }
}

/// Sends one watch's messages as etcd's responses.
struct Pump {
    id: i64,
    member_id: u64,
    create: WatchCreateRequest,
    delivered: tokio::sync::watch::Sender<i64>,
    responses: Responses,
}

impl Pump {
    fn header(&self, revision: i64) -> ResponseHeader {
        super::response_header(self.member_id, revision)
    }

    async fn run(self, mut watch: crate::client::Watch) {
        while let Some(message) = watch.next().await {
            let sent = match message {
                Ok(WatchMessage::Transaction { commit_ts, events }) => {
                    self.transaction(commit_ts, events).await
                }
                Ok(WatchMessage::Progress(at)) => self.progress(at).await,
                Err(error) => {
                    self.ended(error).await;
                    return;
                }
            };
            if !sent {
                return;
            }
        }
    }

    async fn transaction(&self, commit_ts: Timestamp, events: Vec<ChangeEvent>) -> bool {
        let Ok(at) = revision(commit_ts) else { return false };
        let mut converted = Vec::with_capacity(events.len());
        for event in events {
            match self.event(event) {
                Ok(Some(event)) => converted.push(event),
                Ok(None) => {}
                Err(error) => {
                    self.cancel(&error.to_string()).await;
                    return false;
                }
            }
        }
        if !converted.is_empty() {
            for response in self.fragments(at, converted) {
                if self.responses.send(Ok(response)).await.is_err() {
                    return false;
                }
            }
        }
        self.delivered.send_replace(at);
        true
    }

    /// The event as etcd shows it; None when the watch's filters drop it.
    fn event(&self, event: ChangeEvent) -> Result<Option<Event>, EtcdError> {
        let filtered = |filter: FilterType| self.create.filters.contains(&(filter as i32));
        let kind = if event.value.is_some() { EventType::Put } else { EventType::Delete };
        if (kind == EventType::Put && filtered(FilterType::Noput))
            || (kind == EventType::Delete && filtered(FilterType::Nodelete))
        {
            return Ok(None);
        }
        let prev_kv = match (event.prev_value, event.prev_commit_ts) {
            (Some(value), Some(commit_ts)) => {
                Some(record::key_value(VersionedKeyValue { key: event.key.clone(), value, commit_ts })?)
            }
            _ => None,
        };
        let kv = match event.value {
            Some(value) => {
                record::key_value(VersionedKeyValue { key: event.key, value, commit_ts: event.commit_ts })?
            }
            None => KeyValue {
                key: keys::etcd_key(&event.key).unwrap_or_default().to_vec(),
                mod_revision: revision(event.commit_ts)?,
                ..KeyValue::default()
            },
        };
        Ok(Some(Event { r#type: kind as i32, kv: Some(kv), prev_kv }))
    }

    /// One response, or fragments of at most [`MAX_RESPONSE_BYTES`] if the watch asked
    /// for them (the last one not marked).
    fn fragments(&self, at: i64, events: Vec<Event>) -> Vec<WatchResponse> {
        let whole = |events: Vec<Event>, fragment: bool| WatchResponse {
            header: Some(self.header(at)),
            watch_id: self.id,
            fragment,
            events,
            ..WatchResponse::default()
        };
        let total: usize = events.iter().map(Event::encoded_len).sum();
        if !self.create.fragment || total <= MAX_RESPONSE_BYTES {
            return vec![whole(events, false)];
        }
        let mut pieces = vec![Vec::new()];
        let mut bytes = 0;
        for event in events {
            let size = event.encoded_len();
            if bytes + size > MAX_RESPONSE_BYTES && pieces.last().is_some_and(|piece| !piece.is_empty()) {
                pieces.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            if let Some(piece) = pieces.last_mut() {
                piece.push(event);
            }
        }
        let last = pieces.len() - 1;
        pieces.into_iter().enumerate().map(|(index, piece)| whole(piece, index < last)).collect()
    }

    /// The watch delivered everything up to `at`: a progress notification if it asked
    /// for them (it may also be the answer to a stream-wide progress request, which
    /// goes out on its own).
    async fn progress(&self, at: Timestamp) -> bool {
        let Ok(at) = revision(at) else { return false };
        let mut sent = true;
        if self.create.progress_notify {
            let response = WatchResponse {
                header: Some(self.header(at)),
                watch_id: self.id,
                ..WatchResponse::default()
            };
            sent = self.responses.send(Ok(response)).await.is_ok();
        }
        self.delivered.send_replace(at);
        sent
    }

    async fn ended(&self, error: WatchError) {
        let response = match error {
            WatchError::Compacted { safe_point, .. } => {
                let compact_revision = revision(safe_point).unwrap_or(i64::MAX);
                compacted_response(self.header(compact_revision), self.id, compact_revision)
            }
            other => {
                self.cancel(&EtcdError::from_watch(other).to_string()).await;
                return;
            }
        };
        let _ = self.responses.send(Ok(response)).await;
    }

    async fn cancel(&self, reason: &str) {
        let delivered = *self.delivered.borrow();
        let response = WatchResponse {
            header: Some(self.header(delivered)),
            watch_id: self.id,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..WatchResponse::default()
        };
        let _ = self.responses.send(Ok(response)).await;
    }
}
