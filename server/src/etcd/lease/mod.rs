//! etcd's Lease service: leases are records in the transactional key space
//! (`records.rs`), so that every store serves every lease and a lease outlives any
//! store. A key put with a lease is listed under it; revoking the lease, by hand or by
//! expiry, deletes every key listed at one revision, which watchers see as DELETE
//! events of one transaction.
//!
//! - **Grant** writes the record with its deadline (the oracle's clock plus the TTL);
//!   a lease id of 0 asks for a new one: the grant's timestamp, unique in the cluster.
//! - **KeepAlive** (a stream) and each renewal in it push the deadline to the granted
//!   TTL from now; a lease that is gone is answered with TTL 0, as etcd does.
//! - **TimeToLive** answers the seconds left (-1: no such lease), the granted TTL and,
//!   when asked, the attached keys; **Leases** lists every lease.
//! - **Expiry** (`expiry.rs`): every store looks for leases past their deadline and
//!   revokes them; a revoke of an expired lease checks the deadline again inside its
//!   transaction, so that a keep-alive that got in first wins.
//!
//! This module owns the lease's gRPC surface; what a lease is in the store is
//! `records.rs`'s, and Put's and DeleteRange's part in it is `txn/`'s.

mod expiry;
mod records;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub(crate) use expiry::expire_leases;
pub(crate) use records::{attached, guard_attachment, move_attachment};

use super::auth::{Auth, Needs, Requirement};
use super::errors::{EtcdError, revision};
use crate::client::Client;
use crate::etcd_proto::etcdserverpb::lease_server::Lease;
use crate::etcd_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, ResponseHeader,
};

/// Keep-alive answers in flight to one stream's client before the stream stops reading
/// its requests.
const KEEP_ALIVE_RESPONSES: usize = 64;

/// The Lease service of one store's etcd API.
pub(crate) struct EtcdLease {
    client: Arc<Client>,
    auth: Arc<Auth>,
    member_id: u64,
}

impl EtcdLease {
    pub(crate) fn new(client: Arc<Client>, auth: Arc<Auth>, member_id: u64) -> EtcdLease {
        EtcdLease { client, auth, member_id }
    }

    /// Refuses `request` unless it comes from a signed-in user (while authentication
    /// is on); answers who sent it.
    async fn signed_in<T>(&self, request: &Request<T>) -> Result<super::auth::Authorized, EtcdError> {
        self.auth.check_request(request, Requirement::Authenticated).await
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(super::response_header(self.member_id, revision))
    }

    /// A lease's time to live; its attached keys only to a caller who may read them all.
    async fn time_to_live(
        &self,
        request: LeaseTimeToLiveRequest,
        by: &super::auth::Authorized,
    ) -> Result<LeaseTimeToLiveResponse, EtcdError> {
        let transaction = self.client.begin().await?;
        let now = transaction.start_ts().await?;
        let header = self.header(revision(now)?);
        let Some(record) = records::read_lease(&transaction, request.id).await? else {
            return Ok(LeaseTimeToLiveResponse { header, id: request.id, ttl: -1, ..Default::default() });
        };
        let keys = if request.keys { records::attached(&transaction, request.id).await? } else { Vec::new() };
        by.require(&Needs::read_keys(&keys))?;
        Ok(LeaseTimeToLiveResponse {
            header,
            id: request.id,
            ttl: record.seconds_left(now),
            granted_ttl: record.granted_ttl_seconds,
            keys,
        })
    }

    async fn leases(&self) -> Result<LeaseLeasesResponse, EtcdError> {
        let transaction = self.client.begin().await?;
        let header = self.header(revision(transaction.start_ts().await?)?);
        let leases = records::every_lease(&transaction).await?;
        Ok(LeaseLeasesResponse {
            header,
            leases: leases.into_iter().map(|(id, _)| LeaseStatus { id }).collect(),
        })
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Lease for EtcdLease {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Answer<LeaseGrantResponse> {
        self.signed_in(&request).await?;
        let request = request.into_inner();
        let (id, ttl, at) = records::grant(&self.client, request.id, request.ttl).await?;
        Ok(Response::new(LeaseGrantResponse { header: self.header(at), id, ttl, error: String::new() }))
    }

    async fn lease_revoke(&self, request: Request<LeaseRevokeRequest>) -> Answer<LeaseRevokeResponse> {
        let by = self.signed_in(&request).await?;
        let id = request.into_inner().id;
        let Some(at) = records::revoke(&self.client, id, records::Revoke::Now { by: &by }).await? else {
            unreachable!("invariant: a revoke without condition revokes or fails");
        };
        Ok(Response::new(LeaseRevokeResponse { header: self.header(at) }))
    }

    type LeaseKeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Answer<Self::LeaseKeepAliveStream> {
        self.signed_in(&request).await?;
        let (responses, stream) = mpsc::channel(KEEP_ALIVE_RESPONSES);
        tokio::spawn(keep_alive(self.client.clone(), self.member_id, request.into_inner(), responses));
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Answer<LeaseTimeToLiveResponse> {
        let by = self.signed_in(&request).await?;
        Ok(Response::new(self.time_to_live(request.into_inner(), &by).await?))
    }

    async fn lease_leases(&self, request: Request<LeaseLeasesRequest>) -> Answer<LeaseLeasesResponse> {
        self.signed_in(&request).await?;
        Ok(Response::new(self.leases().await?))
    }
}

/// Serves one keep-alive stream: each request renews its lease and is answered in
/// order, until the client closes the stream or stops reading.
async fn keep_alive(
    client: Arc<Client>,
    member_id: u64,
    mut requests: Streaming<LeaseKeepAliveRequest>,
    responses: mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>,
) {
    while let Ok(Some(request)) = requests.message().await {
        let answer = match records::renew(&client, request.id).await {
            Ok((ttl, at)) => Ok(LeaseKeepAliveResponse {
                header: Some(super::response_header(member_id, at)),
                id: request.id,
                // Gone: 0, which etcd's clients read as the lease's end.
                ttl: ttl.unwrap_or(0),
            }),
            Err(error) => Err(Status::from(error)),
        };
        let failed = answer.is_err();
        if responses.send(answer).await.is_err() || failed {
            return;
        }
    }
}
