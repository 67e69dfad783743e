//! etcd's Auth service: enabling and disabling authentication, signing in, and
//! managing users, roles and permissions (each change one transaction, `records.rs`,
//! judged on the state that transaction reads, so that a caller's root role taken away
//! by another change cannot still be used for this one).
//!
//! Reads of users and roles (UserGet, RoleList, AuthStatus, ...) read the state now,
//! not this store's copy: what an operator just changed through another store shows.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ring::rand::{SecureRandom, SystemRandom};
use tonic::{Request, Response, Status};

use super::records;
use super::state::{AuthState, Credential};
use super::token::{self, Claims};
use super::{Auth, Presented, Requirement, judge, now_ms};
use crate::etcd::errors::EtcdError;
use crate::etcd_proto::etcdserverpb::auth_server::Auth as AuthService;
use crate::etcd_proto::etcdserverpb::*;

/// The cost of the bcrypt hashes made here: etcd's default (`--bcrypt-cost`).
const BCRYPT_COST: u32 = 10;

/// The longest password taken (bcrypt reads 72 bytes; longer ones are refused when set
/// and fail to sign in, before any hashing).
const MAX_PASSWORD_BYTES: usize = 72;

/// The costs a hash given by a client (`hashedPassword`) may have: a higher one would
/// make each of its user's sign-ins hold a core for seconds to hours.
const GIVEN_HASH_COSTS: std::ops::RangeInclusive<u32> = 4..=14;

/// The etcd Auth service of one store.
pub(crate) struct EtcdAuth {
    auth: Arc<Auth>,
    member_id: u64,
}

type Answer<T> = Result<Response<T>, Status>;

fn random_bytes<const N: usize>() -> Result<[u8; N], EtcdError> {
    let mut bytes = [0; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| EtcdError::Internal("the system's random number generator failed".into()))?;
    Ok(bytes)
}

/// A bcrypt hash that no password matches in practice, checked when a user has no
/// password to check (it does not exist, or signs in by certificate only), so that a
/// refusal takes as long whatever the reason and does not tell which names exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let secret = random_bytes::<32>().unwrap_or([7; 32]);
        // Hashing 32 bytes at a valid cost cannot fail; an empty decoy matches nothing.
        bcrypt::hash(secret, BCRYPT_COST).unwrap_or_default()
    })
}

/// A hash given by a client, if it is a bcrypt hash of a cost allowed.
fn given_hash(hashed: &str) -> Result<Credential, EtcdError> {
    let parts = hashed.parse::<bcrypt::HashParts>().map_err(|error| {
        EtcdError::InvalidPassword(format!("hashedPassword is not a bcrypt hash: {error}"))
    })?;
    if !GIVEN_HASH_COSTS.contains(&parts.get_cost()) {
        return Err(EtcdError::InvalidPassword(format!(
            "hashedPassword's cost {} is outside {GIVEN_HASH_COSTS:?}",
            parts.get_cost()
        )));
    }
    Ok(Credential::Password { hash: hashed.to_string() })
}

impl EtcdAuth {
    pub(crate) fn new(auth: Arc<Auth>, member_id: u64) -> EtcdAuth {
        EtcdAuth { auth, member_id }
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(super::super::response_header(self.member_id, revision))
    }

    /// Applies `change` if the sender of `presented` meets `requirement` on the state
    /// the change reads; this store holds the result at once. Answers the revision.
    async fn change(
        &self,
        presented: &Presented,
        requirement: Requirement<'_>,
        change: impl Fn(&mut AuthState) -> Result<(), EtcdError>,
    ) -> Result<Option<ResponseHeader>, EtcdError> {
        let read_at = Instant::now();
        let ((), state, revision) = records::change(&self.auth.client, |state| {
            judge(Arc::new(state.clone()), presented, requirement)?;
            change(state)
        })
        .await?;
        self.auth.install(state, read_at);
        Ok(self.header(revision))
    }

    /// The state now, for a read by the sender of `presented` if `requirement` allows.
    async fn read(
        &self,
        presented: &Presented,
        requirement: Requirement<'_>,
    ) -> Result<(AuthState, Option<ResponseHeader>), EtcdError> {
        self.auth.check(presented, requirement).await?;
        let (state, at) = records::load_now(&self.auth.client).await?;
        Ok((state, self.header(at)))
    }

    /// Whether `password` matches `hash` (None: nothing can match, checked against
    /// the decoy all the same).
    async fn password_matches(&self, password: &str, hash: Option<String>) -> Result<bool, EtcdError> {
        let password = password.to_string();
        self.auth
            .password_work(move || {
                let matched =
                    bcrypt::verify(&password, hash.as_deref().unwrap_or(decoy_hash())).unwrap_or(false);
                matched && hash.is_some()
            })
            .await
    }

