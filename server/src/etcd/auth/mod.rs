//! etcd's authentication and permissions: users with passwords (bcrypt hashes) or
//! client certificates, roles holding read / write permissions on key ranges, and the
//! Auth service that manages them (`service.rs`).
//!
//! - **Who asks**: a token from Authenticate in the request's `token` metadata
//!   (`token.rs`), else the CN of the client's certificate when the etcd address
//!   speaks TLS (etcd's `--client-cert-auth`), else nobody, which is refused while
//!   authentication is on (`etcdserver: user name is empty`).
//! - **What it may do**: every KV, Watch and Lease request is checked against the
//!   permissions of its user's roles (`permissions.rs`) while authentication is on:
//!   a Range needs read on its range, a Put write on its key, a Txn read on what its
//!   compares name and whatever each operation of both branches needs, a watch read on
//!   its range, a lease's revocation write on every key attached to it. The role
//!   `root` may do everything, and its holders alone manage users and roles.
//! - **Where the state lives**: in the store (`records.rs`), the same for every store;
//!   each store keeps it in memory to check requests without a read. A change made
//!   through a store is in its memory when the call returns; the other stores see it
//!   within [`REFRESH_INTERVAL`] (each asks for the state's revision that often, and
//!   reads the whole state when it moved), and a refusal is judged again on a fresh
//!   read, so a grant counts everywhere at once. A permission revoked through one
//!   store may still be honoured by another for up to that interval (up to
//!   [`MAX_STALENESS`] while its refreshes fail; past that it reads the state for each
//!   request or refuses), as etcd's JWT tokens outlive a revocation until they expire.
//!
//! Not checked, as in etcd: Cluster's MemberList and Maintenance's Status (what
//! `etcdctl endpoint status` needs). A Put attaching a key to a lease needs write on
//! the keys already attached to it too, as in etcd (inside the put's transaction), or
//! a user could keep a lease's owner from revoking it. A KeepAlive stream is checked
//! when it opens and a watch when it is created: they run on after their token
//! expires or their user loses the permission, as in etcd.
//!
//! **Only with TLS does this protect anything**: in the clear, the key-value API is
//! open to whoever reaches a store, and the auth records (the tokens' key, password
//! hashes) with it; over TLS a client certificate cannot reach them
//! (`crate::service::reserved`), while nodes and admins can (an admin could forge any
//! user's token: admins are the operators). Enabling authentication without TLS
//! works, as in etcd, and logs a warning saying so.
//!
//! A store that has not read the state yet reads it before answering; if it cannot,
//! the request fails as unavailable (retryable), never unchecked.
//!
//! This module decides who may do what; it must never let a request through on a
//! state it could not read, and never keeps a password, only its hash.

mod permissions;
mod records;
mod service;
mod state;
mod token;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use tonic::Request;

pub(crate) use permissions::Needs;
pub(crate) use service::EtcdAuth;
use state::AuthState;

use super::errors::EtcdError;
use crate::client::Client;
use crate::security::Role;
use crate::security::listener::PeerConnectInfo;

/// How often a store asks whether the auth state changed elsewhere.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// How old a store's copy may get (its refreshes failing) before requests read the
/// state themselves, and fail as unavailable if they cannot: a revocation is never
/// ignored for longer than this.
const MAX_STALENESS: Duration = Duration::from_secs(10);

/// Sign-ins and password changes waiting for their bcrypt work on one store.
const MAX_PASSWORD_WORK_WAITING: usize = 64;

/// How long a token is valid by default (etcd's default for its tokens).
pub(crate) const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);

/// What a request presented to say who sent it, before the auth state is consulted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Presented {
    token: Option<String>,
    certificate_name: Option<String>,
}

impl Presented {
    /// What `request` carries: its `token` metadata, and its connection's certificate
    /// name when that is a client's certificate (a node's or an admin's CN names a
    /// Tessera process or operator, not an etcd user).
    pub(crate) fn of<T>(request: &Request<T>) -> Presented {
        let token =
            request.metadata().get("token").map(|value| value.to_str().unwrap_or_default().to_string());
        let certificate_name = request
            .extensions()
            .get::<PeerConnectInfo>()
            .filter(|info| info.identity.role == Role::Client)
            .map(|info| info.identity.name.clone());
        Presented { token, certificate_name }
    }
}

