//! Key layout of the node's RocksDB.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `raft` | region id, `0x01`, log index | a Raft log entry |
//! | `raft` | region id, `0x02` | [`RaftLocalState`](crate::proto::metadata::RaftLocalState) |
//! | `meta` | region id, `0x01` | [`RegionLocalState`](crate::proto::metadata::RegionLocalState) |
//! | `meta` | region id, `0x02` | [`ApplyState`](crate::proto::metadata::ApplyState) |
//! | `meta` | `gc_safe_point` | the store's garbage-collection safe point, 8 bytes |
//! | `default` | `z`, user key | user value |
//! | `lock`, `write`, `versions` | `z`, escaped user key (and timestamp) | see [`crate::mvcc::key`] |
//!
//! Integers are big-endian so that RocksDB's byte order is numeric order: one region's
//! log is one contiguous key range, which log truncation removes with a single range
//! delete. User keys carry a one-byte prefix so that the data key space can later hold
//! other kinds of keys without colliding with users'.

use super::engine::Cf;

const LOG_SUFFIX: u8 = 0x01;
const RAFT_STATE_SUFFIX: u8 = 0x02;
const REGION_STATE_SUFFIX: u8 = 0x01;
const APPLY_STATE_SUFFIX: u8 = 0x02;
pub(crate) const DATA_PREFIX: u8 = b'z';

/// Key of the log entry `index` of `region_id` (raft CF).
pub(crate) fn log_key(region_id: u64, index: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[..8].copy_from_slice(&region_id.to_be_bytes());
    key[8] = LOG_SUFFIX;
    key[9..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The log index encoded in a [`log_key`], if `key` is one for `region_id`.
pub(crate) fn log_index(region_id: u64, key: &[u8]) -> Option<u64> {
    if key.len() != 17 || key[..8] != region_id.to_be_bytes() || key[8] != LOG_SUFFIX {
        return None;
    }
    let mut index = [0u8; 8];
    index.copy_from_slice(&key[9..]);
    Some(u64::from_be_bytes(index))
}

fn region_key(region_id: u64, suffix: u8) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[..8].copy_from_slice(&region_id.to_be_bytes());
    key[8] = suffix;
    key
}

/// Key of a region's [`RaftLocalState`](crate::proto::metadata::RaftLocalState) (raft CF).
pub(crate) fn raft_state_key(region_id: u64) -> [u8; 9] {
    region_key(region_id, RAFT_STATE_SUFFIX)
}

/// Key of a region's [`RegionLocalState`](crate::proto::metadata::RegionLocalState) (meta CF).
pub(crate) fn region_state_key(region_id: u64) -> [u8; 9] {
    region_key(region_id, REGION_STATE_SUFFIX)
}

/// Key of the store's garbage-collection safe point (meta CF); not 9 bytes long, so
/// never a region's key.
pub(crate) const GC_SAFE_POINT_KEY: &[u8] = b"gc_safe_point";

/// Key of a region's [`ApplyState`](crate::proto::metadata::ApplyState) (meta CF).
pub(crate) fn apply_state_key(region_id: u64) -> [u8; 9] {
    region_key(region_id, APPLY_STATE_SUFFIX)
}

/// The region id of a [`region_state_key`], if `key` is one.
pub fn region_id_of_state_key(key: &[u8]) -> Option<u64> {
    if key.len() != 9 || key[8] != REGION_STATE_SUFFIX {
        return None;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&key[..8]);
    Some(u64::from_be_bytes(id))
}

/// The data key (default CF) of a user key.
pub fn data_key(user_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(user_key.len() + 1);
    key.push(DATA_PREFIX);
    key.extend_from_slice(user_key);
    key
}

/// The user key of a data key, if `key` is one.
pub(crate) fn user_key(data_key: &[u8]) -> Option<&[u8]> {
    data_key.strip_prefix(&[DATA_PREFIX])
}

/// The data key that ends a range whose user end key is `user_end`; an empty end means
/// the end of the key space, which is the first key after every data key.
pub(crate) fn data_end_key(user_end: &[u8]) -> Vec<u8> {
    if user_end.is_empty() { vec![DATA_PREFIX + 1] } else { data_key(user_end) }
}

/// The keys bounding a region's range `[user_start, user_end)` in one of the column
/// families that hold region data ([`Cf::REGION_DATA`]).
pub(crate) fn region_bounds(cf: Cf, user_start: &[u8], user_end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    match cf {
        Cf::Data => (data_key(user_start), data_end_key(user_end)),
        Cf::Lock | Cf::Write | Cf::Versions => crate::mvcc::key::range_bounds(user_start, user_end),
        Cf::Raft | Cf::Meta => unreachable!("invariant: {} holds no region data", cf.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_region_then_index() {
        assert!(log_key(1, 9) < log_key(1, 10));
        assert!(log_key(1, u64::MAX) < log_key(2, 0));
        assert!(log_key(1, u64::MAX).as_slice() < raft_state_key(1).as_slice());
        assert_eq!(log_index(7, &log_key(7, 42)), Some(42));
        assert_eq!(log_index(8, &log_key(7, 42)), None);
        assert_eq!(log_index(7, &raft_state_key(7)), None);
    }

    #[test]
    fn data_keys_round_trip_and_bound_the_key_space() {
        assert_eq!(user_key(&data_key(b"abc")), Some(&b"abc"[..]));
        assert_eq!(user_key(&data_key(b"")), Some(&b""[..]));
        assert!(data_key(&[0xff; 64]) < data_end_key(b""));
        assert!(data_key(b"a") < data_end_key(b"b"));
        assert_eq!(region_id_of_state_key(&region_state_key(5)), Some(5));
        assert_eq!(region_id_of_state_key(&apply_state_key(5)), None);
    }
}
