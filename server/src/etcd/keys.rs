//! Where etcd's keys live: in the transactional key space, each under one prefix that
//! the etcd API owns (clients of the transactional API should keep out of it), so that
//! an etcd range is one range of Tessera keys and a watch of it one watch.

use super::errors::EtcdError;

/// The prefix of every etcd key as stored.
const DATA_PREFIX: &[u8] = b"\xfeetcd/k/";

/// Just past every stored etcd key: the prefix with its last byte raised.
const DATA_END: &[u8] = b"\xfeetcd/k0";

/// Where Compact records the revision below which reads and watches are refused (a
/// key of the API's own, outside every etcd key).
pub(crate) const COMPACTED_KEY: &[u8] = b"\xfeetcd/m/compacted";

/// Where each lease's record lives: the prefix, then the lease id (8 bytes, big-endian).
const LEASE_PREFIX: &[u8] = b"\xfeetcd/l/";
const LEASE_END: &[u8] = b"\xfeetcd/l0";

/// Where a lease's attached keys are listed: the prefix, the lease id, the etcd key.
const ATTACHED_PREFIX: &[u8] = b"\xfeetcd/a/";

/// Where a lease's guards live: the prefix, the lease id, the guard's number (`lease/`).
const GUARD_PREFIX: &[u8] = b"\xfeetcd/g/";

/// Where the auth state's header lives (whether authentication is on, its revision,
/// the tokens' key), and the prefixes of its users and roles, each followed by the name.
pub(crate) const AUTH_KEY: &[u8] = b"\xfeetcd/m/auth";
pub(crate) const USER_PREFIX: &[u8] = b"\xfeetcd/u/";
const USER_END: &[u8] = b"\xfeetcd/u0";
pub(crate) const ROLE_PREFIX: &[u8] = b"\xfeetcd/r/";
const ROLE_END: &[u8] = b"\xfeetcd/r0";

/// The range of every user's record.
pub(crate) fn user_keys() -> (Vec<u8>, Vec<u8>) {
    (USER_PREFIX.to_vec(), USER_END.to_vec())
}

/// The range of every role's record.
pub(crate) fn role_keys() -> (Vec<u8>, Vec<u8>) {
    (ROLE_PREFIX.to_vec(), ROLE_END.to_vec())
}

/// The stored key of etcd key `key`.
pub(crate) fn stored_key(key: &[u8]) -> Vec<u8> {
    [DATA_PREFIX, key].concat()
}

/// The etcd key a stored key holds; None for a key outside the etcd API's space (a
/// broken invariant where only etcd keys were read).
pub(crate) fn etcd_key(stored: &[u8]) -> Option<&[u8]> {
    stored.strip_prefix(DATA_PREFIX)
}

/// The key of lease `id`'s record.
pub(crate) fn lease_key(id: i64) -> Vec<u8> {
    [LEASE_PREFIX, &id.to_be_bytes()].concat()
}

/// The range of every lease record.
pub(crate) fn lease_keys() -> (Vec<u8>, Vec<u8>) {
    (LEASE_PREFIX.to_vec(), LEASE_END.to_vec())
}

/// The lease id a lease record's key names; None for a key of another kind.
pub(crate) fn lease_id(stored: &[u8]) -> Option<i64> {
    let id: [u8; 8] = stored.strip_prefix(LEASE_PREFIX)?.try_into().ok()?;
    Some(i64::from_be_bytes(id))
}

/// The key saying that etcd key `key` is attached to lease `id`.
pub(crate) fn attached_key(id: i64, key: &[u8]) -> Vec<u8> {
    [ATTACHED_PREFIX, &id.to_be_bytes(), key].concat()
}

/// The range of every key attached to lease `id`.
pub(crate) fn attached_keys(id: i64) -> (Vec<u8>, Vec<u8>) {
    let start = [ATTACHED_PREFIX, &id.to_be_bytes()].concat();
    let end = match id.checked_add(1) {
        Some(next) => [ATTACHED_PREFIX, &next.to_be_bytes()].concat(),
        // The last id: to the end of the attachments.
        None => b"\xfeetcd/a0".to_vec(),
    };
    (start, end)
}

