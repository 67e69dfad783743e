//! How a user key and a timestamp become one RocksDB key in the transactional column
//! families.
//!
//! A version's key is the data prefix `z` (as in the raw key space, so that a region's
//! range has the same sentinel end), the user key escaped, then the timestamp
//! inverted, big-endian; a lock's key has no timestamp:
//!
//! ```text
//! escaped(key) = key with every 0x00 written 0x00 0xFF, then 0x00 0x01
//! lock key     = z ++ escaped(key)
//! version key  = z ++ escaped(key) ++ (u64::MAX - ts).to_be_bytes()
//! ```
//!
//! The escaping keeps two properties that a plain concatenation would break:
//! - **No key's versions interleave with another key's.** An escaped key is never a
//!   prefix of another escaped key (it ends with the terminator 0x00 0x01, which no
//!   escaped byte sequence contains in that position), so all versions of "a" sort
//!   before any version of "a\0" or "ab".
//! - **Byte order is key order.** At the first byte where two keys differ the escaped
//!   forms differ the same way (0x00 becomes 0x00 0xFF, still below any other byte),
//!   and a key that is a prefix of a longer one meets the terminator 0x00 0x01, below
//!   both 0x00 0xFF and any byte above 0x00. So a region's range [start, end) is one
//!   range of every transactional column family ([`range_bounds`]), and range
//!   deletes, snapshots and splits work on it unchanged.
//!
//! Inverting the timestamp puts a key's newest version first: reading at `ts` seeks to
//! `version key(key, ts)` and the first entry at or after it with the same escaped key
//! is the newest version at or below `ts`.
//!
//! This module owns the encoding and its inverse, nothing else.

use crate::storage::keys::{DATA_PREFIX, data_end_key};
use crate::timestamp::Timestamp;

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;
const TIMESTAMP_BYTES: usize = 8;

/// `z` and the escaped form of `user_key`, with room for a timestamp.
fn prefixed_escaped(user_key: &[u8]) -> Vec<u8> {
    let zeros = user_key.iter().filter(|&&byte| byte == ESCAPE).count();
    let mut encoded = Vec::with_capacity(1 + user_key.len() + zeros + 2 + TIMESTAMP_BYTES);
    encoded.push(DATA_PREFIX);
    for &byte in user_key {
        encoded.push(byte);
        if byte == ESCAPE {
            encoded.push(ESCAPED_ZERO);
        }
    }
    encoded.extend_from_slice(&[ESCAPE, TERMINATOR]);
    encoded
}

/// The key of `user_key`'s lock (the lock column family's key).
pub fn lock_key(user_key: &[u8]) -> Vec<u8> {
    prefixed_escaped(user_key)
}

/// The key of `user_key`'s version at `ts` (the write and data column families' key).
pub fn version_key(user_key: &[u8], ts: Timestamp) -> Vec<u8> {
    let mut encoded = prefixed_escaped(user_key);
    encoded.extend_from_slice(&(u64::MAX - ts.as_u64()).to_be_bytes());
    encoded
}

/// The keys that bound a region's range `[user_start, user_end)` in every
/// transactional column family (an empty end: the end of the key space).
pub fn range_bounds(user_start: &[u8], user_end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let end = if user_end.is_empty() { data_end_key(user_end) } else { prefixed_escaped(user_end) };
    (prefixed_escaped(user_start), end)
}

/// What does not decode as a key of this encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyDefect {
    #[error("the key lacks the data prefix")]
    NoDataPrefix,
    #[error("the key has no terminator")]
    Unterminated,
    #[error("a 0x00 byte is followed by {0:#04x}, neither an escape nor the terminator")]
    BadEscape(u8),
    #[error("the version key has {0} bytes after its escaped key, not 8")]
    TimestampLength(usize),
}

/// Splits a lock key (or a version key) into the user key and what follows it.
fn split_prefixed(encoded: &[u8]) -> Result<(Vec<u8>, &[u8]), KeyDefect> {
    let escaped = encoded.strip_prefix(&[DATA_PREFIX]).ok_or(KeyDefect::NoDataPrefix)?;
    let mut user_key = Vec::with_capacity(escaped.len());
    let mut position = 0;
    while position < escaped.len() {
        let byte = escaped[position];
        if byte != ESCAPE {
            user_key.push(byte);
            position += 1;
            continue;
        }
        match escaped.get(position + 1) {
            Some(&ESCAPED_ZERO) => {
                user_key.push(ESCAPE);
                position += 2;
            }
            Some(&TERMINATOR) => return Ok((user_key, &escaped[position + 2..])),
            Some(&other) => return Err(KeyDefect::BadEscape(other)),
            None => return Err(KeyDefect::Unterminated),
        }
    }
    Err(KeyDefect::Unterminated)
}