/// What a request must be allowed, beyond coming from a known user.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Requirement<'a> {
    /// Nothing more (a lease's grant, a compaction).
    Authenticated,
    /// Reads and writes of key ranges.
    Access(&'a Needs),
    /// The root role (managing users and roles).
    Root,
    /// Being the user named, or root (reading a user).
    SelfOrRoot(&'a str),
    /// Holding the role named, or root (reading a role).
    HolderOrRoot(&'a str),
}

/// A request found to come from someone, with the state it was judged by.
pub(crate) struct Authorized {
    state: Arc<AuthState>,
    /// None while authentication is off: everything is allowed.
    user: Option<String>,
}

impl Authorized {
    /// Whether the sender's permissions limit it (authentication is on and it does not
    /// hold the root role): checks that need a read can be skipped otherwise.
    pub(crate) fn is_limited(&self) -> bool {
        self.user.as_deref().is_some_and(|user| !self.state.is_root(user))
    }

    /// Refuses unless the user may do all of `needs`.
    pub(crate) fn require(&self, needs: &Needs) -> Result<(), EtcdError> {
        self.check(Requirement::Access(needs))
    }

    fn check(&self, requirement: Requirement<'_>) -> Result<(), EtcdError> {
        let Some(user) = &self.user else { return Ok(()) };
        let state = &self.state;
        let allowed = state.is_root(user)
            || match requirement {
                Requirement::Authenticated => true,
                Requirement::Access(needs) => needs.allowed_by(state.permissions_of(user)),
                Requirement::Root => false,
                Requirement::SelfOrRoot(name) => user == name,
                Requirement::HolderOrRoot(role) => state.holds(user, role),
            };
        if allowed { Ok(()) } else { Err(EtcdError::PermissionDenied) }
    }
}

/// The state a store holds, and when it was read.
struct Held {
    state: Arc<AuthState>,
    read_at: Instant,
}

/// One store's view of the auth state, and what it judges requests by.
pub(crate) struct Auth {
    client: Arc<Client>,
    /// None until first read.
    held: RwLock<Option<Held>>,
    /// One read of the state at a time: requests that need one share it.
    reading: tokio::sync::Mutex<()>,
    token_ttl: Duration,
    /// bcrypt hashes made or checked at once: each costs tens of milliseconds of a
    /// core, so a flood of Authenticate calls queues here instead of taking every
    /// core. A permit is held by the blocking task itself, so that a caller who gives
    /// up does not free it while the hash still runs.
    password_work: Arc<tokio::sync::Semaphore>,
    /// Places in the queue for `password_work`.
    password_waiting: tokio::sync::Semaphore,
    /// Whether the store's links are TLS (without it the key-value API is open to
    /// anyone, auth records included: enabling authentication says so).
    tls: bool,
}

impl Auth {
    pub(crate) fn new(client: Arc<Client>, token_ttl: Duration, tls: bool) -> Arc<Auth> {
        Arc::new(Auth {
            client,
            held: RwLock::new(None),
            reading: tokio::sync::Mutex::new(()),
            token_ttl,
            password_work: Arc::new(tokio::sync::Semaphore::new(2)),
            password_waiting: tokio::sync::Semaphore::new(MAX_PASSWORD_WORK_WAITING),
            tls,
        })
    }

    /// Runs `work` (a bcrypt hash or check) on the blocking pool, at most two at once
    /// and [`MAX_PASSWORD_WORK_WAITING`] waiting (past it: unavailable, retryable).
    async fn password_work<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, EtcdError> {
        let _waiting = self.password_waiting.try_acquire().map_err(|_| {
            EtcdError::Unavailable("too many sign-ins and password changes in progress on this store".into())
        })?;
        let permit = self
            .password_work
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| EtcdError::Internal("the password work queue closed".into()))?;
        let running = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        });
        running.await.map_err(|error| EtcdError::Internal(format!("password work failed: {error}")))
    }

    fn held(&self) -> Option<Arc<AuthState>> {
        self.held.read().as_ref().map(|held| held.state.clone())
    }

    /// The state, read from the store first if this store has none yet or its copy
    /// is older than [`MAX_STALENESS`].
    async fn state(&self) -> Result<Arc<AuthState>, EtcdError> {
        let fresh = self
            .held
            .read()
            .as_ref()
            .filter(|held| held.read_at.elapsed() <= MAX_STALENESS)
            .map(|held| held.state.clone());
        match fresh {
            Some(state) => Ok(state),
            None => self.read_since(Instant::now()).await,
        }
    }

    /// Notes that the state held was found current by a read begun at `read_at`.
    fn confirm(&self, revision: u64, read_at: Instant) {
        if let Some(held) = self.held.write().as_mut()
            && held.state.revision == revision
            && held.read_at < read_at
        {
            held.read_at = read_at;
        }
    }

    /// A state read from the store at or after `since`: the one held if it is that
    /// recent (another request read it meanwhile), else read now.
    async fn read_since(&self, since: Instant) -> Result<Arc<AuthState>, EtcdError> {
        let _reading = self.reading.lock().await;
        if let Some(held) = self.held.read().as_ref()
            && held.read_at >= since
        {
            return Ok(held.state.clone());
        }
        let read_at = Instant::now();
        let (state, _) = records::load_now(&self.client)
            .await
            .map_err(|error| EtcdError::Unavailable(format!("the auth state could not be read: {error}")))?;
        Ok(self.install(state, read_at))
    }

    /// Keeps `state` unless a newer one is held; answers the one held.
    fn install(&self, state: AuthState, read_at: Instant) -> Arc<AuthState> {
        let mut held = self.held.write();
        match held.as_ref() {
            Some(current) if current.state.revision > state.revision => current.state.clone(),
            _ => {
                let state = Arc::new(state);
                *held = Some(Held { state: state.clone(), read_at });
                state
            }
        }
    }

    /// Judges who presented `presented` and whether it may do what `requirement`
    /// says. A refusal is judged again on a state read now, so that a grant made
    /// through another store counts at once (revocations wait for the refresh).
    pub(crate) async fn check(
        &self,
        presented: &Presented,
        requirement: Requirement<'_>,
    ) -> Result<Authorized, EtcdError> {
        let asked_at = Instant::now();
        let held = self.state().await?;
        match judge(held.clone(), presented, requirement) {
            Err(refusal) if refusal.is_refusal_by_auth() && !forged_token(&held, presented) => {
                judge(self.read_since(asked_at).await?, presented, requirement)
            }
            answer => answer,
        }
    }

    /// Judges `request`'s sender against `requirement`.
    pub(crate) async fn check_request<T>(
        &self,
        request: &Request<T>,
        requirement: Requirement<'_>,
    ) -> Result<Authorized, EtcdError> {
        self.check(&Presented::of(request), requirement).await
    }
}

