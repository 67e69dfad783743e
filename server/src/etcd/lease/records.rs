//! What a lease is in the store, and the transactions that change it.
//!
//! - **The record** (`keys::lease_key`): the TTL it was granted and its deadline, in
//!   the oracle's milliseconds. Written by Grant and by each keep-alive, deleted by
//!   Revoke (and by expiry, which is a Revoke).
//! - **The attachments** (`keys::attached_key`): one empty key per etcd key attached
//!   to the lease, so that Revoke and TimeToLive find them with one scan. Kept in step
//!   with the keys' own records by every Put and DeleteRange (`txn/`).
//! - **The guards** (`keys::guard_key`): [`GUARDS`] keys per lease. A Put attaching a
//!   key locks one of them, chosen by the key; Revoke writes them all. A Put whose
//!   start is before a Revoke's commit and whose commit is after it (it saw the lease,
//!   the Revoke did not see its attachment) then conflicts with it on that guard, and
//!   one of the two runs again and sees the other: a key is never left attached to a
//!   revoked lease. Puts on one lease lock different guards unless their keys hash
//!   alike, so that writers sharing a lease (Kubernetes' events) do not all queue on
//!   one key, and keep-alives, which write the record, do not conflict with them.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use prost::Message as _;
use tessera_engine::timestamp::Timestamp;

use super::super::auth::{Authorized, Needs};
use super::super::errors::{EtcdError, revision};
use super::super::keys;
use super::super::record::StoredValue;
use super::super::retry;
use crate::client::{Client, ClientError, Transaction};

/// Guards per lease (see the module's docs).
pub(super) const GUARDS: u8 = 16;

/// The shortest TTL a lease is given: a shorter one asked for is raised to it, as
/// etcd raises it to its own minimum (one and a half election timeouts).
pub(super) const MIN_TTL_SECONDS: i64 = 2;

/// The longest TTL a lease may ask for, as etcd's.
pub(super) const MAX_TTL_SECONDS: i64 = 9_000_000_000;

/// A lease as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct LeaseRecord {
    #[prost(int64, tag = "1")]
    pub granted_ttl_seconds: i64,
    /// When the lease expires unless kept alive, in the oracle's milliseconds.
    #[prost(uint64, tag = "2")]
    pub deadline_milliseconds: u64,
}

impl LeaseRecord {
    fn granted_at(now: Timestamp, ttl_seconds: i64) -> LeaseRecord {
        let ttl_milliseconds = u64::try_from(ttl_seconds).unwrap_or(0).saturating_mul(1000);
        LeaseRecord {
            granted_ttl_seconds: ttl_seconds,
            deadline_milliseconds: now.physical_milliseconds().saturating_add(ttl_milliseconds),
        }
    }

    /// Lease `id`'s record stored as `bytes`; not decoding is a broken record.
    fn decode_stored(id: i64, bytes: &[u8]) -> Result<LeaseRecord, EtcdError> {
        LeaseRecord::decode(bytes)
            .map_err(|error| EtcdError::Internal(format!("lease {id}'s record does not decode: {error}")))
    }

    /// Whether the lease is past its deadline at `now`, the deadline held at least to
    /// `not_before_milliseconds` (a keep-alive may have come in since it was seen past).
    pub(super) fn expired(&self, now: Timestamp, not_before_milliseconds: u64) -> bool {
        now.physical_milliseconds() > self.deadline_milliseconds.max(not_before_milliseconds)
    }

    /// Whole seconds left at `now`, rounded up (etcd's TimeToLive); 0 once past.
    pub(super) fn seconds_left(&self, now: Timestamp) -> i64 {
        let left_milliseconds = self.deadline_milliseconds.saturating_sub(now.physical_milliseconds());
        i64::try_from(left_milliseconds.div_ceil(1000)).unwrap_or(i64::MAX)
    }
}

/// The record of lease `id` as `transaction` reads it.
pub(super) async fn read_lease(transaction: &Transaction, id: i64) -> Result<Option<LeaseRecord>, EtcdError> {
    match transaction.get(&keys::lease_key(id)).await? {
        Some(bytes) => LeaseRecord::decode_stored(id, &bytes).map(Some),
        None => Ok(None),
    }
}