    /// How a user added or changed by `presented`'s sender proves who it is: a hash of
    /// its password (made here, or given as `hashed`), or its certificate only. Only a
    /// sender who may manage users gets a hash made (checked first on this store's
    /// copy of the state, again by the change itself).
    async fn credential_of(
        &self,
        presented: &Presented,
        (password, hashed, no_password): (&str, &str, bool),
    ) -> Result<Credential, EtcdError> {
        self.auth.check(presented, Requirement::Root).await?;
        if no_password {
            return Ok(Credential::CertificateOnly);
        }
        if !hashed.is_empty() {
            return given_hash(hashed);
        }
        if password.is_empty() {
            return Err(EtcdError::InvalidPassword("a password (or no_password) is required".into()));
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(EtcdError::InvalidPassword(format!(
                "a password is at most {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        let password = password.to_string();
        let hash =
            self.auth.password_work(move || bcrypt::non_truncating_hash(password, BCRYPT_COST)).await?;
        let hash = hash
            .map_err(|error| EtcdError::InvalidPassword(format!("the password cannot be hashed: {error}")))?;
        Ok(Credential::Password { hash })
    }

    /// A token for `name` if `password` is its password in `state`.
    async fn sign_in(&self, state: &AuthState, name: &str, password: &str) -> Result<String, EtcdError> {
        if !state.enabled {
            return Err(EtcdError::AuthNotEnabled);
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(EtcdError::AuthFailed);
        }
        let record = state.users.get(name).filter(|record| !record.no_password);
        if !self.password_matches(password, record.map(|record| record.password_hash.clone())).await? {
            return Err(EtcdError::AuthFailed);
        }
        let Some(record) = record else { return Err(EtcdError::AuthFailed) };
        let expires_at_ms = now_ms().saturating_add(self.auth.token_ttl.as_millis() as u64);
        let claims = Claims { user: name.to_string(), generation: record.generation, expires_at_ms };
        Ok(token::sign(&state.token_key, &claims))
    }

    /// Signs in on the current state: this store's copy when the state's revision
    /// now is still its own (one small read), else the state read now, so that a user
    /// added or a password changed through another store counts at once.
    async fn authenticate(&self, request: AuthenticateRequest) -> Result<AuthenticateResponse, EtcdError> {
        let asked_at = Instant::now();
        let held = self.auth.state().await?;
        let current = match records::revision_now(&self.auth.client).await? {
            revision if revision == held.revision => held,
            _ => self.auth.read_since(asked_at).await?,
        };
        let token = self.sign_in(&current, &request.name, &request.password).await?;
        Ok(AuthenticateResponse { header: self.header(0), token })
    }
}

/// `body`'s response, or its failure as etcd's status.
async fn answer<T>(body: impl Future<Output = Result<T, EtcdError>>) -> Answer<T> {
    body.await.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl AuthService for EtcdAuth {
    async fn auth_enable(&self, request: Request<AuthEnableRequest>) -> Answer<AuthEnableResponse> {
        answer(async {
            let token_key = random_bytes::<32>()?.to_vec();
            let header = self
                .change(&Presented::of(&request), Requirement::Root, |state| {
                    if state.enabled { Ok(()) } else { state.enable(token_key.clone()) }
                })
                .await?;
            if !self.auth.tls {
                tracing::warn!(
                    "etcd authentication enabled on a store without TLS: the key-value API is open to anyone who \
                     reaches a store, the users' records with it; give the nodes [tls] settings"
                );
            }
            Ok(AuthEnableResponse { header })
        })
        .await
    }

    async fn auth_disable(&self, request: Request<AuthDisableRequest>) -> Answer<AuthDisableResponse> {
        answer(async {
            let presented = Presented::of(&request);
            let header = self
                .change(&presented, Requirement::Root, |state| {
                    state.disable();
                    Ok(())
                })
                .await?;
            Ok(AuthDisableResponse { header })
        })
        .await
    }

    async fn auth_status(&self, _request: Request<AuthStatusRequest>) -> Answer<AuthStatusResponse> {
        answer(async {
            let (state, at) = records::load_now(&self.auth.client).await?;
            Ok(AuthStatusResponse {
                header: self.header(at),
                enabled: state.enabled,
                auth_revision: state.revision,
            })
        })
        .await
    }

    async fn authenticate(&self, request: Request<AuthenticateRequest>) -> Answer<AuthenticateResponse> {
        answer(self.authenticate(request.into_inner())).await
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Answer<AuthUserAddResponse> {
        answer(async {
            let presented = Presented::of(&request);
            let request = request.into_inner();
            let no_password = request.options.is_some_and(|options| options.no_password);
            let given = (request.password.as_str(), request.hashed_password.as_str(), no_password);
            let credential = self.credential_of(&presented, given).await?;
            let generation = u64::from_be_bytes(random_bytes()?);
            let header = self
                .change(&presented, Requirement::Root, |state| {
                    state.add_user(&request.name, credential.clone(), generation)
                })
                .await?;
            Ok(AuthUserAddResponse { header })
        })
        .await
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Answer<AuthUserGetResponse> {
        answer(async {
            let name = &request.get_ref().name;
            let (state, header) = self.read(&Presented::of(&request), Requirement::SelfOrRoot(name)).await?;
            let record = state.users.get(name).ok_or(EtcdError::UserNotFound)?;
            Ok(AuthUserGetResponse { header, roles: record.roles.clone() })
        })
        .await
    }

    async fn user_list(&self, request: Request<AuthUserListRequest>) -> Answer<AuthUserListResponse> {
        answer(async {
            let (state, header) = self.read(&Presented::of(&request), Requirement::Root).await?;
            Ok(AuthUserListResponse { header, users: state.users.into_keys().collect() })
        })
        .await
    }

    async fn user_delete(&self, request: Request<AuthUserDeleteRequest>) -> Answer<AuthUserDeleteResponse> {
        answer(async {
            let name = &request.get_ref().name;
            let header = self
                .change(&Presented::of(&request), Requirement::Root, |state| state.delete_user(name))
                .await?;
            Ok(AuthUserDeleteResponse { header })
        })
        .await
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Answer<AuthUserChangePasswordResponse> {
        answer(async {
            let presented = Presented::of(&request);
            let request = request.into_inner();
            let given = (request.password.as_str(), request.hashed_password.as_str(), false);
            let credential = self.credential_of(&presented, given).await?;
            let generation = u64::from_be_bytes(random_bytes()?);
            let header = self
                .change(&presented, Requirement::Root, |state| {
                    state.change_password(&request.name, credential.clone(), generation)
                })
                .await?;
            Ok(AuthUserChangePasswordResponse { header })
        })
        .await
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Answer<AuthUserGrantRoleResponse> {
        answer(async {
            let AuthUserGrantRoleRequest { user, role } = request.get_ref();
            let presented = Presented::of(&request);
            let header =
                self.change(&presented, Requirement::Root, |state| state.grant_role(user, role)).await?;
            Ok(AuthUserGrantRoleResponse { header })
        })
        .await
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Answer<AuthUserRevokeRoleResponse> {
        answer(async {
            let AuthUserRevokeRoleRequest { name, role } = request.get_ref();
            let presented = Presented::of(&request);
            let header =
                self.change(&presented, Requirement::Root, |state| state.revoke_role(name, role)).await?;
            Ok(AuthUserRevokeRoleResponse { header })
        })
        .await
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Answer<AuthRoleAddResponse> {
        answer(async {
            let name = &request.get_ref().name;
            let header = self
                .change(&Presented::of(&request), Requirement::Root, |state| state.add_role(name))
                .await?;
            Ok(AuthRoleAddResponse { header })
        })
        .await
    }

    async fn role_get(&self, request: Request<AuthRoleGetRequest>) -> Answer<AuthRoleGetResponse> {
        answer(async {
            let role = &request.get_ref().role;
            let (state, header) =
                self.read(&Presented::of(&request), Requirement::HolderOrRoot(role)).await?;
            let record = state.roles.get(role).ok_or(EtcdError::RoleNotFound)?;
            Ok(AuthRoleGetResponse { header, perm: record.permissions.clone() })
        })
        .await
    }

    async fn role_list(&self, request: Request<AuthRoleListRequest>) -> Answer<AuthRoleListResponse> {
        answer(async {
            let (state, header) = self.read(&Presented::of(&request), Requirement::Root).await?;
            Ok(AuthRoleListResponse { header, roles: state.roles.into_keys().collect() })
        })
        .await
    }

    async fn role_delete(&self, request: Request<AuthRoleDeleteRequest>) -> Answer<AuthRoleDeleteResponse> {
        answer(async {
            let role = &request.get_ref().role;
            let header = self
                .change(&Presented::of(&request), Requirement::Root, |state| state.delete_role(role))
                .await?;
            Ok(AuthRoleDeleteResponse { header })
        })
        .await
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Answer<AuthRoleGrantPermissionResponse> {
        answer(async {
            let AuthRoleGrantPermissionRequest { name, perm } = request.get_ref();
            let presented = Presented::of(&request);
            let header = self
                .change(&presented, Requirement::Root, |state| state.grant_permission(name, perm.clone()))
                .await?;
            Ok(AuthRoleGrantPermissionResponse { header })
        })
        .await
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Answer<AuthRoleRevokePermissionResponse> {
        answer(async {
            let AuthRoleRevokePermissionRequest { role, key, range_end } = request.get_ref();
            let presented = Presented::of(&request);
            let header = self
                .change(&presented, Requirement::Root, |state| state.revoke_permission(role, key, range_end))
                .await?;
            Ok(AuthRoleRevokePermissionResponse { header })
        })
        .await
    }
}
