//! Mutual TLS on real processes: a cluster whose every link is TLS serves clients with
//! certificates from its CA and refuses, at the handshake, certificates from another
//! CA, for another name, expired or not yet valid; requests a role may not make
//! (forged Raft traffic, registrations, heartbeats and joins from a client, placement
//! by hand from a node) are refused with `PermissionDenied` and change nothing; and
//! certificates rotated under load fail no request.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use common::{Cluster, ONE_AT_A_TIME, wait_for_leader};
use rustls::pki_types::pem::PemObject;
use tessera_server::client::Client;
use tessera_server::proto::pd_client::PdClient;
use tessera_server::proto::raft_transport_client::RaftTransportClient;
use tessera_server::security::issue::{Authority, CertificateRequest};
use tessera_server::security::{Credentials, Dialer, Role, TlsFiles};

/// A CA and the certificates a test hands out, in one directory.
struct Certificates {
    dir: PathBuf,
    authority: Authority,
}

impl Certificates {
    fn new(dir: &Path) -> Certificates {
        let dir = dir.join("tls");
        std::fs::create_dir_all(&dir).expect("a directory for certificates");
        let authority = Authority::generate("test CA").expect("a CA");
        std::fs::write(dir.join("ca.pem"), authority.certificate_pem()).expect("the CA written");
        Certificates { dir, authority }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues `request` into NAME.pem and NAME-key.pem (replacing them by rename, as a
    /// rotation would) and answers the files with this CA.
    fn issue(&self, request: &CertificateRequest) -> TlsFiles {
        issue_into(&self.authority, &self.dir, request, self.ca())
    }

    fn node(&self, name: &str) -> TlsFiles {
        let mut request = CertificateRequest::new(Role::Node, name);
        request.hosts = vec!["127.0.0.1".to_string()];
        self.issue(&request)
    }

    fn dialer(&self, role: Role, name: &str) -> Dialer {
        dialer(self.issue(&CertificateRequest::new(role, name)))
    }
}

fn issue_into(authority: &Authority, dir: &Path, request: &CertificateRequest, ca: PathBuf) -> TlsFiles {
    let issued = authority.issue(request).expect("a certificate");
    let certificate = dir.join(format!("{}.pem", request.name));
    let key = dir.join(format!("{}-key.pem", request.name));
    // Written aside and renamed: a reader sees the old file or the new one, whole.
    for (path, text) in [(&key, &issued.key_pem), (&certificate, &issued.certificate_pem)] {
        let aside = path.with_extension("new");
        std::fs::write(&aside, text).expect("written");
        std::fs::rename(&aside, path).expect("renamed");
    }
    TlsFiles { ca_file: ca, cert_file: certificate, key_file: key }
}

fn dialer(files: TlsFiles) -> Dialer {
    Dialer::tls(Credentials::load(files).expect("the credentials load"))
}

fn flags(files: &TlsFiles) -> Vec<String> {
    let path = |path: &PathBuf| path.display().to_string();
    vec![
        "--tls-ca".into(),
        path(&files.ca_file),
        "--tls-cert".into(),
        path(&files.cert_file),
        "--tls-key".into(),
        path(&files.key_file),
    ]
}

/// A cluster of `stores` whose nodes all use the certificate `node.pem`.
fn tls_cluster(stores: usize) -> (Cluster, Certificates, TlsFiles) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certificates = Certificates::new(dir.path());
    let node = certificates.node("node");
    let mut node_args = flags(&node);
    node_args.extend(["--metrics".into(), "127.0.0.1:0".into()]);
    let cluster = Cluster::start_with_node_args(dir, stores, 1_000_000, node_args);
    (cluster, certificates, node)
}

fn client(cluster: &Cluster, dialer: Dialer) -> Client {
    Client::with_dialer(vec![cluster.pd_address()], Duration::from_secs(30), dialer)
}

/// One call to the driver with `dialer`, with a short deadline: the error's text.
async fn stores_call(address: &str, dialer: &Dialer) -> Result<(), String> {
    let endpoint = dialer.endpoint(address).expect("an endpoint").timeout(Duration::from_secs(5));
    let channel = dialer.connect(&endpoint).await.map_err(|error| format!("connect: {error:?}"))?;
    PdClient::new(channel)
        .stores(tessera_server::proto::StoresRequest {})
        .await
        .map(drop)
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

/// Waits until the driver counted more refused handshakes than `before` (its count is
/// taken a moment after the peer saw the refusal); false if it did not within 10 s.
async fn more_handshake_failures(cluster: &Cluster, before: u64) -> bool {
    for _ in 0..100 {
        if handshake_failures(cluster) > before {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The driver's count of refused handshakes, from its metrics.
fn handshake_failures(cluster: &Cluster) -> u64 {
    let metrics =
        cluster.pd.as_ref().and_then(|pd| pd.metrics.clone()).expect("the driver's metrics address");
    let (_, body) = common::http(&metrics, "GET", "/metrics", "");
    body.lines()
        .filter(|line| line.starts_with("tessera_tls_handshake_failures_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_serves_certified_clients_and_refuses_bad_certificates_at_the_handshake() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (cluster, certificates, _) = tls_cluster(3);
    let good = certificates.dialer(Role::Client, "alice");
    let alice = client(&cluster, good.clone());
    wait_for_leader(&alice).await;
    alice.put(b"greeting", b"hello").await.expect("a put over TLS");
    assert_eq!(alice.get(b"greeting").await.expect("a get"), Some(b"hello".to_vec()));
    let pd = cluster.pd_address();
    stores_call(&pd, &good).await.expect("a certified client is served");

    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 60 * 60);
    let stranger_ca = Authority::generate("another CA").expect("a CA");
    let mut refused = Vec::new();
    // A client certificate from another CA (trusting the right CA itself).
    let files = issue_into(
        &stranger_ca,
        &certificates.dir,
        &CertificateRequest::new(Role::Client, "mallory"),
        certificates.ca(),
    );
    refused.push(("another CA", dialer(files)));
    // Expired, and not yet valid.
    let mut expired = CertificateRequest::new(Role::Client, "expired");
    (expired.not_before, expired.not_after) = (now - 3 * day, now - day);
    refused.push(("expired", dialer(certificates.issue(&expired))));
    let mut early = CertificateRequest::new(Role::Client, "early");
    (early.not_before, early.not_after) = (now + day, now + 3 * day);
    refused.push(("not yet valid", dialer(certificates.issue(&early))));
    // A server the client does not trust: the client's CA is another one.
    let mut files = certificates.issue(&CertificateRequest::new(Role::Client, "distrustful"));
    let stranger_ca_file = certificates.dir.join("stranger-ca.pem");
    std::fs::write(&stranger_ca_file, stranger_ca.certificate_pem()).expect("written");
    files.ca_file = stranger_ca_file;
    refused.push(("a server from another CA", dialer(files)));
    // In the clear.
    refused.push(("no TLS", Dialer::plain()));
    for (what, dialer) in &refused {
        let before = handshake_failures(&cluster);
        let error = stores_call(&pd, dialer).await.expect_err(what);
        assert!(!error.contains("PermissionDenied"), "{what}: refused after the handshake: {error}");
        assert!(
            more_handshake_failures(&cluster, before).await,
            "{what}: the driver counted no refused handshake: {error}"
        );
    }
    // The wrong name: the node's certificate names 127.0.0.1 only, not localhost.
    let port = pd.rsplit(':').next().expect("a port");
    let error =
        stores_call(&format!("localhost:{port}"), &good).await.expect_err("a name the certificate lacks");
    assert!(error.contains("NotValidForName"), "refused for its name at the handshake: {error}");
    stores_call(&pd, &good).await.expect("a certified client is still served");
    // Through the binary: ctl with an admin certificate, and without one.
    let admin = certificates.issue(&CertificateRequest::new(Role::Admin, "operator"));
    let mut args: Vec<String> = flags(&admin);
    args.extend(["get".into(), "greeting".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(common::ctl(&pd, &args).trim(), "hello");
    assert!(common::try_ctl(&pd, &["--timeout", "2", "get", "greeting"]).is_err(), "ctl in the clear");
    // etcd's API over TLS, as etcd's own client reaches it with a client certificate.
    let store = cluster.start_store_with(3, "127.0.0.1:0", &["--etcd-listen".into(), "127.0.0.1:0".into()]);
    let etcd = store.etcd.clone().expect("an etcd address");
    let files = certificates.issue(&CertificateRequest::new(Role::Client, "root"));
    let read = |path: &PathBuf| std::fs::read(path).expect("a PEM file");
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&files.ca_file)))
        .identity(etcd_client::Identity::from_pem(read(&files.cert_file), read(&files.key_file)));
    let options = etcd_client::ConnectOptions::new().with_tls(tls).with_timeout(Duration::from_secs(10));
    let mut etcd_client =
        etcd_client::Client::connect([etcd.as_str()], Some(options)).await.expect("etcd over TLS");
    etcd_client.put("tls-key", "tls-value", None).await.expect("an etcd put over TLS");
    let answer = etcd_client.get("tls-key", None).await.expect("an etcd get over TLS");
    assert_eq!(answer.kvs().first().map(|kv| kv.value().to_vec()), Some(b"tls-value".to_vec()));
    let plain = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(2));
    let refused = match etcd_client::Client::connect([etcd.as_str()], Some(plain)).await {
        Ok(mut client) => client.get("tls-key", None).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "etcd's API answered in the clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_a_role_may_not_make_are_refused_and_change_nothing() {
    use tessera_engine::proto::metadata::{Region, RegionEpoch};
    use tessera_placement::proto::{RegionHeartbeat, RegionHeartbeatsRequest, RegisterStoreRequest};
    let _one = ONE_AT_A_TIME.lock().await;
    let (cluster, certificates, node) = tls_cluster(3);
    let admin = certificates.dialer(Role::Admin, "operator");
    let operator = client(&cluster, admin.clone());
    wait_for_leader(&operator).await;
    operator.put(b"before", b"forgery").await.expect("a put");
    let stores_before = operator.pd().stores_async().await.expect("the stores");
    let region_before = operator.pd().region_by_key_async(b"").await.expect("the first region");
    let victim = stores_before.iter().filter_map(|view| view.store.as_ref()).next().expect("a store").clone();
    let pd = cluster.pd_address();
    for (who, dialer) in
        [("a client", certificates.dialer(Role::Client, "mallory")), ("an admin", admin.clone())]
    {
        let endpoint = dialer.endpoint(&pd).expect("an endpoint").timeout(Duration::from_secs(5));
        let channel = dialer.connect(&endpoint).await.expect("a connection");
        let mut driver = PdClient::new(channel.clone());
        // A registration pointing a real store's id somewhere else.
        let register = RegisterStoreRequest {
            store_id: victim.id,
            address: "127.0.0.1:1".into(),
            labels: Default::default(),
            etcd_address: String::new(),
        };
        let status = driver.register_store(register).await.expect_err("a forged registration");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{who}: {status:?}");
        assert!(status.message().contains("needs a node certificate"), "{who}: {}", status.message());
        // A heartbeat for a region covering everything, with a huge epoch.
        let region = Region {
            id: region_before.region.as_ref().expect("a region").id,
            start_key: Vec::new(),
            end_key: Vec::new(),
            epoch: Some(RegionEpoch { conf_version: u64::MAX / 2, version: u64::MAX / 2 }),
            peers: Vec::new(),
        };
        let heartbeat = RegionHeartbeatsRequest {
            store_id: victim.id,
            regions: vec![RegionHeartbeat { region: Some(region), term: u64::MAX / 2, ..Default::default() }],
        };
        let status = driver.region_heartbeats(heartbeat).await.expect_err("a forged heartbeat");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{who}: {status:?}");
        // Joining the driver as a voter.
        let join = tessera_server::proto::JoinMemberRequest {
            address: "127.0.0.1:1".into(),
            join_token: "t".into(),
        };
        let status = driver.join_member(join).await.expect_err("a forged join");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{who}: {status:?}");
        // Raft traffic to a store.
        let store_endpoint =
            dialer.endpoint(&victim.address).expect("an endpoint").timeout(Duration::from_secs(5));
        let mut transport =
            RaftTransportClient::new(dialer.connect(&store_endpoint).await.expect("a connection"));
        let frame = tessera_engine::proto::frame::StoreFrame {
            from_store: 99,
            to_store: victim.id,
            ..Default::default()
        };
        let status =
            transport.stream(tokio_stream::iter(vec![frame])).await.expect_err("forged raft traffic");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{who}: {status:?}");
    }
    // Placement by hand needs an admin: a node's certificate and a client's are refused.
    for (who, dialer) in [("a node", dialer(node)), ("a client", certificates.dialer(Role::Client, "bob"))] {
        let asked = std::time::Instant::now();
        let error = client(&cluster, dialer).pd().split_region_async(b"m").await.expect_err("a split");
        assert!(error.to_string().contains("needs an admin certificate"), "{who}: {error}");
        // A refusal is final: not retried until the deadline.
        assert!(asked.elapsed() < Duration::from_secs(10), "{who}: refused after {:?}", asked.elapsed());
    }
    operator.pd().split_region_async(b"m").await.expect("an admin splits");
    // Nothing the forgeries said was taken.
    let stores_after = operator.pd().stores_async().await.expect("the stores");
    let address_of = |views: &[tessera_placement::proto::StoreView], id: u64| {
        views
            .iter()
            .filter_map(|view| view.store.as_ref())
            .find(|store| store.id == id)
            .map(|store| store.address.clone())
    };
    assert_eq!(address_of(&stores_after, victim.id), Some(victim.address.clone()));
    assert_eq!(operator.get(b"before").await.expect("a get"), Some(b"forgery".to_vec()));
    operator.put(b"after", b"forgery").await.expect("the cluster still writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_rotated_under_load_fail_no_request_and_serve_new_connections() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (cluster, certificates, node) = tls_cluster(3);
    let client_files = certificates.issue(&CertificateRequest::new(Role::Client, "loader"));
    let loader = Arc::new(client(&cluster, dialer(client_files.clone())));
    wait_for_leader(&loader).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (loader, stop, done, failed) = (loader.clone(), stop.clone(), done.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{worker}-{i}");
                match loader.put(key.as_bytes(), b"v").await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        eprintln!("a put failed during the rotation: {error}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Every node's certificate, and the loader's, replaced in place.
    let old_node = std::fs::read(&node.cert_file).expect("the node certificate");
    certificates.node("node");
    certificates.issue(&CertificateRequest::new(Role::Client, "loader"));
    let new_node = std::fs::read(&node.cert_file).expect("the new node certificate");
    assert_ne!(old_node, new_node);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A new connection gets the new certificate.
    let presented = presented_certificate(&cluster.pd_address(), &client_files).await;
    let expected = rustls::pki_types::CertificateDer::from_pem_slice(&new_node).expect("PEM");
    assert_eq!(presented, expected.as_ref(), "a new connection was served with the old certificate");
    // The load goes on through fresh connections too: a new client dials every node.
    let fresh = client(&cluster, dialer(client_files));
    fresh.put(b"after-rotation", b"v").await.expect("a put on new connections");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a worker");
    }
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(done > 100, "too little load to show anything: {done} puts");
    assert_eq!(failed, 0, "{failed} of {} puts failed during the rotation", done + failed);
}

/// The leaf certificate a node at `address` shows a new connection.
async fn presented_certificate(address: &str, files: &TlsFiles) -> Vec<u8> {
    handshake(address, files).await.expect("a handshake")
}

/// A handshake with `address` as a Tessera process dials; the server's certificate.
async fn handshake(address: &str, files: &TlsFiles) -> std::io::Result<Vec<u8>> {
    let credentials = Credentials::load(files.clone()).expect("credentials");
    let connector = tokio_rustls::TlsConnector::from(credentials.client_config());
    let socket = tokio::net::TcpStream::connect(address).await.expect("a connection");
    let host = address.rsplit_once(':').expect("HOST:PORT").0.to_string();
    let name = rustls::pki_types::ServerName::try_from(host).expect("a name");
    let stream = connector.connect(name, socket).await?;
    Ok(stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a certificate")
        .to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_showing_another_role_s_certificate_is_refused_by_whoever_dials_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certificates = Certificates::new(dir.path());
    let dialing = certificates.issue(&CertificateRequest::new(Role::Client, "app"));
    // Each signed by the cluster's CA, naming the address and good for serving (a
    // server's key usage): a certificate from a company CA (no Tessera role: a client),
    // an admin's, and a node's. Only the role differs.
    let kinds: [(&str, Vec<String>, bool); 3] =
        [("company", Vec::new(), false), ("admin", vec!["admin".into()], false), ("node", Vec::new(), true)];
    for (role, units, serves) in kinds {
        let mut request = CertificateRequest::new(Role::Node, &format!("server-{role}"));
        request.hosts = vec!["127.0.0.1".to_string()];
        request.omit_role = role != "node";
        request.extra_units = units;
        let server = Credentials::load(certificates.issue(&request)).expect("the server's credentials");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = listener.local_addr().expect("an address").to_string();
        let acceptor = tokio_rustls::TlsAcceptor::from(server.server_config());
        let accepting = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("a connection");
            drop(acceptor.accept(socket).await);
        });
        let answer = handshake(&address, &dialing).await;
        match (serves, answer) {
            (true, answer) => assert!(answer.is_ok(), "a node refused: {answer:?}"),
            (false, Ok(_)) => panic!("a server with {role}'s certificate was accepted as a node"),
            (false, Err(error)) => assert!(error.to_string().contains("not a node's"), "{role}: {error}"),
        }
        accepting.abort();
    }
}

/// etcd's client over TLS with the certificate `files`.
async fn etcd_with_certificate(endpoint: &str, files: &TlsFiles) -> etcd_client::Client {
    let read = |path: &PathBuf| std::fs::read(path).expect("a PEM file");
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&files.ca_file)))
        .identity(etcd_client::Identity::from_pem(read(&files.cert_file), read(&files.key_file)));
    let options = etcd_client::ConnectOptions::new().with_tls(tls).with_timeout(Duration::from_secs(10));
    etcd_client::Client::connect([endpoint], Some(options)).await.expect("etcd over TLS")
}

fn denied<T>(answer: Result<T, etcd_client::Error>, what: &str) {
    match answer {
        Err(error) => assert!(error.to_string().contains("etcdserver: permission denied"), "{what}: {error}"),
        Ok(_) => panic!("{what}: answered instead of refused"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_users_are_known_by_their_certificates_and_clients_stay_out_of_reserved_keys() {
    use etcd_client::{Permission, UserAddOptions};
    let _one = ONE_AT_A_TIME.lock().await;
    let (cluster, certificates, _) = tls_cluster(3);
    let store = cluster.start_store_with(3, "127.0.0.1:0", &["--etcd-listen".into(), "127.0.0.1:0".into()]);
    let etcd = store.etcd.clone().expect("an etcd address");
    let as_client = |name: &str| certificates.issue(&CertificateRequest::new(Role::Client, name));
    // Users who sign in by certificate only: root, and carol who may read `pub/`.
    let mut root = etcd_with_certificate(&etcd, &as_client("root")).await;
    root.user_add("root", "", Some(UserAddOptions::new().with_no_pwd())).await.expect("root");
    root.user_grant_role("root", "root").await.expect("granted");
    root.auth_enable().await.expect("enabled");
    root.role_add("reader").await.expect("a role");
    root.role_grant_permission("reader", Permission::read("pub/").with_prefix()).await.expect("granted");
    root.user_add("carol", "", Some(UserAddOptions::new().with_no_pwd())).await.expect("carol");
    root.user_grant_role("carol", "reader").await.expect("granted");
    root.put("pub/a", "1", None).await.expect("root writes as its certificate's name");
    root.put("private", "2", None).await.expect("root writes anywhere");
    let mut carol = etcd_with_certificate(&etcd, &as_client("carol")).await;
    let read = carol.get("pub/a", None).await.expect("carol reads pub/");
    assert_eq!(read.kvs().first().map(|kv| kv.value().to_vec()), Some(b"1".to_vec()));
    denied(carol.put("pub/a", "changed", None).await, "carol may only read");
    denied(carol.get("private", None).await, "outside carol's prefix");
    let mut stranger = etcd_with_certificate(&etcd, &as_client("mallory")).await;
    denied(stranger.get("pub/a", None).await, "a certificate naming no user");
    // The key-value API: a client certificate cannot read or write the etcd API's keys
    // (its data and users) around those permissions; an admin's can read them.
    let native = Arc::new(client(&cluster, certificates.dialer(Role::Client, "mallory")));
    let snapshot = native.snapshot_now().await.expect("a snapshot");
    let reserved = |answer: Result<_, tessera_server::client::ClientError>, what: &str| match answer {
        Err(error) => assert!(error.to_string().contains("reserved"), "{what}: {error}"),
        Ok(_) => panic!("{what}: answered"),
    };
    reserved(snapshot.get(b"\xfeetcd/u/root").await.map(drop), "a user's record");
    reserved(snapshot.scan(b"a", b"", 0, false).await.map(drop), "a scan to the end of the key space");
    let mut forgery = native.begin().await.expect("a transaction");
    forgery.put(b"\xfeetcd/k/pub/a", b"forged").expect("buffered");
    reserved(forgery.commit().await.map(drop), "a write of an etcd key");
    let mut own = native.begin().await.expect("a transaction");
    own.put(b"user-key", b"v").expect("buffered");
    own.commit().await.expect("the client's own keys are its own");
    let admin = Arc::new(client(&cluster, certificates.dialer(Role::Admin, "operator")));
    let stored =
        admin.snapshot_now().await.expect("a snapshot").get(b"\xfeetcd/k/pub/a").await.expect("a read");
    assert!(stored.is_some_and(|value| !value.windows(6).any(|window| window == b"forged")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_from_one_address_do_not_keep_other_peers_from_their_handshakes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (cluster, certificates, _) = tls_cluster(1);
    let pd: std::net::SocketAddr = cluster.pd_address().parse().expect("the driver's address");
    let good = certificates.dialer(Role::Client, "app");
    stores_call(&pd.to_string(), &good).await.expect("the driver serves");
    // More sockets than the driver handshakes at once, from another loopback address,
    // each opened and then silent: without a share per source they would hold every
    // handshake slot for the whole handshake timeout.
    let mut silent = Vec::new();
    for _ in 0..300 {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.bind("127.0.0.2:0".parse().expect("an address")).expect("bound to 127.0.0.2");
        silent.push(socket.connect(pd).await.expect("a connection"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served = tokio::time::timeout(Duration::from_secs(5), stores_call(&pd.to_string(), &good)).await;
    assert!(matches!(served, Ok(Ok(()))), "a certified peer waited behind silent sockets: {served:?}");
    drop(silent);
}
