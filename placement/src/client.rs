//! The placement driver's API as its callers see it: stores (through their
//! [`crate::agent::StoreAgent`]) and the client library.
//!
//! Three things implement [`PdClient`]: every driver replica itself (answering when it
//! leads, otherwise saying who does), [`crate::local::LocalPdClient`] (in-process
//! replicas, following redirects; for tests) and the server's gRPC client. The calls
//! block: stores call them from their agent thread, and the server from blocking tasks.

use crate::errors::PdError;
use crate::proto::{
    OperatorView, RegionHeartbeatsRequest, RegionHeartbeatsResponse, RegionRoute, RegisterStoreRequest,
    RegisterStoreResponse, StoreHeartbeatRequest, StoreHeartbeatResponse, StoreView,
};

pub trait PdClient: Send + Sync + 'static {
    fn register_store(&self, request: RegisterStoreRequest) -> Result<RegisterStoreResponse, PdError>;

    fn store_heartbeat(&self, request: StoreHeartbeatRequest) -> Result<StoreHeartbeatResponse, PdError>;

    /// Every region the store leads, in one call; the answer carries, per region, the
    /// operator step to carry out or a refusal for a stale descriptor.
    fn region_heartbeats(
        &self,
        request: RegionHeartbeatsRequest,
    ) -> Result<RegionHeartbeatsResponse, PdError>;

    /// `count` ids, unique across the cluster (for new regions, peers and stores).
    fn alloc_ids(&self, count: u32) -> Result<Vec<u64>, PdError>;

    /// The region holding `key`.
    fn region_by_key(&self, key: &[u8]) -> Result<RegionRoute, PdError>;

    fn region_by_id(&self, region_id: u64) -> Result<RegionRoute, PdError>;

    /// Regions overlapping `[start, end)` (empty end: to the end of the key space) in
    /// key order, at most `limit` (0: no limit).
    fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<RegionRoute>, PdError>;

    fn stores(&self) -> Result<Vec<StoreView>, PdError>;

    /// Asks the leader of the region holding `key` to split it there. The operator's id
    /// (see [`PdClient::operators`]), or `None` if the region already splits there.
    fn split_region(&self, key: &[u8]) -> Result<Option<u64>, PdError>;

    /// Asks the region's leadership to move to its voter on `to_store`. The operator's
    /// id, or `None` if the leader is already there.
    fn transfer_leader(&self, region_id: u64, to_store: u64) -> Result<Option<u64>, PdError>;

    /// Asks the region to move its replica on `from_store` to `to_store` (a learner
    /// added there, promoted, then the old replica removed). The operator's id.
    fn move_peer(&self, region_id: u64, from_store: u64, to_store: u64) -> Result<Option<u64>, PdError>;

    fn operators(&self) -> Result<Vec<OperatorView>, PdError>;

    /// Declares `store_id` gone for good: the driver replaces its replicas now rather
    /// than after the down grace, and the store may never register again. Refused if a
    /// region with a replica there could then no longer reach a quorum of voters on
    /// stores that are up. Removing a removed store changes nothing.
    fn remove_store(&self, store_id: u64) -> Result<(), PdError>;
}
