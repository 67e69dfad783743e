//! Which role may call which method, enforced on every node's gRPC server.
//!
//! The table is by method path and closed: a method it does not list is refused to
//! everyone, so that a service added without a decision here cannot be reached over
//! TLS. The classes:
//!
//! - node only: the Raft transport, and the driver calls that change what the cluster
//!   believes about its members (registering a store, store and region heartbeats,
//!   allocating ids, joining the driver). A forged heartbeat or registration can make
//!   the driver forget real regions or send writes elsewhere.
//! - admin only: the operator's hand on placement (split, leader transfer, replica
//!   move, store removal). Nodes do not need them: the driver's schedulers act through
//!   heartbeats.
//! - everyone with a certificate: the key-value API, transactions, change feeds, the
//!   driver's read-only calls and its timestamp oracle, and etcd's API. Finer checks
//!   are the services' own: etcd's users and roles on key ranges (`crate::etcd`'s
//!   `auth`, the certificate's CN as the user), and the key-value API's reserved keys
//!   (`crate::service::reserved`: the etcd API's data is out of a client's reach).
//!
//! Admins can call every client method too; nodes can call every client method (a
//! store's etcd API is a client of the others). Neither can call the other's methods.

use std::task::{Context, Poll};

use futures::future::{Either, Ready};
use tower::{Layer, Service};

use super::identity::{PeerIdentity, Role};
use super::listener::PeerConnectInfo;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    NodeOnly,
    AdminOnly,
    AnyPeer,
}

impl Access {
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::NodeOnly => role == Role::Node,
            Access::AdminOnly => role == Role::Admin,
            Access::AnyPeer => true,
        }
    }
}

const NODE_ONLY_PD_METHODS: [&str; 5] =
    ["RegisterStore", "StoreHeartbeat", "RegionHeartbeats", "AllocIds", "JoinMember"];
const ADMIN_ONLY_PD_METHODS: [&str; 4] = ["SplitRegion", "TransferLeader", "MovePeer", "RemoveStore"];
const CLIENT_PD_METHODS: [&str; 8] =
    ["RegionByKey", "RegionById", "ScanRegions", "Stores", "Operators", "Members", "Tso", "HoldGc"];
const KV_METHODS: [&str; 9] =
    ["Get", "BatchGet", "Scan", "Write", "TxnGet", "TxnScan", "TxnRefresh", "RegionFeed", "Watch"];
const RAFT_TRANSPORT_METHODS: [&str; 2] = ["Stream", "Large"];
/// etcd's services and their methods, served by stores on their etcd address (the
/// ones Tessera does not support answer UNIMPLEMENTED, saying so); etcd's own users
/// and roles decide further (`crate::etcd`'s auth).
const ETCD_METHODS: [(&str, &[&str]); 6] = [
    ("KV", &["Range", "Put", "DeleteRange", "Txn", "Compact"]),
    ("Watch", &["Watch"]),
    ("Lease", &["LeaseGrant", "LeaseRevoke", "LeaseKeepAlive", "LeaseTimeToLive", "LeaseLeases"]),
    ("Cluster", &["MemberAdd", "MemberRemove", "MemberUpdate", "MemberList", "MemberPromote"]),
    (
        "Maintenance",
        &["Alarm", "Status", "Defragment", "Hash", "HashKV", "Snapshot", "MoveLeader", "Downgrade"],
    ),
    (
        "Auth",
        &[
            "AuthEnable",
            "AuthDisable",
            "AuthStatus",
            "Authenticate",
            "UserAdd",
            "UserGet",
            "UserList",
            "UserDelete",
            "UserChangePassword",
            "UserGrantRole",
            "UserRevokeRole",
            "RoleAdd",
            "RoleGet",
            "RoleList",
            "RoleDelete",
            "RoleGrantPermission",
            "RoleRevokePermission",
        ],
    ),
];