/// Grants lease `id` (0: a new id, the oracle's timestamp at the grant, unique in the
/// cluster) for `ttl_seconds`; answers the id, the TTL given and the revision.
pub(super) async fn grant(
    client: &Arc<Client>,
    id: i64,
    ttl_seconds: i64,
) -> Result<(i64, i64, i64), EtcdError> {
    if ttl_seconds > MAX_TTL_SECONDS {
        return Err(EtcdError::LeaseTtlTooLarge);
    }
    if id < 0 {
        return Err(EtcdError::LeaseNotFound);
    }
    let ttl_seconds = ttl_seconds.max(MIN_TTL_SECONDS);
    retry::until_no_conflict(|| async move {
        let mut transaction = client.begin().await?;
        let now = transaction.start_ts().await?;
        let granted = if id == 0 { revision(now)? } else { id };
        if read_lease(&transaction, granted).await?.is_some() {
            // A chosen id that happens to be this timestamp: the next one will do.
            return Err(if id == 0 { EtcdError::Conflict } else { EtcdError::LeaseExists });
        }
        let record = LeaseRecord::granted_at(now, ttl_seconds);
        transaction.put(&keys::lease_key(granted), &record.encode_to_vec())?;
        Ok((granted, ttl_seconds, retry::commit(transaction).await?))
    })
    .await
}

/// Keeps lease `id` alive for its granted TTL from now; answers that TTL (None: no
/// such lease) and the revision.
pub(super) async fn renew(client: &Arc<Client>, id: i64) -> Result<(Option<i64>, i64), EtcdError> {
    retry::until_no_conflict(|| async move {
        let mut transaction = client.begin().await?;
        let Some(record) = read_lease(&transaction, id).await? else {
            return Ok((None, revision(transaction.start_ts().await?)?));
        };
        let now = transaction.start_ts().await?;
        let renewed = LeaseRecord::granted_at(now, record.granted_ttl_seconds);
        transaction.put(&keys::lease_key(id), &renewed.encode_to_vec())?;
        Ok((Some(record.granted_ttl_seconds), retry::commit(transaction).await?))
    })
    .await
}

/// When a revoke applies.
#[derive(Clone, Copy)]
pub(super) enum Revoke<'a> {
    /// Whatever the lease's deadline (etcd's LeaseRevoke), by a caller who must be
    /// allowed to delete every key attached (checked in the revoke's transaction).
    Now { by: &'a Authorized },
    /// Only if the lease is still past its deadline at the transaction's start, held
    /// at least to `not_before_milliseconds` (a keep-alive may have come in since the
    /// lease was found expired).
    IfExpired { not_before_milliseconds: u64 },
}

/// Revokes lease `id`: deletes it and every key attached to it, at one revision.
/// Answers the revision, or None when `when` found the lease alive.
pub(super) async fn revoke(
    client: &Arc<Client>,
    id: i64,
    when: Revoke<'_>,
) -> Result<Option<i64>, EtcdError> {
    retry::until_no_conflict(|| async move {
        let mut transaction = client.begin().await?;
        let Some(record) = read_lease(&transaction, id).await? else {
            return Err(EtcdError::LeaseNotFound);
        };
        if let Revoke::IfExpired { not_before_milliseconds } = when
            && !record.expired(transaction.start_ts().await?, not_before_milliseconds)
        {
            return Ok(None);
        }
        let (start, end) = keys::attached_keys(id);
        let attachments = transaction.scan_committed_versions(&start, &end, 0, false).await?;
        if let Revoke::Now { by } = when {
            let attached: Vec<&[u8]> = attachments
                .iter()
                .filter_map(|attachment| keys::attached_etcd_key(id, &attachment.key))
                .collect();
            by.require(&Needs::write_keys(&attached))?;
        }
        for attachment in attachments {
            detach_or_delete(&mut transaction, id, &attachment.key).await?;
        }
        transaction.delete(&keys::lease_key(id))?;
        for number in 0..GUARDS {
            transaction.delete(&keys::guard_key(id, number))?;
        }
        Ok(Some(retry::commit(transaction).await?))
    })
    .await
}

/// Removes an attachment of lease `id`, and the key it names if the key is still
/// attached to the lease (an attachment is removed with the key's change of lease, so
/// a stale one is a broken invariant; it is cleaned all the same).
async fn detach_or_delete(
    transaction: &mut Transaction,
    id: i64,
    attachment: &[u8],
) -> Result<(), EtcdError> {
    let Some(etcd_key) = keys::attached_etcd_key(id, attachment) else {
        return Err(EtcdError::Internal("a lease's attachment scan met another lease's key".into()));
    };
    let stored_key = keys::stored_key(etcd_key);
    if let Some(current) = transaction.get(&stored_key).await?
        && StoredValue::decode_stored(&current)?.lease == id
    {
        transaction.delete(&stored_key)?;
    }
    transaction.delete(attachment)?;
    Ok(())
}

