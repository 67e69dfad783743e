//! The driver's pure state on synthetic reports: the region map, the operators in flight
//! and the leader's view. No threads, no clock: every `now` is a `Duration` passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tessera_engine::proto::metadata::{Peer, PeerRole, Region, RegionEpoch};
use tessera_engine::region::KeyRange;

use super::leader::*;
use super::operators::*;
use super::region_map::*;
use crate::cluster::{ClusterView, RegionInfo, StoreInfo, StoreState};
use crate::errors::PdError;
use crate::metadata::Loaded;
use crate::operator::{Operator, OperatorKind, Step};
use crate::proto::{
    OperatorStep, RegionHeartbeat, StoreHeartbeatResponse, StoreRecord, StoreStats, operator_step,
};

const TIMEOUT: Duration = Duration::from_secs(600);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn voter(id: u64, store_id: u64) -> Peer {
    Peer { id, store_id, role: PeerRole::Voter as i32 }
}

fn learner(id: u64, store_id: u64) -> Peer {
    Peer { id, store_id, role: PeerRole::Learner as i32 }
}

/// Region `id` over `[start, end)` (empty end: unbounded) at epoch 1/1, with a voter on
/// each of `stores` whose peer id is `id * 10 + store`.
fn region(id: u64, start: &str, end: &str, stores: &[u64]) -> Region {
    Region {
        id,
        start_key: start.as_bytes().to_vec(),
        end_key: end.as_bytes().to_vec(),
        epoch: Some(RegionEpoch { conf_version: 1, version: 1 }),
        peers: stores.iter().map(|&s| voter(id * 10 + s, s)).collect(),
    }
}

fn at_epoch(mut region: Region, conf_version: u64, version: u64) -> Region {
    region.epoch = Some(RegionEpoch { conf_version, version });
    region
}

fn map_of(regions: impl IntoIterator<Item = Region>) -> RegionMap {
    let mut map = RegionMap::default();
    for region in regions {
        map.insert(region);
    }
    map
}

fn ids<'a>(entries: impl Iterator<Item = &'a RegionEntry>) -> Vec<u64> {
    entries.map(|entry| entry.region().id).collect()
}

fn id_at(map: &RegionMap, key: &str) -> Option<u64> {
    map.by_key(key.as_bytes()).map(|entry| entry.region().id)
}

// ---- RegionMap ------------------------------------------------------------------------

#[test]
fn an_older_epoch_of_a_known_region_is_stale() {
    let known = at_epoch(region(1, "a", "m", &[1, 2, 3]), 2, 3);
    let map = map_of([known.clone()]);
    // Older in either component is older, even if the other component is ahead.
    for (conf_version, version) in [(2, 2), (1, 3), (1, 4), (3, 2)] {
        let reported = at_epoch(known.clone(), conf_version, version);
        assert_eq!(
            map.judge(&reported),
            Verdict::Stale(known.clone()),
            "conf_version {conf_version}, version {version} against 2/3"
        );
    }
}

#[test]
fn a_region_overlapped_by_a_higher_version_is_stale() {
    // Region 1 [ , ) split at "m": region 2 holds [m, ) at version 2. Region 1's leader
    // has not applied the split yet and still reports the whole key space at version 1.
    let right = at_epoch(region(2, "m", "", &[1, 2, 3]), 1, 2);
    let map = map_of([right.clone()]);
    assert_eq!(map.judge(&region(1, "", "", &[1, 2, 3])), Verdict::Stale(right));
}

#[test]
fn the_descriptor_the_map_holds_is_known() {
    let held = at_epoch(region(1, "a", "m", &[1, 2, 3]), 4, 2);
    let map = map_of([held.clone(), region(2, "m", "", &[1, 2, 3])]);
    assert_eq!(map.judge(&held), Verdict::Known);
}

#[test]
fn a_newer_region_lists_the_older_regions_it_replaces() {
    // The first region [ , ) split at "m"; the right half (region 2) reports before the
    // left half's update arrives: it replaces region 1 as the map knows it.
    let first = region(1, "", "", &[1, 2, 3]);
    let map = map_of([first.clone()]);
    let right = at_epoch(region(2, "m", "", &[1, 2, 3]), 1, 2);
    assert_eq!(map.judge(&right), Verdict::Changed { replaces: vec![1] });

    // A conf change of a known region is a change, but replaces nothing but itself.
    let mut grown = at_epoch(first, 2, 1);
    grown.peers.push(voter(14, 4));
    assert_eq!(map.judge(&grown), Verdict::Changed { replaces: Vec::new() });

    // Every overlapped region is listed, in key order (not id order); a region that
    // merely touches the new one's bounds is not.
    let map = map_of([
        region(5, "a", "c", &[1]),
        region(3, "c", "e", &[1]),
        region(4, "e", "g", &[1]),
        region(6, "g", "i", &[1]),
    ]);
    let wide = at_epoch(region(7, "b", "g", &[1]), 1, 2);
    assert_eq!(map.judge(&wide), Verdict::Changed { replaces: vec![5, 3, 4] });

    // A region over a gap replaces nothing.
    let map = map_of([region(1, "a", "c", &[1]), region(2, "x", "", &[1])]);
    assert_eq!(map.judge(&region(3, "c", "x", &[1])), Verdict::Changed { replaces: Vec::new() });
}

