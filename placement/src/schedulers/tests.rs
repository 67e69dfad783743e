//! Scheduler decisions on synthetic cluster states.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tessera_engine::proto::metadata::{Peer, PeerRole, Region, RegionEpoch};

use super::*;
use crate::cluster::{StoreInfo, StoreState};
use crate::operator::{OperatorKind, Step};

pub(super) fn store(id: u64, zone: &str) -> StoreInfo {
    let labels = if zone.is_empty() {
        BTreeMap::new()
    } else {
        BTreeMap::from([("zone".to_string(), zone.to_string())])
    };
    StoreInfo { id, address: format!("127.0.0.1:{}", 20160 + id), state: StoreState::Up, labels }
}

pub(super) fn region(id: u64, stores: &[u64], leader: u64) -> RegionInfo {
    RegionInfo {
        region: Region {
            id,
            start_key: format!("r{id:04}").into_bytes(),
            end_key: format!("r{:04}", id + 1).into_bytes(),
            epoch: Some(RegionEpoch { conf_version: 1, version: 1 }),
            peers: stores
                .iter()
                .map(|&s| Peer { id: id * 100 + s, store_id: s, role: PeerRole::Voter as i32 })
                .collect(),
        },
        leader_store: Some(leader),
        pending_peers: Vec::new(),
        approximate_bytes: 1 << 20,
        write_bytes_per_sec: 0,
        read_bytes_per_sec: 0,
    }
}

pub(super) fn view(stores: Vec<StoreInfo>, regions: Vec<RegionInfo>) -> ClusterView {
    ClusterView {
        stores: stores.into_iter().map(|s| (s.id, s)).collect(),
        regions: regions.into_iter().map(|r| (r.region.id, r)).collect(),
        now: Duration::from_secs(10_000),
    }
}

pub(super) fn ids() -> impl FnMut() -> Option<u64> {
    let mut next = 1_000_000;
    move || {
        next += 1;
        Some(next)
    }
}

/// Carries out an operator on the view, as the region's leader would.
pub(super) fn apply(view: &mut ClusterView, operator: &Operator) {
    let Some(info) = view.regions.get_mut(&operator.region_id) else {
        panic!("no region {}", operator.region_id)
    };
    for step in &operator.steps {
        match step {
            Step::AddLearner { peer } => info.region.peers.push(*peer),
            Step::PromoteLearner { peer } => {
                let found =
                    info.region.peers.iter_mut().find(|p| p.id == peer.id).expect("the learner exists");
                found.role = PeerRole::Voter as i32;
            }
            Step::RemovePeer { peer } => {
                assert_ne!(info.leader_store, Some(peer.store_id), "an operator never removes the leader");
                info.region.peers.retain(|p| p.id != peer.id);
            }
            Step::TransferLeader { to_store } => {
                assert!(info.peer_on(*to_store).is_some(), "leadership goes to a replica");
                info.leader_store = Some(*to_store);
            }
            Step::Split { .. } => panic!("schedulers never split"),
        }
    }
}

fn assert_healthy(view: &ClusterView, replicas: usize) {
    for info in view.regions.values() {
        let stores: BTreeSet<u64> = info.region.peers.iter().map(|p| p.store_id).collect();
        assert_eq!(
            stores.len(),
            info.region.peers.len(),
            "region {} has two peers on one store",
            info.region.id
        );
        assert_eq!(info.voters().count(), replicas, "region {} voters", info.region.id);
        assert!(info.voters().all(|p| view.is_up(p.store_id)));
    }
}

#[test]
fn a_region_short_of_replicas_gets_one_on_the_emptiest_store() {
    let cluster = view(
        (1..=4).map(|id| store(id, "")).collect(),
        vec![
            region(1, &[1, 2], 1),
            region(2, &[1, 2, 3], 1),
            region(3, &[2, 3, 4], 2),
            region(4, &[1, 3, 4], 1),
        ],
    );
    let operators = schedule(
        &cluster,
        &SchedulerConfig { balance_region: false, balance_leader: false, ..Default::default() },
        &BTreeSet::new(),
        &mut ids(),
    );
    assert_eq!(operators.len(), 1);
    let operator = &operators[0];
    assert_eq!((operator.region_id, operator.kind), (1, OperatorKind::ReplicaRepair));
    // Stores 1 to 3 hold three regions each, store 4 two: the free store with the fewest.
    assert!(matches!(&operator.steps[..], [Step::AddLearner { peer }, Step::PromoteLearner { peer: voter }]
        if peer.store_id == 4 && peer.role == PeerRole::Learner as i32 && voter.id == peer.id));
}

