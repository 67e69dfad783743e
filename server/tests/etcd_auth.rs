//! etcd's authentication on real processes, through etcd's own Rust client: enabling
//! it follows etcd's rules (a root user holding the root role), and while it is on
//! every KV, Watch and Lease request is checked against its user's roles, on every
//! store: reads and writes outside a user's ranges, a Txn whose other branch writes
//! elsewhere, a watch of a range it may not read and a lease whose keys it may not
//! delete are refused with etcd's `permission denied`; a grant counts at once on
//! another store and a revocation within the stated refresh interval; tokens are
//! refused when forged, expired (the configured lifetime), after a password change
//! and after their user's deletion.

mod common;

use std::time::Duration;

use common::*;
use etcd_client::{
    Client as EtcdClient, ConnectOptions, EventType, GetOptions, LeaseTimeToLiveOptions, Permission,
    PutOptions, Txn, TxnOp, WatchOptions,
};
use tessera_server::etcd_proto::etcdserverpb::auth_client::AuthClient;
use tessera_server::etcd_proto::etcdserverpb::kv_client::KvClient;
use tessera_server::etcd_proto::etcdserverpb::{AuthStatusRequest, RangeRequest};

/// The tokens' lifetime the stores are configured with (`etcd_auth_token_ttl_seconds`).
const TOKEN_TTL: Duration = Duration::from_secs(5);

/// Three stores serving etcd's API, with short-lived tokens; their etcd addresses.
async fn started() -> (Cluster, Vec<String>) {
    let store_config = format!(
        "[store]\netcd_listen = \"127.0.0.1:0\"\netcd_auth_token_ttl_seconds = {}\n",
        TOKEN_TTL.as_secs()
    );
    let cluster = Cluster::start_with_files(&["", "", ""], 1_000_000, "", Some(&store_config));
    wait_for_leader(&cluster.client()).await;
    let endpoints: Vec<String> =
        cluster.stores.iter().flatten().filter_map(|store| store.etcd.clone()).collect();
    assert_eq!(endpoints.len(), 3, "every store serves etcd's API");
    (cluster, endpoints)
}

async fn connect(endpoint: &str, user: Option<(&str, &str)>) -> Result<EtcdClient, etcd_client::Error> {
    let mut options = ConnectOptions::new().with_timeout(Duration::from_secs(10));
    if let Some((name, password)) = user {
        options = options.with_user(name, password);
    }
    EtcdClient::connect([endpoint], Some(options)).await
}

/// Asserts that `answer` failed saying `message`.
fn refused<T>(answer: Result<T, etcd_client::Error>, message: &str, what: &str) {
    match answer {
        Err(error) => assert!(error.to_string().contains(message), "{what}: {error}"),
        Ok(_) => panic!("{what}: answered instead of refused with {message:?}"),
    }
}

const DENIED: &str = "etcdserver: permission denied";

/// Enables authentication as etcdctl does, checking each refusal on the way; answers
/// a client signed in as root.
async fn enable_as_etcd_requires(endpoint: &str) -> EtcdClient {
    let mut anonymous = connect(endpoint, None).await.expect("a client");
    refused(anonymous.auth_enable().await, "etcdserver: root user does not exist", "no root user");
    anonymous.user_add("root", "rootpw", None).await.expect("root added");
    refused(anonymous.auth_enable().await, "etcdserver: root user does not have root role", "no root role");
    anonymous.role_add("root").await.expect("the root role");
    anonymous.user_grant_role("root", "root").await.expect("granted");
    anonymous.auth_enable().await.expect("enabled");
    refused(anonymous.put("k", "v", None).await, "etcdserver: user name is empty", "no user");
    refused(connect(endpoint, Some(("root", "wrong"))).await, "authentication failed", "a wrong password");
    connect(endpoint, Some(("root", "rootpw"))).await.expect("root signs in")
}

/// Role `app`: read-write on the prefix `app/`, read on the key `config`; user alice
/// holds it.
async fn add_alice(root: &mut EtcdClient) {
    root.role_add("app").await.expect("a role");
    root.role_grant_permission("app", Permission::read_write("app/").with_prefix()).await.expect("granted");
    root.role_grant_permission("app", Permission::read("config")).await.expect("granted");
    root.user_add("alice", "alicepw", None).await.expect("alice added");
    root.user_grant_role("alice", "app").await.expect("granted");
    root.put("config", "v1", None).await.expect("root writes anywhere");
    root.put("secret", "s", None).await.expect("root writes anywhere");
}

