//! The client library: what `tessera ctl`, `tessera-bench` and applications use.
//!
//! Requests go straight to the leader of the region holding their key, found in a
//! region cache filled from the placement driver. Answers that say the cache is wrong
//! (not leader, stale epoch, region not here, key outside the region, store unreachable)
//! correct it, and the request is retried with backoff until its deadline. Scans and
//! range deletions walk region by region in key order; batches are split by region and
//! sent in parallel.
//!
//! Reads are retried whatever happened to the last try. A write is retried only when
//! the last try certainly did not apply (refused, not committed, never sent); one whose
//! fate is unknown (a timeout, a connection lost after sending) is reported as
//! [`ClientError::OutcomeUnknown`]. Even a put is not retried blindly: its first try
//! could apply after another client's write to the key and undo it, long after the
//! caller was told its own write happened once.

mod batch;
mod cache;
mod errors;
mod grouped;
pub mod pd;
mod scan;
mod timestamps;
mod txn;
mod watch;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::RwLock;
use tessera_engine::proto::{
    command::{CompareAndSwap, Delete, DeleteRange, Put, Write, write},
    frame::KeyValue,
    metadata::Region,
};
use tessera_engine::region::KeyRange;
use tessera_placement::PdError;
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

use crate::failure::kv_failure;
use crate::proto::kv_client::KvClient;
use crate::proto::{
    BatchGetRequest, GetRequest, RegionContext, ScanRequest, WriteRequest, kv_failure::Kind as Failure,
};
use crate::security::Dialer;
use crate::service::kv::MAX_BATCH_GET_KEYS;
use crate::transport::MAX_MESSAGE_BYTES;
use batch::WriteGroups;
use cache::RegionCache;
pub use errors::{ClientError, Conflict, Refusal, Transient, Uncertainty};
pub use pd::GrpcPdClient;
pub(crate) use timestamps::TimestampClient;
pub use txn::{FencePass, Snapshot, StaleLockOutcome, Transaction, VersionedKeyValue};
pub use watch::{ChangeEvent, MAX_HELD_EVENTS, ProgressAsker, Watch, WatchError, WatchMessage, WatchOptions};

/// Whether a request may be sent again when its outcome is unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Reads: they change nothing.
    Always,
    /// Writes.
    OnlyIfNotApplied,
}

/// How one try of a request ended.
enum Attempt<T> {
    /// Answered, in this region.
    Done(T, Region),
    /// Another try may succeed; why this one failed.
    Retry(Transient),
    /// Final: no retry can succeed, or the write's fate is unknown.
    Fail(ClientError),
}

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

type Kv = KvClient<Channel>;

/// Items that fall in one region, after the key of the first.
type Group<V> = (Vec<u8>, Vec<(Vec<u8>, V)>);

/// The longest one try may take, within an operation's deadline: a leader that is
/// paused or cut off must not hold a caller for the whole deadline. A read is tried
/// again elsewhere; a write whose try timed out may have applied, and says so.
/// Above a store's own request timeout (10 s), so that a slow commit is answered by the
/// store rather than cut short here.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(12);

/// How often a connection to a store with tries in flight is pinged (HTTP/2), and how
/// long a ping may go unanswered before the connection counts as dead: a store that is
/// paused or cut off is noticed within about four seconds, failing the tries in flight
/// on it (a read is then tried on another voter, a write's fate is unknown) rather than
/// letting them wait for their timeout. The timeout leaves room for a busy store; the
/// one connection carries every try to that store, and all of them fail together.
/// Connections to the driver have no keepalive yet: a paused driver replica holds a
/// call until the driver client's deadline.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest deadline an operation may be given: a day.
pub const MAX_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

pub struct Client {
    pd: Arc<GrpcPdClient>,
    cache: RegionCache,
    addresses: RwLock<HashMap<u64, String>>,
    stubs: RwLock<HashMap<String, Kv>>,
    groups: WriteGroups,
    /// Groups of one-phase transaction commits, kept apart from raw writes: a leader
    /// refuses a one-phase group as a whole, which must not take raw writes with it.
    txn_groups: WriteGroups,
    /// Groups of two-phase commands (prewrites, commits, rollbacks, status checks):
    /// apart from one-phase groups, which a leader may refuse whole.
    two_phase_groups: WriteGroups,
    /// Started by the first call that needs a timestamp.
    timestamps: OnceLock<timestamps::TimestampClient>,
    /// The watches' hold on garbage collection.
    gc_holds: Arc<watch::GcHolds>,
    /// The region feeds the watches share.
    feed_hub: Arc<watch::FeedHub>,
    deadline: Duration,
}

