//! Locations: where a store sits among the failure domains the operator names with
//! `location_labels`, outermost first (for example `["zone", "host"]`), and how far a
//! region's replicas are spread over them.
//!
//! A store's location is its value of each label, in order (a label it lacks counts as
//! an empty value). Two stores share `k` levels when their first `k` values are equal:
//! replicas in two zones share 0, replicas on two hosts of one zone share 1. A store's
//! *exposure* next to other replicas is the most levels it shares with any of them; the
//! schedulers place replicas where exposure is lowest, never move one to where it is
//! higher, and `schedule` here moves the most exposed replica of a region to a store
//! where it is lower, when one has room: a region that lost a zone to a split of its
//! parent, or was founded before enough zones had stores, ends up spread out.

use std::collections::BTreeSet;

use super::{SchedulerConfig, pick_target};
use crate::cluster::ClusterView;
use crate::operator::{Operator, OperatorKind, move_replica_steps};

/// The location of `store_id`: its value of each label, outermost first.
fn location<'a>(view: &'a ClusterView, labels: &[String], store_id: u64) -> Vec<&'a str> {
    let store_labels = view.stores.get(&store_id).map(|store| &store.labels);
    labels.iter().map(|label| store_labels.and_then(|l| l.get(label)).map_or("", String::as_str)).collect()
}

/// The most leading levels `store_id` shares with any store of `others` (0 without
/// labels, or next to no other replica).
pub(crate) fn exposure(
    view: &ClusterView,
    labels: &[String],
    store_id: u64,
    others: impl IntoIterator<Item = u64>,
) -> usize {
    if labels.is_empty() {
        return 0;
    }
    let here = location(view, labels, store_id);
    others
        .into_iter()
        .filter(|&other| other != store_id)
        .map(|other| here.iter().zip(location(view, labels, other)).take_while(|(a, b)| **a == *b).count())
        .max()
        .unwrap_or(0)
}