#[test]
fn inserting_a_region_removes_the_regions_it_overlaps() {
    let mut map = map_of([region(1, "", "", &[1, 2, 3])]);
    map.insert(at_epoch(region(2, "m", "", &[1, 2, 3]), 1, 2));
    assert_eq!(map.len(), 1, "region 1 [ , ) is gone");
    assert!(map.get(1).is_none());
    assert_eq!(id_at(&map, "x"), Some(2));
    assert_eq!(id_at(&map, "a"), None, "[ , m) is a gap until region 1 reports its half");

    map.insert(at_epoch(region(1, "", "m", &[1, 2, 3]), 1, 2));
    assert_eq!(ids(map.range(KeyRange::FULL)), vec![1, 2]);
    assert_eq!((id_at(&map, "a"), id_at(&map, "m")), (Some(1), Some(2)));

    // A known region whose start moved is found under its new start only.
    let mut map = map_of([region(1, "a", "z", &[1])]);
    map.insert(at_epoch(region(1, "m", "z", &[1]), 1, 2));
    assert_eq!((id_at(&map, "b"), id_at(&map, "n")), (None, Some(1)));
    assert_eq!(ids(map.range(KeyRange::FULL)), vec![1]);
}

#[test]
fn a_new_descriptor_keeps_what_is_known_of_the_leader() {
    let first = region(1, "", "", &[1, 2, 3]);
    let mut map = map_of([first.clone()]);
    let entry = map.get_mut(1).expect("region 1 was just inserted");
    entry.term = 7;
    entry.leader = Some(voter(12, 2));
    entry.info.leader_store = Some(2);

    let mut grown = at_epoch(first, 2, 1);
    grown.peers.push(learner(14, 4));
    map.insert(grown.clone());
    let entry = map.get(1).expect("region 1 is still there");
    assert_eq!(entry.region(), &grown);
    assert_eq!((entry.term, entry.leader, entry.info.leader_store), (7, Some(voter(12, 2)), Some(2)));
}

/// [ , c) [c, f) gap [h, ).
fn map_with_a_gap() -> RegionMap {
    map_of([region(1, "", "c", &[1]), region(2, "c", "f", &[1]), region(3, "h", "", &[1])])
}

#[test]
fn by_key_finds_the_region_holding_a_key() {
    let map = map_with_a_gap();
    let expected = [
        ("", Some(1)),
        ("b", Some(1)),
        ("c", Some(2)),
        ("ezzz", Some(2)),
        ("f", None),
        ("g", None),
        ("h", Some(3)),
        ("zzzz", Some(3)),
    ];
    for (key, region_id) in expected {
        assert_eq!(id_at(&map, key), region_id, "key {key:?}");
    }
    assert_eq!(
        map.by_key(&[0xff; 16]).map(|entry| entry.region().id),
        Some(3),
        "the last region is unbounded"
    );
}

#[test]
fn range_lists_the_overlapping_regions_in_key_order() {
    let map = map_with_a_gap();
    let cases: [(&str, &str, &[u64]); 9] = [
        ("", "", &[1, 2, 3]),
        // A start in the middle of a region includes that region.
        ("d", "", &[2, 3]),
        ("b", "d", &[1, 2]),
        // End is exclusive: [c, f) does not reach into [h, ).
        ("d", "h", &[2]),
        ("a", "c", &[1]),
        // In the gap, or starting in it.
        ("f", "g", &[]),
        ("g", "i", &[3]),
        ("g", "", &[3]),
        ("zz", "", &[3]),
    ];
    for (start, end, expected) in cases {
        assert_eq!(
            ids(map.range(KeyRange::new(start.as_bytes(), end.as_bytes()))),
            expected,
            "range {start:?}..{end:?}"
        );
    }
}

// ---- OperatorController ---------------------------------------------------------------

fn store_info(id: u64, state: StoreState) -> StoreInfo {
    StoreInfo { id, address: format!("127.0.0.1:{}", 20160 + id), state, labels: BTreeMap::new() }
}

fn up_stores(stores: &[u64]) -> ClusterView {
    ClusterView {
        stores: stores.iter().map(|&id| (id, store_info(id, StoreState::Up))).collect(),
        regions: BTreeMap::new(),
        now: Duration::ZERO,
    }
}

fn report_of(region: Region, leader_store: u64) -> RegionInfo {
    RegionInfo {
        region,
        leader_store: Some(leader_store),
        pending_peers: Vec::new(),
        approximate_bytes: 0,
        write_bytes_per_sec: 0,
        read_bytes_per_sec: 0,
    }
}