#[test]
fn a_peer_on_a_store_down_past_the_grace_period_is_replaced() {
    let mut stores: Vec<StoreInfo> = (1..=4).map(|id| store(id, "")).collect();
    stores[2].state = StoreState::Down { since: Duration::from_secs(10_000 - 700) };
    let config = SchedulerConfig {
        down_grace: Duration::from_secs(600),
        balance_region: false,
        balance_leader: false,
        ..Default::default()
    };
    let cluster = view(stores.clone(), vec![region(1, &[1, 2, 3], 1)]);
    let operators = schedule(&cluster, &config, &BTreeSet::new(), &mut ids());
    let [operator] = operators.as_slice() else { panic!("one operator expected: {operators:?}") };
    assert!(
        matches!(&operator.steps[..], [Step::AddLearner { peer }, Step::PromoteLearner { .. }, Step::RemovePeer { peer: lost }]
        if peer.store_id == 4 && lost.store_id == 3)
    );

    // Within the grace period nothing moves: the store may come back.
    stores[2].state = StoreState::Down { since: Duration::from_secs(10_000 - 100) };
    let cluster = view(stores, vec![region(1, &[1, 2, 3], 1)]);
    assert!(schedule(&cluster, &config, &BTreeSet::new(), &mut ids()).is_empty());
}

#[test]
fn an_extra_replica_is_removed_from_the_fullest_store_but_never_the_leader() {
    let cluster = view(
        (1..=4).map(|id| store(id, "")).collect(),
        vec![region(1, &[1, 2, 3, 4], 4), region(2, &[4, 2, 3], 4), region(3, &[4, 1, 2], 4)],
    );
    let config = SchedulerConfig { balance_region: false, balance_leader: false, ..Default::default() };
    let operators = schedule(&cluster, &config, &BTreeSet::new(), &mut ids());
    let [operator] = operators.as_slice() else { panic!("one operator expected: {operators:?}") };
    // Store 4 holds the most regions but leads region 1; store 2 is the next fullest.
    assert!(matches!(&operator.steps[..], [Step::RemovePeer { peer }] if peer.store_id == 2));
}

#[test]
fn new_replicas_go_to_zones_the_region_does_not_use() {
    let stores = vec![store(1, "z1"), store(2, "z1"), store(3, "z2"), store(4, "z3")];
    let mut regions = vec![region(1, &[1, 3], 1)];
    // Store 4 is the fullest: without the label it would not be chosen.
    regions.extend((2..=6).map(|id| region(id, &[4], 4)));
    let cluster = view(stores, regions);
    let config = SchedulerConfig {
        replicas: 3,
        location_labels: vec!["zone".into()],
        balance_region: false,
        balance_leader: false,
        ..Default::default()
    };
    let busy: BTreeSet<u64> = (2..=6).collect();
    let operators = schedule(&cluster, &config, &busy, &mut ids());
    let [operator] = operators.as_slice() else { panic!("one operator expected: {operators:?}") };
    assert!(matches!(&operator.steps[0], Step::AddLearner { peer } if peer.store_id == 4));
}

#[test]
fn regions_with_an_operator_in_flight_are_left_alone() {
    let cluster = view((1..=4).map(|id| store(id, "")).collect(), vec![region(1, &[1, 2], 1)]);
    let busy = BTreeSet::from([1]);
    assert!(schedule(&cluster, &SchedulerConfig::default(), &busy, &mut ids()).is_empty());
}

fn assert_within_tolerance_of_mean(counts: &BTreeMap<u64, u64>, tolerance: u64) {
    let mean = counts.values().sum::<u64>() as f64 / counts.len() as f64;
    for (store, &count) in counts {
        assert!(
            (count as f64 - mean).abs() <= tolerance as f64,
            "store {store} at {count}, mean {mean}: {counts:?}"
        );
    }
}

