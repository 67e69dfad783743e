//! The auth state (whether authentication is on, the users, the roles and their
//! permissions) and its changes, as etcd defines them; pure, so that every rule is
//! tested without a cluster. `records.rs` stores it; every change runs in one
//! transaction that reads the whole state and raises its revision.
//!
//! The rules, etcd's:
//! - Authentication can be enabled only when a user `root` exists and holds the role
//!   `root`; while it is on, `root` cannot be deleted nor lose that role, and the role
//!   cannot be deleted.
//! - The role `root` may do everything; its holders alone manage users and roles.
//!   The role need not exist to be granted (etcdctl creates it when enabling).
//! - A permission is granted on a key or range; granting the same key and range again
//!   replaces its type; revoking one names its key and range exactly.

use std::collections::BTreeMap;

use super::super::errors::EtcdError;
use crate::etcd_proto::authpb::Permission;

/// The user and the role that may do everything.
pub(crate) const ROOT: &str = "root";

/// A user as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct UserRecord {
    /// The bcrypt hash of the password; empty for a user without one.
    #[prost(string, tag = "1")]
    pub password_hash: String,
    /// The roles granted, sorted.
    #[prost(string, repeated, tag = "2")]
    pub roles: Vec<String>,
    /// The user signs in only by its client certificate.
    #[prost(bool, tag = "3")]
    pub no_password: bool,
    /// Moves when the user is created or its password changes: tokens signed for
    /// another generation are refused.
    #[prost(uint64, tag = "4")]
    pub generation: u64,
}

/// A role as stored: its permissions, sorted by key then range end.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RoleRecord {
    #[prost(message, repeated, tag = "1")]
    pub permissions: Vec<Permission>,
}

/// How a user proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// A bcrypt hash of its password.
    Password { hash: String },
    /// Its client certificate only.
    CertificateOnly,
}

/// The whole auth state at one revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AuthState {
    pub enabled: bool,
    /// Raised by every change (etcd's auth revision).
    pub revision: u64,
    /// What tokens are signed with; made when authentication is first enabled.
    pub token_key: Vec<u8>,
    pub users: BTreeMap<String, UserRecord>,
    pub roles: BTreeMap<String, RoleRecord>,
}

impl AuthState {
    /// Whether `user` holds the role that may do everything.
    pub(crate) fn is_root(&self, user: &str) -> bool {
        self.holds(user, ROOT)
    }

    /// Whether `user` exists and holds `role`.
    pub(crate) fn holds(&self, user: &str, role: &str) -> bool {
        self.users.get(user).is_some_and(|record| record.roles.iter().any(|held| held == role))
    }

    /// Every permission `user`'s roles grant (none for a user that does not exist).
    pub(crate) fn permissions_of(&self, user: &str) -> impl Iterator<Item = &Permission> {
        let roles = self.users.get(user).map(|record| record.roles.as_slice()).unwrap_or_default();
        roles.iter().filter_map(|role| self.roles.get(role)).flat_map(|role| role.permissions.iter())
    }

    /// Turns authentication on with `token_key` if none was made before.
    pub(crate) fn enable(&mut self, token_key: Vec<u8>) -> Result<(), EtcdError> {
        if !self.users.contains_key(ROOT) {
            return Err(EtcdError::RootUserNotExist);
        }
        if !self.is_root(ROOT) {
            return Err(EtcdError::RootRoleNotExist);
        }
        if self.token_key.is_empty() {
            self.token_key = token_key;
        }
        self.enabled = true;
        Ok(())
    }

    pub(crate) fn disable(&mut self) {
        self.enabled = false;
    }

    pub(crate) fn add_user(
        &mut self,
        name: &str,
        credential: Credential,
        generation: u64,
    ) -> Result<(), EtcdError> {
        if name.is_empty() {
            return Err(EtcdError::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(EtcdError::UserAlreadyExists);
        }
        let mut record = UserRecord { generation, ..UserRecord::default() };
        set_credential(&mut record, credential);
        self.users.insert(name.to_string(), record);
        Ok(())
    }

    pub(crate) fn delete_user(&mut self, name: &str) -> Result<(), EtcdError> {
        if self.enabled && name == ROOT {
            return Err(EtcdError::InvalidAuthManagement);
        }
        self.users.remove(name).map(drop).ok_or(EtcdError::UserNotFound)
    }

    pub(crate) fn change_password(
        &mut self,
        name: &str,
        credential: Credential,
        generation: u64,
    ) -> Result<(), EtcdError> {
        let record = self.users.get_mut(name).ok_or(EtcdError::UserNotFound)?;
        set_credential(record, credential);
        record.generation = generation;
        Ok(())
    }

    pub(crate) fn grant_role(&mut self, user: &str, role: &str) -> Result<(), EtcdError> {
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(EtcdError::RoleNotFound);
        }
        let record = self.users.get_mut(user).ok_or(EtcdError::UserNotFound)?;
        if let Err(at) = record.roles.binary_search_by(|held| held.as_str().cmp(role)) {
            record.roles.insert(at, role.to_string());
        }
        Ok(())
    }