fn outcomes(
    entries: &[(OperatorKind, OperatorOutcome, u64)],
) -> BTreeMap<(OperatorKind, OperatorOutcome), u64> {
    entries.iter().map(|&(kind, outcome, count)| ((kind, outcome), count)).collect()
}

fn current_step(operators: &OperatorController, region_id: u64) -> Option<u32> {
    operators
        .views(Duration::ZERO)
        .iter()
        .find(|v| v.region_id == region_id && v.outcome.is_empty())
        .map(|v| v.current_step)
}

/// Moves region 1's replica on store 3 to store 4 (as balance-region does).
fn replica_move() -> (Operator, Peer, Peer) {
    let new = learner(14, 4);
    let leaving = voter(13, 3);
    let steps = vec![
        Step::AddLearner { peer: new },
        Step::PromoteLearner { peer: voter(new.id, new.store_id) },
        Step::RemovePeer { peer: leaving },
    ];
    (Operator { region_id: 1, kind: OperatorKind::BalanceRegion, steps }, new, leaving)
}

#[test]
fn a_replica_move_advances_only_as_the_reports_show_each_step_done() {
    let view = up_stores(&[1, 2, 3, 4]);
    let (operator, new, leaving) = replica_move();
    let steps = operator.steps.clone();
    let mut operators = OperatorController::new(TIMEOUT, 3, 1);
    assert!(operators.add(operator, Duration::ZERO).is_some());
    let mut report = report_of(region(1, "a", "m", &[1, 2, 3]), 1);

    // Sending a step does not make it done: it is sent again until the region shows it.
    assert_eq!(
        operators.on_report(&report, &|store| view.is_up(store), Duration::ZERO),
        Some(steps[0].clone())
    );
    assert_eq!(
        operators.on_report(&report, &|store| view.is_up(store), Duration::ZERO),
        Some(steps[0].clone())
    );
    assert_eq!(current_step(&operators, 1), Some(0));

    // The learner joined but is catching up: nothing to send, nothing to promote yet.
    report.region.peers.push(new);
    report.region.epoch = Some(RegionEpoch { conf_version: 2, version: 1 });
    report.pending_peers = vec![new];
    assert_eq!(operators.on_report(&report, &|store| view.is_up(store), Duration::ZERO), None);
    assert_eq!(current_step(&operators, 1), Some(0));
    assert!(operators.busy().contains(&1), "waiting is not ending");

    // Caught up: promote it.
    report.pending_peers.clear();
    assert_eq!(
        operators.on_report(&report, &|store| view.is_up(store), Duration::ZERO),
        Some(steps[1].clone())
    );
    assert_eq!(current_step(&operators, 1), Some(1));
    // Fallen behind again before the promotion: wait rather than promote a lagging learner.
    report.pending_peers = vec![new];
    assert_eq!(operators.on_report(&report, &|store| view.is_up(store), Duration::ZERO), None);
    report.pending_peers.clear();
    assert_eq!(
        operators.on_report(&report, &|store| view.is_up(store), Duration::ZERO),
        Some(steps[1].clone())
    );

    // Promoted: remove the replica that leaves.
    let promoted = report.region.peers.iter_mut().find(|p| p.id == new.id).expect("the learner is a peer");
    promoted.role = PeerRole::Voter as i32;
    report.region.epoch = Some(RegionEpoch { conf_version: 3, version: 1 });
    assert_eq!(
        operators.on_report(&report, &|store| view.is_up(store), Duration::ZERO),
        Some(steps[2].clone())
    );
    assert!(operators.outcomes().is_empty(), "nothing ended yet: {:?}", operators.outcomes());

    // Removed: the operator is finished, and counted once.
    report.region.peers.retain(|p| p.id != leaving.id);
    report.region.epoch = Some(RegionEpoch { conf_version: 4, version: 1 });
    assert_eq!(operators.on_report(&report, &|store| view.is_up(store), Duration::ZERO), None);
    assert!(operators.busy().is_empty());
    let finished = outcomes(&[(OperatorKind::BalanceRegion, OperatorOutcome::Finished, 1)]);
    assert_eq!(operators.outcomes(), &finished);
    assert_eq!(
        operators.on_report(&report, &|store| view.is_up(store), Duration::ZERO),
        None,
        "nothing left to do"
    );
    assert_eq!(operators.outcomes(), &finished);
}

#[test]
fn a_report_showing_several_steps_done_skips_past_all_of_them() {
    let view = up_stores(&[1, 2, 3, 4]);
    let (operator, new, leaving) = replica_move();
    let last = operator.steps[2].clone();
    let mut operators = OperatorController::new(TIMEOUT, 3, 1);
    assert!(operators.add(operator, Duration::ZERO).is_some());

    // The heartbeats carrying the first two steps' results were lost: the first report
    // the driver gets already shows the new replica as a voter.
    let mut region = region(1, "a", "m", &[1, 2, 3, 4]);
    assert!(region.peers.contains(&voter(new.id, new.store_id)));
    assert_eq!(
        operators.on_report(&report_of(region.clone(), 1), &|store| view.is_up(store), Duration::ZERO),
        Some(last)
    );
    assert_eq!(current_step(&operators, 1), Some(2));

    region.peers.retain(|p| p.id != leaving.id);
    assert_eq!(operators.on_report(&report_of(region, 1), &|store| view.is_up(store), Duration::ZERO), None);
    assert_eq!(
        operators.outcomes(),
        &outcomes(&[(OperatorKind::BalanceRegion, OperatorOutcome::Finished, 1)])
    );
}

