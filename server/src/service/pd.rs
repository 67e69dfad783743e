//! The placement driver's API over gRPC: each call runs the replica's blocking API on
//! the blocking pool; a follower's redirect carries the leader's address.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tessera_engine::timestamp::Timestamp;

use tessera_placement::proto::{
    RegionHeartbeatsRequest, RegionHeartbeatsResponse, RegionRoute, RegisterStoreRequest,
    RegisterStoreResponse, StoreHeartbeatRequest, StoreHeartbeatResponse,
};
use tessera_placement::{PdClient, PdError, PlacementDriver};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::failure::pd_status;
use crate::proto::pd_server::Pd;
use crate::proto::{
    AllocIdsRequest, AllocIdsResponse, HoldGcRequest, HoldGcResponse, JoinMemberRequest, JoinMemberResponse,
    Member, MembersRequest, MembersResponse, MovePeerRequest, MovePeerResponse, OperatorsRequest,
    OperatorsResponse, RegionByIdRequest, RegionByKeyRequest, RemoveStoreRequest, RemoveStoreResponse,
    ScanRegionsRequest, ScanRegionsResponse, SplitRegionRequest, SplitRegionResponse, StoresRequest,
    StoresResponse, TransferLeaderRequest, TransferLeaderResponse, TsoRequest, TsoResponse,
};

pub(crate) struct PdService {
    driver: Arc<PlacementDriver>,
}

fn member_messages(members: Vec<tessera_placement::driver::Member>) -> Vec<Member> {
    members.into_iter().map(|m| Member { id: m.id, address: m.address, voter: m.voter }).collect()
}

impl PdService {
    pub(crate) fn new(driver: Arc<PlacementDriver>) -> PdService {
        PdService { driver }
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&PlacementDriver) -> Result<T, PdError> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let driver = self.driver.clone();
        tokio::task::spawn_blocking(move || {
            f(&driver).map_err(|error| pd_status(error, |member| driver.member_address(member)))
        })
        .await
        .map_err(|e| Status::internal(format!("request task failed: {e}")))?
        .map(Response::new)
    }
}

