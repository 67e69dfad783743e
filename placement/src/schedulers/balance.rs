//! Balancing: move replicas from the stores with the most regions to the one with the
//! fewest, and leaders from the busiest stores to idler ones, one per run, until every
//! store is within the tolerance of the mean.

use std::collections::{BTreeMap, BTreeSet};

use tessera_engine::proto::metadata::PeerRole;

use super::SchedulerConfig;
use super::location::exposure;
use crate::cluster::{ClusterView, RegionInfo};
use crate::operator::{Operator, OperatorKind, Step, move_replica_steps};

/// Stores to take load from, busiest first, when some store is further than `tolerance`
/// from the mean. Every move must then go to a store with at least two less (so each
/// move strictly narrows the spread and balancing terminates).
fn sources(counts: &BTreeMap<u64, u64>, tolerance: u64) -> Vec<u64> {
    if counts.is_empty() {
        return Vec::new();
    }
    let mean = counts.values().sum::<u64>() as f64 / counts.len() as f64;
    let tolerance = tolerance as f64;
    let unbalanced = counts.values().any(|&c| (c as f64 - mean).abs() > tolerance);
    if !unbalanced {
        return Vec::new();
    }
    let mut stores: Vec<u64> = counts.keys().copied().collect();
    stores.sort_by_key(|s| (std::cmp::Reverse(counts[s]), *s));
    stores
}

/// Whether moving one unit from `from` to `to` narrows the spread.
fn improves(counts: &BTreeMap<u64, u64>, from: u64, to: u64) -> bool {
    let count = |s: u64| counts.get(&s).copied().unwrap_or(0);
    count(to) + 1 < count(from)
}

/// Whether moving `info`'s replica from `from` to `to` leaves it no more exposed to a
/// failure domain it shares with the region's other replicas (see `location.rs`).
fn keeps_locations(
    view: &ClusterView,
    config: &SchedulerConfig,
    info: &RegionInfo,
    from: u64,
    to: u64,
) -> bool {
    let labels = &config.location_labels;
    let others = || info.region.peers.iter().map(|p| p.store_id).filter(move |&s| s != from);
    exposure(view, labels, to, others()) <= exposure(view, labels, from, others())
}

pub(crate) fn regions(
    view: &ClusterView,
    config: &SchedulerConfig,
    busy: &BTreeSet<u64>,
    new_id: &mut dyn FnMut() -> Option<u64>,
) -> Option<Operator> {
    let counts = view.region_counts();
    let emptiest = counts.iter().min_by_key(|(id, count)| (**count, **id)).map(|(id, _)| *id)?;
    let (info, from, to) = sources(&counts, config.region_tolerance).into_iter().find_map(|from| {
        let to = emptiest;
        if !improves(&counts, from, to) {
            return None;
        }
        let candidates = view.regions.values().filter(|info| {
            !busy.contains(&info.region.id)
                && info.peer_on(to).is_none()
                && info.peer_on(from).is_some_and(|p| p.role == PeerRole::Voter as i32)
                && info.is_settled()
                && info.voters().all(|p| view.is_up(p.store_id))
                && keeps_locations(view, config, info, from, to)
        });
        // Prefer a region whose leader is elsewhere: no leader transfer needed.
        let info = candidates.min_by_key(|info| (info.leader_store == Some(from), info.region.id))?;
        Some((info, from, to))
    })?;
    let leaving = *info.peer_on(from)?;
    let steps = move_replica_steps(&info.region.peers, info.leader_store, leaving, new_id()?, to)?;
    Some(Operator { region_id: info.region.id, kind: OperatorKind::BalanceRegion, steps })
}

/// Moves one leader off a busy store, to whichever voter of the region leads the fewest
/// regions. Stores are tried from the busiest down: the busiest may have no region with a
/// voter on an idle store.
pub(crate) fn leaders(
    view: &ClusterView,
    config: &SchedulerConfig,
    busy: &BTreeSet<u64>,
) -> Option<Operator> {
    let counts = view.leader_counts();
    let count = |store: u64| counts.get(&store).copied().unwrap_or(0);
    sources(&counts, config.leader_tolerance).into_iter().find_map(|from| {
        let (to, region_id) = view
            .regions
            .values()
            .filter(|info| !busy.contains(&info.region.id) && info.leader_store == Some(from))
            .filter_map(|info| {
                let best = info
                    .voters()
                    .filter(|p| p.store_id != from && view.is_up(p.store_id))
                    .min_by_key(|p| (count(p.store_id), p.store_id))?;
                Some((best.store_id, info.region.id))
            })
            .min_by_key(|&(store, region)| (count(store), region))?;
        improves(&counts, from, to).then(|| Operator {
            region_id,
            kind: OperatorKind::BalanceLeader,
            steps: vec![Step::TransferLeader { to_store: to }],
        })
    })
}