#[test]
fn a_learner_for_a_store_that_is_down_is_never_added() {
    let mut view = up_stores(&[1, 2, 3, 4]);
    view.stores.insert(4, store_info(4, StoreState::Down { since: Duration::ZERO }));
    let (operator, _, _) = replica_move();
    let mut operators = OperatorController::new(TIMEOUT, 3, 1);
    assert!(operators.add(operator, Duration::ZERO).is_some());
    assert_eq!(
        operators.on_report(
            &report_of(region(1, "a", "m", &[1, 2, 3]), 1),
            &|store| view.is_up(store),
            Duration::ZERO
        ),
        None
    );
    assert!(operators.busy().is_empty());
    assert_eq!(
        operators.outcomes(),
        &outcomes(&[(OperatorKind::BalanceRegion, OperatorOutcome::Cancelled, 1)])
    );
}

#[test]
fn a_leader_transfer_to_a_store_without_a_voter_is_cancelled() {
    let view = up_stores(&[1, 2, 3, 4, 5]);
    let mut with_learner = region(1, "a", "m", &[1, 2, 3]);
    with_learner.peers.push(learner(14, 4));
    let report = report_of(with_learner, 1);
    let transfer = |to_store| Operator {
        region_id: 1,
        kind: OperatorKind::BalanceLeader,
        steps: vec![Step::TransferLeader { to_store }],
    };
    let mut operators = OperatorController::new(TIMEOUT, 3, 1);

    // Store 4 holds only a learner, store 5 nothing: neither can lead.
    for (to_store, cancelled) in [(4, 1), (5, 2)] {
        assert!(operators.add(transfer(to_store), Duration::ZERO).is_some());
        assert_eq!(
            operators.on_report(&report, &|store| view.is_up(store), Duration::ZERO),
            None,
            "transfer to store {to_store}"
        );
        assert!(operators.busy().is_empty(), "transfer to store {to_store} ended");
        let expected = outcomes(&[(OperatorKind::BalanceLeader, OperatorOutcome::Cancelled, cancelled)]);
        assert_eq!(operators.outcomes(), &expected);
    }

    // Store 2 holds a voter: the transfer is sent, and finished once store 2 leads.
    assert!(operators.add(transfer(2), Duration::ZERO).is_some());
    assert_eq!(
        operators.on_report(&report, &|store| view.is_up(store), Duration::ZERO),
        Some(Step::TransferLeader { to_store: 2 })
    );
    let moved = RegionInfo { leader_store: Some(2), ..report.clone() };
    assert_eq!(operators.on_report(&moved, &|store| view.is_up(store), Duration::ZERO), None);
    let expected = outcomes(&[
        (OperatorKind::BalanceLeader, OperatorOutcome::Finished, 1),
        (OperatorKind::BalanceLeader, OperatorOutcome::Cancelled, 2),
    ]);
    assert_eq!(operators.outcomes(), &expected);
}

#[test]
fn operators_time_out_and_those_of_vanished_regions_are_cancelled() {
    let mut operators = OperatorController::new(secs(60), 3, 1);
    let created = secs(100);
    let transfer = Operator {
        region_id: 1,
        kind: OperatorKind::BalanceLeader,
        steps: vec![Step::TransferLeader { to_store: 2 }],
    };
    let (mut repair, _, _) = replica_move();
    repair.region_id = 2;
    repair.kind = OperatorKind::ReplicaRepair;
    assert!(operators.add(transfer, created).is_some());
    assert!(operators.add(repair, created).is_some());

    operators.expire(created + secs(59), |_| true);
    assert_eq!(operators.busy(), BTreeSet::from([1, 2]), "both within their time");
    assert!(operators.outcomes().is_empty());

    // Region 2 was replaced (by a split's halves, say): its operator ends at once.
    operators.expire(created + secs(59), |region_id| region_id != 2);
    assert_eq!(operators.busy(), BTreeSet::from([1]));
    assert_eq!(
        operators.outcomes(),
        &outcomes(&[(OperatorKind::ReplicaRepair, OperatorOutcome::Cancelled, 1)])
    );

    operators.expire(created + secs(60), |_| true);
    assert!(operators.busy().is_empty());
    let expected = outcomes(&[
        (OperatorKind::ReplicaRepair, OperatorOutcome::Cancelled, 1),
        (OperatorKind::BalanceLeader, OperatorOutcome::TimedOut, 1),
    ]);
    assert_eq!(operators.outcomes(), &expected);
}

