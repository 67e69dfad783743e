//! The key ranges of the initialized regions on this store, shared by its workers.
//!
//! Two peers on one store must never cover the same key: they would write the same data
//! keys. A message that would create a peer, or a snapshot that would install one, is
//! refused while another region here still covers part of its range; the usual cause is
//! a parent region that has not applied its split yet, and the split creates the peer.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::proto::metadata::Region;

/// `[start, end)`; an empty end is the end of the key space.
type KeyRange = (Vec<u8>, Vec<u8>);

#[derive(Clone, Default)]
pub(crate) struct RegionRanges {
    ranges: Arc<RwLock<HashMap<u64, KeyRange>>>,
}

/// Whether `[a_start, a_end)` and `[b_start, b_end)` share a key; an empty end is the end
/// of the key space.
fn overlap(a_start: &[u8], a_end: &[u8], b_start: &[u8], b_end: &[u8]) -> bool {
    (a_end.is_empty() || b_start < a_end) && (b_end.is_empty() || a_start < b_end)
}

impl RegionRanges {
    /// Records the range of an initialized region (one with peers).
    pub(crate) fn set(&self, region: &Region) {
        if !region.peers.is_empty() {
            self.ranges.write().insert(region.id, (region.start_key.clone(), region.end_key.clone()));
        }
    }

    pub(crate) fn remove(&self, region_id: u64) {
        self.ranges.write().remove(&region_id);
    }

    /// Another region here that overlaps `[start, end)`, if any.
    pub(crate) fn overlapping(&self, region_id: u64, start: &[u8], end: &[u8]) -> Option<u64> {
        self.ranges
            .read()
            .iter()
            .find(|(id, (s, e))| **id != region_id && overlap(s, e, start, end))
            .map(|(&id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_overlap_when_they_share_a_key() {
        assert!(overlap(b"a", b"m", b"l", b"z"));
        assert!(!overlap(b"a", b"m", b"m", b"z"), "half-open ranges that touch do not overlap");
        assert!(overlap(b"a", b"", b"x", b"y"), "an empty end is unbounded");
        assert!(overlap(b"", b"", b"", b"b"));
        assert!(!overlap(b"n", b"", b"a", b"m"));
    }
}
