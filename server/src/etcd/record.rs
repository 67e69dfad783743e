//! What an etcd key's version stores, and the `mvccpb.KeyValue` it reads as.
//!
//! A version is the transactional layer's: its commit timestamp is the write's
//! revision (`mod_revision`). Its value holds what etcd keeps beside the user's bytes:
//! the revision that created the key, how many times it has been written since, and its
//! lease. The revision a write gets is its commit timestamp, known only once it has
//! committed, so the version that creates a key stores a create revision of 0, read as
//! its own commit timestamp; the versions after it copy the create revision they read.

use prost::Message as _;

use super::errors::{EtcdError, revision};
use super::keys;
use crate::client::VersionedKeyValue;
use crate::etcd_proto::mvccpb::KeyValue;

/// The stored value of an etcd key's version.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StoredValue {
    #[prost(bytes = "vec", tag = "1")]
    pub value: Vec<u8>,
    /// The revision that created the key; 0: this version did.
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    /// 1 for the version that created the key, one more for each write after.
    #[prost(int64, tag = "3")]
    pub version: i64,
    /// The lease the key is attached to; 0: none.
    #[prost(int64, tag = "4")]
    pub lease: i64,
}

impl StoredValue {
    /// The version a put of `value` makes after `previous` (the key's current one, if
    /// it has one).
    pub(crate) fn after(previous: Option<&KeyValue>, value: Vec<u8>, lease: i64) -> StoredValue {
        match previous {
            Some(previous) => StoredValue {
                value,
                create_revision: previous.create_revision,
                version: previous.version + 1,
                lease,
            },
            None => StoredValue { value, create_revision: 0, version: 1, lease },
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// The version stored as `bytes`; not decoding is a broken record, an internal error.
    pub(crate) fn decode_stored(bytes: &[u8]) -> Result<StoredValue, EtcdError> {
        StoredValue::decode(bytes)
            .map_err(|error| EtcdError::Internal(format!("an etcd key's version does not decode: {error}")))
    }
}

/// The etcd key-value a stored version reads as.
pub(crate) fn key_value(stored: VersionedKeyValue) -> Result<KeyValue, EtcdError> {
    let Some(key) = keys::etcd_key(&stored.key) else {
        return Err(EtcdError::Internal("a key outside the etcd API's space was read as one".into()));
    };
    let record = StoredValue::decode_stored(&stored.value)?;
    let mod_revision = revision(stored.commit_ts)?;
    Ok(KeyValue {
        key: key.to_vec(),
        create_revision: if record.create_revision == 0 { mod_revision } else { record.create_revision },
        mod_revision,
        version: record.version,
        value: record.value,
        lease: record.lease,
    })
}

#[cfg(test)]
mod tests {
    use tessera_engine::timestamp::Timestamp;

    use super::*;

    fn stored(key: &[u8], record: &StoredValue, commit_ts: u64) -> VersionedKeyValue {
        VersionedKeyValue {
            key: keys::stored_key(key),
            value: record.encode(),
            commit_ts: Timestamp::from_u64(commit_ts),
        }
    }

    #[test]
    fn a_key_keeps_its_create_revision_and_counts_its_versions() {
        let created = StoredValue::after(None, b"one".to_vec(), 0);
        let first = key_value(stored(b"k", &created, 100)).expect("decodes");
        assert_eq!((first.create_revision, first.mod_revision, first.version), (100, 100, 1));
        let updated = StoredValue::after(Some(&first), b"two".to_vec(), 7);
        let second = key_value(stored(b"k", &updated, 250)).expect("decodes");
        assert_eq!((second.create_revision, second.mod_revision, second.version), (100, 250, 2));
        assert_eq!(
            (second.key.as_slice(), second.value.as_slice(), second.lease),
            (&b"k"[..], &b"two"[..], 7)
        );
        let garbage = VersionedKeyValue { value: vec![0xff], ..stored(b"k", &created, 1) };
        assert!(matches!(key_value(garbage), Err(EtcdError::Internal(_))), "a broken record is an error");
    }
}