async fn check_key_value_permissions(alice: &mut EtcdClient) {
    alice.put("app/1", "a", None).await.expect("inside alice's prefix");
    let config = alice.get("config", None).await.expect("a key alice may read");
    assert_eq!(config.kvs().first().map(|kv| kv.value().to_vec()), Some(b"v1".to_vec()));
    refused(alice.put("config", "x", None).await, DENIED, "a key alice may only read");
    refused(alice.get("secret", None).await, DENIED, "a key alice may not read");
    let listed = alice.get("app/", Some(GetOptions::new().with_prefix())).await.expect("alice's prefix");
    assert_eq!(listed.kvs().len(), 1);
    let wider = GetOptions::new().with_range("b");
    refused(alice.get("a", Some(wider)).await, DENIED, "a range wider than alice's prefix");
    refused(
        alice.get("app/", Some(GetOptions::new().with_from_key())).await,
        DENIED,
        "to the end of the keys",
    );
    let compare = etcd_client::Compare::value("config", etcd_client::CompareOp::Equal, "v1");
    let allowed = Txn::new().when([compare.clone()]).and_then([TxnOp::put("app/2", "b", None)]);
    assert!(alice.txn(allowed).await.expect("compare a readable key, write her own").succeeded());
    let other_branch = Txn::new()
        .when([compare.clone()])
        .and_then([TxnOp::put("app/3", "c", None)])
        .or_else([TxnOp::put("secret", "stolen", None)]);
    refused(alice.txn(other_branch).await, DENIED, "the branch that would not run writes elsewhere");
    let hidden = etcd_client::Compare::value("secret", etcd_client::CompareOp::Equal, "s");
    let probe = Txn::new().when([hidden]).and_then([TxnOp::put("app/4", "d", None)]);
    refused(alice.txn(probe).await, DENIED, "a compare on a key alice may not read");
    let deleted = alice
        .delete("app/1", Some(etcd_client::DeleteOptions::new().with_prev_key()))
        .await
        .expect("a delete of her own key");
    assert_eq!(deleted.deleted(), 1);
}

async fn check_management_is_root_s(alice: &mut EtcdClient) {
    refused(alice.user_list().await, DENIED, "listing users");
    refused(alice.user_add("eve", "evepw", None).await, DENIED, "adding a user");
    refused(alice.role_grant_permission("app", Permission::read_write("secret")).await, DENIED, "granting");
    refused(alice.auth_disable().await, DENIED, "disabling authentication");
    let herself = alice.user_get("alice").await.expect("alice reads herself");
    assert_eq!(herself.roles(), ["app"]);
    let role = alice.role_get("app").await.expect("alice reads a role she holds");
    assert_eq!(role.permissions().len(), 2);
    refused(alice.role_get("root").await, DENIED, "a role alice does not hold");
}

