//! What the placement driver knows of the cluster: stores and regions, as heartbeats
//! report them. Schedulers read this view and never change it; counts per store are
//! derived from the regions, not trusted from store heartbeats, so that a decision and
//! the data it rests on cannot disagree.

use std::collections::BTreeMap;
use std::time::Duration;

use tessera_engine::proto::metadata::{Peer, PeerRole, Region};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreState {
    Up,
    /// Missed heartbeats since `since` (on the placement driver's clock).
    Down {
        since: Duration,
    },
    /// Removed from the cluster for good.
    Tombstone,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoreInfo {
    pub id: u64,
    pub address: String,
    pub state: StoreState,
    /// Location labels, such as `zone`.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RegionInfo {
    pub region: Region,
    /// Store of the region's leader, as its last heartbeat said.
    pub leader_store: Option<u64>,
    /// Replicas that have not caught up with the leader.
    pub pending_peers: Vec<Peer>,
    pub approximate_bytes: u64,
    pub write_bytes_per_sec: u64,
    pub read_bytes_per_sec: u64,
}

impl RegionInfo {
    pub(crate) fn voters(&self) -> impl Iterator<Item = &Peer> {
        self.region.peers.iter().filter(|p| p.role == PeerRole::Voter as i32)
    }

    pub(crate) fn learners(&self) -> impl Iterator<Item = &Peer> {
        self.region.peers.iter().filter(|p| p.role == PeerRole::Learner as i32)
    }

    pub(crate) fn peer_on(&self, store_id: u64) -> Option<&Peer> {
        self.region.peers.iter().find(|p| p.store_id == store_id)
    }

    /// Whether every replica has caught up: only then may the region be moved.
    pub(crate) fn is_settled(&self) -> bool {
        self.pending_peers.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ClusterView {
    pub stores: BTreeMap<u64, StoreInfo>,
    pub regions: BTreeMap<u64, RegionInfo>,
    /// The placement driver's clock: time since the driver's leader started.
    pub now: Duration,
}

impl ClusterView {
    pub(crate) fn is_up(&self, store_id: u64) -> bool {
        self.stores.get(&store_id).is_some_and(|s| s.state == StoreState::Up)
    }

    pub(crate) fn up_stores(&self) -> impl Iterator<Item = &StoreInfo> {
        self.stores.values().filter(|s| s.state == StoreState::Up)
    }

    /// Peers per up store (stores that are down take no part in balancing).
    pub(crate) fn region_counts(&self) -> BTreeMap<u64, u64> {
        let mut counts: BTreeMap<u64, u64> = self.up_stores().map(|s| (s.id, 0)).collect();
        for info in self.regions.values() {
            for peer in &info.region.peers {
                if let Some(count) = counts.get_mut(&peer.store_id) {
                    *count += 1;
                }
            }
        }
        counts
    }

    /// Leaders per up store.
    pub(crate) fn leader_counts(&self) -> BTreeMap<u64, u64> {
        let mut counts: BTreeMap<u64, u64> = self.up_stores().map(|s| (s.id, 0)).collect();
        for store in self.regions.values().filter_map(|info| info.leader_store) {
            if let Some(count) = counts.get_mut(&store) {
                *count += 1;
            }
        }
        counts
    }
}
