//! Size and key-count split checks: a region that outgrows the thresholds is split at
//! its middle key, with ids from an [`IdAllocator`] (the placement driver, in a cluster).
//!
//! The leader checks only regions written since the last check, by scanning its range
//! in every column family of region data (raw and transactional) and stopping as soon
//! as a threshold is passed; a region over it is measured in full, and a last scan
//! finds the key in the middle by bytes of the largest family. Scans run on the raft
//! worker: regions are kept small enough (thresholds in the tens of megabytes) for
//! that to stay short.

use crate::mvcc::key::{split_lock_key, split_version_key};
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
/// keys or `max_bytes` bytes, counted over every column family of region data (raw
/// pairs, and transactions' locks, records and versions).
pub(crate) fn check_size(
    engine: &Engine,
    region: &Region,
    max_keys: u64,
    max_bytes: u64,
) -> Result<RegionSize, EngineError> {
    let over = |count: u64, bytes: u64| count > max_keys || bytes > max_bytes;
    let (mut count, mut bytes) = (0u64, 0u64);
    for cf in Cf::REGION_DATA {
        scan_family(engine, region, cf, &mut |_, size| {
            count += 1;
            bytes += size as u64;
            !over(count, bytes)
        })?;
        if over(count, bytes) {
            break;
        }
    }
    if !over(count, bytes) {
        return Ok(RegionSize { keys: count, bytes, split_key: None });
    }
    // Over: measure all of it, so that the split halves it. Splitting at the middle of
    // the prefix scanned so far would cut a bulk-loaded region into a chain of small
    // regions, one per check, instead of halving it at each.
    let mut families = Vec::with_capacity(Cf::REGION_DATA.len());
    for cf in Cf::REGION_DATA {
        let (mut family_count, mut family_bytes) = (0u64, 0u64);
        scan_family(engine, region, cf, &mut |_, size| {
            family_count += 1;
            family_bytes += size as u64;
            true
        })?;
        families.push((cf, family_count, family_bytes));
    }
    let (count, bytes) = families.iter().fold((0, 0), |(keys, total), (_, c, b)| (keys + c, total + b));
    // The middle by bytes of the family holding the most: the key spaces are encoded
    // differently, so their entries do not interleave in one order, and a region's
    // bulk is almost always in one of them.
    let Some(&(largest, _, largest_bytes)) = families.iter().max_by_key(|(_, _, family_bytes)| *family_bytes)
    else {
        return Ok(RegionSize { keys: count, bytes, split_key: None });
    };
    let (half, mut seen) = (largest_bytes / 2, 0u64);
    let mut middle = None;
    scan_family(engine, region, largest, &mut |key, size| {
        seen += size as u64;
        if seen > half {
            middle = user_key_of(largest, key);
            return false;
        }
        true
    })?;
    // The region's first key cannot split it.
    let split_key = middle.filter(|key| KeyRange::of(region).contains_strictly(key));
    Ok(RegionSize { keys: count, bytes, split_key })
}

/// Visits `region`'s entries of `cf` in order with their sizes, until `visit` says stop.
fn scan_family(
    engine: &Engine,
    region: &Region,
    cf: Cf,
    visit: &mut dyn FnMut(&[u8], usize) -> bool,
) -> Result<(), EngineError> {
    let (start, end) = keys::region_bounds(cf, &region.start_key, &region.end_key);
    let mut options = rocksdb::ReadOptions::default();
    options.set_iterate_upper_bound(end);
    let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
    for item in engine.db().iterator_cf_opt(engine.cf(cf)?, options, mode) {
        let (key, value) = item?;
        if !visit(&key, key.len() + value.len()) {
            break;
        }
    }
    Ok(())
}

/// The user key a stored key of `cf` belongs to.
fn user_key_of(cf: Cf, stored: &[u8]) -> Option<Vec<u8>> {
    match cf {
        Cf::Data => keys::user_key(stored).map(<[u8]>::to_vec),
        Cf::Lock => split_lock_key(stored).ok(),
        Cf::Write | Cf::Versions => split_version_key(stored).ok().map(|(key, _)| key),
        Cf::Raft | Cf::Meta => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::key::version_key;
    use crate::proto::metadata::RegionEpoch;
    use crate::timestamp::Timestamp;

    fn whole_key_space() -> Region {
        Region { id: 1, epoch: Some(RegionEpoch { conf_version: 1, version: 1 }), ..Region::default() }
    }

    fn engine() -> (Engine, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        (Engine::open(dir.path()).expect("the engine opens"), dir)
    }

    #[test]
    fn transactional_data_counts_toward_a_split_and_is_split_at_its_middle() {
        let (engine, _dir) = engine();
        let mut batch = rocksdb::WriteBatch::default();
        let versions = engine.cf(Cf::Versions).expect("the family");
        for index in 0..100u64 {
            let key = format!("k{index:03}");
            for ts in 1..=3 {
                batch.put_cf(versions, version_key(key.as_bytes(), Timestamp::from_u64(ts)), [7u8; 100]);
            }
        }
        engine.write(batch, false).expect("written");
        let under = check_size(&engine, &whole_key_space(), 1_000, u64::MAX).expect("measured");
        assert_eq!((under.keys, under.split_key), (300, None));
        let over = check_size(&engine, &whole_key_space(), 100, u64::MAX).expect("measured");
        assert_eq!(over.keys, 300, "measured in full once over");
        assert_eq!(over.split_key.as_deref(), Some(&b"k050"[..]), "the middle by bytes, a user key");
    }

    #[test]
    fn a_region_is_split_in_the_family_that_holds_most_of_it() {
        let (engine, _dir) = engine();
        let mut batch = rocksdb::WriteBatch::default();
        let (data, write) = (engine.cf(Cf::Data).expect("data"), engine.cf(Cf::Write).expect("write"));
        for index in 0..10u64 {
            batch.put_cf(data, keys::data_key(format!("a{index}").as_bytes()), [1u8; 10]);
        }
        for index in 0..10u64 {
            let key = version_key(format!("m{index}").as_bytes(), Timestamp::from_u64(5));
            batch.put_cf(write, key, [1u8; 1000]);
        }
        engine.write(batch, false).expect("written");
        let size = check_size(&engine, &whole_key_space(), u64::MAX, 5_000).expect("measured");
        assert_eq!(size.keys, 20);
        assert_eq!(size.split_key.as_deref(), Some(&b"m5"[..]));
    }
}
