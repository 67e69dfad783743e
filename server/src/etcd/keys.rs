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

/// The stored key of etcd key `key`.
pub(crate) fn stored_key(key: &[u8]) -> Vec<u8> {
    [DATA_PREFIX, key].concat()
}

/// The etcd key a stored key holds; None for a key outside the etcd API's space (a
/// broken invariant where only etcd keys were read).
pub(crate) fn etcd_key(stored: &[u8]) -> Option<&[u8]> {
    stored.strip_prefix(DATA_PREFIX)
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
}
