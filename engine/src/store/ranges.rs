//! The key ranges claimed by the replicas on this store, shared by its workers.
//!
//! Two replicas on one store must never cover the same key: they would write the same
//! data keys. A replica claims a range when it is created (the range its region had
//! in the message that created it), when a snapshot for it arrives (the snapshot's
//! range, before Raft may accept it) and when it installs a snapshot or applies a split
//! (its region's range). A claim is checked against every other replica's claims and
//! taken in one step under the lock ([`RegionRanges::claim`]): two workers handling
//! overlapping snapshots at once cannot both pass, whichever installs first. A claim a
//! snapshot did not need (Raft refused the snapshot) is given back at once.
//!
//! This module owns the bookkeeping only; which messages may create or install a
//! replica is decided in `worker::inbound`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::proto::metadata::Region;
use crate::region::KeyRange;

/// The bounds of a [`KeyRange`], kept as `(start, end)`.
type Bounds = (Vec<u8>, Vec<u8>);

#[derive(Clone, Default)]
pub(crate) struct RegionRanges {
    /// Each region's claims: usually one, two while a snapshot waits to be installed.
    claims: Arc<RwLock<HashMap<u64, Vec<Bounds>>>>,
}

impl RegionRanges {
    /// Records the range of an initialized region (one with peers) as its only claim:
    /// after a snapshot installed, a split applied, or at start-up.
    pub(crate) fn set(&self, region: &Region) {
        if !region.peers.is_empty() {
            let bounds = (region.start_key.clone(), region.end_key.clone());
            self.claims.write().insert(region.id, vec![bounds]);
        }
    }

    /// Claims `range` for `region_id` unless another region here claims part of it; on
    /// refusal, names that region. The check and the claim are one step. Returns
    /// whether the claim is new (false: the region held exactly this range already).
    pub(crate) fn claim(&self, region_id: u64, range: KeyRange<'_>) -> Result<bool, u64> {
        let mut claims = self.claims.write();
        if let Some(other) = overlapping(&claims, region_id, &range) {
            return Err(other);
        }
        let bounds = (range.start().to_vec(), range.end().to_vec());
        let own = claims.entry(region_id).or_default();
        if own.contains(&bounds) {
            return Ok(false);
        }
        own.push(bounds);
        Ok(true)
    }

    /// Gives back a new claim taken by [`RegionRanges::claim`] that was not needed.
    pub(crate) fn release(&self, region_id: u64, range: KeyRange<'_>) {
        let mut claims = self.claims.write();
        if let Some(own) = claims.get_mut(&region_id) {
            own.retain(|(start, end)| KeyRange::new(start, end) != range);
            if own.is_empty() {
                claims.remove(&region_id);
            }
        }
    }

    /// Whether `region_id` claims any range here.
    pub(crate) fn holds(&self, region_id: u64) -> bool {
        self.claims.read().contains_key(&region_id)
    }

    pub(crate) fn remove(&self, region_id: u64) {
        self.claims.write().remove(&region_id);
    }

    /// Another region here that claims part of `range`, if any.
    pub(crate) fn overlapping(&self, region_id: u64, range: KeyRange<'_>) -> Option<u64> {
        overlapping(&self.claims.read(), region_id, &range)
    }
}

fn overlapping(claims: &HashMap<u64, Vec<Bounds>>, region_id: u64, range: &KeyRange<'_>) -> Option<u64> {
    claims.iter().filter(|(id, _)| **id != region_id).find_map(|(&id, bounds)| {
        bounds.iter().any(|(start, end)| KeyRange::new(start, end).overlaps(range)).then_some(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::single_peer_region as region;

    #[test]
    fn a_claim_over_another_regions_keys_is_refused_and_a_released_one_frees_them() {
        let ranges = RegionRanges::default();
        ranges.set(&region(1, b"a", b"m"));
        assert_eq!(ranges.claim(2, KeyRange::new(b"k", b"z")), Err(1), "overlaps [a, m)");
        assert_eq!(ranges.claim(2, KeyRange::new(b"m", b"z")), Ok(true), "adjacent is fine");
        assert_eq!(ranges.claim(2, KeyRange::new(b"m", b"z")), Ok(false), "held already");
        // A late, wider snapshot of region 1 (from before a split) now overlaps region 2.
        assert_eq!(ranges.claim(1, KeyRange::new(b"a", b"")), Err(2));
        assert_eq!(ranges.claim(1, KeyRange::new(b"a", b"c")), Ok(true), "a region may claim within itself");
        ranges.release(2, KeyRange::new(b"m", b"z"));
        assert_eq!(ranges.overlapping(1, KeyRange::new(b"m", b"z")), None, "released");
        assert_eq!(ranges.claim(1, KeyRange::new(b"a", b"")), Ok(true));
        assert_eq!(ranges.overlapping(3, KeyRange::new(b"x", b"y")), Some(1));
        ranges.set(&region(1, b"a", b"m"));
        assert_eq!(ranges.overlapping(3, KeyRange::new(b"x", b"y")), None, "set replaces every claim");
    }

    /// Many threads claim overlapping ranges for different regions at once: exactly one
    /// of each overlapping pair wins.
    #[test]
    fn concurrent_overlapping_claims_admit_one_region() {
        for _ in 0..50 {
            let ranges = RegionRanges::default();
            let winners: Vec<bool> = std::thread::scope(|scope| {
                let handles: Vec<_> = (1..=4u64)
                    .map(|region_id| {
                        let ranges = ranges.clone();
                        scope.spawn(move || ranges.claim(region_id, KeyRange::new(b"b", b"d")).is_ok())
                    })
                    .collect();
                handles.into_iter().map(|handle| handle.join().expect("a claiming thread")).collect()
            });
            assert_eq!(winners.iter().filter(|won| **won).count(), 1, "{winners:?}");
        }
    }
}
