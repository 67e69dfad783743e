//! The metrics a store exports: what its Raft groups, its group commit, its transport
//! frames and its RocksDB are doing.
//!
//! Recorded through the `metrics` facade, so the engine does not know who exports them
//! (the server installs a Prometheus recorder; tests install none and every handle is
//! a no-op). Handles are registered once, on first use, and kept: a hot path pays an
//! atomic add, never a registry lookup. The recorder must therefore be installed
//! before anything here is touched; [`register`] makes that moment explicit.
//!
//! Names follow Prometheus conventions: a unit suffix, `_total` on counters. A process
//! hosts one store, so no metric carries a store label (Prometheus adds `instance`).
//! This module owns names, units and help texts; it must never decide anything.

use std::sync::LazyLock;

use metrics::{Counter, Gauge, Histogram, Unit};

use crate::raft::proto::MessageType;
use crate::storage::Cf;

/// Every Raft message type, in `MessageType`'s numbering, with its label.
const MESSAGE_TYPES: [(MessageType, &str); 10] = [
    (MessageType::Append, "append"),
    (MessageType::AppendResponse, "append_response"),
    (MessageType::RequestVote, "request_vote"),
    (MessageType::RequestVoteResponse, "request_vote_response"),
    (MessageType::RequestPreVote, "request_pre_vote"),
    (MessageType::RequestPreVoteResponse, "request_pre_vote_response"),
    (MessageType::Heartbeat, "heartbeat"),
    (MessageType::HeartbeatResponse, "heartbeat_response"),
    (MessageType::Snapshot, "snapshot"),
    (MessageType::TimeoutNow, "timeout_now"),
];

/// Why a snapshot did not make it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SnapshotFailure {
    /// The leader could not build it.
    Generate,
    /// A follower refused it: undecodable, of another region, or overlapping a region
    /// it holds.
    Rejected,
    /// Sent but never acknowledged; the leader will send another.
    Lost,
}

/// Counters of one Raft message direction, by message type.
pub(crate) struct MessagesByType([Counter; 10]);

impl MessagesByType {
    fn register(name: &'static str, help: &'static str) -> MessagesByType {
        metrics::describe_counter!(name, Unit::Count, help);
        MessagesByType(MESSAGE_TYPES.map(|(_, label)| metrics::counter!(name, "type" => label)))
    }

    pub(crate) fn count(&self, message_type: MessageType, messages: u64) {
        if let Some(counter) = self.0.get(message_type as usize) {
            counter.increment(messages);
        }
    }
}

/// Gauges of one column family's RocksDB figures.
pub(crate) struct ColumnFamilyGauges {
    pub memtable_bytes: Gauge,
    pub pending_compaction_bytes: Gauge,
    pub live_sst_bytes: Gauge,
}

pub(crate) struct StoreMetrics {
    pub proposals: Counter,
    pub entries_appended: Counter,
    pub entries_applied: Counter,
    pub commit_duration: Histogram,
    pub apply_duration: Histogram,
    pub log_syncs: Counter,
    pub log_sync_duration: Histogram,
    pub log_sync_entries: Histogram,
    pub log_sync_regions: Histogram,
    pub messages_sent: MessagesByType,
    pub messages_received: MessagesByType,
    pub heartbeats_per_frame: Histogram,
    pub regions: Gauge,
    pub leaders: Gauge,
    pub regions_hibernating: Gauge,
    pub regions_active: Gauge,
    pub regions_without_leader: Gauge,
    pub snapshots_generated: Counter,
    pub snapshots_sent: Counter,
    pub snapshots_applied: Counter,
    snapshots_failed: [Counter; 3],
    pub splits: Counter,
    pub one_phase_retimed: Counter,
    pub one_phase_refused: Counter,
    pub feed_stale_locks_reported: Counter,
    pub inbound_frames_dropped: Counter,
    pub requests_refused_busy: Counter,
    pub column_families: [ColumnFamilyGauges; Cf::ALL.len()],
    pub write_stopped: Gauge,
    pub delayed_write_rate: Gauge,
    /// Cumulative, but a gauge: the facade's counters are integers, and stalls are
    /// usually shorter than a second.
    pub write_stall_seconds: Gauge,
}