    pub(crate) fn revoke_role(&mut self, user: &str, role: &str) -> Result<(), EtcdError> {
        if self.enabled && user == ROOT && role == ROOT {
            return Err(EtcdError::InvalidAuthManagement);
        }
        let record = self.users.get_mut(user).ok_or(EtcdError::UserNotFound)?;
        let at = record.roles.iter().position(|held| held == role).ok_or(EtcdError::RoleNotGranted)?;
        record.roles.remove(at);
        Ok(())
    }

    pub(crate) fn add_role(&mut self, name: &str) -> Result<(), EtcdError> {
        if name.is_empty() {
            return Err(EtcdError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(EtcdError::RoleAlreadyExists);
        }
        self.roles.insert(name.to_string(), RoleRecord::default());
        Ok(())
    }

    /// Deletes role `name` and takes it from every user holding it.
    pub(crate) fn delete_role(&mut self, name: &str) -> Result<(), EtcdError> {
        if self.enabled && name == ROOT {
            return Err(EtcdError::InvalidAuthManagement);
        }
        self.roles.remove(name).ok_or(EtcdError::RoleNotFound)?;
        for record in self.users.values_mut() {
            record.roles.retain(|held| held != name);
        }
        Ok(())
    }

    pub(crate) fn grant_permission(
        &mut self,
        role: &str,
        permission: Option<Permission>,
    ) -> Result<(), EtcdError> {
        let permission = permission.ok_or(EtcdError::PermissionNotGiven)?;
        if crate::etcd_proto::authpb::permission::Type::try_from(permission.perm_type).is_err() {
            return Err(EtcdError::InvalidPermissionType(permission.perm_type));
        }
        let record = self.roles.get_mut(role).ok_or(EtcdError::RoleNotFound)?;
        let place = record.permissions.binary_search_by(|held| {
            (&held.key, &held.range_end).cmp(&(&permission.key, &permission.range_end))
        });
        match place {
            Ok(at) => record.permissions[at] = permission,
            Err(at) => record.permissions.insert(at, permission),
        }
        Ok(())
    }

    pub(crate) fn revoke_permission(
        &mut self,
        role: &str,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), EtcdError> {
        let record = self.roles.get_mut(role).ok_or(EtcdError::RoleNotFound)?;
        let at = record
            .permissions
            .iter()
            .position(|held| held.key == key && held.range_end == range_end)
            .ok_or(EtcdError::PermissionNotGranted)?;
        record.permissions.remove(at);
        Ok(())
    }
}

fn set_credential(record: &mut UserRecord, credential: Credential) {
    match credential {
        Credential::Password { hash } => {
            record.password_hash = hash;
            record.no_password = false;
        }
        Credential::CertificateOnly => {
            record.password_hash.clear();
            record.no_password = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd_proto::authpb::permission::Type as PermissionType;

    fn password() -> Credential {
        Credential::Password { hash: "$2b$04$hash".into() }
    }

    fn permission(key: &str, range_end: &str, kind: PermissionType) -> Option<Permission> {
        Some(Permission { perm_type: kind as i32, key: key.into(), range_end: range_end.into() })
    }

    #[test]
    fn enabling_needs_a_root_user_holding_the_root_role() {
        let mut state = AuthState::default();
        assert_eq!(state.enable(vec![1]), Err(EtcdError::RootUserNotExist));
        state.add_user(ROOT, password(), 1).expect("added");
        assert_eq!(state.enable(vec![1]), Err(EtcdError::RootRoleNotExist));
        state.grant_role(ROOT, ROOT).expect("the root role needs no record to be granted");
        state.enable(vec![1]).expect("enabled");
        assert!(state.enabled && state.is_root(ROOT));
        state.disable();
        state.enable(vec![2]).expect("enabled again");
        assert_eq!(state.token_key, vec![1], "the key made first stays: tokens survive a disable");
    }

    #[test]
    fn root_cannot_be_taken_apart_while_authentication_is_on() {
        let mut state = AuthState::default();
        state.add_user(ROOT, password(), 1).expect("added");
        state.add_role(ROOT).expect("added");
        state.grant_role(ROOT, ROOT).expect("granted");
        state.enable(vec![1]).expect("enabled");
        assert_eq!(state.delete_user(ROOT), Err(EtcdError::InvalidAuthManagement));
        assert_eq!(state.revoke_role(ROOT, ROOT), Err(EtcdError::InvalidAuthManagement));
        assert_eq!(state.delete_role(ROOT), Err(EtcdError::InvalidAuthManagement));
        state.disable();
        state.revoke_role(ROOT, ROOT).expect("allowed while off");
        assert!(!state.is_root(ROOT));
    }

    #[test]
    fn users_and_roles_are_named_once_and_found_by_name() {
        let mut state = AuthState::default();
        assert_eq!(state.add_user("", password(), 1), Err(EtcdError::UserEmpty));
        assert_eq!(state.add_role(""), Err(EtcdError::RoleEmpty));
        state.add_user("alice", password(), 1).expect("added");
        assert_eq!(state.add_user("alice", password(), 2), Err(EtcdError::UserAlreadyExists));
        assert_eq!(state.grant_role("alice", "reader"), Err(EtcdError::RoleNotFound));
        state.add_role("reader").expect("added");
        assert_eq!(state.add_role("reader"), Err(EtcdError::RoleAlreadyExists));
        assert_eq!(state.grant_role("bob", "reader"), Err(EtcdError::UserNotFound));
        state.grant_role("alice", "reader").expect("granted");
        state.grant_role("alice", "reader").expect("granting again changes nothing");
        assert_eq!(state.users["alice"].roles, ["reader"]);
        assert_eq!(state.revoke_role("alice", "writer"), Err(EtcdError::RoleNotGranted));
        state.delete_role("reader").expect("deleted");
        assert!(state.users["alice"].roles.is_empty(), "a deleted role leaves its holders");
        assert_eq!(state.delete_user("bob"), Err(EtcdError::UserNotFound));
        state.change_password("alice", Credential::CertificateOnly, 5).expect("changed");
        assert!(state.users["alice"].no_password && state.users["alice"].generation == 5);
    }

    #[test]
    fn permissions_are_replaced_by_key_and_range_and_revoked_exactly() {
        let mut state = AuthState::default();
        state.add_role("r").expect("added");
        assert_eq!(state.grant_permission("r", None), Err(EtcdError::PermissionNotGiven));
        let unknown = Some(Permission { perm_type: 7, key: b"a".to_vec(), range_end: Vec::new() });
        assert_eq!(state.grant_permission("r", unknown), Err(EtcdError::InvalidPermissionType(7)));
        assert_eq!(
            state.grant_permission("missing", permission("a", "", PermissionType::Read)),
            Err(EtcdError::RoleNotFound)
        );
        state.grant_permission("r", permission("b", "c", PermissionType::Read)).expect("granted");
        state.grant_permission("r", permission("a", "", PermissionType::Read)).expect("granted");
        state.grant_permission("r", permission("b", "c", PermissionType::Write)).expect("replaced");
        let held = &state.roles["r"].permissions;
        assert_eq!(held.len(), 2);
        assert_eq!((held[0].key.as_slice(), held[1].perm_type()), (&b"a"[..], PermissionType::Write));
        assert_eq!(state.revoke_permission("r", b"b", b"d"), Err(EtcdError::PermissionNotGranted));
        state.revoke_permission("r", b"b", b"c").expect("revoked");
        assert_eq!(state.roles["r"].permissions.len(), 1);
    }

    #[test]
    fn a_user_s_permissions_are_every_role_s_together() {
        let mut state = AuthState::default();
        state.add_user("alice", password(), 1).expect("added");
        for role in ["one", "two"] {
            state.add_role(role).expect("added");
            state.grant_permission(role, permission(role, "", PermissionType::Read)).expect("granted");
            state.grant_role("alice", role).expect("granted");
        }
        assert_eq!(state.permissions_of("alice").count(), 2);
        assert_eq!(state.permissions_of("nobody").count(), 0);
        assert!(!state.is_root("alice"));
    }
}
