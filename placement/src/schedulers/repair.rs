//! Replica repair: every region keeps `replicas` voters on live stores. A region with too
//! few gets a new one; a peer on a store down past the grace period is replaced; a region
//! with too many loses one.

use std::collections::{BTreeMap, BTreeSet};

use tessera_engine::proto::metadata::{Peer, PeerRole};

use super::{SchedulerConfig, pick_target};
use crate::cluster::{ClusterView, RegionInfo, StoreState};
use crate::operator::{Operator, OperatorKind, Step};

pub(crate) fn schedule(
    view: &ClusterView,
    config: &SchedulerConfig,
    busy: &BTreeSet<u64>,
    new_id: &mut dyn FnMut() -> Option<u64>,
) -> Vec<Operator> {
    let counts = view.region_counts();
    view.regions
        .values()
        .filter(|info| !busy.contains(&info.region.id))
        .filter_map(|info| repair(view, config, &counts, info, new_id))
        .collect()
}

fn down_past_grace(view: &ClusterView, config: &SchedulerConfig, store_id: u64) -> bool {
    match view.stores.get(&store_id).map(|s| s.state) {
        Some(StoreState::Down { since }) => view.now.saturating_sub(since) >= config.down_grace,
        Some(StoreState::Tombstone) | None => true,
        Some(StoreState::Up) => false,
    }
}

fn add_voter(
    view: &ClusterView,
    config: &SchedulerConfig,
    counts: &BTreeMap<u64, u64>,
    info: &RegionInfo,
    new_id: &mut dyn FnMut() -> Option<u64>,
) -> Option<Vec<Step>> {
    let store_id = pick_target(view, config, counts, info)?;
    let learner = Peer { id: new_id()?, store_id, role: PeerRole::Learner as i32 };
    let voter = Peer { role: PeerRole::Voter as i32, ..learner };
    Some(vec![Step::AddLearner { peer: learner }, Step::PromoteLearner { peer: voter }])
}

fn repair(
    view: &ClusterView,
    config: &SchedulerConfig,
    counts: &BTreeMap<u64, u64>,
    info: &RegionInfo,
    new_id: &mut dyn FnMut() -> Option<u64>,
) -> Option<Operator> {
    let operator = |steps| Operator { region_id: info.region.id, kind: OperatorKind::ReplicaRepair, steps };
    let voters: Vec<&Peer> = info.voters().collect();
    // A learner in a region with no operator in flight is left over (from an operator
    // that ended early, or copied by a split from its parent's operator).
    let stray = info.learners().next();
    // A voter on a store gone for longer than the grace period: replace it, with the
    // stray learner if it is on a live store (it holds the data already).
    if let Some(lost) = voters.iter().find(|peer| down_past_grace(view, config, peer.store_id)) {
        if voters.len() > config.replicas {
            // Enough voters without it (an operator ended half way).
            return Some(operator(vec![Step::RemovePeer { peer: **lost }]));
        }
        let mut steps = match stray.filter(|learner| view.is_up(learner.store_id)) {
            Some(learner) => {
                vec![Step::PromoteLearner { peer: Peer { role: PeerRole::Voter as i32, ..*learner } }]
            }
            None => add_voter(view, config, counts, info, new_id)?,
        };
        steps.push(Step::RemovePeer { peer: **lost });
        return Some(operator(steps));
    }
    if let Some(stray) = stray {
        let step = if voters.len() < config.replicas && view.is_up(stray.store_id) {
            Step::PromoteLearner { peer: Peer { role: PeerRole::Voter as i32, ..*stray } }
        } else {
            Step::RemovePeer { peer: *stray }
        };
        return Some(operator(vec![step]));
    }
    if voters.len() < config.replicas {
        return add_voter(view, config, counts, info, new_id).map(operator);
    }
    if voters.len() > config.replicas {
        // Drop the replica on a down store, else on the fullest store, never the leader.
        let victim =
            voters.iter().filter(|peer| Some(peer.store_id) != info.leader_store).max_by_key(|peer| {
                (!view.is_up(peer.store_id), counts.get(&peer.store_id).copied().unwrap_or(0))
            })?;
        return Some(operator(vec![Step::RemovePeer { peer: **victim }]));
    }
    None
}