#[test]
fn a_region_has_at_most_one_operator_in_flight() {
    let mut operators = OperatorController::new(TIMEOUT, 3, 1);
    let transfer = Operator {
        region_id: 1,
        kind: OperatorKind::BalanceLeader,
        steps: vec![Step::TransferLeader { to_store: 2 }],
    };
    let split =
        Operator { region_id: 1, kind: OperatorKind::Split, steps: vec![Step::Split { key: b"k".to_vec() }] };
    assert!(operators.add(transfer, secs(1)).is_some());
    assert!(operators.add(split.clone(), secs(2)).is_none(), "region 1 is busy");

    let views = operators.views(secs(5));
    let [view] = views.as_slice() else { panic!("one operator expected: {views:?}") };
    assert_eq!((view.region_id, view.kind.as_str()), (1, OperatorKind::BalanceLeader.name()));
    assert_eq!((view.current_step, view.age_ms), (0, 4000), "the first operator, unchanged");

    assert!(operators.add(Operator { region_id: 2, ..split }, secs(2)).is_some(), "another region is free");
    assert_eq!(operators.busy(), BTreeSet::from([1, 2]));
}

#[test]
fn a_split_is_done_once_the_region_ends_or_starts_at_the_key() {
    let view = up_stores(&[1, 2, 3]);
    let split = |key: &str| Operator {
        region_id: 1,
        kind: OperatorKind::Split,
        steps: vec![Step::Split { key: key.as_bytes().to_vec() }],
    };
    let whole = report_of(region(1, "a", "z", &[1, 2, 3]), 1);
    let mut operators = OperatorController::new(TIMEOUT, 3, 1);

    // Region 1 keeps the left half.
    assert!(operators.add(split("m"), Duration::ZERO).is_some());
    assert_eq!(
        operators.on_report(&whole, &|store| view.is_up(store), Duration::ZERO),
        Some(Step::Split { key: b"m".to_vec() })
    );
    assert_eq!(
        operators.on_report(&whole, &|store| view.is_up(store), Duration::ZERO),
        Some(Step::Split { key: b"m".to_vec() }),
        "not done yet"
    );
    let left = report_of(at_epoch(region(1, "a", "m", &[1, 2, 3]), 1, 2), 1);
    assert_eq!(operators.on_report(&left, &|store| view.is_up(store), Duration::ZERO), None);
    assert_eq!(operators.outcomes(), &outcomes(&[(OperatorKind::Split, OperatorOutcome::Finished, 1)]));

    // Or the right half.
    assert!(operators.add(split("m"), Duration::ZERO).is_some());
    let right = report_of(at_epoch(region(1, "m", "z", &[1, 2, 3]), 1, 2), 1);
    assert_eq!(operators.on_report(&right, &|store| view.is_up(store), Duration::ZERO), None);
    assert_eq!(operators.outcomes(), &outcomes(&[(OperatorKind::Split, OperatorOutcome::Finished, 2)]));

    // A split at a key that the region does not hold (split elsewhere meanwhile) cannot happen.
    assert!(operators.add(split("zz"), Duration::ZERO).is_some());
    assert_eq!(operators.on_report(&whole, &|store| view.is_up(store), Duration::ZERO), None);
    let expected = outcomes(&[
        (OperatorKind::Split, OperatorOutcome::Finished, 2),
        (OperatorKind::Split, OperatorOutcome::Cancelled, 1),
    ]);
    assert_eq!(operators.outcomes(), &expected);
}

#[test]
fn reports_of_regions_without_an_operator_ask_for_nothing() {
    let view = up_stores(&[1, 2, 3]);
    let mut operators = OperatorController::new(TIMEOUT, 3, 1);
    let transfer = Operator {
        region_id: 1,
        kind: OperatorKind::BalanceLeader,
        steps: vec![Step::TransferLeader { to_store: 2 }],
    };
    assert!(operators.add(transfer, Duration::ZERO).is_some());
    assert_eq!(
        operators.on_report(
            &report_of(region(2, "m", "", &[1, 2, 3]), 1),
            &|store| view.is_up(store),
            Duration::ZERO
        ),
        None
    );
    assert_eq!(operators.busy(), BTreeSet::from([1]), "region 1's operator is untouched");
    assert!(operators.outcomes().is_empty());
}

// ---- LeaderState ----------------------------------------------------------------------

fn record(id: u64) -> StoreRecord {
    StoreRecord {
        id,
        address: format!("127.0.0.1:{}", 20160 + id),
        labels: BTreeMap::new(),
        tombstone: false,
        etcd_address: String::new(),
    }
}

fn loaded(stores: &[u64], regions: Vec<Region>, bootstrap: Option<Region>) -> Loaded {
    Loaded {
        bootstrap,
        ids: 1000,
        timestamp_mark: 0,
        gc_safe_point: 0,
        gc_fence: 0,
        gc_holds: Default::default(),
        regions,
        stores: stores.iter().map(|&id| record(id)).collect(),
    }
}

