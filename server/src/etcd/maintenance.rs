//! etcd's Maintenance service: what `etcdctl endpoint status` and `endpoint health`
//! ask (Status; Alarm's list, always empty: Tessera raises no etcd alarms). The
//! operations on one etcd member's own database (defragment, hash, snapshot, move
//! leader, downgrade) have no meaning for a store among many regions: they answer
//! UNIMPLEMENTED, saying so.

use std::sync::Weak;

use tessera_engine::store::Store;
use tonic::{Request, Response, Status};

use super::errors::{EtcdError, revision};
use crate::client::Client;
use crate::etcd_proto::etcdserverpb::alarm_request::AlarmAction;
use crate::etcd_proto::etcdserverpb::maintenance_server::Maintenance;
use crate::etcd_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse,
    HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    ResponseHeader, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};

/// The etcd API version Tessera speaks, as Status reports it (clients read features
/// from it).
pub(crate) const ETCD_API_VERSION: &str = "3.5.0";

pub(crate) struct EtcdMaintenance {
    client: std::sync::Arc<Client>,
    store: Weak<Store>,
    member_id: u64,
}

impl EtcdMaintenance {
    pub(crate) fn new(client: std::sync::Arc<Client>, store: Weak<Store>, member_id: u64) -> EtcdMaintenance {
        EtcdMaintenance { client, store, member_id }
    }

    async fn header(&self) -> Result<ResponseHeader, EtcdError> {
        let at = revision(self.client.timestamp().await?)?;
        Ok(super::response_header(self.member_id, at))
    }

    async fn status(&self) -> Result<StatusResponse, EtcdError> {
        let header = self.header().await?;
        let store =
            self.store.upgrade().ok_or_else(|| EtcdError::Unavailable("the store is stopping".into()))?;
        let db_size = i64::try_from(store.engine().approximate_size_bytes()).unwrap_or(i64::MAX);
        Ok(StatusResponse {
            header: Some(header),
            version: ETCD_API_VERSION.into(),
            db_size,
            db_size_in_use: db_size,
            // Every store serves reads and writes: each answers as a leader would.
            leader: self.member_id,
            ..StatusResponse::default()
        })
    }
}

type Answer<T> = Result<Response<T>, Status>;

fn unsupported<T>(what: &str) -> Answer<T> {
    Err(EtcdError::unsupported(what).into())
}

#[tonic::async_trait]
impl Maintenance for EtcdMaintenance {
    async fn alarm(&self, request: Request<AlarmRequest>) -> Answer<AlarmResponse> {
        match request.into_inner().action() {
            AlarmAction::Get => {
                Ok(Response::new(AlarmResponse { header: Some(self.header().await?), alarms: vec![] }))
            }
            AlarmAction::Activate | AlarmAction::Deactivate => unsupported("raising or clearing alarms"),
        }
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Answer<StatusResponse> {
        Ok(Response::new(EtcdMaintenance::status(self).await?))
    }

    async fn defragment(&self, _request: Request<DefragmentRequest>) -> Answer<DefragmentResponse> {
        unsupported("Defragment (RocksDB compacts on its own)")
    }

    async fn hash(&self, _request: Request<HashRequest>) -> Answer<HashResponse> {
        unsupported("Hash")
    }

    async fn hash_kv(&self, _request: Request<HashKvRequest>) -> Answer<HashKvResponse> {
        unsupported("HashKV")
    }

    type SnapshotStream = futures::stream::Empty<Result<SnapshotResponse, Status>>;

    async fn snapshot(&self, _request: Request<SnapshotRequest>) -> Answer<Self::SnapshotStream> {
        unsupported("Snapshot (back up through Tessera's own tools)")
    }

    async fn move_leader(&self, _request: Request<MoveLeaderRequest>) -> Answer<MoveLeaderResponse> {
        unsupported("MoveLeader (every store serves; regions have leaders of their own)")
    }

    async fn downgrade(&self, _request: Request<DowngradeRequest>) -> Answer<DowngradeResponse> {
        unsupported("Downgrade")
    }
}
