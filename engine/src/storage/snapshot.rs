//! Region snapshots: built from one RocksDB snapshot of a region's key range (in every
//! column family that holds region data: the raw key space and the transactional
//! ones) and state, installed with one atomic write batch.
//!
//! Reading the apply state and the data through the same RocksDB snapshot is what makes
//! the Raft snapshot consistent: its index is exactly the index the data reflects. The
//! payload is carried inline; SST files written with SstFileWriter and ingested would
//! avoid holding a large region in memory, and are the natural next step when regions
//! grow past a few tens of megabytes.

use prost::Message as _;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use crate::raft::proto::{Entry, Snapshot, SnapshotMetadata};

use super::engine::{Cf, Defect, Engine, EngineError, Record};
use super::keys;
use super::peer_storage::PeerStorage;
use crate::mvcc::key::{split_lock_key, split_version_key};
use crate::mvcc::reader::RecordDefect;
use crate::proto::frame::{KeyValue, RegionSnapshotData};
use crate::proto::metadata::{ApplyState, Region, RegionLocalState};
use crate::proto::mvcc;
use crate::region::KeyRange;

/// Builds a snapshot of `region_id` as of its applied index.
pub(crate) fn build(engine: &Engine, region_id: u64) -> Result<Snapshot, EngineError> {
    let db = engine.db();
    let snapshot = db.snapshot();
    // Every read below goes through the same RocksDB snapshot.
    fn read<M: prost::Message + Default>(
        engine: &Engine,
        snapshot: &rocksdb::Snapshot<'_>,
        cf: Cf,
        key: &[u8],
        record: Record,
    ) -> Result<M, EngineError> {
        let Some(bytes) = snapshot.get_cf(engine.cf(cf)?, key)? else {
            return Err(EngineError::corrupt(record, Defect::Missing));
        };
        M::decode(bytes.as_slice()).map_err(|e| EngineError::corrupt(record, e))
    }
    let region_state: RegionLocalState = read(
        engine,
        &snapshot,
        Cf::Meta,
        &keys::region_state_key(region_id),
        Record::RegionState { region_id },
    )?;
    let apply_state: ApplyState = read(
        engine,
        &snapshot,
        Cf::Meta,
        &keys::apply_state_key(region_id),
        Record::ApplyState { region_id },
    )?;
    let index = apply_state.applied_index;
    let term = if index == apply_state.truncated_index {
        apply_state.truncated_term
    } else {
        let record = Record::LogEntry { region_id, index };
        read::<Entry>(engine, &snapshot, Cf::Raft, &keys::log_key(region_id, index), record)?.term
    };
    let region = region_state.region.clone().unwrap_or_default();
    let mut payload = RegionSnapshotData::default();
    for cf in Cf::REGION_DATA {
        let (start, end) = keys::region_bounds(cf, &region.start_key, &region.end_key);
        let mut options = ReadOptions::default();
        options.set_snapshot(&snapshot);
        options.set_iterate_upper_bound(end);
        let entries =
            db.iterator_cf_opt(engine.cf(cf)?, options, IteratorMode::From(&start, Direction::Forward));
        for item in entries {
            let (key, value) = item?;
            let (key, value) = (key.to_vec(), value.to_vec());
            match cf {
                Cf::Data => {
                    let Some(user_key) = keys::user_key(&key) else {
                        return Err(EngineError::corrupt(Record::DataKey { key }, Defect::NoDataPrefix));
                    };
                    payload.pairs.push(KeyValue { key: user_key.to_vec(), value });
                }
                Cf::Lock => payload.locks.push(KeyValue { key, value }),
                Cf::Write => payload.writes.push(KeyValue { key, value }),
                Cf::Versions => payload.versions.push(KeyValue { key, value }),
                Cf::Raft | Cf::Meta => unreachable!("invariant: REGION_DATA lists only data families"),
            }
        }
    }
    payload.region = Some(region);
    payload.txn_fence_ts = region_state.txn_fence_ts;
    let data = payload.encode_to_vec();
    let metadata = SnapshotMetadata { conf_state: region_state.conf_state, index, term };
    Ok(Snapshot { data, metadata: Some(metadata) })
}

/// A snapshot checked to install cleanly: its payload decoded, its region and
/// metadata present.
pub(crate) struct CheckedSnapshot {
    pub payload: RegionSnapshotData,
    pub region: Region,
    pub metadata: SnapshotMetadata,
}