/// The etcd key an attachment key of lease `id` names.
pub(crate) fn attached_etcd_key(id: i64, stored: &[u8]) -> Option<&[u8]> {
    stored.strip_prefix(ATTACHED_PREFIX)?.strip_prefix(&id.to_be_bytes()[..])
}

/// The key of guard `number` of lease `id`.
pub(crate) fn guard_key(id: i64, number: u8) -> Vec<u8> {
    [GUARD_PREFIX, &id.to_be_bytes(), &[number]].concat()
}

/// A range of etcd keys as etcd's requests name it, in the stored key space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyRange {
    /// One key.
    Single(Vec<u8>),
    /// `[start, end)` of stored keys; empty when `start >= end`.
    Span { start: Vec<u8>, end: Vec<u8> },
}

impl KeyRange {
    /// The range of `key` and `range_end` as etcd reads them: no end, the key alone;
    /// an end of one zero byte, every key from `key` on; otherwise `[key, range_end)`.
    /// A key is required (a range from the first key is asked as key `\0`).
    pub(crate) fn of(key: &[u8], range_end: &[u8]) -> Result<KeyRange, EtcdError> {
        if key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        Ok(match range_end {
            [] => KeyRange::Single(stored_key(key)),
            [0] => KeyRange::Span { start: stored_key(key), end: DATA_END.to_vec() },
            end => KeyRange::Span { start: stored_key(key), end: stored_key(end) },
        })
    }

    /// The stored range to scan: `[start, end)`, empty when nothing can be in it.
    pub(crate) fn bounds(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            KeyRange::Single(key) => {
                let mut end = key.clone();
                end.push(0);
                (key.clone(), end)
            }
            KeyRange::Span { start, end } => (start.clone(), end.clone()),
        }
    }

    /// Whether `stored` (a stored key) is in the range.
    pub(crate) fn contains(&self, stored: &[u8]) -> bool {
        match self {
            KeyRange::Single(key) => key == stored,
            KeyRange::Span { start, end } => stored >= start.as_slice() && stored < end.as_slice(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            KeyRange::Single(_) => false,
            KeyRange::Span { start, end } => start >= end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_key_and_range_end_as_etcd_does() {
        assert_eq!(KeyRange::of(b"a", b""), Ok(KeyRange::Single(stored_key(b"a"))));
        let from_key = KeyRange::of(b"a", b"\0").expect("a range");
        assert!(from_key.contains(&stored_key(b"a")) && from_key.contains(&stored_key(b"\xff\xff")));
        assert!(!from_key.contains(&stored_key(b"\0")), "below the key");
        let everything = KeyRange::of(b"\0", b"\0").expect("every key");
        assert!(everything.contains(&stored_key(b"\0")) && everything.contains(&stored_key(b"zzz")));
        assert!(!everything.contains(b"\xfeetcd/l/1"), "nothing outside the etcd keys");
        let prefix = KeyRange::of(b"foo", b"fop").expect("a prefix");
        assert!(prefix.contains(&stored_key(b"foo/bar")) && !prefix.contains(&stored_key(b"fop")));
        assert!(KeyRange::of(b"b", b"a").expect("a range").is_empty(), "an end before the key: nothing");
        assert_eq!(KeyRange::of(b"", b""), Err(EtcdError::EmptyKey));
        assert_eq!(etcd_key(&stored_key(b"k")), Some(&b"k"[..]));
        assert_eq!(etcd_key(b"user-key"), None);
    }

    #[test]
    fn a_leases_attached_keys_are_one_range_that_holds_no_other_leases_keys() {
        for id in [1, 255, 256, i64::MAX - 1, i64::MAX] {
            let (start, end) = attached_keys(id);
            let attached = attached_key(id, b"\xff\xff");
            assert!(start <= attached && attached < end, "lease {id}");
            assert_eq!(attached_etcd_key(id, &attached), Some(&b"\xff\xff"[..]));
            assert_eq!(attached_etcd_key(id, &attached_key(id - 1, b"k")), None);
            if id < i64::MAX {
                assert!(attached_key(id + 1, b"") >= end, "lease {id}: the next lease's keys are outside");
            }
            assert_eq!(lease_id(&lease_key(id)), Some(id));
            let (first, last) = lease_keys();
            assert!(first <= lease_key(id) && lease_key(id) < last);
        }
        assert_eq!(lease_id(&stored_key(b"k")), None);
    }
}
