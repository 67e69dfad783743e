//! The metrics a placement driver replica exports: whether it leads, and on the leader
//! what it sees of the cluster (stores by state, regions, regions short of replicas, hot
//! regions) and what it does about it (scheduler runs, operators by kind and outcome).
//!
//! Recorded through the `metrics` facade like the engine's (see `tessera_engine::metrics`
//! for why handles are registered once and kept). Gauges describing the cluster are set
//! from the leader's state when metrics are collected ([`crate::PlacementDriver::refresh_metrics`]);
//! followers report them as zero, so `max` across replicas is the cluster's figure.
//! This module owns names and help texts; it must never decide anything.

use std::sync::LazyLock;

use metrics::{Counter, Gauge, Unit};

use crate::cluster::{ClusterView, StoreState};
use crate::driver::OperatorOutcome;
use crate::operator::OperatorKind;

/// Every operator kind, each with its own counters.
const OPERATOR_KINDS: [OperatorKind; 8] = [
    OperatorKind::ReplicaRepair,
    OperatorKind::BalanceRegion,
    OperatorKind::BalanceLeader,
    OperatorKind::HotRegion,
    OperatorKind::Location,
    OperatorKind::Split,
    OperatorKind::TransferLeader,
    OperatorKind::MovePeer,
];

const OUTCOMES: [OperatorOutcome; 3] =
    [OperatorOutcome::Finished, OperatorOutcome::TimedOut, OperatorOutcome::Cancelled];

const STORE_STATES: [&str; 3] = ["up", "down", "tombstone"];

fn state_index(state: StoreState) -> usize {
    match state {
        StoreState::Up => 0,
        StoreState::Down { .. } => 1,
        StoreState::Tombstone => 2,
    }
}

/// The schedulers, as `scheduler_runs` labels them; the location label is not one (it
/// steers the others' choice of targets).
pub(crate) const SCHEDULERS: [&str; 5] =
    ["replica_repair", "location", "hot_region", "balance_region", "balance_leader"];

pub(crate) struct DriverMetrics {
    pub is_leader: Gauge,
    stores: [Gauge; 3],
    pub regions: Gauge,
    pub regions_under_replicated: Gauge,
    hot_write_regions: Gauge,
    hot_read_regions: Gauge,
    pub operators_running: Gauge,
    operators_ended: [[Counter; 3]; OPERATOR_KINDS.len()],
    operators_created: [Counter; OPERATOR_KINDS.len()],
    scheduler_runs: [Counter; SCHEDULERS.len()],
    pub region_heartbeats: Counter,
    pub store_heartbeats: Counter,
    pub gc_safe_point: Gauge,
}

fn register_driver_metrics() -> DriverMetrics {
    metrics::describe_gauge!(
        "tessera_pd_is_leader",
        Unit::Count,
        "1 on the replica that leads the placement driver and serves, 0 on the others."
    );
    metrics::describe_gauge!("tessera_pd_stores", Unit::Count, "Stores by state, as the leader sees them.");
    metrics::describe_gauge!("tessera_pd_regions", Unit::Count, "Regions in the leader's region map.");
    metrics::describe_gauge!(
        "tessera_pd_regions_under_replicated",
        Unit::Count,
        "Regions with fewer voters on up stores than the configured replica count."
    );
    metrics::describe_gauge!(
        "tessera_pd_hot_regions",
        Unit::Count,
        "Regions whose write (or read) rate is above the hot-region threshold."
    );
    metrics::describe_gauge!("tessera_pd_operators_running", Unit::Count, "Operators in flight.");
    metrics::describe_counter!(
        "tessera_pd_operators_total",
        Unit::Count,
        "Operators ended, by kind (the scheduler that made it) and outcome."
    );
    metrics::describe_counter!(
        "tessera_pd_operators_created_total",
        Unit::Count,
        "Operators started, by kind."
    );
    metrics::describe_counter!(
        "tessera_pd_scheduler_runs_total",
        Unit::Count,
        "Runs of each enabled scheduler on the leader."
    );
    metrics::describe_counter!(
        "tessera_pd_region_heartbeats_total",
        Unit::Count,
        "Region heartbeats the leader handled."
    );
    metrics::describe_counter!(
        "tessera_pd_store_heartbeats_total",
        Unit::Count,
        "Store heartbeats the leader handled."
    );
    metrics::describe_gauge!(
        "tessera_pd_gc_safe_point_milliseconds",
        Unit::Milliseconds,
        "The garbage-collection safe point's physical time (Unix milliseconds), as last advanced here."
    );
    DriverMetrics {
        gc_safe_point: metrics::gauge!("tessera_pd_gc_safe_point_milliseconds"),
        is_leader: metrics::gauge!("tessera_pd_is_leader"),
        stores: STORE_STATES.map(|state| metrics::gauge!("tessera_pd_stores", "state" => state)),
        regions: metrics::gauge!("tessera_pd_regions"),
        regions_under_replicated: metrics::gauge!("tessera_pd_regions_under_replicated"),
        hot_write_regions: metrics::gauge!("tessera_pd_hot_regions", "kind" => "write"),
        hot_read_regions: metrics::gauge!("tessera_pd_hot_regions", "kind" => "read"),
        operators_running: metrics::gauge!("tessera_pd_operators_running"),
        operators_ended: OPERATOR_KINDS.map(|kind| {
            OUTCOMES.map(|outcome| {
                metrics::counter!("tessera_pd_operators_total", "kind" => kind.name(), "outcome" => outcome.name())
            })
        }),
        operators_created: OPERATOR_KINDS
            .map(|kind| metrics::counter!("tessera_pd_operators_created_total", "kind" => kind.name())),
        scheduler_runs: SCHEDULERS
            .map(|scheduler| metrics::counter!("tessera_pd_scheduler_runs_total", "scheduler" => scheduler)),
        region_heartbeats: metrics::counter!("tessera_pd_region_heartbeats_total"),
        store_heartbeats: metrics::counter!("tessera_pd_store_heartbeats_total"),
    }
}

