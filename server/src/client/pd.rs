//! The placement driver's API over gRPC, from any node or client: calls go to the
//! replica believed to lead, follow redirects, and move on to the next replica when one
//! is unreachable, until a deadline.
//!
//! The replicas a client was given are where it starts, not all it knows: every few
//! seconds it asks the replica that answered for the current members, so that a
//! client started before replicas joined can still reach the driver after the replicas
//! it was given are gone.
//!
//! Async methods serve the client library; the [`PdClient`] implementation (blocking)
//! serves the store's agent and raft workers, which are plain threads, by running the
//! same calls on the node's runtime.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tessera_placement::proto::{
    OperatorView, RegionHeartbeatsRequest, RegionHeartbeatsResponse, RegionRoute, RegisterStoreRequest,
    RegisterStoreResponse, StoreHeartbeatRequest, StoreHeartbeatResponse, StoreView,
};
use tessera_placement::{InvalidRequest, PdClient, PdError, Unavailability};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::failure::pd_error;
use crate::proto::pd_client;
use crate::proto::{
    AllocIdsRequest, HoldGcRequest, JoinMemberRequest, JoinMemberResponse, Member, MembersRequest,
    MovePeerRequest, OperatorsRequest, RegionByIdRequest, RegionByKeyRequest, RemoveStoreRequest,
    ScanRegionsRequest, SplitRegionRequest, StoresRequest, TransferLeaderRequest, TsoRequest, TsoResponse,
};
use crate::security::Dialer;

/// How often the client refreshes its list of the driver's replicas.
const MEMBER_REFRESH: Duration = Duration::from_secs(5);

pub struct GrpcPdClient {
    runtime: Handle,
    /// How to reach the replicas, and the channels open to them (one per replica,
    /// reused by every call: a channel reconnects by itself when its connection breaks).
    channels: Arc<Channels>,
    /// The replicas given at start, then every member learned since.
    endpoints: Arc<Mutex<Vec<String>>>,
    leader: Mutex<Option<String>>,
    /// When the member list was last refreshed.
    refreshed: Mutex<Option<tokio::time::Instant>>,
    deadline: Duration,
    /// Cancelled when the node that owns this client stops: calls in flight give up at
    /// once instead of waiting out their deadline against a driver that may be gone.
    abandon: Option<CancellationToken>,
}

/// An operator id from the wire: 0 means no operator was needed.
fn operator_id(id: u64) -> Option<u64> {
    (id != 0).then_some(id)
}

/// Channels kept open to more replicas than this are dropped and dialed again when
/// needed: the member list, which a driver answers, bounds nothing by itself.
const MAX_CHANNELS: usize = 64;

const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one replica may take to answer before the next is tried (the call's own
/// deadline may be longer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The channels to the driver's replicas, by address.
struct Channels {
    dialer: Dialer,
    open: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    fn stub(&self, address: &str) -> Result<pd_client::PdClient<Channel>, PdError> {
        if let Some(channel) = self.open.lock().get(address) {
            return Ok(pd_client::PdClient::new(channel.clone()));
        }
        let endpoint = self
            .dialer
            .endpoint(address)
            // The parse error adds nothing to the address itself, which says what is wrong.
            .map_err(|_| InvalidRequest::BadAddress { address: address.to_string() })?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(10))
            // A replica that went silent (partitioned, its host gone) breaks the channel
            // in seconds instead of holding every call until the kernel gives up.
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
        let channel = self.dialer.connect_lazy(&endpoint);
        let mut open = self.open.lock();
        if open.len() >= MAX_CHANNELS {
            open.clear();
        }
        open.insert(address.to_string(), channel.clone());
        Ok(pd_client::PdClient::new(channel))
    }

    /// The channel to `address` did not answer: the next call dials it afresh.
    fn forget(&self, address: &str) {
        self.open.lock().remove(address);
    }
}