/// Runs the schedulers and applies what they decide until they decide nothing.
fn converge(cluster: &mut ClusterView, config: &SchedulerConfig) -> usize {
    let mut new_id = ids();
    for round in 0..10_000 {
        let operators = schedule(cluster, config, &BTreeSet::new(), &mut new_id);
        if operators.is_empty() {
            return round;
        }
        for operator in &operators {
            apply(cluster, operator);
        }
    }
    panic!("the schedulers did not converge in 10,000 rounds");
}

#[test]
fn new_stores_receive_regions_and_leaders_until_within_tolerance() {
    // 60 regions on stores 1 to 3, all led by store 1; stores 4 and 5 join empty.
    let mut cluster = view(
        (1..=5).map(|id| store(id, "")).collect(),
        (1..=60).map(|id| region(id, &[1, 2, 3], 1)).collect(),
    );
    let config = SchedulerConfig::default();
    let rounds = converge(&mut cluster, &config);
    assert!(rounds > 0);
    assert_healthy(&cluster, 3);
    let regions = cluster.region_counts();
    assert_within_tolerance_of_mean(&regions, config.region_tolerance);
    assert!(regions[&4] > 0 && regions[&5] > 0);
    assert_within_tolerance_of_mean(&cluster.leader_counts(), config.leader_tolerance);
    // Converged means converged: another run decides nothing.
    assert!(schedule(&cluster, &config, &BTreeSet::new(), &mut ids()).is_empty());
}

#[test]
fn a_lost_store_is_drained_onto_the_survivors() {
    let mut stores: Vec<StoreInfo> = (1..=4).map(|id| store(id, "")).collect();
    stores[3].state = StoreState::Down { since: Duration::ZERO };
    let regions = (1..=40)
        .map(|id| region(id, &[1 + id % 4, 1 + (id + 1) % 4, 1 + (id + 2) % 4], 1 + id % 4))
        .collect();
    let mut cluster = view(stores, regions);
    for info in cluster.regions.values_mut() {
        if info.leader_store == Some(4) {
            let heir = info.voters().find(|p| p.store_id != 4).map(|p| p.store_id);
            info.leader_store = heir;
        }
    }
    converge(&mut cluster, &SchedulerConfig::default());
    assert_healthy(&cluster, 3);
    assert!(cluster.regions.values().all(|info| info.peer_on(4).is_none()), "nothing left on the lost store");
}

fn hot(mut info: RegionInfo, write_bytes_per_sec: u64) -> RegionInfo {
    info.write_bytes_per_sec = write_bytes_per_sec;
    info
}

const MB: u64 = 1024 * 1024;

#[test]
fn the_hottest_region_of_the_hottest_store_changes_leader_first() {
    let cluster = view(
        (1..=3).map(|id| store(id, "")).collect(),
        vec![
            hot(region(1, &[1, 2, 3], 1), 20 * MB),
            hot(region(2, &[1, 2, 3], 1), 8 * MB),
            hot(region(3, &[1, 2, 3], 2), MB),
        ],
    );
    let config = SchedulerConfig { balance_leader: false, balance_region: false, ..Default::default() };
    let operators = schedule(&cluster, &config, &BTreeSet::new(), &mut ids());
    let [operator] = operators.as_slice() else { panic!("one operator expected: {operators:?}") };
    assert_eq!((operator.region_id, operator.kind), (1, OperatorKind::HotRegion));
    // Store 3 leads nothing: the coolest voter.
    assert_eq!(operator.steps, vec![Step::TransferLeader { to_store: 3 }]);
}

