//! The client's region cache: regions by start key, filled from the placement driver
//! and corrected by the stores' answers (a new leader, a newer epoch, a region gone).
//!
//! When a region's leader is unknown, refuses without naming another, or cannot be
//! reached, the client tries the region's other voters in turn before asking the
//! driver again ([`RegionCache::try_another_voter`]): the driver learns of a new leader
//! only from that leader's next report, and a leader cut off from its followers may
//! still be the one the driver names.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use parking_lot::RwLock;
use tessera_engine::proto::metadata::{Peer, PeerRole};
use tessera_engine::region::KeyRange;
use tessera_placement::proto::RegionRoute;

#[derive(Default)]
pub(crate) struct RegionCache {
    by_start: RwLock<BTreeMap<Vec<u8>, RegionRoute>>,
    /// Voters tried in turn since the route was last learned, by region.
    voters_tried: RwLock<HashMap<u64, usize>>,
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
        self.voters_tried.write().remove(&region.id);
        cache.insert(region.start_key.clone(), route);
    }

    pub(crate) fn invalidate(&self, region_id: u64) {
        self.voters_tried.write().remove(&region_id);
        self.by_start.write().retain(|_, route| route.region.as_ref().is_none_or(|r| r.id != region_id));
    }

    /// The region's leader is unknown, or `failed_store` (where the client took it to
    /// be) refused without naming another or could not be reached: the route now names
    /// the region's next voter on another store, if one is left to try since the route
    /// was learned. Returns false when every voter was tried: the caller asks the
    /// driver again.
    pub(crate) fn try_another_voter(&self, region_id: u64, failed_store: Option<u64>) -> bool {
        let mut cache = self.by_start.write();
        let Some(route) =
            cache.values_mut().find(|route| route.region.as_ref().is_some_and(|r| r.id == region_id))
        else {
            return false;
        };
        let voters: Vec<Peer> = route
            .region
            .iter()
            .flat_map(|region| region.peers.iter())
            .filter(|peer| peer.role == PeerRole::Voter as i32)
            .copied()
            .collect();
        let mut tried = self.voters_tried.write();
        let count = tried.entry(region_id).or_insert(0);
        if *count >= voters.len() {
            return false;
        }
        *count += 1;
        let start = failed_store
            .and_then(|store| voters.iter().position(|p| p.store_id == store))
            .map_or(0, |at| at + 1);
        let next = (0..voters.len())
            .map(|offset| voters[(start + offset) % voters.len()])
            .find(|peer| Some(peer.store_id) != failed_store);
        match next {
            Some(peer) => {
                route.leader = Some(peer);
                true
            }
            None => false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_engine::proto::metadata::Region;

    fn route(leader_store: Option<u64>) -> RegionRoute {
        let peer = |id: u64, store_id: u64, role: PeerRole| Peer { id, store_id, role: role as i32 };
        let peers = vec![
            peer(11, 1, PeerRole::Voter),
            peer(12, 2, PeerRole::Voter),
            peer(13, 3, PeerRole::Voter),
            peer(14, 4, PeerRole::Learner),
        ];
        let leader = leader_store.and_then(|store| peers.iter().find(|p| p.store_id == store).copied());
        RegionRoute {
            region: Some(Region { id: 7, peers, ..Region::default() }),
            leader,
            ..RegionRoute::default()
        }
    }

    #[test]
    fn a_silent_leader_sends_the_client_round_the_other_voters_then_to_the_driver() {
        let cache = RegionCache::default();
        cache.insert(route(Some(1)));
        let leader_store = || cache.find(b"k").and_then(|r| r.leader).map(|p| p.store_id);
        assert!(cache.try_another_voter(7, Some(1)));
        assert_eq!(leader_store(), Some(2), "the next voter after the failed one");
        assert!(cache.try_another_voter(7, Some(2)));
        assert_eq!(leader_store(), Some(3));
        assert!(cache.try_another_voter(7, Some(3)));
        assert_eq!(leader_store(), Some(1), "round again to the first; never the learner");
        assert!(!cache.try_another_voter(7, Some(1)), "every voter tried: ask the driver");
        cache.insert(route(None));
        assert!(cache.try_another_voter(7, None), "a fresh route starts the round again");
        assert_eq!(leader_store(), Some(1), "without a leader, the first voter");
    }
}
