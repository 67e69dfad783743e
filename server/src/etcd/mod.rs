//! etcd's v3 API, served by every store on an address of its own (`--etcd-listen`), on
//! top of the transaction layer: etcdctl and etcd's client libraries speak to Tessera
//! as to an etcd cluster whose database is many regions.
//!
//! How etcd's model maps onto Tessera's:
//! - **Keys** live in the transactional key space under a prefix the API owns
//!   (`keys.rs`): an etcd range is one range of Tessera keys, over as many regions as
//!   it spans.
//! - **Revisions** are commit timestamps: a write's revision is the commit timestamp of
//!   the transaction that made it, so revisions increase strictly in commit order and
//!   one write transaction has one revision. They are **not dense**: the oracle hands
//!   out timestamps of physical milliseconds and a logical counter, and most of them
//!   commit nothing (reads take them too). etcd's clients compare revisions and resume
//!   from them, which needs order, not density; a client that counts on consecutive
//!   revisions (none of etcd's own do) would not work.
//! - **A response's header revision** is the timestamp its read was taken at (a fresh
//!   one from the oracle), or its write's commit timestamp: everything committed at or
//!   below it can be read, so it is never ahead of what can be read.
//! - **create_revision, version and lease** are stored with each version of a key
//!   (`record.rs`); mod_revision is the version's commit timestamp.
//!
//! - **Transactions**: Put, DeleteRange and Txn are Tessera transactions (`txn/`),
//!   serializable on the keys they read and write; see there for range reads.
//!
//! Services (each says what it does not do yet): KV (`kv.rs`, `txn/`), Watch
//! (`watch.rs`), Lease (`lease/`), Cluster (`cluster.rs`), Maintenance
//! (`maintenance.rs`), Auth (`auth/`: users, roles and permissions on key ranges,
//! checked on every KV, Watch and Lease request while authentication is on). A method not supported answers UNIMPLEMENTED, saying so.
//!
//! Known limit of the transport: HTTP/2's `:authority` must be an authority
//! (`host:port`). etcdctl 3.4 given `http://host:port` endpoints sends the whole URL
//! there, and etcd 3.5.0's client sends `#initially=[...]`; etcd's Go server lets both
//! through, Tessera's (Rust's h2) resets the stream. Such clients must be given
//! `host:port` endpoints; etcd's clients from 3.5.1 on send a valid authority.
//!
//! This module owns the translation between etcd's messages and Tessera's client; it
//! must never reach around the client into a region (every read and write goes through
//! the transaction layer, which owns their consistency).

mod auth;
mod cluster;
mod errors;
mod keys;
mod kv;
mod lease;
mod maintenance;
mod record;
mod retry;
mod txn;
mod watch;

use std::sync::{Arc, Weak};
use std::time::Duration;

use tessera_engine::store::Store;

use crate::client::Client;
use crate::etcd_proto::etcdserverpb::ResponseHeader;
use crate::etcd_proto::etcdserverpb::auth_server::AuthServer;
use crate::etcd_proto::etcdserverpb::cluster_server::ClusterServer;
use crate::etcd_proto::etcdserverpb::kv_server::KvServer;
use crate::etcd_proto::etcdserverpb::lease_server::LeaseServer;
use crate::etcd_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::etcd_proto::etcdserverpb::watch_server::WatchServer;

/// The header of a response from store `member_id` at `revision` (Tessera has no
/// cluster id or Raft term of etcd's kind: both are 0).
fn response_header(member_id: u64, revision: i64) -> ResponseHeader {
    ResponseHeader { cluster_id: 0, member_id, revision, raft_term: 0 }
}

/// The largest request the etcd API takes, as etcd's default
/// (`--max-request-bytes`, 1.5 MiB) plus room for the message around the value.
const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// The largest request the Auth service takes: names, passwords and one permission.
const AUTH_REQUEST_BYTES: usize = 64 * 1024;

/// The etcd API's settings (the `[store]` section's `etcd_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EtcdSettings {
    /// How often a watch that asked for progress notifications gets one.
    pub progress_notify_interval: Duration,
    /// How long a token from Authenticate is valid.
    pub auth_token_ttl: Duration,
}

impl Default for EtcdSettings {
    fn default() -> EtcdSettings {
        EtcdSettings {
            progress_notify_interval: watch::DEFAULT_PROGRESS_NOTIFY_INTERVAL,
            auth_token_ttl: auth::DEFAULT_TOKEN_TTL,
        }
    }
}

/// The etcd services of the store `member_id`, answering through `client`; starts the
/// store's lease expiry, which ends with the store, and the refresh of its copy of the
/// auth state, which ends with the services.
pub(crate) fn router(
    client: Arc<Client>,
    store: Weak<Store>,
    member_id: u64,
    settings: EtcdSettings,
    tls: Option<&Arc<crate::security::Credentials>>,
) -> super::node::Router {
    tokio::spawn(lease::expire_leases(client.clone(), store.clone()));
    let auth = auth::Auth::new(client.clone(), settings.auth_token_ttl, tls.is_some());
    tokio::spawn(auth::keep_current(Arc::downgrade(&auth)));
    super::node::grpc_server(tls)
        .add_service(
            KvServer::new(kv::EtcdKv::new(client.clone(), auth.clone(), member_id))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            WatchServer::new(watch::EtcdWatch::new(
                client.clone(),
                auth.clone(),
                member_id,
                settings.progress_notify_interval,
            ))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(LeaseServer::new(lease::EtcdLease::new(client.clone(), auth.clone(), member_id)))
        .add_service(
            AuthServer::new(auth::EtcdAuth::new(auth, member_id))
                .max_decoding_message_size(AUTH_REQUEST_BYTES),
        )
        .add_service(ClusterServer::new(cluster::EtcdCluster::new(client.clone(), member_id, tls.is_some())))
        .add_service(MaintenanceServer::new(maintenance::EtcdMaintenance::new(client, store, member_id)))
}