/// The driver's metrics; the recorder must be installed before they are first touched.
pub(crate) static DRIVER: LazyLock<DriverMetrics> = LazyLock::new(register_driver_metrics);

/// Registers every driver metric with the installed recorder, so that each is exported
/// from the start.
pub fn register() {
    LazyLock::force(&DRIVER);
}

fn kind_index(kind: OperatorKind) -> usize {
    let index = OPERATOR_KINDS.iter().position(|&k| k == kind);
    index.unwrap_or_else(|| unreachable!("invariant: OPERATOR_KINDS lists every operator kind, not {kind:?}"))
}

pub(crate) fn operator_ended(kind: OperatorKind, outcome: OperatorOutcome) {
    let outcome = OUTCOMES.iter().position(|&o| o == outcome).unwrap_or(0);
    DRIVER.operators_ended[kind_index(kind)][outcome].increment(1);
}

pub(crate) fn operator_created(kind: OperatorKind) {
    DRIVER.operators_created[kind_index(kind)].increment(1);
}

/// Counts one run of each scheduler that `enabled` says ran, in [`SCHEDULERS`] order.
pub(crate) fn schedulers_ran(enabled: [bool; SCHEDULERS.len()]) {
    for (counter, ran) in DRIVER.scheduler_runs.iter().zip(enabled) {
        if ran {
            counter.increment(1);
        }
    }
}

/// What the leader sees of the cluster. `regions` counts every region of the map;
/// `view` holds those whose leader reported in this term.
pub(crate) fn record_cluster(view: &ClusterView, regions: usize, replicas: usize, hot_bytes_per_sec: u64) {
    let metrics = &*DRIVER;
    let mut stores = [0u64; 3];
    for store in view.stores.values() {
        stores[state_index(store.state)] += 1;
    }
    for (gauge, count) in metrics.stores.iter().zip(stores) {
        gauge.set(count as f64);
    }
    metrics.regions.set(regions as f64);
    let under_replicated = view
        .regions
        .values()
        .filter(|info| info.voters().filter(|p| view.is_up(p.store_id)).count() < replicas);
    metrics.regions_under_replicated.set(under_replicated.count() as f64);
    let hot = |rate: fn(&crate::cluster::RegionInfo) -> u64| {
        view.regions.values().filter(|info| hot_bytes_per_sec > 0 && rate(info) >= hot_bytes_per_sec).count()
            as f64
    };
    metrics.hot_write_regions.set(hot(|info| info.write_bytes_per_sec));
    metrics.hot_read_regions.set(hot(|info| info.read_bytes_per_sec));
}

/// A replica that does not lead reports no cluster figures.
pub(crate) fn clear_cluster() {
    let metrics = &*DRIVER;
    for gauge in &metrics.stores {
        gauge.set(0.0);
    }
    for gauge in [
        &metrics.regions,
        &metrics.regions_under_replicated,
        &metrics.hot_write_regions,
        &metrics.hot_read_regions,
        &metrics.operators_running,
    ] {
        gauge.set(0.0);
    }
}