/// A timestamp asked for and not yet awaited ([`Client::request_timestamp`]).
pub(crate) type PendingTimestamp =
    std::pin::Pin<Box<dyn Future<Output = Result<tessera_engine::timestamp::Timestamp, ClientError>> + Send>>;

/// Whether a request certainly never reached a store: the connection to it was
/// refused. Any other transport failure (a reset, a timeout) may have come after the
/// store received the request.
fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = error.source();
    }
    false
}

fn put(key: Vec<u8>, value: Vec<u8>) -> Write {
    Write { kind: Some(write::Kind::Put(Put { key, value })) }
}

impl Client {
    /// A client of the cluster whose driver replicas are at `pd`, in the clear; every
    /// operation gives up after `deadline` (at most [`MAX_DEADLINE`]: a longer one is cut
    /// to it, so that no deadline overflows the clock). Must be created inside a Tokio
    /// runtime.
    pub fn new(pd: Vec<String>, deadline: Duration) -> Client {
        Client::with_dialer(pd, deadline, Dialer::plain())
    }

    /// [`Client::new`], dialing the driver and the stores with `dialer` (over TLS with
    /// its credentials, for a cluster that requires them).
    pub fn with_dialer(pd: Vec<String>, deadline: Duration, dialer: Dialer) -> Client {
        let deadline = deadline.min(MAX_DEADLINE);
        let pd = Arc::new(GrpcPdClient::new(tokio::runtime::Handle::current(), pd, deadline, dialer));
        Client {
            pd,
            cache: RegionCache::default(),
            addresses: RwLock::new(HashMap::new()),
            stubs: RwLock::new(HashMap::new()),
            groups: WriteGroups::default(),
            txn_groups: WriteGroups::default(),
            two_phase_groups: WriteGroups::default(),
            timestamps: OnceLock::new(),
            gc_holds: Arc::default(),
            feed_hub: Arc::default(),
            deadline,
        }
    }

    /// How this client dials (in the clear, or over TLS with its certificate): for a
    /// tool that opens its own connections to the same cluster.
    pub fn dialer(&self) -> &Dialer {
        self.pd.dialer()
    }

    pub fn pd(&self) -> &GrpcPdClient {
        &self.pd
    }

    /// A timestamp from the placement driver's oracle: above every timestamp any
    /// client was answered with before this call. Concurrent calls share one request
    /// (see `timestamps`).
    pub async fn timestamp(&self) -> Result<tessera_engine::timestamp::Timestamp, ClientError> {
        Ok(self.timestamp_client().timestamp().await?)
    }

    /// Asks the oracle for a timestamp now and answers it later: above every timestamp
    /// answered before this call, below every one this client is asked for after it.
    pub(crate) fn request_timestamp(&self) -> PendingTimestamp {
        let pending = self.timestamp_client().request();
        Box::pin(async move { Ok(pending.await?) })
    }

    fn timestamp_client(&self) -> &timestamps::TimestampClient {
        self.timestamps.get_or_init(|| timestamps::TimestampClient::start(self.pd.clone(), self.deadline))
    }

    async fn route(&self, key: &[u8]) -> Result<tessera_placement::proto::RegionRoute, PdError> {
        if let Some(route) = self.cache.find(key).filter(|route| route.leader.is_some()) {
            return Ok(route);
        }
        let route = self.pd.region_by_key_async(key).await?;
        self.learn_addresses(&route);
        self.cache.insert(route.clone());
        Ok(route)
    }

    /// Keeps the store addresses a route carries, so that reaching its replicas needs no
    /// call to the driver.
    fn learn_addresses(&self, route: &tessera_placement::proto::RegionRoute) {
        if route.store_addresses.is_empty() {
            return;
        }
        let mut addresses = self.addresses.write();
        for (store_id, address) in &route.store_addresses {
            addresses.insert(*store_id, address.clone());
        }
    }