impl GrpcPdClient {
    /// A client of the driver whose replicas listen at `endpoints`, dialed with
    /// `dialer`; calls give up after `deadline` without an answer.
    pub(crate) fn new(
        runtime: Handle,
        endpoints: Vec<String>,
        deadline: Duration,
        dialer: Dialer,
    ) -> GrpcPdClient {
        GrpcPdClient {
            runtime,
            channels: Arc::new(Channels { dialer, open: Mutex::new(HashMap::new()) }),
            endpoints: Arc::new(Mutex::new(endpoints)),
            leader: Mutex::new(None),
            refreshed: Mutex::new(None),
            deadline: deadline.min(super::MAX_DEADLINE),
            abandon: None,
        }
    }

    /// How this client dials.
    pub(crate) fn dialer(&self) -> &Dialer {
        &self.channels.dialer
    }

    /// The runtime this client's background work runs on.
    pub(crate) fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// This client, with its calls abandoned once `token` is cancelled.
    pub(crate) fn abandoned_on(mut self, token: CancellationToken) -> GrpcPdClient {
        self.abandon = Some(token);
        self
    }

    /// Asks `address` (a replica that just answered) for the members, in the background,
    /// at most every [`MEMBER_REFRESH`].
    fn maybe_refresh_members(&self, address: &str) {
        let now = tokio::time::Instant::now();
        {
            let mut refreshed = self.refreshed.lock();
            if refreshed.is_some_and(|last| now.duration_since(last) < MEMBER_REFRESH) {
                return;
            }
            *refreshed = Some(now);
        }
        let Ok(mut pd) = self.channels.stub(address) else { return };
        let endpoints = self.endpoints.clone();
        self.runtime.spawn(async move {
            // An old driver without the call, or a follower: the list stays as it is.
            let Ok(answer) = pd.members(MembersRequest {}).await else { return };
            let mut endpoints = endpoints.lock();
            for member in answer.into_inner().members {
                if !member.address.is_empty() && !endpoints.contains(&member.address) {
                    endpoints.push(member.address);
                }
            }
        });
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T, PdError>
    where
        F: Fn(pd_client::PdClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let Some(abandon) = &self.abandon else { return self.call_until_deadline(f).await };
        tokio::select! {
            biased;
            () = abandon.cancelled() => Err(Unavailability::Stopping.into()),
            answer = self.call_until_deadline(f) => answer,
        }
    }

    async fn call_until_deadline<T, F, Fut>(&self, f: F) -> Result<T, PdError>
    where
        F: Fn(pd_client::PdClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let give_up = tokio::time::Instant::now() + self.deadline;
        let mut last = PdError::Unavailable(Unavailability::NoReplicaAnswered);
        loop {
            let mut candidates: Vec<String> = self.leader.lock().iter().cloned().collect();
            candidates.extend(self.endpoints.lock().iter().cloned());
            let mut tried = Vec::new();
            while let Some(address) = candidates.first().cloned() {
                candidates.remove(0);
                if tried.contains(&address) {
                    continue;
                }
                tried.push(address.clone());
                let attempt_ends = give_up.min(tokio::time::Instant::now() + ATTEMPT_TIMEOUT);
                let answer =
                    match tokio::time::timeout_at(attempt_ends, f(self.channels.stub(&address)?)).await {
                        Ok(answer) => answer,
                        Err(_) => {
                            // Silent: neither its channel nor the hint that it leads is kept.
                            self.channels.forget(&address);
                            self.leader.lock().take_if(|leader| *leader == address);
                            if tokio::time::Instant::now() >= give_up {
                                return Err(last);
                            }
                            continue;
                        }
                    };
                match answer {
                    Ok(response) => {
                        self.maybe_refresh_members(&address);
                        *self.leader.lock() = Some(address);
                        return Ok(response.into_inner());
                    }
                    Err(status) => match pd_error(&status) {
                        (error @ PdError::NotLeader { .. }, named) => {
                            last = error;
                            if let Some(named) = named {
                                candidates.insert(0, named);
                            }
                        }
                        (error @ PdError::Unavailable(_), _) => last = error,
                        (error, _) => return Err(error),
                    },
                }
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn register_store_async(
        &self,
        request: RegisterStoreRequest,
    ) -> Result<RegisterStoreResponse, PdError> {
        self.call(|mut pd| {
            let request = request.clone();
            async move { pd.register_store(request).await }
        })
        .await
    }

    pub async fn region_by_key_async(&self, key: &[u8]) -> Result<RegionRoute, PdError> {
        self.call(|mut pd| {
            let key = key.to_vec();
            async move { pd.region_by_key(RegionByKeyRequest { key }).await }
        })
        .await
    }

    pub(crate) async fn region_by_id_async(&self, region_id: u64) -> Result<RegionRoute, PdError> {
        self.call(|mut pd| async move { pd.region_by_id(RegionByIdRequest { region_id }).await }).await
    }

    pub async fn scan_regions_async(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<RegionRoute>, PdError> {
        let request =
            ScanRegionsRequest { start_key: start.to_vec(), end_key: end.to_vec(), limit: limit as u32 };
        let response = self
            .call(|mut pd| {
                let request = request.clone();
                async move { pd.scan_regions(request).await }
            })
            .await?;
        Ok(response.regions)
    }

    pub async fn stores_async(&self) -> Result<Vec<StoreView>, PdError> {
        Ok(self.call(|mut pd| async move { pd.stores(StoresRequest {}).await }).await?.stores)
    }

    /// The operator started (see [`PdClient::split_region`]).
    pub async fn split_region_async(&self, key: &[u8]) -> Result<Option<u64>, PdError> {
        self.call(|mut pd| {
            let key = key.to_vec();
            async move { pd.split_region(SplitRegionRequest { key }).await }
        })
        .await
        .map(|answer| operator_id(answer.operator_id))
    }

    pub async fn transfer_leader_async(&self, region_id: u64, to_store: u64) -> Result<Option<u64>, PdError> {
        self.call(
            |mut pd| async move { pd.transfer_leader(TransferLeaderRequest { region_id, to_store }).await },
        )
        .await
        .map(|answer| operator_id(answer.operator_id))
    }

    pub async fn move_peer_async(
        &self,
        region_id: u64,
        from_store: u64,
        to_store: u64,
    ) -> Result<Option<u64>, PdError> {
        self.call(
            |mut pd| async move { pd.move_peer(MovePeerRequest { region_id, from_store, to_store }).await },
        )
        .await
        .map(|answer| operator_id(answer.operator_id))
    }

    /// See [`PdClient::remove_store`].
    pub async fn remove_store_async(&self, store_id: u64) -> Result<(), PdError> {
        self.call(|mut pd| async move { pd.remove_store(RemoveStoreRequest { store_id }).await })
            .await
            .map(|_| ())
    }

    pub async fn operators_async(&self) -> Result<Vec<OperatorView>, PdError> {
        Ok(self.call(|mut pd| async move { pd.operators(OperatorsRequest {}).await }).await?.operators)
    }

    pub(crate) async fn alloc_ids_async(&self, count: u32) -> Result<Vec<u64>, PdError> {
        Ok(self.call(|mut pd| async move { pd.alloc_ids(AllocIdsRequest { count }).await }).await?.ids)
    }

    /// Asks the driver to add a replica serving at `address`, identified across
    /// retries by `join_token`.
    pub(crate) async fn join_member_async(
        &self,
        address: &str,
        join_token: &str,
    ) -> Result<JoinMemberResponse, PdError> {
        self.call(|mut pd| {
            let request =
                JoinMemberRequest { address: address.to_string(), join_token: join_token.to_string() };
            async move { pd.join_member(request).await }
        })
        .await
    }

    /// Holds garbage collection below `safe_point` for `service` for `ttl` (a zero
    /// timestamp releases it); answers whether it holds, and the floor a hold must be
    /// above.
    pub async fn hold_gc_async(
        &self,
        service: &str,
        safe_point: tessera_engine::timestamp::Timestamp,
        ttl: std::time::Duration,
    ) -> Result<(bool, u64), PdError> {
        let request = HoldGcRequest {
            service: service.to_string(),
            safe_point: safe_point.as_u64(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        };
        let answer = self.call(|mut pd| {
            let request = request.clone();
            async move { pd.hold_gc(request).await }
        });
        let answer = answer.await?;
        Ok((answer.held, answer.floor))
    }

    pub(crate) async fn members_async(&self) -> Result<Vec<Member>, PdError> {
        Ok(self.call(|mut pd| async move { pd.members(MembersRequest {}).await }).await?.members)
    }

    /// A timestamp stream to the replica whose oracle serves: where requests go, and
    /// where their answers come back in order.
    pub(crate) async fn open_timestamp_stream(
        &self,
    ) -> Result<(tokio::sync::mpsc::Sender<TsoRequest>, tonic::Streaming<TsoResponse>), PdError> {
        self.call(|mut pd| async move {
            let (requests, outgoing) = tokio::sync::mpsc::channel(1);
            let answers = pd.tso(tokio_stream::wrappers::ReceiverStream::new(outgoing)).await?;
            Ok(answers.map(|answers| (requests, answers)))
        })
        .await
    }
}

impl PdClient for GrpcPdClient {
    fn register_store(&self, request: RegisterStoreRequest) -> Result<RegisterStoreResponse, PdError> {
        self.runtime.block_on(self.register_store_async(request))
    }

    fn store_heartbeat(&self, request: StoreHeartbeatRequest) -> Result<StoreHeartbeatResponse, PdError> {
        self.runtime.block_on(self.call(|mut pd| async move { pd.store_heartbeat(request).await }))
    }

    fn region_heartbeats(
        &self,
        request: RegionHeartbeatsRequest,
    ) -> Result<RegionHeartbeatsResponse, PdError> {
        self.runtime.block_on(self.call(|mut pd| {
            let request = request.clone();
            async move { pd.region_heartbeats(request).await }
        }))
    }

    fn alloc_ids(&self, count: u32) -> Result<Vec<u64>, PdError> {
        self.runtime.block_on(self.alloc_ids_async(count))
    }

    fn region_by_key(&self, key: &[u8]) -> Result<RegionRoute, PdError> {
        self.runtime.block_on(self.region_by_key_async(key))
    }

    fn region_by_id(&self, region_id: u64) -> Result<RegionRoute, PdError> {
        self.runtime.block_on(self.region_by_id_async(region_id))
    }

    fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<RegionRoute>, PdError> {
        self.runtime.block_on(self.scan_regions_async(start, end, limit))
    }

    fn stores(&self) -> Result<Vec<StoreView>, PdError> {
        self.runtime.block_on(self.stores_async())
    }

    fn split_region(&self, key: &[u8]) -> Result<Option<u64>, PdError> {
        self.runtime.block_on(self.split_region_async(key))
    }

    fn transfer_leader(&self, region_id: u64, to_store: u64) -> Result<Option<u64>, PdError> {
        self.runtime.block_on(self.transfer_leader_async(region_id, to_store))
    }

    fn move_peer(&self, region_id: u64, from_store: u64, to_store: u64) -> Result<Option<u64>, PdError> {
        self.runtime.block_on(self.move_peer_async(region_id, from_store, to_store))
    }

    fn remove_store(&self, store_id: u64) -> Result<(), PdError> {
        self.runtime.block_on(self.remove_store_async(store_id))
    }

    fn operators(&self) -> Result<Vec<OperatorView>, PdError> {
        self.runtime.block_on(self.operators_async())
    }
}