/// The etcd keys attached to lease `id` at the transaction's start.
pub(crate) async fn attached(transaction: &Transaction, id: i64) -> Result<Vec<Vec<u8>>, EtcdError> {
    let (start, end) = keys::attached_keys(id);
    let attachments = transaction.scan_committed_versions(&start, &end, 0, false).await?;
    Ok(attachments
        .iter()
        .filter_map(|attachment| keys::attached_etcd_key(id, &attachment.key).map(<[u8]>::to_vec))
        .collect())
}

/// Every lease at the transaction's start, with its record.
pub(super) async fn every_lease(transaction: &Transaction) -> Result<Vec<(i64, LeaseRecord)>, EtcdError> {
    let (start, end) = keys::lease_keys();
    let mut leases = Vec::new();
    for stored in transaction.scan_committed_versions(&start, &end, 0, false).await? {
        let Some(id) = keys::lease_id(&stored.key) else {
            return Err(EtcdError::Internal("a lease scan met a key of another kind".into()));
        };
        leases.push((id, LeaseRecord::decode_stored(id, &stored.value)?));
    }
    Ok(leases)
}

/// Within a transaction writing etcd key `key`: checks that lease `id` exists and
/// locks the key's guard of it (see the module's docs), so that the write and a
/// revoke of the lease are ordered.
pub(crate) async fn guard_attachment(
    transaction: &mut Transaction,
    id: i64,
    key: &[u8],
) -> Result<(), EtcdError> {
    if id <= 0 || read_lease(transaction, id).await?.is_none() {
        return Err(EtcdError::LeaseNotFound);
    }
    transaction.lock_keys([keys::guard_key(id, guard_of(key))])?;
    Ok(())
}

/// Within a transaction: moves etcd key `key` from lease `from` to lease `to` (0:
/// none) in the attachment lists.
pub(crate) fn move_attachment(
    transaction: &mut Transaction,
    key: &[u8],
    from: i64,
    to: i64,
) -> Result<(), ClientError> {
    if from == to {
        return Ok(());
    }
    if from != 0 {
        transaction.delete(&keys::attached_key(from, key))?;
    }
    if to != 0 {
        transaction.put(&keys::attached_key(to, key), b"")?;
    }
    Ok(())
}

/// Which of a lease's guards a key locks.
fn guard_of(key: &[u8]) -> u8 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % u64::from(GUARDS)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_millisecond(millisecond: u64) -> Timestamp {
        Timestamp::new(millisecond, 3).expect("a millisecond in range")
    }

    #[test]
    fn time_left_is_counted_in_whole_seconds_rounded_up_and_never_below_zero() {
        let record = LeaseRecord::granted_at(at_millisecond(10_000), 5);
        assert_eq!(record.deadline_milliseconds, 15_000);
        assert_eq!(record.seconds_left(at_millisecond(10_000)), 5);
        assert_eq!(record.seconds_left(at_millisecond(10_001)), 5);
        assert_eq!(record.seconds_left(at_millisecond(14_999)), 1);
        assert_eq!(record.seconds_left(at_millisecond(15_000)), 0);
        assert_eq!(record.seconds_left(at_millisecond(99_000)), 0);
    }

    #[test]
    fn a_lease_expires_after_its_deadline_or_the_floor_given_whichever_is_later() {
        let record = LeaseRecord::granted_at(at_millisecond(10_000), 5);
        assert!(!record.expired(at_millisecond(15_000), 0), "at the deadline it is still alive");
        assert!(record.expired(at_millisecond(15_001), 0));
        assert!(!record.expired(at_millisecond(15_001), 16_000), "a floor past the deadline holds it");
        assert!(record.expired(at_millisecond(16_001), 16_000));
    }

    #[test]
    fn keys_spread_over_every_guard() {
        let mut used = [false; GUARDS as usize];
        for number in 0..1_000 {
            used[usize::from(guard_of(format!("/registry/events/{number}").as_bytes()))] = true;
        }
        assert!(used.iter().all(|&used| used), "{used:?}");
    }
}
