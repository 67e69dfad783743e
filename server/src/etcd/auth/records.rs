//! The auth state in the store: a header record (`keys::AUTH_KEY`: enabled, revision,
//! the tokens' key), one record per user (`keys::USER_PREFIX` + name) and one per role
//! (`keys::ROLE_PREFIX` + name), in the etcd API's part of the transactional key space.
//!
//! Every change is one transaction that reads the whole state, changes it and writes
//! what differs together with the header, whose revision it raises: two changes always
//! write the header, so they conflict and one runs again on what the other made (no
//! change is lost, the revision counts every change). The state is small (users and
//! roles are counted in the hundreds), so reading all of it is cheap.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message as _;
use tessera_engine::proto::frame::KeyValue;

use super::super::errors::EtcdError;
use super::super::keys;
use super::super::retry;
use super::state::{AuthState, RoleRecord, UserRecord};
use crate::client::{Client, Transaction};

/// The header record.
#[derive(Clone, PartialEq, prost::Message)]
struct AuthHeader {
    #[prost(bool, tag = "1")]
    enabled: bool,
    #[prost(uint64, tag = "2")]
    revision: u64,
    #[prost(bytes = "vec", tag = "3")]
    token_key: Vec<u8>,
}

fn broken(what: &str, error: impl std::fmt::Display) -> EtcdError {
    EtcdError::Internal(format!("the auth state's {what} does not decode: {error}"))
}

fn decode_header(stored: Option<Vec<u8>>) -> Result<AuthHeader, EtcdError> {
    match stored {
        None => Ok(AuthHeader::default()),
        Some(bytes) => AuthHeader::decode(bytes.as_slice()).map_err(|error| broken("header", error)),
    }
}

/// The records of a scan of users or roles, by name.
fn decode_named<Record: prost::Message + Default>(
    pairs: Vec<KeyValue>,
    prefix: &[u8],
) -> Result<BTreeMap<String, Record>, EtcdError> {
    let mut records = BTreeMap::new();
    for pair in pairs {
        let name = pair
            .key
            .strip_prefix(prefix)
            .and_then(|name| std::str::from_utf8(name).ok())
            .ok_or_else(|| broken("record name", String::from_utf8_lossy(&pair.key)))?;
        let record = Record::decode(pair.value.as_slice()).map_err(|error| broken(name, error))?;
        records.insert(name.to_string(), record);
    }
    Ok(records)
}

fn assemble(
    header: Option<Vec<u8>>,
    users: Vec<KeyValue>,
    roles: Vec<KeyValue>,
) -> Result<AuthState, EtcdError> {
    let header = decode_header(header)?;
    Ok(AuthState {
        enabled: header.enabled,
        revision: header.revision,
        token_key: header.token_key,
        users: decode_named::<UserRecord>(users, keys::USER_PREFIX)?,
        roles: decode_named::<RoleRecord>(roles, keys::ROLE_PREFIX)?,
    })
}

/// The auth state now (at a fresh timestamp from the oracle), and that timestamp as a
/// revision.
pub(super) async fn load_now(client: &Arc<Client>) -> Result<(AuthState, i64), EtcdError> {
    let snapshot = client.snapshot_now().await?;
    let ((user_start, user_end), (role_start, role_end)) = (keys::user_keys(), keys::role_keys());
    let (header, users, roles) = futures::try_join!(
        snapshot.get(keys::AUTH_KEY),
        snapshot.scan(&user_start, &user_end, 0, false),
        snapshot.scan(&role_start, &role_end, 0, false),
    )?;
    Ok((assemble(header, users, roles)?, super::super::errors::revision(snapshot.read_ts())?))
}

/// The auth state's revision now: whether a cached state is still current.
pub(super) async fn revision_now(client: &Arc<Client>) -> Result<u64, EtcdError> {
    let snapshot = client.snapshot_now().await?;
    Ok(decode_header(snapshot.get(keys::AUTH_KEY).await?)?.revision)
}

/// The auth state as `transaction` reads it.
async fn read_in(transaction: &Transaction) -> Result<AuthState, EtcdError> {
    let ((user_start, user_end), (role_start, role_end)) = (keys::user_keys(), keys::role_keys());
    let header = transaction.get(keys::AUTH_KEY).await?;
    let users = transaction.scan(&user_start, &user_end, 0, false).await?;
    let roles = transaction.scan(&role_start, &role_end, 0, false).await?;
    assemble(header, users, roles)
}

/// Writes into `transaction` what differs between `before` and `after`, and the header.
fn write_changes(
    transaction: &mut Transaction,
    before: &AuthState,
    after: &AuthState,
) -> Result<(), EtcdError> {
    let header =
        AuthHeader { enabled: after.enabled, revision: after.revision, token_key: after.token_key.clone() };
    transaction.put(keys::AUTH_KEY, &header.encode_to_vec())?;
    write_named(transaction, keys::USER_PREFIX, &before.users, &after.users)?;
    write_named(transaction, keys::ROLE_PREFIX, &before.roles, &after.roles)
}

fn write_named<Record: prost::Message + PartialEq>(
    transaction: &mut Transaction,
    prefix: &[u8],
    before: &BTreeMap<String, Record>,
    after: &BTreeMap<String, Record>,
) -> Result<(), EtcdError> {
    let key = |name: &str| [prefix, name.as_bytes()].concat();
    for name in before.keys().filter(|name| !after.contains_key(*name)) {
        transaction.delete(&key(name))?;
    }
    for (name, record) in after {
        if before.get(name) != Some(record) {
            transaction.put(&key(name), &record.encode_to_vec())?;
        }
    }
    Ok(())
}

/// Applies `change` to the auth state in one transaction (again from a new start
/// after a conflict); answers what `change` answered, the state it made and the
/// revision it committed at. A change that fails writes nothing.
pub(super) async fn change<T>(
    client: &Arc<Client>,
    change: impl Fn(&mut AuthState) -> Result<T, EtcdError>,
) -> Result<(T, AuthState, i64), EtcdError> {
    let change = &change;
    retry::until_no_conflict(|| async move {
        let mut transaction = client.begin().await?;
        let before = read_in(&transaction).await?;
        let mut after = before.clone();
        let answer = change(&mut after)?;
        after.revision = before.revision + 1;
        write_changes(&mut transaction, &before, &after)?;
        let committed_at = retry::commit(transaction).await?;
        Ok((answer, after, committed_at))
    })
    .await
}