impl StoreMetrics {
    pub(crate) fn snapshot_failed(&self, why: SnapshotFailure) {
        self.snapshots_failed[why as usize].increment(1);
    }
}

fn counter(name: &'static str, help: &'static str) -> Counter {
    metrics::describe_counter!(name, Unit::Count, help);
    metrics::counter!(name)
}

fn gauge(name: &'static str, unit: Unit, help: &'static str) -> Gauge {
    metrics::describe_gauge!(name, unit, help);
    metrics::gauge!(name)
}

fn histogram(name: &'static str, unit: Unit, help: &'static str) -> Histogram {
    metrics::describe_histogram!(name, unit, help);
    metrics::histogram!(name)
}

fn column_family_gauges(cf: Cf) -> ColumnFamilyGauges {
    let label = match cf {
        Cf::Data => "default",
        other => other.name(),
    };
    ColumnFamilyGauges {
        memtable_bytes: metrics::gauge!("tessera_rocksdb_memtable_bytes", "cf" => label),
        pending_compaction_bytes: metrics::gauge!("tessera_rocksdb_pending_compaction_bytes", "cf" => label),
        live_sst_bytes: metrics::gauge!("tessera_rocksdb_live_sst_bytes", "cf" => label),
    }
}

#[allow(clippy::too_many_lines, reason = "one declaration per metric: a table read row by row, not logic")]
fn register_store_metrics() -> StoreMetrics {
    metrics::describe_gauge!(
        "tessera_rocksdb_memtable_bytes",
        Unit::Bytes,
        "Bytes in the column family's memtables, active and immutable."
    );
    metrics::describe_gauge!(
        "tessera_rocksdb_pending_compaction_bytes",
        Unit::Bytes,
        "Bytes RocksDB estimates compaction must rewrite to bring every level under its target."
    );
    metrics::describe_gauge!(
        "tessera_rocksdb_live_sst_bytes",
        Unit::Bytes,
        "Bytes of the column family's SST files in the current version."
    );
    metrics::describe_counter!(
        "tessera_snapshots_failed_total",
        Unit::Count,
        "Snapshots that failed, by reason: generate (the leader could not build one), rejected \
         (the follower refused it), lost (sent and never acknowledged)."
    );
    let snapshot_failed =
        |reason: &'static str| metrics::counter!("tessera_snapshots_failed_total", "reason" => reason);
    StoreMetrics {
        proposals: counter(
            "tessera_raft_proposals_total",
            "Commands proposed by region leaders on this store.",
        ),
        entries_appended: counter(
            "tessera_raft_entries_appended_total",
            "Raft log entries written to this store's log, as leader or follower.",
        ),
        entries_applied: counter(
            "tessera_raft_entries_applied_total",
            "Raft log entries applied to the data and made visible.",
        ),
        commit_duration: histogram(
            "tessera_raft_commit_duration_seconds",
            Unit::Seconds,
            "Time from a leader's proposal to its entry being committed (its count: proposals committed).",
        ),
        apply_duration: histogram(
            "tessera_raft_apply_duration_seconds",
            Unit::Seconds,
            "Time to apply one round's committed entries, their write included.",
        ),
        log_syncs: counter(
            "tessera_raft_log_syncs_total",
            "Group commits: WAL syncs that made the raft writes of many regions durable.",
        ),
        log_sync_duration: histogram(
            "tessera_raft_log_sync_duration_seconds",
            Unit::Seconds,
            "Time of one group commit: writing the waiting batches and syncing the WAL once.",
        ),
        log_sync_entries: histogram(
            "tessera_raft_log_sync_entries",
            Unit::Count,
            "Raft log entries made durable by one group commit.",
        ),
        log_sync_regions: histogram(
            "tessera_raft_log_sync_regions",
            Unit::Count,
            "Regions whose raft writes shared one group commit.",
        ),
        messages_sent: MessagesByType::register(
            "tessera_raft_messages_sent_total",
            "Raft messages handed to the transport, by type (coalesced heartbeats counted one by one).",
        ),
        messages_received: MessagesByType::register(
            "tessera_raft_messages_received_total",
            "Raft messages received from other stores, by type.",
        ),
        heartbeats_per_frame: histogram(
            "tessera_raft_heartbeats_per_frame",
            Unit::Count,
            "Heartbeats and heartbeat answers coalesced into one frame to one store.",
        ),
        regions: gauge("tessera_store_regions", Unit::Count, "Regions with a replica on this store."),
        leaders: gauge("tessera_store_leaders", Unit::Count, "Regions whose leader is on this store."),
        regions_hibernating: gauge(
            "tessera_store_regions_hibernating",
            Unit::Count,
            "Replicas on this store that are hibernating (idle: no ticks, no heartbeats).",
        ),
        regions_active: gauge(
            "tessera_store_regions_active",
            Unit::Count,
            "Replicas on this store that are awake and ticking.",
        ),
        regions_without_leader: gauge(
            "tessera_store_regions_without_leader",
            Unit::Count,
            "Awake replicas on this store that know no leader of their region.",
        ),
        snapshots_generated: counter(
            "tessera_snapshots_generated_total",
            "Region snapshots built by leaders on this store.",
        ),
        snapshots_sent: counter("tessera_snapshots_sent_total", "Region snapshots handed to the transport."),
        snapshots_applied: counter(
            "tessera_snapshots_applied_total",
            "Region snapshots installed by replicas on this store.",
        ),
        snapshots_failed: [snapshot_failed("generate"), snapshot_failed("rejected"), snapshot_failed("lost")],
        splits: counter("tessera_region_splits_total", "Region splits applied by replicas on this store."),
        one_phase_retimed: counter(
            "tessera_one_phase_retimed_total",
            "One-phase commits a leader gave a spare timestamp above its read watermark instead of refusing.",
        ),
        one_phase_refused: counter(
            "tessera_one_phase_refused_total",
            "One-phase commits a leader refused for a commit timestamp at or below its read watermark.",
        ),
        feed_stale_locks_reported: counter(
            "tessera_feed_stale_locks_reported_total",
            "Locks reported for resolution because they held a change feed's resolved timestamp back too long.",
        ),
        inbound_frames_dropped: counter(
            "tessera_inbound_frames_dropped_total",
            "Shares of frames from other stores dropped on arrival because their raft worker's inbox was full.",
        ),
        requests_refused_busy: counter(
            "tessera_requests_refused_busy_total",
            "Clients' reads and writes refused before being proposed because their raft worker's inbox was full.",
        ),
        column_families: Cf::ALL.map(column_family_gauges),
        write_stopped: gauge(
            "tessera_rocksdb_write_stopped",
            Unit::Count,
            "1 while RocksDB stops writes (too many memtables, L0 files or pending compaction bytes).",
        ),
        delayed_write_rate: gauge(
            "tessera_rocksdb_delayed_write_rate_bytes",
            Unit::Bytes,
            "The rate RocksDB slows writes down to while it delays them; 0 when it does not.",
        ),
        write_stall_seconds: gauge(
            "tessera_rocksdb_write_stall_seconds",
            Unit::Seconds,
            "Time writers spent stalled or delayed by RocksDB since the store started (cumulative).",
        ),
    }
}

/// The store's metrics; see the module docs for when they may first be touched.
pub(crate) static METRICS: LazyLock<StoreMetrics> = LazyLock::new(register_store_metrics);

/// Registers every store metric with the installed recorder, so that each is exported
/// (at zero) from the start rather than from its first event.
pub fn register() {
    LazyLock::force(&METRICS);
}