/// Checks everything [`install`] relies on before anything is written: the payload
/// decodes; it has metadata and a region, the one addressed (`region_id`); the
/// region's range holds a key (neither empty nor inverted: RocksDB refuses to delete an
/// inverted range, and a store cannot carry on after a failed install); every key it
/// carries, in every column family, lies inside that range (one outside would land in
/// another region's), and every transactional record decodes. A store checks a snapshot from another store with this before its
/// Raft sees it.
pub(crate) fn check(region_id: u64, snapshot: &Snapshot) -> Result<CheckedSnapshot, Defect> {
    let payload = RegionSnapshotData::decode(snapshot.data.as_slice())?;
    let metadata = snapshot.metadata.clone().ok_or(Defect::NoMetadata)?;
    let region = payload.region.clone().ok_or(Defect::NoRegion)?;
    if region.id != region_id {
        return Err(Defect::OtherRegion { found: region.id });
    }
    let range = KeyRange::of(&region);
    if range.is_empty() {
        let (start, end) = (region.start_key.clone(), region.end_key.clone());
        return Err(Defect::EmptyRange { start, end });
    }
    if let Some(pair) = payload.pairs.iter().find(|pair| !range.contains(&pair.key)) {
        return Err(Defect::OutsideRegion { cf: Cf::Data.name(), key: pair.key.clone() });
    }
    for (cf, entries) in stored_entries(&payload) {
        let (start, end) = keys::region_bounds(cf, &region.start_key, &region.end_key);
        for entry in entries {
            // Keys as stored: one outside the region would land in another's range.
            if entry.key < start || entry.key >= end {
                return Err(Defect::OutsideRegion { cf: cf.name(), key: entry.key.clone() });
            }
            check_record(cf, entry).map_err(Defect::Mvcc)?;
        }
    }
    Ok(CheckedSnapshot { payload, region, metadata })
}

/// Whether a transactional record decodes as its family's: one that does not would
/// stop the store at the first read or apply that meets it.
fn check_record(cf: Cf, entry: &KeyValue) -> Result<(), RecordDefect> {
    match cf {
        Cf::Lock => {
            split_lock_key(&entry.key)?;
            mvcc::Lock::decode(entry.value.as_slice())?;
        }
        Cf::Write => {
            split_version_key(&entry.key)?;
            mvcc::Write::decode(entry.value.as_slice())?;
        }
        _ => {
            split_version_key(&entry.key)?;
        }
    }
    Ok(())
}

/// The payload's transactional records, by the column family they are stored in.
fn stored_entries(payload: &RegionSnapshotData) -> [(Cf, &Vec<KeyValue>); 3] {
    [(Cf::Lock, &payload.locks), (Cf::Write, &payload.writes), (Cf::Versions, &payload.versions)]
}

/// Adds to `batch` everything that installing `snapshot` on `storage`'s peer writes:
/// the region's data range replaced by the snapshot's pairs, the log dropped, and the
/// region, configuration and apply states set to the snapshot's. Written together, a
/// crash leaves either the old peer or the new one, never a mixture. The snapshot is
/// [`check`]ed first: nothing is added to `batch` for one that fails.
pub(crate) fn install(
    engine: &Engine,
    storage: &mut PeerStorage,
    snapshot: &Snapshot,
    batch: &mut WriteBatch,
) -> Result<(), EngineError> {
    let corrupt = |defect| EngineError::corrupt(Record::Snapshot { region_id: storage.region_id() }, defect);
    let CheckedSnapshot { payload, region, metadata } =
        check(storage.region_id(), snapshot).map_err(corrupt)?;
    for cf in Cf::REGION_DATA {
        let (start, end) = keys::region_bounds(cf, &region.start_key, &region.end_key);
        batch.delete_range_cf(engine.cf(cf)?, &start, &end);
    }
    let data = engine.cf(Cf::Data)?;
    for pair in &payload.pairs {
        batch.put_cf(data, keys::data_key(&pair.key), &pair.value);
    }
    for (cf, entries) in stored_entries(&payload) {
        let handle = engine.cf(cf)?;
        for entry in entries {
            batch.put_cf(handle, &entry.key, &entry.value);
        }
    }
    storage.install_snapshot_position(&metadata, batch)?;
    storage.set_txn_fence(payload.txn_fence_ts);
    storage.set_region_state(region, metadata.conf_state.unwrap_or_default(), batch)
}