    async fn stub(&self, store_id: u64) -> Result<Kv, Transient> {
        let known = self.addresses.read().get(&store_id).cloned();
        let address = match known {
            Some(address) => address,
            None => {
                let stores = self.pd.stores_async().await.map_err(Transient::Pd)?;
                let mut addresses = self.addresses.write();
                for view in stores.into_iter().filter_map(|view| view.store) {
                    addresses.insert(view.id, view.address);
                }
                addresses.get(&store_id).cloned().ok_or(Transient::NoStoreAddress { store_id })?
            }
        };
        if let Some(stub) = self.stubs.read().get(&address) {
            return Ok(stub.clone());
        }
        let dialer = self.pd.dialer();
        // The parse error adds nothing to the address itself, which says what is wrong.
        let endpoint = dialer
            .endpoint(&address)
            .map_err(|_| Transient::BadStoreAddress { address: address.clone() })?
            .connect_timeout(Duration::from_secs(1))
            .timeout(self.deadline.min(ATTEMPT_TIMEOUT))
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
        let stub = KvClient::new(dialer.connect_lazy(&endpoint))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        self.stubs.write().insert(address, stub.clone());
        Ok(stub)
    }

    /// Runs `request` against the leader of the region holding `key`, correcting the
    /// cache and retrying until the deadline. Answers with the region it ran in.
    async fn on_region<T, F, Fut>(
        &self,
        key: &[u8],
        resend: Resend,
        request: F,
    ) -> Result<(T, Region), ClientError>
    where
        F: Fn(Kv, RegionContext, Region) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let give_up = Instant::now() + self.deadline;
        let mut backoff = BACKOFF_MIN;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let last = match self.attempt(key, resend, &request).await {
                Attempt::Done(answer, region) => return Ok((answer, region)),
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry(why) => why,
            };
            if Instant::now() + backoff >= give_up {
                return Err(ClientError::Unavailable { attempts, last });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One try: the answer, a final error, or why to try again.
    async fn attempt<T, F, Fut>(&self, key: &[u8], resend: Resend, request: &F) -> Attempt<T>
    where
        F: Fn(Kv, RegionContext, Region) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let route = match self.route(key).await {
            Ok(route) => route,
            Err(error) if error.is_retryable() => return Attempt::Retry(Transient::Pd(error)),
            Err(error) => return Attempt::Fail(error.into()),
        };
        let Some(region) = route.region else { return Attempt::Retry(Transient::LeaderUnknown) };
        // No leader known (the driver has heard of none yet): try a voter in turn.
        let guessed =
            || self.cache.try_another_voter(region.id, None).then(|| self.cache.find(key)?.leader).flatten();
        let Some(leader) = route.leader.or_else(guessed) else {
            return Attempt::Retry(Transient::LeaderUnknown);
        };
        let stub = match self.stub(leader.store_id).await {
            Ok(stub) => stub,
            Err(why) => return Attempt::Retry(why),
        };
        let context = RegionContext { region_id: region.id, epoch: region.epoch };
        match request(stub, context, region.clone()).await {
            Ok(answer) => Attempt::Done(answer, region),
            Err(status) => self.judge_failure(&status, region.id, leader.store_id, resend),
        }
    }

    /// What a failed try means: the cache is corrected for the next one, and the
    /// failure is final when no retry can succeed (a refusal) or when a write's fate is
    /// unknown.
    fn judge_failure<T>(&self, status: &Status, region_id: u64, store_id: u64, resend: Resend) -> Attempt<T> {
        let failure = kv_failure(status);
        match failure {
            Some(Failure::NotLeader(not_leader)) => match not_leader.leader {
                Some(leader) if leader.store_id != 0 => self.cache.set_leader(region_id, leader),
                _ => self.try_another_voter(region_id, store_id),
            },
            Some(Failure::EpochNotMatch(_) | Failure::RegionNotFound(_) | Failure::KeyNotInRegion(_)) => {
                self.cache.invalidate(region_id);
            }
            Some(Failure::InvalidArgument(reason)) => {
                return Attempt::Fail(ClientError::InvalidArgument(Refusal::Store { region_id, reason }));
            }
            Some(Failure::BelowSafePoint(safe_point)) => {
                let safe_point = tessera_engine::timestamp::Timestamp::from_u64(safe_point);
                return Attempt::Fail(ClientError::InvalidArgument(Refusal::BelowSafePoint { safe_point }));
            }
            // Did not apply; the route is right.
            Some(Failure::NotCommitted(_)) => {}
            // A replica behind the client's epoch: a leader that was cut off and has
            // not heard of a change another applied. Another voter may lead.
            Some(Failure::ReplicaBehind(_)) => self.try_another_voter(region_id, store_id),
            Some(Failure::OutcomeUnknown(reason)) if resend == Resend::OnlyIfNotApplied => {
                return Attempt::Fail(ClientError::OutcomeUnknown(Uncertainty::Store { region_id, reason }));
            }
            Some(Failure::OutcomeUnknown(_)) => self.cache.invalidate(region_id),
            // This store cannot serve now (stopping, busy with a change): another voter
            // may lead, or soon will.
            Some(Failure::Unavailable(_)) => self.try_another_voter(region_id, store_id),
            // No typed failure: the store was not reached, the connection broke, or the
            // try ran out of time (a paused or cut-off leader).
            None => {
                self.try_another_voter(region_id, store_id);
                self.addresses.write().remove(&store_id);
                if resend == Resend::OnlyIfNotApplied && !never_sent(status) {
                    let (code, message) = (status.code(), status.message().to_string());
                    let uncertainty = Uncertainty::Connection { region_id, code, message };
                    return Attempt::Fail(ClientError::OutcomeUnknown(uncertainty));
                }
            }
        }
        let (code, message) = (status.code(), status.message().to_string());
        Attempt::Retry(Transient::Store { region_id, code, message })
    }