/// The answers of one client's timestamp stream.
type TimestampAnswers = Pin<Box<dyn Stream<Item = Result<TsoResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Pd for PdService {
    type TsoStream = TimestampAnswers;

    /// Answered from the oracle's memory on the stream's task: no blocking pool, no
    /// Raft round trip. A refusal (this replica does not lead) ends the stream.
    async fn tso(
        &self,
        request: Request<Streaming<TsoRequest>>,
    ) -> Result<Response<TimestampAnswers>, Status> {
        let driver = self.driver.clone();
        let refuse =
            |driver: &PlacementDriver, error| pd_status(error, |member| driver.member_address(member));
        driver.check_timestamp_oracle().map_err(|error| refuse(&driver, error))?;
        let answers = request.into_inner().map(move |request| {
            let count = request?.count;
            match driver.timestamps(count) {
                Ok(batch) => Ok(TsoResponse { first: batch.first.as_u64(), count: batch.count }),
                Err(error) => Err(refuse(&driver, error)),
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn register_store(
        &self,
        request: Request<RegisterStoreRequest>,
    ) -> Result<Response<RegisterStoreResponse>, Status> {
        let request = request.into_inner();
        self.call(move |pd| pd.register_store(request)).await
    }

    async fn store_heartbeat(
        &self,
        request: Request<StoreHeartbeatRequest>,
    ) -> Result<Response<StoreHeartbeatResponse>, Status> {
        let request = request.into_inner();
        self.call(move |pd| pd.store_heartbeat(request)).await
    }

    async fn region_heartbeats(
        &self,
        request: Request<RegionHeartbeatsRequest>,
    ) -> Result<Response<RegionHeartbeatsResponse>, Status> {
        let request = request.into_inner();
        self.call(move |pd| pd.region_heartbeats(request)).await
    }

    async fn alloc_ids(
        &self,
        request: Request<AllocIdsRequest>,
    ) -> Result<Response<AllocIdsResponse>, Status> {
        let count = request.into_inner().count;
        self.call(move |pd| pd.alloc_ids(count).map(|ids| AllocIdsResponse { ids })).await
    }

    async fn region_by_key(
        &self,
        request: Request<RegionByKeyRequest>,
    ) -> Result<Response<RegionRoute>, Status> {
        let key = request.into_inner().key;
        self.call(move |pd| pd.region_by_key(&key)).await
    }

    async fn region_by_id(
        &self,
        request: Request<RegionByIdRequest>,
    ) -> Result<Response<RegionRoute>, Status> {
        let region_id = request.into_inner().region_id;
        self.call(move |pd| pd.region_by_id(region_id)).await
    }

    async fn scan_regions(
        &self,
        request: Request<ScanRegionsRequest>,
    ) -> Result<Response<ScanRegionsResponse>, Status> {
        let request = request.into_inner();
        self.call(move |pd| {
            let regions = pd.scan_regions(&request.start_key, &request.end_key, request.limit as usize)?;
            Ok(ScanRegionsResponse { regions })
        })
        .await
    }

    async fn stores(&self, _: Request<StoresRequest>) -> Result<Response<StoresResponse>, Status> {
        self.call(|pd| pd.stores().map(|stores| StoresResponse { stores })).await
    }

    async fn split_region(
        &self,
        request: Request<SplitRegionRequest>,
    ) -> Result<Response<SplitRegionResponse>, Status> {
        let key = request.into_inner().key;
        self.call(move |pd| {
            pd.split_region(&key).map(|id| SplitRegionResponse { operator_id: id.unwrap_or(0) })
        })
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let TransferLeaderRequest { region_id, to_store } = request.into_inner();
        self.call(move |pd| {
            pd.transfer_leader(region_id, to_store)
                .map(|id| TransferLeaderResponse { operator_id: id.unwrap_or(0) })
        })
        .await
    }

    async fn move_peer(
        &self,
        request: Request<MovePeerRequest>,
    ) -> Result<Response<MovePeerResponse>, Status> {
        let MovePeerRequest { region_id, from_store, to_store } = request.into_inner();
        self.call(move |pd| {
            pd.move_peer(region_id, from_store, to_store)
                .map(|id| MovePeerResponse { operator_id: id.unwrap_or(0) })
        })
        .await
    }

    async fn operators(&self, _: Request<OperatorsRequest>) -> Result<Response<OperatorsResponse>, Status> {
        self.call(|pd| pd.operators().map(|operators| OperatorsResponse { operators })).await
    }

    async fn remove_store(
        &self,
        request: Request<RemoveStoreRequest>,
    ) -> Result<Response<RemoveStoreResponse>, Status> {
        let store_id = request.into_inner().store_id;
        self.call(move |pd| pd.remove_store(store_id).map(|()| RemoveStoreResponse {})).await
    }

    async fn join_member(
        &self,
        request: Request<JoinMemberRequest>,
    ) -> Result<Response<JoinMemberResponse>, Status> {
        let request = request.into_inner();
        self.call(move |pd| {
            let (member_id, members) = pd.add_member(&request.address, &request.join_token)?;
            Ok(JoinMemberResponse { member_id, members: member_messages(members) })
        })
        .await
    }

    async fn members(&self, _: Request<MembersRequest>) -> Result<Response<MembersResponse>, Status> {
        self.call(|pd| pd.members().map(|members| MembersResponse { members: member_messages(members) }))
            .await
    }

    async fn hold_gc(&self, request: Request<HoldGcRequest>) -> Result<Response<HoldGcResponse>, Status> {
        let request = request.into_inner();
        let (safe_point, ttl) =
            (Timestamp::from_u64(request.safe_point), Duration::from_millis(request.ttl_ms));
        self.call(move |pd| {
            let (held, floor) = pd.hold_gc(&request.service, safe_point, ttl)?;
            Ok(HoldGcResponse { held, floor })
        })
        .await
    }
}