/// Whether `presented` carries a token that the key never signed, or that expired:
/// no fresher state changes that (the key, once made, is kept), so it is not worth a
/// read of the state.
fn forged_token(state: &AuthState, presented: &Presented) -> bool {
    state.enabled
        && presented
            .token
            .as_deref()
            .is_some_and(|token| token::verify(&state.token_key, token, now_ms()).is_err())
}

/// Who presented `presented`, by `state`, and whether `requirement` allows it.
fn judge(
    state: Arc<AuthState>,
    presented: &Presented,
    requirement: Requirement<'_>,
) -> Result<Authorized, EtcdError> {
    if !state.enabled {
        return Ok(Authorized { state, user: None });
    }
    let user = match (&presented.token, &presented.certificate_name) {
        (Some(token), _) => {
            let claims = token::verify(&state.token_key, token, now_ms())?;
            let current = state.users.get(&claims.user).map(|record| record.generation);
            if current != Some(claims.generation) {
                return Err(EtcdError::InvalidAuthToken);
            }
            claims.user
        }
        (None, Some(name)) if !name.is_empty() => name.clone(),
        (None, _) => return Err(EtcdError::UserEmpty),
    };
    if !state.users.contains_key(&user) {
        return Err(EtcdError::PermissionDenied);
    }
    let authorized = Authorized { state, user: Some(user) };
    authorized.check(requirement)?;
    Ok(authorized)
}

/// Milliseconds since the Unix epoch by this store's clock.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// Keeps a store's auth state current until the store's etcd API is gone: every
/// [`REFRESH_INTERVAL`], reads the state's revision and, when it moved, the state.
pub(crate) async fn keep_current(auth: Weak<Auth>) {
    loop {
        tokio::time::sleep(REFRESH_INTERVAL).await;
        let Some(auth) = auth.upgrade() else { return };
        if let Err(error) = refresh(&auth).await {
            tracing::debug!(%error, "the etcd API's auth state could not be refreshed; trying again");
        }
    }
}

/// One refresh: the state's revision, and the whole state only when it moved (or
/// none is held yet).
async fn refresh(auth: &Auth) -> Result<(), EtcdError> {
    let read_at = Instant::now();
    if let Some(held) = auth.held() {
        let now = records::revision_now(&auth.client).await?;
        if now == held.revision {
            auth.confirm(now, read_at);
            return Ok(());
        }
    }
    let (state, _) = records::load_now(&auth.client).await?;
    auth.install(state, read_at);
    Ok(())
}