/// Store 1 serves 40 MB/s; its voters' stores 25 each, so no leader change helps; store 4
/// is idle and takes a replica of the hottest region with its leadership (30 < 40).
/// Moving store 1's only hot region would merely move the hotspot, and is not done.
#[test]
fn a_hot_region_whose_voters_are_all_hot_moves_a_replica_to_a_cool_store() {
    let cluster = view(
        (1..=4).map(|id| store(id, "")).collect(),
        vec![
            hot(region(1, &[1, 2, 3], 1), 30 * MB),
            hot(region(4, &[1, 2, 3], 1), 10 * MB),
            hot(region(2, &[1, 2, 3], 2), 25 * MB),
            hot(region(3, &[1, 2, 3], 3), 25 * MB),
        ],
    );
    let config = SchedulerConfig { balance_leader: false, balance_region: false, ..Default::default() };
    let operators = schedule(&cluster, &config, &BTreeSet::new(), &mut ids());
    let [operator] = operators.as_slice() else { panic!("one operator expected: {operators:?}") };
    assert!(
        matches!(&operator.steps[..], [
        Step::AddLearner { peer },
        Step::PromoteLearner { .. },
        Step::TransferLeader { to_store: 4 },
        Step::RemovePeer { peer: leaving },
    ] if peer.store_id == 4 && leaving.store_id == 1),
        "{operator:?}"
    );
}

#[test]
fn cold_clusters_and_small_regions_are_left_alone() {
    let config = SchedulerConfig { balance_leader: false, balance_region: false, ..Default::default() };
    let even = view(
        (1..=3).map(|id| store(id, "")).collect(),
        vec![
            hot(region(1, &[1, 2, 3], 1), 10 * MB),
            hot(region(2, &[1, 2, 3], 2), 10 * MB),
            hot(region(3, &[1, 2, 3], 3), 10 * MB),
        ],
    );
    assert!(
        schedule(&even, &config, &BTreeSet::new(), &mut ids()).is_empty(),
        "no store is hotter than the others"
    );
    let small = view((1..=3).map(|id| store(id, "")).collect(), vec![hot(region(1, &[1, 2, 3], 1), 100)]);
    assert!(schedule(&small, &config, &BTreeSet::new(), &mut ids()).is_empty(), "below the hot threshold");
}

#[test]
fn a_learner_left_without_an_operator_in_flight_is_removed() {
    // An operator added a learner on store 4 and was cancelled (or timed out) before
    // promoting it: nothing is in flight for region 1 any more.
    let mut leftover = region(1, &[1, 2, 3], 1);
    let stray = Peer { id: 104, store_id: 4, role: PeerRole::Learner as i32 };
    leftover.region.peers.push(stray);
    let mut cluster =
        view((1..=4).map(|id| store(id, "")).collect(), vec![leftover, region(2, &[1, 2, 3], 2)]);
    let config = SchedulerConfig::default();

    let operators = schedule(&cluster, &config, &BTreeSet::new(), &mut ids());
    let [operator] = operators.as_slice() else { panic!("one operator expected: {operators:?}") };
    assert_eq!((operator.region_id, operator.kind), (1, OperatorKind::ReplicaRepair));
    assert_eq!(operator.steps, vec![Step::RemovePeer { peer: stray }]);

    // While an operator is in flight the learner is its own, not a leftover.
    assert!(schedule(&cluster, &config, &BTreeSet::from([1]), &mut ids()).is_empty());

    apply(&mut cluster, operator);
    assert_healthy(&cluster, 3);
    assert!(cluster.regions.values().all(|info| info.learners().next().is_none()), "no learner left");
    assert!(schedule(&cluster, &config, &BTreeSet::new(), &mut ids()).is_empty());
}

