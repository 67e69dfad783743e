//! etcd's Cluster service: every store that serves etcd's API is a member, as the
//! placement driver knows it (its etcd address is part of its registration), so that
//! `etcdctl member list` and the clients that sync their endpoints from it find every
//! store. Membership is the placement driver's (stores join by registering and leave
//! by being removed through `tessera ctl`): adding, removing, updating and promoting
//! members answer UNIMPLEMENTED, saying so. A member's URLs are `https://` when the
//! cluster speaks TLS (the store answering does: every node of a cluster shares its
//! TLS settings), so that clients syncing their endpoints dial them over TLS.

use std::sync::Arc;

use tessera_placement::proto::{StoreState, StoreView};
use tonic::{Request, Response, Status};

use super::errors::{EtcdError, revision};
use crate::client::Client;
use crate::etcd_proto::etcdserverpb::cluster_server::Cluster;
use crate::etcd_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse,
};

/// The Cluster service of one store's etcd API.
pub(crate) struct EtcdCluster {
    client: Arc<Client>,
    member_id: u64,
    /// The scheme of the members' URLs: `https` over TLS.
    scheme: &'static str,
}

impl EtcdCluster {
    pub(crate) fn new(client: Arc<Client>, member_id: u64, tls: bool) -> EtcdCluster {
        EtcdCluster { client, member_id, scheme: if tls { "https" } else { "http" } }
    }

    async fn member_list(&self) -> Result<MemberListResponse, EtcdError> {
        let at = revision(self.client.timestamp().await?)?;
        let stores = self
            .client
            .pd()
            .stores_async()
            .await
            .map_err(|error| EtcdError::Unavailable(format!("listing the stores: {error}")))?;
        let mut members: Vec<Member> = stores.iter().filter_map(|view| member(view, self.scheme)).collect();
        members.sort_by_key(|member| member.id);
        Ok(MemberListResponse { header: Some(super::response_header(self.member_id, at)), members })
    }
}

/// The member a store is, if it serves etcd's API and has not been removed; its URLs
/// with `scheme`.
fn member(view: &StoreView, scheme: &str) -> Option<Member> {
    let store = view.store.as_ref()?;
    if store.etcd_address.is_empty() || store.tombstone || view.state == StoreState::Tombstone as i32 {
        return None;
    }
    Some(Member {
        id: store.id,
        name: format!("store-{}", store.id),
        peer_ur_ls: vec![format!("{scheme}://{}", store.address)],
        client_ur_ls: vec![format!("{scheme}://{}", store.etcd_address)],
        is_learner: false,
    })
}

type Answer<T> = Result<Response<T>, Status>;

fn unsupported<T>(what: &str) -> Answer<T> {
    Err(EtcdError::unsupported(&format!("{what} (stores join and leave through the placement driver)"))
        .into())
}

#[tonic::async_trait]
impl Cluster for EtcdCluster {
    async fn member_add(&self, _request: Request<MemberAddRequest>) -> Answer<MemberAddResponse> {
        unsupported("MemberAdd")
    }

    async fn member_remove(&self, _request: Request<MemberRemoveRequest>) -> Answer<MemberRemoveResponse> {
        unsupported("MemberRemove")
    }

    async fn member_update(&self, _request: Request<MemberUpdateRequest>) -> Answer<MemberUpdateResponse> {
        unsupported("MemberUpdate")
    }

    async fn member_list(&self, _request: Request<MemberListRequest>) -> Answer<MemberListResponse> {
        Ok(Response::new(EtcdCluster::member_list(self).await?))
    }

    async fn member_promote(&self, _request: Request<MemberPromoteRequest>) -> Answer<MemberPromoteResponse> {
        unsupported("MemberPromote")
    }
}

#[cfg(test)]
mod tests {
    use tessera_placement::proto::StoreRecord;

    use super::*;

    fn view(id: u64, etcd_address: &str, state: StoreState) -> StoreView {
        let record = StoreRecord {
            id,
            address: format!("10.0.0.{id}:20160"),
            etcd_address: etcd_address.into(),
            ..Default::default()
        };
        StoreView { store: Some(record), state: state as i32, ..Default::default() }
    }

    #[test]
    fn members_are_the_stores_serving_etcd_s_api_that_were_not_removed() {
        let up = member(&view(1, "10.0.0.1:2379", StoreState::Up), "http").expect("a member");
        assert_eq!((up.id, up.client_ur_ls.as_slice()), (1, &["http://10.0.0.1:2379".to_string()][..]));
        assert_eq!(up.peer_ur_ls, ["http://10.0.0.1:20160"]);
        let secure = member(&view(1, "10.0.0.1:2379", StoreState::Up), "https").expect("a member");
        assert_eq!(secure.client_ur_ls, ["https://10.0.0.1:2379"], "over TLS");
        assert!(
            member(&view(2, "10.0.0.2:2379", StoreState::Down), "http").is_some(),
            "a down store is a member"
        );
        assert!(member(&view(3, "", StoreState::Up), "http").is_none(), "no etcd API: no member");
        assert!(member(&view(4, "10.0.0.4:2379", StoreState::Tombstone), "http").is_none(), "removed");
    }
}