/// The user key of a [`lock_key`].
pub fn split_lock_key(encoded: &[u8]) -> Result<Vec<u8>, KeyDefect> {
    match split_prefixed(encoded)? {
        (user_key, []) => Ok(user_key),
        (_, rest) => Err(KeyDefect::TimestampLength(rest.len())),
    }
}

/// The user key and timestamp of a [`version_key`].
pub fn split_version_key(encoded: &[u8]) -> Result<(Vec<u8>, Timestamp), KeyDefect> {
    let (user_key, rest) = split_prefixed(encoded)?;
    let bytes: [u8; TIMESTAMP_BYTES] = rest.try_into().map_err(|_| KeyDefect::TimestampLength(rest.len()))?;
    Ok((user_key, Timestamp::from_u64(u64::MAX - u64::from_be_bytes(bytes))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(value: u64) -> Timestamp {
        Timestamp::from_u64(value)
    }

    #[test]
    fn a_version_key_decodes_to_its_key_and_timestamp() {
        for key in [&b""[..], b"a", b"\x00", b"a\x00b", b"\x00\x00\xff", b"\xff\x01"] {
            for value in [0, 1, 42, u64::MAX] {
                let encoded = version_key(key, ts(value));
                assert_eq!(split_version_key(&encoded), Ok((key.to_vec(), ts(value))), "{key:?} at {value}");
            }
        }
    }

    #[test]
    fn newer_versions_of_a_key_sort_first() {
        assert!(version_key(b"k", ts(9)) < version_key(b"k", ts(8)));
        assert!(version_key(b"k", Timestamp::MAX) < version_key(b"k", Timestamp::ZERO));
    }

    /// Every version of a key sorts before every version of any larger key, and the
    /// escaped keys sort as the keys do: the pairs where a plain concatenation fails.
    #[test]
    fn versions_of_different_keys_never_interleave_and_keep_key_order() {
        let keys: [&[u8]; 9] =
            [b"", b"\x00", b"\x00\x00", b"\x00\x01", b"a", b"a\x00", b"a\x00\x00", b"a\x01", b"ab"];
        for (index, smaller) in keys.iter().enumerate() {
            for larger in &keys[index + 1..] {
                assert!(smaller < larger, "the list is in key order");
                assert!(lock_key(smaller) < lock_key(larger), "{smaller:?} < {larger:?}");
                let newest_of_larger = version_key(larger, Timestamp::MAX);
                let oldest_of_smaller = version_key(smaller, Timestamp::ZERO);
                assert!(
                    oldest_of_smaller < newest_of_larger,
                    "versions of {smaller:?} and {larger:?} interleave"
                );
            }
        }
    }

    #[test]
    fn a_version_key_lies_inside_the_bounds_of_its_range() {
        let ranges: [(&[u8], &[u8]); 3] = [(b"a", b"b\x00"), (b"", b"a\x00"), (b"b", b"")];
        let keys: [&[u8]; 8] = [b"", b"\x00", b"a", b"a\x00", b"azz", b"b", b"b\x00", &[0xff; 40]];
        for (start, end) in ranges {
            let (lower, upper) = range_bounds(start, end);
            for key in keys {
                let inside = start <= key && (end.is_empty() || key < end);
                for encoded in
                    [version_key(key, Timestamp::ZERO), version_key(key, Timestamp::MAX), lock_key(key)]
                {
                    let within = lower <= encoded && encoded < upper;
                    assert_eq!(inside, within, "{key:?} in [{start:?}, {end:?})");
                }
            }
        }
    }

    #[test]
    fn malformed_keys_are_refused_with_what_is_wrong() {
        assert_eq!(split_lock_key(b"abc"), Err(KeyDefect::NoDataPrefix));
        assert_eq!(split_lock_key(b"zabc"), Err(KeyDefect::Unterminated));
        assert_eq!(split_lock_key(b"za\x00"), Err(KeyDefect::Unterminated));
        assert_eq!(split_lock_key(b"za\x00\x05"), Err(KeyDefect::BadEscape(0x05)));
        assert_eq!(split_version_key(b"za\x00\x01\x00"), Err(KeyDefect::TimestampLength(1)));
        assert_eq!(split_lock_key(&lock_key(b"a\x00b")), Ok(b"a\x00b".to_vec()));
    }
}