/// A leader (of term 3) that took over at time zero.
fn leader_state(loaded: Loaded) -> LeaderState {
    LeaderState::new(3, loaded, Duration::ZERO, TIMEOUT, 3)
}

fn store_heartbeat(state: &mut LeaderState, store_id: u64, now: Duration) -> StoreHeartbeatResponse {
    state
        .store_heartbeat(store_id, StoreStats::default(), now)
        .unwrap_or_else(|e| panic!("store {store_id} is registered and up: {e}"))
}

fn heartbeat(region: &Region, term: u64, leader_store: u64) -> RegionHeartbeat {
    let leader = region.peers.iter().find(|p| p.store_id == leader_store).copied();
    assert!(leader.is_some(), "store {leader_store} holds no peer of region {}", region.id);
    RegionHeartbeat { region: Some(region.clone()), term, leader, ..Default::default() }
}

fn region_heartbeat(
    state: &mut LeaderState,
    heartbeat: &RegionHeartbeat,
    persisted: bool,
) -> Option<OperatorStep> {
    state.region_heartbeat(heartbeat, persisted, Duration::ZERO)
}

fn entry(state: &LeaderState, region_id: u64) -> &RegionEntry {
    state.regions.get(region_id).unwrap_or_else(|| panic!("region {region_id} is in the map"))
}

fn store_state(state: &LeaderState, store_id: u64) -> StoreState {
    state.stores.get(&store_id).unwrap_or_else(|| panic!("store {store_id} is registered")).state
}

#[test]
fn a_new_leader_maps_the_claimed_bootstrap_region() {
    // The first region was claimed, but the leader that claimed it failed before writing
    // its descriptor: the new leader founds from the claim.
    let first = region(1, "", "", &[1, 2, 3]);
    let state = leader_state(loaded(&[1, 2, 3], Vec::new(), Some(first.clone())));
    assert!(state.is_bootstrapped());
    assert_eq!(state.bootstrap.as_ref(), Some(&first));
    assert_eq!(entry(&state, 1).region(), &first);
    assert_eq!(entry(&state, 1).leader, None, "relearned from the next heartbeats");
    assert!((1..=3).all(|store| store_state(&state, store) == StoreState::Up));

    let empty = leader_state(Loaded::default());
    assert!(!empty.is_bootstrapped());
    assert_eq!(empty.regions.len(), 0);
}

#[test]
fn a_bootstrap_region_that_changed_is_not_founded_again() {
    let first = region(1, "", "", &[1, 2, 3]);
    let mut grown = at_epoch(first.clone(), 2, 1);
    grown.peers.push(voter(14, 4));
    let state = leader_state(loaded(&[1, 2, 3, 4], vec![grown.clone()], Some(first)));
    assert_eq!(state.bootstrap, None);
    assert_eq!(entry(&state, 1).region(), &grown, "the persisted descriptor, not the claim");
    assert!(state.is_bootstrapped());
}

#[test]
fn a_bootstrap_region_replaced_by_a_split_is_not_brought_back() {
    // The first region split at "m"; its right half (region 2) reported first, which
    // deleted region 1's descriptor. Then the driver's leader changed.
    let first = region(1, "", "", &[1, 2, 3]);
    let right = at_epoch(region(2, "m", "", &[1, 2, 3]), 1, 2);
    let mut state = leader_state(loaded(&[1, 2, 3], vec![right.clone()], Some(first)));
    assert_eq!(state.bootstrap, None, "the first region changed: no store must found it again");
    assert_eq!(entry(&state, 2).region(), &right);
    assert!(state.regions.get(1).is_none());
    assert_eq!(id_at(&state.regions, "x"), Some(2), "keys past the split route to the right half");
    assert!(store_heartbeat(&mut state, 1, secs(1)).bootstrap_regions.is_empty());

    // The left half's update arrives and is adopted.
    let left = at_epoch(region(1, "", "m", &[1, 2, 3]), 1, 2);
    assert_eq!(state.regions.judge(&left), Verdict::Changed { replaces: Vec::new() });
}

#[test]
fn the_bootstrap_region_is_sent_to_its_stores_until_its_leader_reports() {
    let first = region(1, "", "", &[1, 2, 3]);
    let mut state = leader_state(loaded(&[1, 2, 3, 4], Vec::new(), Some(first.clone())));
    for store in 1..=3 {
        let response = store_heartbeat(&mut state, store, secs(1));
        assert_eq!(response.bootstrap_regions, vec![first.clone()], "store {store}");
    }
    assert!(store_heartbeat(&mut state, 4, secs(1)).bootstrap_regions.is_empty(), "store 4 holds no peer");

    assert_eq!(region_heartbeat(&mut state, &heartbeat(&first, 1, 2), false), None);
    assert_eq!(state.bootstrap, None);
    for store in 1..=4 {
        assert!(store_heartbeat(&mut state, store, secs(3)).bootstrap_regions.is_empty(), "store {store}");
    }
}

