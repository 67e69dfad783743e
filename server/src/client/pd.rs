//! The placement driver's API over gRPC, from any node or client: calls go to the
//! replica believed to lead, follow redirects, and move on to the next replica when one
//! is unreachable, until a deadline.
//!
//! Async methods serve the client library; the [`PdClient`] implementation (blocking)
//! serves the store's agent and raft workers, which are plain threads, by running the
//! same calls on the node's runtime.

use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use tessera_placement::proto::{
    OperatorView, RegionHeartbeatsRequest, RegionHeartbeatsResponse, RegionRoute, RegisterStoreRequest,
    RegisterStoreResponse, StoreHeartbeatRequest, StoreHeartbeatResponse, StoreView,
};
use tessera_placement::{PdClient, PdError};
use tokio::runtime::Handle;
use tonic::transport::{Channel, Endpoint};
use tonic::{Response, Status};

use crate::failure::pd_error;
use crate::proto::pd_client::PdClient as PdStub;
use crate::proto::{
    AllocIdsRequest, OperatorsRequest, RegionByIdRequest, RegionByKeyRequest, ScanRegionsRequest,
    SplitRegionRequest, StoresRequest,
};

pub struct GrpcPdClient {
    runtime: Handle,
    endpoints: Vec<String>,
    leader: Mutex<Option<String>>,
    deadline: Duration,
}

fn stub(address: &str) -> Result<PdStub<Channel>, PdError> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| PdError::InvalidArgument(format!("bad driver address {address}: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10));
    Ok(PdStub::new(endpoint.connect_lazy()))
}

impl GrpcPdClient {
    /// A client of the driver whose replicas listen at `endpoints`; calls give up after
    /// `deadline` without an answer.
    pub fn new(runtime: Handle, endpoints: Vec<String>, deadline: Duration) -> GrpcPdClient {
        GrpcPdClient { runtime, endpoints, leader: Mutex::new(None), deadline }
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T, PdError>
    where
        F: Fn(PdStub<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let give_up = tokio::time::Instant::now() + self.deadline;
        let mut last = PdError::Unavailable("no placement driver replica answered".into());
        loop {
            let mut candidates: Vec<String> = self.leader.lock().iter().cloned().collect();
            candidates.extend(self.endpoints.iter().cloned());
            let mut tried = Vec::new();
            while let Some(address) = candidates.first().cloned() {
                candidates.remove(0);
                if tried.contains(&address) {
                    continue;
                }
                tried.push(address.clone());
                let answer = match tokio::time::timeout_at(give_up, f(stub(&address)?)).await {
                    Ok(answer) => answer,
                    Err(_) => return Err(last),
                };
                match answer {
                    Ok(response) => {
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

    pub async fn register_store_async(
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

    pub async fn region_by_id_async(&self, region_id: u64) -> Result<RegionRoute, PdError> {
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

    pub async fn split_region_async(&self, key: &[u8]) -> Result<(), PdError> {
        self.call(|mut pd| {
            let key = key.to_vec();
            async move { pd.split_region(SplitRegionRequest { key }).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn operators_async(&self) -> Result<Vec<OperatorView>, PdError> {
        Ok(self.call(|mut pd| async move { pd.operators(OperatorsRequest {}).await }).await?.operators)
    }

    pub async fn alloc_ids_async(&self, count: u32) -> Result<Vec<u64>, PdError> {
        Ok(self.call(|mut pd| async move { pd.alloc_ids(AllocIdsRequest { count }).await }).await?.ids)
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

    fn split_region(&self, key: &[u8]) -> Result<(), PdError> {
        self.runtime.block_on(self.split_region_async(key))
    }

    fn operators(&self) -> Result<Vec<OperatorView>, PdError> {
        self.runtime.block_on(self.operators_async())
    }
}
