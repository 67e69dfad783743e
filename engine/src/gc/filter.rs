//! The write family's compaction filter: drops the commit records no read can reach.
//!
//! A compaction hands the filter its keys in order, so a key's records arrive newest
//! first (`mvcc::key`). For each key, with `limit` the highest timestamp that may be
//! collected under it ([`CollectionBound`]):
//! - records above `limit` stay;
//! - the first put or delete at or below `limit` stays: a read just above the safe point
//!   finds it; every put or delete older than it is shadowed and goes, with its value
//!   in the versions family when it is not kept inline;
//! - rollback and lock_keys records at or below `limit` go: reads skip them, and the
//!   late prewrite a rollback guards against is refused by the fence anyway.
//!
//! The filter sees only the compaction's files, so a record whose shadowing version
//! sits in another file stays until a later compaction sees both: collection is lazy,
//! never wrong. A record that does not decode is kept (and reported by the readers
//! that meet it), never dropped on a guess.

use std::ffi::CStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prost::Message as _;
use rocksdb::CompactionDecision;
use rocksdb::compaction_filter::CompactionFilter;
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};

use super::{CollectionBound, GcState};
use crate::proto::mvcc::{Write, WriteKind};

const TIMESTAMP_BYTES: usize = 8;
/// The escaped key's terminator (`mvcc::key`): every version key has it before its
/// timestamp.
const TERMINATOR: [u8; 2] = [0x00, 0x01];

/// Makes one filter per compaction (per subcompaction), with the bound as it is when
/// the compaction starts.
pub(crate) struct VersionFilterFactory {
    state: Arc<GcState>,
}

impl VersionFilterFactory {
    pub(crate) fn new(state: Arc<GcState>) -> VersionFilterFactory {
        VersionFilterFactory { state }
    }
}

impl CompactionFilterFactory for VersionFilterFactory {
    type Filter = VersionFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> VersionFilter {
        VersionFilter {
            bound: self.state.collection_bound(),
            state: Arc::clone(&self.state),
            current_key: Vec::new(),
            limit: 0,
            shadowed: false,
        }
    }

    fn name(&self) -> &CStr {
        c"tessera-version-filter-factory"
    }
}

pub(crate) struct VersionFilter {
    bound: CollectionBound,
    state: Arc<GcState>,
    /// The escaped key (with its prefix, without timestamp) of the records seen last.
    current_key: Vec<u8>,
    /// What may be collected under `current_key`.
    limit: u64,
    /// A put or delete at or below `limit` was seen for `current_key`.
    shadowed: bool,
}

/// What the filter does with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Keep,
    Remove,
    /// Remove, and the value it names in the versions family.
    RemoveWithValue {
        start_ts: u64,
    },
}

impl VersionFilter {
    pub(super) fn decide(&mut self, key: &[u8], value: &[u8]) -> Verdict {
        let Some((escaped, commit_ts)) = split(key) else { return Verdict::Keep };
        if escaped != self.current_key.as_slice() {
            self.current_key = escaped.to_vec();
            self.limit = self.bound.limit(key);
            self.shadowed = false;
        }
        if commit_ts > self.limit {
            return Verdict::Keep;
        }
        let Ok(record) = Write::decode(value) else { return Verdict::Keep };
        match WriteKind::try_from(record.kind) {
            Ok(WriteKind::WriteRollback | WriteKind::WriteLock) => Verdict::Remove,
            Ok(WriteKind::WritePut | WriteKind::WriteDelete) if !self.shadowed => {
                self.shadowed = true;
                Verdict::Keep
            }
            Ok(WriteKind::WritePut) if record.short_value.is_none() => {
                Verdict::RemoveWithValue { start_ts: record.start_ts }
            }
            Ok(WriteKind::WritePut | WriteKind::WriteDelete) => Verdict::Remove,
            Err(_) => Verdict::Keep,
        }
    }
}

impl CompactionFilter for VersionFilter {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> CompactionDecision {
        match self.decide(key, value) {
            Verdict::Keep => return CompactionDecision::Keep,
            Verdict::Remove => {}
            Verdict::RemoveWithValue { start_ts } => {
                let mut versions_key = self.current_key.clone();
                versions_key.extend_from_slice(&(u64::MAX - start_ts).to_be_bytes());
                self.state.value_unreachable(versions_key);
            }
        }
        self.state.removed_records.fetch_add(1, Ordering::Relaxed);
        CompactionDecision::Remove
    }

    fn name(&self) -> &CStr {
        c"tessera-version-filter"
    }
}

/// A version key's escaped key and timestamp; `None` for anything else.
fn split(key: &[u8]) -> Option<(&[u8], u64)> {
    let split_at = key.len().checked_sub(TIMESTAMP_BYTES)?;
    let (escaped, inverted) = key.split_at(split_at);
    if !escaped.ends_with(&TERMINATOR) {
        return None;
    }
    let inverted: [u8; TIMESTAMP_BYTES] = inverted.try_into().ok()?;
    Some((escaped, u64::MAX - u64::from_be_bytes(inverted)))
}

#[cfg(test)]
impl VersionFilter {
    pub(super) fn with_bound(bound: CollectionBound) -> VersionFilter {
        VersionFilter {
            bound,
            state: Arc::new(GcState::default()),
            current_key: Vec::new(),
            limit: 0,
            shadowed: false,
        }
    }
}
