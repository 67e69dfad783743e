//! An in-process [`PdClient`] over driver replicas in the same process: calls go to the
//! replica believed to lead and follow `NotLeader` answers, as the server's gRPC client
//! does across the network. Used by tests that run a whole cluster in one process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::client::PdClient;
use crate::errors::PdError;
use crate::proto::{
    OperatorView, RegionHeartbeatsRequest, RegionHeartbeatsResponse, RegionRoute, RegisterStoreRequest,
    RegisterStoreResponse, StoreHeartbeatRequest, StoreHeartbeatResponse, StoreView,
};

/// How long a call keeps looking for a leader (through an election) before giving up.
const FIND_LEADER_FOR: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct LocalPdClient {
    replicas: RwLock<BTreeMap<u64, Arc<dyn PdClient>>>,
    leader: RwLock<Option<u64>>,
}

impl LocalPdClient {
    pub fn new() -> LocalPdClient {
        LocalPdClient::default()
    }

    pub fn add(&self, member_id: u64, replica: Arc<dyn PdClient>) {
        self.replicas.write().insert(member_id, replica);
    }

    /// A stopped replica can no longer be called.
    pub fn remove(&self, member_id: u64) {
        self.replicas.write().remove(&member_id);
    }

    /// Tries the believed leader first, then every replica; waits out elections.
    fn call<T>(&self, f: impl Fn(&dyn PdClient) -> Result<T, PdError>) -> Result<T, PdError> {
        let deadline = Instant::now() + FIND_LEADER_FOR;
        loop {
            let replicas: Vec<(u64, Arc<dyn PdClient>)> =
                self.replicas.read().iter().map(|(id, r)| (*id, r.clone())).collect();
            let believed = *self.leader.read();
            let mut order: Vec<&(u64, Arc<dyn PdClient>)> = replicas.iter().collect();
            order.sort_by_key(|(id, _)| Some(*id) != believed);
            let mut last = PdError::NotLeader { leader: None };
            for (id, replica) in order {
                match f(replica.as_ref()) {
                    Err(PdError::NotLeader { leader }) => {
                        last = PdError::NotLeader { leader };
                    }
                    result => {
                        *self.leader.write() = Some(*id);
                        return result;
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl PdClient for LocalPdClient {
    fn register_store(&self, request: RegisterStoreRequest) -> Result<RegisterStoreResponse, PdError> {
        self.call(|pd| pd.register_store(request.clone()))
    }

    fn store_heartbeat(&self, request: StoreHeartbeatRequest) -> Result<StoreHeartbeatResponse, PdError> {
        self.call(|pd| pd.store_heartbeat(request))
    }

    fn region_heartbeats(
        &self,
        request: RegionHeartbeatsRequest,
    ) -> Result<RegionHeartbeatsResponse, PdError> {
        self.call(|pd| pd.region_heartbeats(request.clone()))
    }

    fn alloc_ids(&self, count: u32) -> Result<Vec<u64>, PdError> {
        self.call(|pd| pd.alloc_ids(count))
    }

    fn region_by_key(&self, key: &[u8]) -> Result<RegionRoute, PdError> {
        self.call(|pd| pd.region_by_key(key))
    }

    fn region_by_id(&self, region_id: u64) -> Result<RegionRoute, PdError> {
        self.call(|pd| pd.region_by_id(region_id))
    }

    fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<RegionRoute>, PdError> {
        self.call(|pd| pd.scan_regions(start, end, limit))
    }

    fn stores(&self) -> Result<Vec<StoreView>, PdError> {
        self.call(|pd| pd.stores())
    }

    fn split_region(&self, key: &[u8]) -> Result<Option<u64>, PdError> {
        self.call(|pd| pd.split_region(key))
    }

    fn transfer_leader(&self, region_id: u64, to_store: u64) -> Result<Option<u64>, PdError> {
        self.call(|pd| pd.transfer_leader(region_id, to_store))
    }

    fn move_peer(&self, region_id: u64, from_store: u64, to_store: u64) -> Result<Option<u64>, PdError> {
        self.call(|pd| pd.move_peer(region_id, from_store, to_store))
    }

    fn operators(&self) -> Result<Vec<OperatorView>, PdError> {
        self.call(|pd| pd.operators())
    }

    fn remove_store(&self, store_id: u64) -> Result<(), PdError> {
        self.call(|pd| pd.remove_store(store_id))
    }
}