#[test]
fn a_store_hears_only_of_the_down_stores_it_shares_a_region_with() {
    let regions = vec![region(1, "", "m", &[1, 2, 3]), region(2, "m", "", &[3, 4, 5])];
    let mut state = leader_state(loaded(&[1, 2, 3, 4, 5], regions, None));
    let down_after = secs(10);
    for store in [1, 3, 5] {
        store_heartbeat(&mut state, store, secs(20));
    }
    // Nobody is down yet.
    assert!(store_heartbeat(&mut state, 3, secs(20)).down_stores.is_empty());

    // Stores 2 and 4 were heard from last when the leader took over.
    state.update_liveness(secs(25), down_after);
    assert_eq!(store_state(&state, 2), StoreState::Down { since: secs(25) });
    assert_eq!(store_state(&state, 4), StoreState::Down { since: secs(25) });
    assert_eq!(store_heartbeat(&mut state, 1, secs(26)).down_stores, vec![2]);
    assert_eq!(store_heartbeat(&mut state, 3, secs(26)).down_stores, vec![2, 4]);
    assert_eq!(store_heartbeat(&mut state, 5, secs(26)).down_stores, vec![4]);

    // Store 4 is back.
    store_heartbeat(&mut state, 4, secs(27));
    assert_eq!(store_heartbeat(&mut state, 3, secs(27)).down_stores, vec![2]);
    assert!(store_heartbeat(&mut state, 5, secs(27)).down_stores.is_empty());
}

#[test]
fn a_silent_store_is_down_until_it_heartbeats_again() {
    let mut state = leader_state(loaded(&[1, 2], Vec::new(), None));
    let down_after = secs(10);
    store_heartbeat(&mut state, 1, secs(8));

    state.update_liveness(secs(9), down_after);
    assert_eq!((store_state(&state, 1), store_state(&state, 2)), (StoreState::Up, StoreState::Up));

    state.update_liveness(secs(10), down_after);
    assert_eq!(store_state(&state, 1), StoreState::Up, "heard from 2 s ago");
    assert_eq!(store_state(&state, 2), StoreState::Down { since: secs(10) });

    // Staying silent keeps the time it went down.
    state.update_liveness(secs(30), down_after);
    assert_eq!(store_state(&state, 1), StoreState::Down { since: secs(30) });
    assert_eq!(store_state(&state, 2), StoreState::Down { since: secs(10) });

    store_heartbeat(&mut state, 2, secs(31));
    assert_eq!(store_state(&state, 2), StoreState::Up);
    state.update_liveness(secs(32), down_after);
    assert_eq!(store_state(&state, 2), StoreState::Up);
    assert_eq!(state.view(secs(32)).stores.get(&2).map(|s| s.state), Some(StoreState::Up));
}

#[test]
fn a_removed_store_stays_removed() {
    let mut records = loaded(&[1, 2], Vec::new(), None);
    records.stores[1].tombstone = true;
    let mut state = leader_state(records);
    assert_eq!(store_state(&state, 2), StoreState::Tombstone);
    state.update_liveness(secs(100), secs(10));
    assert_eq!(store_state(&state, 2), StoreState::Tombstone, "never declared down");
    assert_eq!(state.store_heartbeat(2, StoreStats::default(), secs(101)), Err(PdError::StoreRemoved(2)));
    assert_eq!(store_state(&state, 2), StoreState::Tombstone, "a heartbeat does not revive it");
    assert_eq!(state.store_heartbeat(9, StoreStats::default(), secs(101)), Err(PdError::UnknownStore(9)));
}

#[test]
fn a_changed_descriptor_is_adopted_only_once_persisted() {
    let first = region(1, "", "", &[1, 2, 3]);
    let mut state = leader_state(loaded(&[1, 2, 3, 4], vec![first.clone()], None));
    let mut grown = at_epoch(first.clone(), 2, 1);
    grown.peers.push(learner(14, 4));
    let report = heartbeat(&grown, 5, 1);

    assert_eq!(region_heartbeat(&mut state, &report, false), None);
    assert_eq!(entry(&state, 1).region(), &first, "not persisted: not adopted");
    assert_eq!(entry(&state, 1).leader, None, "nor its leader");

    assert_eq!(region_heartbeat(&mut state, &report, true), None);
    let adopted = entry(&state, 1);
    assert_eq!(adopted.region(), &grown);
    assert_eq!((adopted.term, adopted.leader, adopted.info.leader_store), (5, Some(voter(11, 1)), Some(1)));
}

#[test]
fn a_stale_descriptor_is_ignored_whatever_its_term() {
    let first = region(1, "", "", &[1, 2, 3]);
    let grown = at_epoch(first.clone(), 2, 1);
    let mut state = leader_state(loaded(&[1, 2, 3], vec![grown.clone()], None));
    assert_eq!(region_heartbeat(&mut state, &heartbeat(&grown, 5, 1), false), None);

    assert_eq!(region_heartbeat(&mut state, &heartbeat(&first, 9, 2), true), None);
    let entry = entry(&state, 1);
    assert_eq!(entry.region(), &grown);
    assert_eq!((entry.term, entry.info.leader_store), (5, Some(1)));
}

