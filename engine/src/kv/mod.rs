//! The replicated state machine: what a committed command does to the data column
//! family (transactional commands are [`crate::txn`]'s), and the checks a command must
//! pass before it is proposed.
//!
//! Limits (documented for clients): keys are 1 to [`MAX_KEY_BYTES`] bytes, values at
//! most [`MAX_VALUE_BYTES`]. A command is checked when proposed (so that a bad request
//! is refused at once with a typed error) and its epoch again when applied (so that a
//! command proposed before a split does not write outside the region it ends up in).

mod apply;

pub use apply::apply_writes;

use thiserror::Error;

use crate::proto::{
    command::{Write, write},
    metadata::Region,
};
use crate::region::{self, KeyRange, RegionError};

/// Largest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 8 * 1024;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;

/// A scan's answer stops at the first pair that brings its keys and values to this
/// many bytes (so it holds at least one pair, and at most this plus one pair): a
/// response stays well under the transport's message limit however large the region,
/// and a scan holds its worker for a bounded time. The caller continues after the
/// last key (`scan_page_is_cut` tells it when it must).
pub const MAX_SCAN_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The bytes a scanned pair counts for against [`MAX_SCAN_RESPONSE_BYTES`].
pub fn scanned_bytes(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len()
}

/// Whether a scan answer of `pairs` pairs and `bytes` bytes, asked for at most `limit`
/// (0: no limit), stopped at [`MAX_SCAN_RESPONSE_BYTES`] rather than at the range's end
/// or the limit: then more may follow its last key.
pub fn scan_page_is_cut(pairs: usize, bytes: usize, limit: usize) -> bool {
    bytes >= MAX_SCAN_RESPONSE_BYTES && (limit == 0 || pairs < limit)
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum KvError {
    #[error("empty key")]
    EmptyKey,
    #[error("key of {size} bytes is over the limit of {max}")]
    KeyTooLarge { size: usize, max: usize },
    #[error("value of {size} bytes is over the limit of {max}")]
    ValueTooLarge { size: usize, max: usize },
    #[error("request has no operation")]
    EmptyRequest,
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error(transparent)]
    Transaction(#[from] crate::txn::TxnCheckError),
}

pub fn check_key(key: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::KeyTooLarge { size: key.len(), max: MAX_KEY_BYTES });
    }
    Ok(())
}

pub fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::ValueTooLarge { size: value.len(), max: MAX_VALUE_BYTES });
    }
    Ok(())
}

/// Checks one write against the limits and the region's range.
pub fn check_write(region: &Region, write: &Write) -> Result<(), KvError> {
    match &write.kind {
        None => Err(KvError::EmptyRequest),
        Some(write::Kind::Put(put)) => {
            check_key(&put.key)?;
            check_value(&put.value)?;
            Ok(region::check_key(region, &put.key)?)
        }
        Some(write::Kind::Delete(delete)) => {
            check_key(&delete.key)?;
            Ok(region::check_key(region, &delete.key)?)
        }
        Some(write::Kind::DeleteRange(range)) => {
            if range.start_key.len() > MAX_KEY_BYTES || range.end_key.len() > MAX_KEY_BYTES {
                return Err(KvError::KeyTooLarge {
                    size: range.start_key.len().max(range.end_key.len()),
                    max: MAX_KEY_BYTES,
                });
            }
            Ok(region::check_range(region, KeyRange::new(&range.start_key, &range.end_key))?)
        }
        Some(write::Kind::CompareAndSwap(cas)) => {
            check_key(&cas.key)?;
            if let Some(value) = &cas.new_value {
                check_value(value)?;
            }
            Ok(region::check_key(region, &cas.key)?)
        }
        Some(command) => crate::txn::check(region, command),
    }
}

#[cfg(test)]
mod tests;