/// Moves the most exposed replica of one region to a store where it is less exposed.
pub(crate) fn schedule(
    view: &ClusterView,
    config: &SchedulerConfig,
    busy: &BTreeSet<u64>,
    new_id: &mut dyn FnMut() -> Option<u64>,
) -> Option<Operator> {
    let labels = &config.location_labels;
    if labels.is_empty() {
        return None;
    }
    let counts = view.region_counts();
    view.regions.values().find_map(|info| {
        if busy.contains(&info.region.id)
            || !info.is_settled()
            || !info.voters().all(|p| view.is_up(p.store_id))
            || info.learners().next().is_some()
        {
            return None;
        }
        let stores: Vec<u64> = info.region.peers.iter().map(|p| p.store_id).collect();
        let exposure_of = |store: u64| exposure(view, labels, store, stores.iter().copied());
        // The most exposed replica; among equals, one that does not lead.
        let worst = info
            .voters()
            .max_by_key(|p| (exposure_of(p.store_id), info.leader_store != Some(p.store_id), p.store_id))?;
        let worst_exposure = exposure_of(worst.store_id);
        if worst_exposure == 0 {
            return None;
        }
        let target = pick_target(view, config, &counts, info)?;
        let others = stores.iter().copied().filter(|&s| s != worst.store_id);
        if exposure(view, labels, target, others) >= worst_exposure {
            return None;
        }
        let steps = move_replica_steps(&info.region.peers, info.leader_store, *worst, new_id()?, target)?;
        Some(Operator { region_id: info.region.id, kind: OperatorKind::Location, steps })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::schedule as schedule_all;
    use crate::schedulers::tests::{apply, ids, region, store, view};

    fn zone_and_host(id: u64, zone: &str, host: &str) -> crate::cluster::StoreInfo {
        let mut store = store(id, zone);
        store.labels.insert("host".into(), host.into());
        store
    }

    fn zones() -> SchedulerConfig {
        SchedulerConfig { location_labels: vec!["zone".into()], ..Default::default() }
    }

    #[test]
    fn exposure_counts_the_leading_levels_shared() {
        let cluster = view(
            vec![zone_and_host(1, "a", "h1"), zone_and_host(2, "a", "h2"), zone_and_host(3, "b", "h1")],
            Vec::new(),
        );
        let labels = ["zone".to_string(), "host".to_string()];
        assert_eq!(exposure(&cluster, &labels, 1, [3]), 0, "another zone: nothing shared");
        assert_eq!(exposure(&cluster, &labels, 1, [2]), 1, "same zone, another host");
        assert_eq!(exposure(&cluster, &labels, 1, [2, 3]), 1);
        assert_eq!(exposure(&cluster, &labels[..1], 1, [2]), 1);
        assert_eq!(exposure(&cluster, &[], 1, [2]), 0, "without labels every store is alike");
        assert_eq!(exposure(&cluster, &labels, 1, [1]), 0, "a store is not exposed to itself");
    }

    /// Six stores in three zones, and regions founded on the first three stores (two in
    /// zone a), as a cluster started before its labels were configured would be: every
    /// region ends up with one replica per zone, and then nothing moves.
    #[test]
    fn regions_sharing_a_zone_are_spread_until_each_zone_holds_one_replica() {
        let stores =
            ["a", "a", "b", "b", "c", "c"].iter().zip(1..).map(|(zone, id)| store(id, zone)).collect();
        let regions = (1..=12).map(|id| region(id, &[1, 2, 3], 1)).collect();
        let mut cluster = view(stores, regions);
        let config = SchedulerConfig { balance_region: false, balance_leader: false, ..zones() };
        let mut new_id = ids();
        for _ in 0..100 {
            let operators = schedule_all(&cluster, &config, &BTreeSet::new(), &mut new_id);
            if operators.is_empty() {
                break;
            }
            for operator in &operators {
                assert_eq!(operator.kind, OperatorKind::Location, "{operator:?}");
                apply(&mut cluster, operator);
            }
        }
        for info in cluster.regions.values() {
            let zones: BTreeSet<&str> = info
                .region
                .peers
                .iter()
                .map(|p| cluster.stores[&p.store_id].labels["zone"].as_str())
                .collect();
            assert_eq!(zones.len(), 3, "region {} spans {zones:?}", info.region.id);
        }
        assert!(schedule_all(&cluster, &config, &BTreeSet::new(), &mut new_id).is_empty());
    }

    /// With only two zones for three replicas, two must share one: nothing to improve.
    #[test]
    fn a_region_as_spread_as_the_stores_allow_is_left_alone() {
        let cluster = view(
            vec![store(1, "a"), store(2, "a"), store(3, "b"), store(4, "b")],
            vec![region(1, &[1, 2, 3], 1)],
        );
        let config = zones();
        assert_eq!(schedule(&cluster, &config, &BTreeSet::new(), &mut ids()), None);
    }

    /// Balancing never trades a spread-out region for an even count: the emptiest store
    /// is in zone a, so of the busiest store's regions only those without a replica in
    /// zone a may move there.
    #[test]
    fn balancing_never_moves_a_replica_into_a_zone_the_region_uses() {
        let stores = vec![store(1, "a"), store(2, "b"), store(3, "c"), store(4, "a")];
        let mut regions = vec![region(1, &[1, 2], 1), region(2, &[1, 2], 1)];
        regions.extend((3..=6).map(|id| region(id, &[2, 3], 2)));
        let cluster = view(stores, regions);
        let config = SchedulerConfig { replicas: 2, replica_repair: false, balance_leader: false, ..zones() };
        let operators = schedule_all(&cluster, &config, &BTreeSet::new(), &mut ids());
        let [operator] = operators.as_slice() else { panic!("one balancing move expected: {operators:?}") };
        assert_eq!(operator.kind, OperatorKind::BalanceRegion);
        assert!(operator.region_id >= 3, "region {} has a replica in zone a already", operator.region_id);
    }
}
