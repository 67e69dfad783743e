//! The client's region cache: regions by start key, filled from the placement driver
//! and corrected by the stores' answers (a new leader, a newer epoch, a region gone).

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;
use tessera_engine::proto::metadata::Peer;
use tessera_engine::region::KeyRange;
use tessera_placement::proto::RegionRoute;

#[derive(Default)]
pub(crate) struct RegionCache {
    by_start: RwLock<BTreeMap<Vec<u8>, RegionRoute>>,
}

impl RegionCache {
    /// The cached region holding `key`.
    pub(crate) fn find(&self, key: &[u8]) -> Option<RegionRoute> {
        let cache = self.by_start.read();
        let (_, route) = cache.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back()?;
        route.region.as_ref().filter(|region| KeyRange::of(region).contains(key)).map(|_| route.clone())
    }

    /// Adds a route, dropping the cached regions it overlaps (they are older or the same).
    pub(crate) fn insert(&self, route: RegionRoute) {
        let Some(region) = route.region.clone() else { return };
        let mut cache = self.by_start.write();
        let overlapping: Vec<Vec<u8>> = cache
            .iter()
            .filter(|(_, cached)| {
                cached
                    .region
                    .as_ref()
                    .is_some_and(|other| KeyRange::of(other).overlaps(&KeyRange::of(&region)))
            })
            .map(|(start, _)| start.clone())
            .collect();
        for start in overlapping {
            cache.remove(&start);
        }
        cache.insert(region.start_key.clone(), route);
    }

    pub(crate) fn invalidate(&self, region_id: u64) {
        self.by_start.write().retain(|_, route| route.region.as_ref().is_none_or(|r| r.id != region_id));
    }

    /// Records the leader a store named for a region.
    pub(crate) fn set_leader(&self, region_id: u64, leader: Peer) {
        let mut cache = self.by_start.write();
        if let Some(route) =
            cache.values_mut().find(|route| route.region.as_ref().is_some_and(|r| r.id == region_id))
        {
            route.leader = Some(leader);
        }
    }
}
