//! Size and key-count split checks: a region that outgrows the thresholds is split at
//! its middle key, with ids from an [`IdAllocator`] (the placement driver, in a cluster).
//!
//! The leader checks only regions written since the last check, by scanning its range
//! in the data column family and stopping as soon as a threshold is passed; a region
//! over it is measured in full, and a last scan finds the key in the middle by bytes. Scans run on the raft worker: regions are kept small
//! enough (thresholds in the tens of megabytes) for that to stay short.

use crate::proto::metadata::Region;
use crate::region::KeyRange;
use crate::storage::{Cf, Engine, EngineError, keys};

/// Hands out ids for new regions and peers; unique across the cluster.
pub trait IdAllocator: Send + Sync + 'static {
    fn allocate(&self, count: usize) -> Result<Vec<u64>, IdsExhausted>;
}

/// The allocator has fewer ids at hand than asked for; it refills in the background,
/// so a later split check asks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{wanted} ids wanted, {at_hand} at hand until the allocator refills")]
pub struct IdsExhausted {
    pub wanted: usize,
    pub at_hand: usize,
}

/// What a size check found: the region's keys and bytes, and where to split it (at the
/// middle by bytes) when it is over a threshold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RegionSize {
    pub keys: u64,
    pub bytes: u64,
    pub split_key: Option<Vec<u8>>,
}

/// Measures `region` and finds the key to split it at if it holds more than `max_keys`
/// keys or `max_bytes` bytes.
pub(crate) fn check_size(
    engine: &Engine,
    region: &Region,
    max_keys: u64,
    max_bytes: u64,
) -> Result<RegionSize, EngineError> {
    let (mut count, mut bytes) = (0u64, 0u64);
    let scan = |visit: &mut dyn FnMut(&[u8], usize) -> bool| -> Result<(), EngineError> {
        let start = keys::data_key(&region.start_key);
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(keys::data_end_key(&region.end_key));
        let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
        for item in engine.db().iterator_cf_opt(engine.cf(Cf::Data)?, options, mode) {
            let (key, value) = item?;
            if !visit(&key, key.len() + value.len()) {
                break;
            }
        }
        Ok(())
    };
    scan(&mut |_, size| {
        count += 1;
        bytes += size as u64;
        count <= max_keys && bytes <= max_bytes
    })?;
    if count <= max_keys && bytes <= max_bytes {
        return Ok(RegionSize { keys: count, bytes, split_key: None });
    }
    // Over: measure all of it, so that the split halves it. Splitting at the middle of
    // the prefix scanned so far would cut a bulk-loaded region into a chain of small
    // regions, one per check, instead of halving it at each.
    (count, bytes) = (0, 0);
    scan(&mut |_, size| {
        count += 1;
        bytes += size as u64;
        true
    })?;
    let (half, mut seen) = (bytes / 2, 0u64);
    let mut middle = None;
    scan(&mut |key, size| {
        seen += size as u64;
        if seen > half {
            middle = keys::user_key(key).map(<[u8]>::to_vec);
            return false;
        }
        true
    })?;
    // The region's first key cannot split it.
    let split_key = middle.filter(|key| KeyRange::of(region).contains_strictly(key));
    Ok(RegionSize { keys: count, bytes, split_key })
}
