//! The schedulers that run on the placement driver's leader: pure functions from a
//! [`ClusterView`] to [`Operator`]s, with no threads, no clock of their own and no I/O, so
//! that every decision is unit-tested on synthetic cluster states.
//!
//! Order matters: replica repair first (safety of data), then spreading replicas over
//! the location labels' failure domains, then hot regions, then balancing. At most one
//! operator per region is in flight; regions that have one are skipped. Balancing moves
//! one region (or leader) per run and stops within a tolerance, so it converges instead
//! of oscillating; it never moves a replica to where it is more exposed.

mod balance;
mod hot;
mod location;
mod repair;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::cluster::{ClusterView, RegionInfo};
use crate::operator::Operator;

/// Settings of the schedulers; each can be switched off.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Voters every region should have.
    pub replicas: usize,
    /// How long a store may be down before its peers are replaced elsewhere.
    pub down_grace: Duration,
    pub replica_repair: bool,
    pub balance_region: bool,
    /// Every store's region count may differ from the mean by this much.
    pub region_tolerance: u64,
    pub balance_leader: bool,
    /// Every store's leader count may differ from the mean by this much.
    pub leader_tolerance: u64,
    /// Store labels naming failure domains, outermost first (such as `zone`, then
    /// `host`): a region's replicas are spread over as many values as the stores allow
    /// (see `location.rs`).
    pub location_labels: Vec<String>,
    pub hot_region: bool,
    /// Regions below this write (or read) rate are never moved for load.
    pub hot_region_min_bytes_per_sec: u64,
    /// The hottest store is hot when its leaders' load exceeds the mean by this fraction.
    pub hot_tolerance_ratio: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            replicas: 3,
            down_grace: Duration::from_secs(30 * 60),
            replica_repair: true,
            balance_region: true,
            region_tolerance: 2,
            balance_leader: true,
            leader_tolerance: 1,
            location_labels: Vec::new(),
            hot_region: true,
            hot_region_min_bytes_per_sec: 1024 * 1024,
            hot_tolerance_ratio: 0.25,
        }
    }
}

/// Runs every enabled scheduler. `busy` holds the regions with an operator in flight;
/// `new_id` hands out peer ids, and scheduling stops short when it runs out.
pub(crate) fn schedule(
    view: &ClusterView,
    config: &SchedulerConfig,
    busy: &BTreeSet<u64>,
    new_id: &mut dyn FnMut() -> Option<u64>,
) -> Vec<Operator> {
    let mut operators = Vec::new();
    let mut taken = busy.clone();
    if config.replica_repair {
        for operator in repair::schedule(view, config, &taken, new_id) {
            taken.insert(operator.region_id);
            operators.push(operator);
        }
    }
    if let Some(operator) = location::schedule(view, config, &taken, new_id) {
        taken.insert(operator.region_id);
        operators.push(operator);
    }
    if config.hot_region
        && let Some(operator) = hot::schedule(view, config, &taken, new_id)
    {
        taken.insert(operator.region_id);
        operators.push(operator);
    }
    if config.balance_region
        && let Some(operator) = balance::regions(view, config, &taken, new_id)
    {
        taken.insert(operator.region_id);
        operators.push(operator);
    }
    if config.balance_leader
        && let Some(operator) = balance::leaders(view, config, &taken)
    {
        operators.push(operator);
    }
    operators
}

/// The best store for a new replica of `info`: up, without a peer of the region, the
/// least exposed next to the region's replicas (see `location.rs`), then with the fewest
/// regions. `counts` are [`ClusterView::region_counts`], computed once by the caller.
pub(crate) fn pick_target(
    view: &ClusterView,
    config: &SchedulerConfig,
    counts: &BTreeMap<u64, u64>,
    info: &RegionInfo,
) -> Option<u64> {
    let replicas = || info.region.peers.iter().map(|p| p.store_id);
    view.up_stores()
        .filter(|store| info.peer_on(store.id).is_none())
        .min_by_key(|store| {
            let exposure = location::exposure(view, &config.location_labels, store.id, replicas());
            (exposure, counts.get(&store.id).copied().unwrap_or(0), store.id)
        })
        .map(|store| store.id)
}