#[test]
fn a_report_from_an_older_term_does_not_change_the_leader() {
    let first = region(1, "", "", &[1, 2, 3]);
    let mut state = leader_state(loaded(&[1, 2, 3], vec![first.clone()], None));
    let report = |term, leader_store, approximate_bytes| RegionHeartbeat {
        approximate_bytes,
        ..heartbeat(&first, term, leader_store)
    };

    region_heartbeat(&mut state, &report(5, 1, 100), false);
    // A leader deposed in term 5 still reporting from term 4.
    region_heartbeat(&mut state, &report(4, 2, 999), false);
    let recorded = entry(&state, 1);
    assert_eq!(
        (recorded.term, recorded.leader, recorded.info.leader_store),
        (5, Some(voter(11, 1)), Some(1))
    );
    assert_eq!(recorded.info.approximate_bytes, 100, "nothing of the stale report is taken");

    region_heartbeat(&mut state, &report(6, 2, 200), false);
    let recorded = entry(&state, 1);
    assert_eq!(
        (recorded.term, recorded.leader, recorded.info.leader_store),
        (6, Some(voter(12, 2)), Some(2))
    );
    assert_eq!(recorded.info.approximate_bytes, 200);
}

#[test]
fn the_view_holds_only_regions_whose_leader_reported() {
    let left = region(1, "", "m", &[1, 2, 3]);
    let right = region(2, "m", "", &[1, 2, 3]);
    let mut state = leader_state(loaded(&[1, 2, 3], vec![left, right.clone()], None));
    assert!(state.view(secs(1)).regions.is_empty(), "no leader reported in this term yet");

    region_heartbeat(&mut state, &heartbeat(&right, 4, 3), false);
    let view = state.view(secs(2));
    assert_eq!(view.regions.keys().copied().collect::<Vec<_>>(), vec![2]);
    assert_eq!(view.regions.get(&2).and_then(|info| info.leader_store), Some(3));
    assert_eq!(view.stores.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3], "every store, led or not");
    assert_eq!(view.now, secs(2));
}

#[test]
fn a_heartbeat_answers_with_the_current_step_of_the_region_operator() {
    let first = region(1, "", "", &[1, 2, 3]);
    let mut state = leader_state(loaded(&[1, 2, 3], vec![first.clone()], None));
    let transfer = Operator {
        region_id: 1,
        kind: OperatorKind::BalanceLeader,
        steps: vec![Step::TransferLeader { to_store: 2 }],
    };
    assert!(state.add_operator(transfer.clone(), secs(1)).is_some());
    assert!(state.add_operator(transfer, secs(1)).is_none(), "one operator per region");

    // The wire form names the voter that is to lead.
    let step = region_heartbeat(&mut state, &heartbeat(&first, 5, 1), false);
    let expected = OperatorStep { kind: Some(operator_step::Kind::TransferLeader(voter(12, 2))) };
    assert_eq!(step, Some(expected));

    assert_eq!(region_heartbeat(&mut state, &heartbeat(&first, 6, 2), false), None);
    assert!(state.operators.busy().is_empty());
    let finished = outcomes(&[(OperatorKind::BalanceLeader, OperatorOutcome::Finished, 1)]);
    assert_eq!(state.operators.outcomes(), &finished);
}

#[test]
fn a_removal_never_takes_a_region_below_its_voters() {
    // Another (deposed) driver leader removed a voter meanwhile: the region is down to
    // three voters, so this operator's removal must not happen.
    let view = up_stores(&[1, 2, 3, 4]);
    let mut operators = OperatorController::new(TIMEOUT, 3, 1);
    let leaving = voter(13, 3);
    let operator = Operator {
        region_id: 1,
        kind: OperatorKind::BalanceRegion,
        steps: vec![Step::RemovePeer { peer: leaving }],
    };
    assert!(operators.add(operator.clone(), Duration::ZERO).is_some());
    let three = report_of(region(1, "a", "m", &[1, 2, 3]), 1);
    assert_eq!(operators.on_report(&three, &|store| view.is_up(store), Duration::ZERO), None);
    assert_eq!(
        operators.outcomes(),
        &outcomes(&[(OperatorKind::BalanceRegion, OperatorOutcome::Cancelled, 1)])
    );

    // With a fourth voter the same removal goes ahead.
    assert!(operators.add(operator, Duration::ZERO).is_some());
    let four = report_of(region(1, "a", "m", &[1, 2, 3, 4]), 1);
    assert_eq!(
        operators.on_report(&four, &|store| view.is_up(store), Duration::ZERO),
        Some(Step::RemovePeer { peer: leaving })
    );
}