    /// The next try goes to another voter of the region, or, every voter tried, to
    /// whatever the driver says.
    fn try_another_voter(&self, region_id: u64, failed_store: u64) {
        if !self.cache.try_another_voter(region_id, Some(failed_store)) {
            self.cache.invalidate(region_id);
        }
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let (answer, _) = self
            .on_region(key, Resend::Always, |mut kv, context, _| {
                let key = key.to_vec();
                async move { kv.get(GetRequest { context: Some(context), key }).await }
            })
            .await?;
        let answer = answer.into_inner();
        Ok(answer.found.then_some(answer.value))
    }

    /// The keys found, each with its value, in the order asked.
    pub async fn batch_get(&self, keys: &[Vec<u8>]) -> Result<Vec<KeyValue>, ClientError> {
        let mut found: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        // A store answers at most so many keys a request: a larger batch goes in parts.
        for part in keys.chunks(MAX_BATCH_GET_KEYS) {
            let answers = self
                .by_region(
                    part.iter().map(|k| (k.clone(), ())).collect(),
                    Resend::Always,
                    |mut kv, context, keys| async move {
                        let keys = keys.into_iter().map(|(k, ())| k).collect();
                        kv.batch_get(BatchGetRequest { context: Some(context), keys }).await
                    },
                )
                .await?;
            for (answer, _) in answers {
                found.extend(answer.into_inner().pairs.into_iter().map(|pair| (pair.key, pair.value)));
            }
        }
        Ok(keys
            .iter()
            .filter_map(|key| Some(KeyValue { key: key.clone(), value: found.get(key)?.clone() }))
            .collect())
    }

    /// Sends `items` region by region, in parallel, each region's share in one request;
    /// items a region no longer holds when its request arrives (it split) go round again.
    /// Answers each request's answer with the share it carried.
    async fn by_region<V, T, F, Fut>(
        &self,
        items: Vec<(Vec<u8>, V)>,
        resend: Resend,
        request: F,
    ) -> Result<Vec<(T, Vec<(Vec<u8>, V)>)>, ClientError>
    where
        V: Clone,
        F: Fn(Kv, RegionContext, Vec<(Vec<u8>, V)>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut answers = Vec::new();
        let mut pending = items;
        while !pending.is_empty() {
            let groups = self.group_by_region(std::mem::take(&mut pending).into_iter()).await?;
            let requests = groups.into_iter().map(|(first, group)| {
                let request = &request;
                async move {
                    let (answer, region) = self
                        .on_region(&first, resend, |kv, context, region| {
                            let share = group
                                .iter()
                                .filter(|(k, _)| KeyRange::of(&region).contains(k))
                                .cloned()
                                .collect();
                            request(kv, context, share)
                        })
                        .await?;
                    let (share, rest): (Vec<_>, Vec<_>) =
                        group.into_iter().partition(|(k, _)| KeyRange::of(&region).contains(k));
                    Ok::<_, ClientError>((answer, share, rest))
                }
            });
            for result in futures::future::join_all(requests).await {
                let (answer, share, rest) = result?;
                answers.push((answer, share));
                pending.extend(rest);
            }
        }
        Ok(answers)
    }

