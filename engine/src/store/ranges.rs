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
use crate::region::KeyRange;

/// The bounds of a region's [`KeyRange`], kept as `(start, end)`.
type Bounds = (Vec<u8>, Vec<u8>);

#[derive(Clone, Default)]
pub(crate) struct RegionRanges {
    ranges: Arc<RwLock<HashMap<u64, Bounds>>>,
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

    /// Another region here that overlaps `range`, if any.
    pub(crate) fn overlapping(&self, region_id: u64, range: KeyRange<'_>) -> Option<u64> {
        self.ranges
            .read()
            .iter()
            .find(|(id, (s, e))| **id != region_id && KeyRange::new(s, e).overlaps(&range))
            .map(|(&id, _)| id)
    }
}
