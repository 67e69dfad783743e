//! The store's garbage collector thread ([`crate::gc`] has the whole story).
//!
//! The compaction filter decides what goes as RocksDB compacts; this thread does the
//! two things a filter cannot: it deletes the values the filter found unreachable
//! (a filter may not write), and, when the safe point moved and the interval passed
//! since the last time, it compacts the write and versions families so that old
//! versions do not wait for RocksDB to compact them on its own.
//!
//! It never decides the safe point: the placement driver's agent raises it
//! ([`crate::storage::Engine::advance_gc_safe_point`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::raft::OpaqueError;
use crate::storage::Engine;
use crate::timestamp::Timestamp;

use super::errors::StoreError;
use super::fatal;

/// How often the thread wakes to delete unreachable values and look at the safe point.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

pub(super) fn start(
    engine: Engine,
    compaction_interval: Duration,
    stopping: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name("tessera-gc".into())
        .spawn(move || {
            fatal::fail_stop_on_panic("garbage collector", move || {
                run(&engine, compaction_interval, &stopping);
            })
        })
        .map_err(|e| StoreError::ThreadSpawn { thread: "garbage collector", source: OpaqueError::new(e) })
}

fn run(engine: &Engine, compaction_interval: Duration, stopping: &AtomicBool) {
    let mut compacted_at: Option<Instant> = None;
    let mut compacted_below = Timestamp::ZERO;
    while !stopping.load(Ordering::SeqCst) {
        std::thread::sleep(POLL_INTERVAL);
        if let Err(error) = engine.delete_unreachable_values() {
            tracing::warn!(%error, "garbage collection could not delete unreachable values");
        }
        let safe_point = engine.gc().safe_point();
        let due = compacted_at.is_none_or(|at| at.elapsed() >= compaction_interval);
        if safe_point <= compacted_below || !due {
            continue;
        }
        let started = Instant::now();
        if let Err(error) = engine.compact_versions() {
            tracing::warn!(%error, "garbage collection could not compact the transactional families");
            continue;
        }
        tracing::info!(
            safe_point = safe_point.as_u64(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            removed_records_total = engine.gc().removed_records(),
            "transactional families compacted for garbage collection"
        );
        (compacted_at, compacted_below) = (Some(Instant::now()), safe_point);
    }
}
