//! Garbage collection of old transactional versions: the store's side.
//!
//! The placement driver keeps the cluster's **safe point** (`P`): no read at or below
//! it will be served, and no transaction that started at or below it holds a lock
//! anywhere. A version committed at or below `P` that a newer put or delete, also at or
//! below `P`, shadows can never be read again, and neither can a rollback or lock_keys
//! record at or below `P`: the compaction filter (`filter.rs`) drops them from the
//! write family, and the values they named from the versions family, as RocksDB
//! compacts. The newest put or delete at or below `P` always stays: it is what a read
//! just above `P` finds.
//!
//! How the driver gets there (its side is `server::node::gc`): it picks a candidate,
//! proposes a **fence** at the candidate to every region (`txn::fence`, through Raft),
//! resolves the locks each fence answers, and publishes the candidate as the safe
//! point once every region is fenced and clear. From its fence on, a region refuses
//! writes of transactions that started at or below the fence, except removing or
//! committing a lock they still hold (`txn`'s "below the fence" rules): so no command
//! applied after the fence depends on a record that garbage collection may remove. A
//! replica that applies the log late is protected the same way: the filter never goes
//! above the fence a region has *applied* on this store ([`GcState::set_region_fence`]),
//! so a command from before the fence still finds, when a lagging replica applies it,
//! every record it found on the leader.
//!
//! Reads: a snapshot read at or below the safe point is refused with a typed error
//! ([`BelowSafePoint`]). A read registers its timestamp while it runs
//! ([`GcState::begin_read`]), and a compaction that starts meanwhile collects only
//! below it: the safe point may move while a read is between its commit record and its
//! value, and the value must still be there.
//!
//! This module owns the store's safe point, the registry of reads and fences, and the
//! filter; it never decides the safe point (the driver does) nor writes a fence.

mod filter;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use thiserror::Error;

pub(crate) use filter::VersionFilterFactory;

use crate::proto::metadata::Region;
use crate::timestamp::Timestamp;

/// A snapshot read at or below the safe point: the versions it would need may be gone.
/// Not retryable at that timestamp; a newer one reads fine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("read timestamp {read_ts} is at or below the garbage-collection safe point {safe_point}")]
pub struct BelowSafePoint {
    pub read_ts: u64,
    pub safe_point: u64,
}

/// One region's applied fence and its range in the transactional families (as
/// [`crate::mvcc::key::range_bounds`] encodes it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RegionFence {
    start: Vec<u8>,
    end: Vec<u8>,
    fence_ts: u64,
}

/// What a compaction may collect: versions at or below `global`, and in each region's
/// range at or below the fence that region applied; nothing outside every region.
#[derive(Debug, Clone, Default)]
pub(crate) struct CollectionBound {
    global: u64,
    /// By start key; ranges do not overlap.
    regions: Vec<RegionFence>,
}

impl CollectionBound {
    /// The highest timestamp a record under the encoded key `key` may be collected at
    /// (0: none).
    fn limit(&self, key: &[u8]) -> u64 {
        let position = self.regions.partition_point(|region| region.start.as_slice() <= key);
        let Some(region) = position.checked_sub(1).and_then(|index| self.regions.get(index)) else {
            return 0;
        };
        if key >= region.end.as_slice() {
            return 0;
        }
        self.global.min(region.fence_ts)
    }
}

/// The store's garbage-collection state, shared by its workers, its reads and the
/// compaction filter.
#[derive(Debug, Default)]
pub struct GcState {
    /// The safe point this store knows (persisted by [`crate::storage::Engine`]).
    safe_point: AtomicU64,
    /// Snapshot reads running, by timestamp (a count per timestamp).
    reads: Mutex<BTreeMap<u64, usize>>,
    fences: RwLock<HashMap<u64, RegionFence>>,
    /// Keys of the versions family whose values the filter found unreachable, for
    /// the store's collector to delete (a compaction filter may not write).
    unreachable_values: Mutex<Vec<Vec<u8>>>,
    /// Records the filter removed, since start.
    removed_records: AtomicU64,
}

/// A snapshot read in progress; dropping it ends the registration.
#[derive(Debug)]
pub struct ReadRegistration {
    state: Arc<GcState>,
    read_ts: u64,
}