/// The access a method path (`/package.Service/Method`) needs; `None` for a method
/// no Tessera server serves.
pub fn access_of(path: &str) -> Option<Access> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if method.is_empty() || method.contains('/') {
        return None;
    }
    match service {
        "tessera.service.RaftTransport" if RAFT_TRANSPORT_METHODS.contains(&method) => Some(Access::NodeOnly),
        "tessera.service.Kv" if KV_METHODS.contains(&method) => Some(Access::AnyPeer),
        "tessera.service.Pd" if NODE_ONLY_PD_METHODS.contains(&method) => Some(Access::NodeOnly),
        "tessera.service.Pd" if ADMIN_ONLY_PD_METHODS.contains(&method) => Some(Access::AdminOnly),
        "tessera.service.Pd" if CLIENT_PD_METHODS.contains(&method) => Some(Access::AnyPeer),
        _ => {
            let etcd = service.strip_prefix("etcdserverpb.")?;
            let (_, methods) = ETCD_METHODS.iter().find(|(name, _)| *name == etcd)?;
            methods.contains(&method).then_some(Access::AnyPeer)
        }
    }
}

/// Why a request was refused, as the status message says it.
fn refusal(path: &str, identity: Option<&PeerIdentity>) -> Option<String> {
    let Some(identity) = identity else {
        return Some(format!("{path}: the connection carries no verified identity"));
    };
    match access_of(path) {
        None => Some(format!("{path}: not a method this server lets anyone call")),
        Some(access) if !access.allows(identity.role) => {
            let needs = match access {
                Access::NodeOnly => "a node certificate",
                Access::AdminOnly => "an admin certificate",
                Access::AnyPeer => "a certificate",
            };
            Some(format!("{path} needs {needs}; {identity} may not call it"))
        }
        Some(_) => None,
    }
}

/// The layer on a node's server: enforcing (over TLS) or letting everything through
/// (in the clear, where there are no identities to check).
#[derive(Debug, Clone, Copy)]
pub struct AuthorizationLayer {
    enforce: bool,
}

impl AuthorizationLayer {
    pub fn new(enforce: bool) -> AuthorizationLayer {
        AuthorizationLayer { enforce }
    }
}

impl<S> Layer<S> for AuthorizationLayer {
    type Service = Authorization<S>;

    fn layer(&self, inner: S) -> Authorization<S> {
        Authorization { inner, enforce: self.enforce }
    }
}

#[derive(Debug, Clone)]
pub struct Authorization<S> {
    inner: S,
    enforce: bool,
}

const REFUSED: &str = "tessera_requests_refused_total";

pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        REFUSED,
        metrics::Unit::Count,
        "Requests refused because the peer's certificate does not allow the method, by the peer's role."
    );
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for Authorization<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        if self.enforce {
            let identity = request.extensions().get::<PeerConnectInfo>().map(|info| &info.identity);
            if let Some(message) = refusal(request.uri().path(), identity) {
                let role = identity.map_or("none", |identity| identity.role.unit());
                metrics::counter!(REFUSED, "role" => role).increment(1);
                tracing::debug!(%message, "request refused");
                let response = tonic::Status::permission_denied(message).into_http::<ResponseBody>();
                return Either::Right(futures::future::ready(Ok(response)));
            }
        }
        Either::Left(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(role: Role) -> PeerIdentity {
        PeerIdentity { role, name: "someone".into() }
    }

    #[test]
    fn raft_traffic_registration_and_heartbeats_need_a_node() {
        for path in [
            "/tessera.service.RaftTransport/Stream",
            "/tessera.service.RaftTransport/Large",
            "/tessera.service.Pd/RegisterStore",
            "/tessera.service.Pd/StoreHeartbeat",
            "/tessera.service.Pd/RegionHeartbeats",
            "/tessera.service.Pd/JoinMember",
            "/tessera.service.Pd/AllocIds",
        ] {
            assert_eq!(refusal(path, Some(&identity(Role::Node))), None, "{path}");
            for role in [Role::Admin, Role::Client] {
                let message = refusal(path, Some(&identity(role))).expect("refused");
                assert!(message.contains("needs a node certificate"), "{message}");
            }
        }
    }

    #[test]
    fn placement_by_hand_needs_an_admin() {
        for method in ADMIN_ONLY_PD_METHODS {
            let path = format!("/tessera.service.Pd/{method}");
            assert_eq!(refusal(&path, Some(&identity(Role::Admin))), None, "{path}");
            assert!(refusal(&path, Some(&identity(Role::Node))).is_some(), "{path}: a node");
            assert!(refusal(&path, Some(&identity(Role::Client))).is_some(), "{path}: a client");
        }
    }

    #[test]
    fn every_role_may_use_the_key_value_and_etcd_apis() {
        for path in ["/tessera.service.Kv/Write", "/tessera.service.Pd/Tso", "/etcdserverpb.KV/Range"] {
            for role in [Role::Node, Role::Admin, Role::Client] {
                assert_eq!(refusal(path, Some(&identity(role))), None, "{path} for {role}");
            }
        }
    }

    #[test]
    fn an_unlisted_method_or_a_connection_without_identity_is_refused() {
        for path in [
            "/tessera.service.Pd/NewMethod",
            "/tessera.service.Kv/",
            "/tessera.service.Kv/Get/extra",
            "/grpc.health.v1.Health/Check",
            "/etcdserverpb.Secret/Get",
            "garbage",
            "",
        ] {
            assert!(refusal(path, Some(&identity(Role::Admin))).is_some(), "{path:?} allowed");
        }
        assert!(refusal("/tessera.service.Kv/Get", None).is_some());
    }

    /// The methods `proto` declares for `service`, sorted.
    fn declared(proto: &'static str, service: &str) -> Vec<&'static str> {
        let block = proto.split(&format!("service {service} {{")).nth(1).expect("the service").split('}');
        let mut methods: Vec<&str> = block
            .take(1)
            .flat_map(str::lines)
            .filter_map(|line| line.trim().strip_prefix("rpc "))
            .filter_map(|rest| rest.split('(').next())
            .collect();
        methods.sort_unstable();
        methods
    }

    fn sorted(methods: &[&'static str]) -> Vec<&'static str> {
        let mut methods = methods.to_vec();
        methods.sort_unstable();
        methods
    }

    #[test]
    fn every_method_of_every_service_is_classified_and_nothing_else() {
        let tessera = include_str!("../../proto/service.proto");
        let pd: Vec<&str> = NODE_ONLY_PD_METHODS
            .iter()
            .chain(&ADMIN_ONLY_PD_METHODS)
            .chain(&CLIENT_PD_METHODS)
            .copied()
            .collect();
        assert_eq!(declared(tessera, "Pd"), sorted(&pd));
        assert_eq!(declared(tessera, "Kv"), sorted(&KV_METHODS));
        assert_eq!(declared(tessera, "RaftTransport"), sorted(&RAFT_TRANSPORT_METHODS));
        assert_eq!(tessera.matches("\nservice ").count(), 3, "a Tessera service the table does not know");
        let etcd = include_str!("../../proto/etcd/rpc.proto");
        for (service, methods) in ETCD_METHODS {
            assert_eq!(declared(etcd, service), sorted(methods), "etcd's {service}");
            for method in methods {
                let path = format!("/etcdserverpb.{service}/{method}");
                assert_eq!(access_of(&path), Some(Access::AnyPeer), "{path}");
            }
        }
        assert_eq!(
            etcd.matches("\nservice ").count(),
            ETCD_METHODS.len(),
            "an etcd service the table does not know"
        );
        assert_eq!(access_of("/tessera.service.Kv/Drop"), None);
        assert_eq!(access_of("/etcdserverpb.KV/Drop"), None);
    }
}