#[test]
fn balance_region_never_moves_a_region_with_a_pending_peer() {
    // Stores 1 to 3 hold six regions each and store 4 none: far from balanced.
    let stores: Vec<StoreInfo> = (1..=4).map(|id| store(id, "")).collect();
    let settled: Vec<RegionInfo> = (1..=6).map(|id| region(id, &[1, 2, 3], 2)).collect();
    let config = SchedulerConfig {
        replica_repair: false,
        hot_region: false,
        balance_leader: false,
        ..Default::default()
    };
    let decide = |regions: Vec<RegionInfo>| {
        schedule(&view(stores.clone(), regions), &config, &BTreeSet::new(), &mut ids())
    };
    let lagging = |mut info: RegionInfo| {
        // The follower on store 3 has not caught up with the leader.
        let follower = *info.peer_on(3).expect("every region has a peer on store 3");
        info.pending_peers = vec![follower];
        info
    };

    // All settled: region 1 moves first (its leader is not on the store it leaves).
    let operators = decide(settled.clone());
    let [operator] = operators.as_slice() else { panic!("one operator expected: {operators:?}") };
    assert_eq!((operator.region_id, operator.kind), (1, OperatorKind::BalanceRegion));
    assert!(matches!(operator.steps.first(), Some(Step::AddLearner { peer }) if peer.store_id == 4));

    // Region 1 has a pending peer: another region moves instead.
    let mut regions = settled.clone();
    regions[0] = lagging(regions[0].clone());
    let operators = decide(regions);
    let [operator] = operators.as_slice() else { panic!("one operator expected: {operators:?}") };
    assert_eq!((operator.region_id, operator.kind), (2, OperatorKind::BalanceRegion));

    // Every region has one: nothing moves, however unbalanced.
    let operators = decide(settled.into_iter().map(lagging).collect());
    assert!(operators.is_empty(), "{operators:?}");
}

#[test]
fn balancing_never_moves_replicas_to_a_store_that_is_down() {
    // Store 4 is down (within the grace period) with one replica left: by count the
    // emptiest store, but no place for more. Among the stores that are up the counts
    // are even, so there is nothing to do.
    let mut stores: Vec<StoreInfo> = (1..=4).map(|id| store(id, "")).collect();
    stores[3].state = StoreState::Down { since: Duration::from_secs(10_000) };
    let mut regions: Vec<RegionInfo> = (1..=9).map(|id| region(id, &[1, 2, 3], 1 + id % 3)).collect();
    regions.push(region(10, &[1, 2, 4], 1));
    let cluster = view(stores, regions);
    let config = SchedulerConfig { replica_repair: false, balance_leader: false, ..Default::default() };
    let operators = schedule(&cluster, &config, &BTreeSet::new(), &mut ids());
    assert!(operators.is_empty(), "{operators:?}");
    assert!(!cluster.region_counts().contains_key(&4), "a down store takes no part in balancing");
}

#[test]
fn a_lost_voter_is_replaced_by_a_stray_learner_on_a_live_store() {
    // Four stores, one down for good; the region's fourth replica is a learner a split
    // copied from its parent. No store is free for a new replica, but the learner can
    // take the lost voter's place.
    let mut stores: Vec<StoreInfo> = (1..=4).map(|id| store(id, "")).collect();
    stores[3].state = StoreState::Down { since: Duration::ZERO };
    let mut info = region(1, &[1, 2, 4], 1);
    let learner = Peer { id: 99, store_id: 3, role: PeerRole::Learner as i32 };
    info.region.peers.push(learner);
    let mut cluster = view(stores, vec![info]);
    let operators = schedule(&cluster, &SchedulerConfig::default(), &BTreeSet::new(), &mut ids());
    let lost = Peer { id: 104, store_id: 4, role: PeerRole::Voter as i32 };
    let promoted = Peer { role: PeerRole::Voter as i32, ..learner };
    assert_eq!(
        operators.iter().map(|o| o.steps.clone()).collect::<Vec<_>>(),
        vec![vec![Step::PromoteLearner { peer: promoted }, Step::RemovePeer { peer: lost }]]
    );
    apply(&mut cluster, &operators[0]);
    assert_healthy(&cluster, 3);
}

#[test]
fn a_lost_voter_beyond_the_replica_count_is_just_removed() {
    // Every store holds a voter; the one on the lost store is surplus.
    let mut stores: Vec<StoreInfo> = (1..=4).map(|id| store(id, "")).collect();
    stores[3].state = StoreState::Down { since: Duration::ZERO };
    let cluster = view(stores, vec![region(1, &[1, 2, 3, 4], 1)]);
    let operators = schedule(&cluster, &SchedulerConfig::default(), &BTreeSet::new(), &mut ids());
    let lost = Peer { id: 104, store_id: 4, role: PeerRole::Voter as i32 };
    assert_eq!(
        operators.iter().map(|o| o.steps.clone()).collect::<Vec<_>>(),
        vec![vec![Step::RemovePeer { peer: lost }]]
    );
}