impl Drop for ReadRegistration {
    fn drop(&mut self) {
        let mut reads = self.state.reads.lock();
        if let Some(count) = reads.get_mut(&self.read_ts) {
            *count -= 1;
            if *count == 0 {
                reads.remove(&self.read_ts);
            }
        }
    }
}

impl GcState {
    pub fn safe_point(&self) -> Timestamp {
        Timestamp::from_u64(self.safe_point.load(Ordering::Acquire))
    }

    /// Raises the safe point in memory; false if `safe_point` is not above it. The
    /// caller persisted it first ([`crate::storage::Engine::advance_gc_safe_point`]).
    pub(crate) fn raise(&self, safe_point: Timestamp) -> bool {
        // Under the reads' lock: a read registers and checks against one value.
        let _reads = self.reads.lock();
        self.safe_point.fetch_max(safe_point.as_u64(), Ordering::AcqRel) < safe_point.as_u64()
    }

    /// Registers a snapshot read at `read_ts` for as long as the registration lives;
    /// refused at or below the safe point, or at or below `region_fence`, the fence the
    /// region read applied here (its data may have come in a snapshot from a store that
    /// collected up to that fence, whatever this store's safe point).
    pub fn begin_read(
        self: &Arc<Self>,
        read_ts: Timestamp,
        region_fence: Timestamp,
    ) -> Result<ReadRegistration, BelowSafePoint> {
        let mut reads = self.reads.lock();
        let safe_point = self.safe_point.load(Ordering::Acquire).max(region_fence.as_u64());
        if read_ts.as_u64() <= safe_point {
            return Err(BelowSafePoint { read_ts: read_ts.as_u64(), safe_point });
        }
        *reads.entry(read_ts.as_u64()).or_default() += 1;
        Ok(ReadRegistration { state: Arc::clone(self), read_ts: read_ts.as_u64() })
    }

    /// Records the fence `region` has applied on this store (and its current range).
    pub(crate) fn set_region_fence(&self, region: &Region, fence_ts: u64) {
        if region.peers.is_empty() {
            return;
        }
        let (start, end) = crate::mvcc::key::range_bounds(&region.start_key, &region.end_key);
        self.fences.write().insert(region.id, RegionFence { start, end, fence_ts });
    }

    /// Forgets a region that left this store: its range is collected no more.
    pub(crate) fn remove_region(&self, region_id: u64) {
        self.fences.write().remove(&region_id);
    }

    /// What a compaction starting now may collect.
    pub(crate) fn collection_bound(&self) -> CollectionBound {
        let global = {
            let reads = self.reads.lock();
            let safe_point = self.safe_point.load(Ordering::Acquire);
            let oldest_read = reads.keys().next().map_or(u64::MAX, |read_ts| read_ts - 1);
            safe_point.min(oldest_read)
        };
        let mut regions: Vec<RegionFence> = self.fences.read().values().cloned().collect();
        regions.sort_by(|left, right| left.start.cmp(&right.start));
        // Entries may overlap for a moment (a split applied, the new region's peer not
        // yet started, or a snapshot moved a range): where they do, none is trusted.
        let mut overlapping = vec![false; regions.len()];
        let mut reach: Option<(usize, &[u8])> = None; // the entry that ends furthest so far
        for (index, region) in regions.iter().enumerate() {
            if let Some((furthest, end)) = reach
                && region.start.as_slice() < end
            {
                overlapping[index] = true;
                overlapping[furthest] = true;
            }
            if reach.is_none_or(|(_, end)| region.end.as_slice() > end) {
                reach = Some((index, region.end.as_slice()));
            }
        }
        let regions = regions
            .iter()
            .zip(overlapping)
            .filter(|(_, overlaps)| !overlaps)
            .map(|(region, _)| region.clone())
            .collect();
        CollectionBound { global, regions }
    }

    fn value_unreachable(&self, versions_key: Vec<u8>) {
        self.unreachable_values.lock().push(versions_key);
    }

    /// The values the filter found unreachable since the last call.
    pub(crate) fn take_unreachable_values(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.unreachable_values.lock())
    }

    pub fn removed_records(&self) -> u64 {
        self.removed_records.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