async fn check_watches_and_leases(root: &mut EtcdClient, alice: &mut EtcdClient) {
    let mut secret = alice.watch("secret", Some(WatchOptions::new().with_prefix())).await.expect("a stream");
    let answer = tokio::time::timeout(Duration::from_secs(10), secret.message())
        .await
        .expect("an answer within 10 s")
        .expect("the stream goes on")
        .expect("an answer");
    assert!(answer.canceled() && answer.cancel_reason().contains(DENIED), "{answer:?}");
    let mut own = alice.watch("app/", Some(WatchOptions::new().with_prefix())).await.expect("a watch");
    // The watch starts when the store answers `created`: a put before it is not watched.
    let created = tokio::time::timeout(Duration::from_secs(10), own.message())
        .await
        .expect("created within 10 s")
        .expect("the stream goes on")
        .expect("an answer");
    assert!(created.created() && !created.canceled(), "{created:?}");
    root.put("app/9", "from root", None).await.expect("a put");
    let mut seen = Vec::new();
    while seen.is_empty() {
        let response = tokio::time::timeout(Duration::from_secs(10), own.message())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
            .expect("a response");
        seen.extend(
            response
                .events()
                .iter()
                .map(|event| (event.event_type(), event.kv().map(|kv| kv.key().to_vec()))),
        );
    }
    assert_eq!(seen, [(EventType::Put, Some(b"app/9".to_vec()))]);
    let lease = root.lease_grant(60, None).await.expect("a lease").id();
    root.put("secret", "leased", Some(PutOptions::new().with_lease(lease))).await.expect("a put");
    refused(alice.lease_revoke(lease).await, DENIED, "a lease holding a key alice may not write");
    let hijack = Some(PutOptions::new().with_lease(lease));
    refused(alice.put("app/hijack", "v", hijack).await, DENIED, "attaching her key to that lease");
    let keys = Some(LeaseTimeToLiveOptions::new().with_keys());
    refused(alice.lease_time_to_live(lease, keys.clone()).await, DENIED, "listing keys she may not read");
    alice.lease_time_to_live(lease, None).await.expect("the TTL alone");
    let own_lease = alice.lease_grant(60, None).await.expect("any user may grant a lease").id();
    alice.put("app/leased", "v", Some(PutOptions::new().with_lease(own_lease))).await.expect("a put");
    alice.lease_revoke(own_lease).await.expect("a lease on her own keys");
    root.lease_revoke(lease).await.expect("root revokes any lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_authentication_is_on_every_request_is_checked_against_its_user_s_roles() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, endpoints) = started().await;
    let mut root = enable_as_etcd_requires(&endpoints[0]).await;
    add_alice(&mut root).await;
    // Through the other store at once: a refusal there is judged again on a fresh read.
    let mut alice = connect(&endpoints[1], Some(("alice", "alicepw"))).await.expect("alice signs in");
    check_key_value_permissions(&mut alice).await;
    check_management_is_root_s(&mut alice).await;
    check_watches_and_leases(&mut root, &mut alice).await;
    // A grant through the first store counts at the second at once (well within the
    // refresh interval): a refusal there is judged again on the state read now.
    root.role_grant_permission("app", Permission::read_write("new/").with_prefix()).await.expect("granted");
    alice.put("new/x", "at once", None).await.expect("the new grant, through the other store");
    // A revocation through the first store reaches the second within the refresh
    // (a second), with room for a slow refresh read.
    root.role_revoke_permission(
        "app",
        "app/",
        Some(etcd_client::RoleRevokePermissionOptions::new().with_prefix()),
    )
    .await
    .expect("revoked");
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
    loop {
        match alice.put("app/after", "x", None).await {
            Err(error) if error.to_string().contains(DENIED) => break,
            answer => {
                assert!(tokio::time::Instant::now() < deadline, "still allowed after 2.5 s: {answer:?}")
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    root.auth_disable().await.expect("disabled");
    let mut anonymous = connect(&endpoints[1], None).await.expect("a client");
    anonymous.put("secret", "open again", None).await.expect("no checks once disabled");
}

/// A Range of `key` with `token` in its metadata, through the raw gRPC client.
async fn range_with_token(endpoint: &str, token: &str, key: &str) -> Result<(), tonic::Status> {
    let mut kv = KvClient::connect(format!("http://{endpoint}")).await.expect("a connection");
    let mut request = tonic::Request::new(RangeRequest { key: key.into(), ..RangeRequest::default() });
    let token = tonic::metadata::MetadataValue::try_from(token).expect("an ASCII token");
    request.metadata_mut().insert("token", token);
    kv.range(request).await.map(drop)
}

fn invalid_token(answer: Result<(), tonic::Status>, what: &str) {
    let status = answer.expect_err(what);
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{what}: {status:?}");
    assert_eq!(status.message(), "etcdserver: invalid auth token", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refused_when_forged_expired_or_their_user_changed() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, endpoints) = started().await;
    let mut root = enable_as_etcd_requires(&endpoints[0]).await;
    root.role_add("reader").await.expect("a role");
    root.role_grant_permission("reader", Permission::read("k")).await.expect("granted");
    for user in ["bob", "carol"] {
        root.user_add(user, "pw", None).await.expect("added");
        root.user_grant_role(user, "reader").await.expect("granted");
    }
    let mut auth = root.auth_client();
    let bob = auth.authenticate("bob".into(), "pw".into()).await.expect("bob signs in").token().to_string();
    let carol =
        auth.authenticate("carol".into(), "pw".into()).await.expect("carol signs in").token().to_string();
    for endpoint in &endpoints {
        range_with_token(endpoint, &bob, "k").await.expect("a token any store checks");
    }
    refused_status(range_with_token(&endpoints[0], &bob, "other").await, "a key bob may not read");
    let mut forged = bob.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    invalid_token(
        range_with_token(&endpoints[0], &String::from_utf8(forged).expect("ASCII"), "k").await,
        "forged",
    );
    invalid_token(
        range_with_token(&endpoints[0], &bob.replacen("626f62", "726f6f74", 1), "k").await,
        "renamed",
    );
    root.user_change_password("bob", "new").await.expect("changed");
    invalid_token(range_with_token(&endpoints[0], &bob, "k").await, "after bob's password changed");
    root.user_delete("carol").await.expect("deleted");
    invalid_token(range_with_token(&endpoints[0], &carol, "k").await, "after carol was deleted");
    refused(connect(&endpoints[1], Some(("bob", "pw"))).await, "authentication failed", "the old password");
    // Expiry: a raw token dies; etcd's client signs in again and goes on.
    let fresh =
        auth.authenticate("bob".into(), "new".into()).await.expect("bob signs in").token().to_string();
    let options = ConnectOptions::new().with_user("bob", "new").with_auto_token_refresh(true);
    let mut renewing = EtcdClient::connect([endpoints[1].as_str()], Some(options)).await.expect("bob");
    range_with_token(&endpoints[1], &fresh, "k").await.expect("a fresh token");
    tokio::time::sleep(TOKEN_TTL + Duration::from_secs(1)).await;
    invalid_token(range_with_token(&endpoints[1], &fresh, "k").await, "an expired token");
    renewing.get("k", None).await.expect("etcd's client signs in again after expiry");
    let mut status = AuthClient::connect(format!("http://{}", endpoints[1])).await.expect("a connection");
    let answer = status.auth_status(AuthStatusRequest {}).await.expect("the status").into_inner();
    // Twelve changes: root, its role, the grant, enabling, reader, its permission,
    // bob, carol and their grants, bob's password, carol's deletion.
    assert!(answer.enabled && answer.auth_revision == 12, "{answer:?}");
}

fn refused_status(answer: Result<(), tonic::Status>, what: &str) {
    let status = answer.expect_err(what);
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{what}: {status:?}");
    assert_eq!(status.message(), DENIED, "{what}");
}