    /// Splits `items` into runs that fall in one region each (by the cache, filled as
    /// needed), keyed by the run's first key. A run may be refused later if the region
    /// split meanwhile; it is then retried as a whole by key.
    async fn group_by_region<V>(
        &self,
        items: impl Iterator<Item = (Vec<u8>, V)>,
    ) -> Result<Vec<Group<V>>, ClientError> {
        let mut items: Vec<(Vec<u8>, V)> = items.collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let mut groups: Vec<Group<V>> = Vec::new();
        let mut current: Option<Region> = None;
        for (key, value) in items {
            let inside = current.as_ref().is_some_and(|region| KeyRange::of(region).contains(&key));
            if !inside {
                current = self.route(&key).await?.region;
                groups.push((key.clone(), Vec::new()));
            }
            if let Some((_, group)) = groups.last_mut() {
                group.push((key, value));
            }
        }
        Ok(groups)
    }

    async fn write(
        &self,
        key: &[u8],
        writes: Vec<Write>,
    ) -> Result<Vec<tessera_engine::proto::command::WriteResult>, ClientError> {
        let (answer, _) = self
            .on_region(key, Resend::OnlyIfNotApplied, |mut kv, context, _| {
                let writes = writes.clone();
                async move { kv.write(WriteRequest { context: Some(context), writes }).await }
            })
            .await?;
        Ok(answer.into_inner().results)
    }

    /// Sets a key's value. Concurrent puts and deletes bound for one region travel
    /// together (see [`batch`]).
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        self.grouped_write(key, put(key.to_vec(), value.to_vec()), key.len() + value.len()).await
    }

    /// Writes every pair; the pairs of one region are applied atomically together,
    /// regions in parallel and independently of each other.
    pub async fn batch_put(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), ClientError> {
        self.by_region(pairs, Resend::OnlyIfNotApplied, |mut kv, context, share| async move {
            let writes = share.into_iter().map(|(k, v)| put(k, v)).collect();
            kv.write(WriteRequest { context: Some(context), writes }).await
        })
        .await
        .map(|_| ())
    }

    pub async fn delete(&self, key: &[u8]) -> Result<(), ClientError> {
        let delete = Write { kind: Some(write::Kind::Delete(Delete { key: key.to_vec() })) };
        self.grouped_write(key, delete, key.len()).await
    }

    /// Sets `key` to `new_value` (or deletes it when `None`) if its value is `expected`
    /// (or it is absent when `None`). Answers whether it swapped, and the value found.
    pub async fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new_value: Option<&[u8]>,
    ) -> Result<(bool, Option<Vec<u8>>), ClientError> {
        let cas = CompareAndSwap {
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new_value: new_value.map(<[u8]>::to_vec),
        };
        let write = Write { kind: Some(write::Kind::CompareAndSwap(cas)) };
        let results = self.write(key, vec![write]).await?;
        let result = results.into_iter().next().unwrap_or_default();
        Ok((result.succeeded, result.previous))
    }

    /// Deletes `[start, end)` (empty end: to the end of the key space), region by region.
    pub async fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), ClientError> {
        if KeyRange::new(start, end).is_empty() {
            return Err(ClientError::InvalidArgument(Refusal::EmptyRange));
        }
        let mut cursor = start.to_vec();
        loop {
            let (_, region) = self
                .on_region(&cursor, Resend::OnlyIfNotApplied, |mut kv, context, region| {
                    let range = DeleteRange {
                        start_key: cursor.clone(),
                        end_key: KeyRange::of(&region).clamp(&KeyRange::new(&cursor, end)).end().to_vec(),
                    };
                    let writes = vec![Write { kind: Some(write::Kind::DeleteRange(range)) }];
                    async move { kv.write(WriteRequest { context: Some(context), writes }).await }
                })
                .await?;
            if KeyRange::of(&region).reaches(end) {
                return Ok(());
            }
            cursor = region.end_key;
        }
    }

    /// The pairs in `[start, end)` (empty end: to the end of the key space) in key order
    /// (descending with `reverse`), at most `limit` (0: no limit).
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, ClientError> {
        let scan_region = |low: Vec<u8>, high: Vec<u8>, wanted: usize| async move {
            let (answer, region) = self
                .on_region(&low, Resend::Always, |mut kv, context, region| {
                    let request = ScanRequest {
                        context: Some(context),
                        start_key: low.clone(),
                        end_key: KeyRange::of(&region).clamp(&KeyRange::new(&low, &high)).end().to_vec(),
                        limit: wanted as u32,
                        reverse,
                    };
                    async move { kv.scan(request).await }
                })
                .await?;
            let answer = answer.into_inner();
            let resume =
                scan::resume_after(answer.more, answer.pairs.last().map(|pair| pair.key.as_slice()), reverse);
            Ok(scan::Page { pairs: answer.pairs, region, resume })
        };
        self.scan_regions(start, end, limit, reverse, scan_region).await
    }
}
