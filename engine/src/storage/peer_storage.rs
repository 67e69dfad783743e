//! One region's Raft log and Raft state in the node's RocksDB: the [`Storage`] the Raft
//! core reads, and the write side the store uses when it persists a Ready.
//!
//! Writes never go to disk from here: they are added to a [`WriteBatch`] that the store
//! fills with the Readies of many regions and writes with one sync (group commit). The
//! in-memory copies of the states advance when the batch is filled; the store writes the
//! batch before it touches the region's Raft state machine again, and stops the node if
//! the write fails.

use prost::Message as _;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use crate::metrics::{METRICS, SnapshotFailure};
use crate::raft::proto::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use crate::raft::{RaftState, Storage, StorageError};

use super::engine::{Cf, Defect, Engine, EngineError, Record};
use super::keys;
use crate::proto::metadata::{ApplyState, RaftLocalState, Region, RegionLocalState};

fn io(error: EngineError) -> StorageError {
    StorageError::io(error)
}

/// Index and term of the empty log a region starts with. A peer created empty (on a
/// store the region is moving to) starts at 0 and so always needs a snapshot first,
/// which is what carries the region's data and configuration to it.
pub const INITIAL_INDEX: u64 = 5;
pub const INITIAL_TERM: u64 = 5;

#[derive(Debug)]
pub struct PeerStorage {
    engine: Engine,
    region_id: u64,
    raft_state: RaftLocalState,
    apply_state: ApplyState,
    region_state: RegionLocalState,
}

impl PeerStorage {
    /// Writes into `batch` the initial state of peer `peer_id` of a region founded on this
    /// store with `region`'s peers as its configuration (bootstrap, or the new half of a
    /// split, which inherits its parent's garbage-collection fence `txn_fence_ts`).
    pub(crate) fn initialize(
        engine: &Engine,
        region: &Region,
        peer_id: u64,
        txn_fence_ts: u64,
        batch: &mut WriteBatch,
    ) -> Result<(), EngineError> {
        let (learners, voters): (Vec<&crate::proto::metadata::Peer>, Vec<&crate::proto::metadata::Peer>) =
            region
                .peers
                .iter()
                .partition(|peer| peer.role == crate::proto::metadata::PeerRole::Learner as i32);
        let conf_state = ConfState {
            voters: voters.iter().map(|peer| peer.id).collect(),
            learners: learners.iter().map(|peer| peer.id).collect(),
            ..ConfState::default()
        };
        let region_state = RegionLocalState {
            region: Some(region.clone()),
            state: crate::proto::metadata::PeerState::Normal as i32,
            conf_state: Some(conf_state),
            peer_id,
            txn_fence_ts,
        };
        // A peer of this region may already exist here, created empty by an early
        // message of the new group; a vote it cast must survive.
        let existing: Option<RaftLocalState> =
            engine.get_message(Cf::Raft, &keys::raft_state_key(region.id))?;
        let mut hard_state = HardState { term: INITIAL_TERM, vote: 0, commit: INITIAL_INDEX };
        if let Some(existing) = existing.and_then(|state| state.hard_state)
            && existing.term > INITIAL_TERM
        {
            hard_state.term = existing.term;
            hard_state.vote = existing.vote;
        }
        let raft_state = RaftLocalState {
            hard_state: Some(hard_state),
            last_index: INITIAL_INDEX,
            last_term: INITIAL_TERM,
        };
        let apply_state = ApplyState {
            applied_index: INITIAL_INDEX,
            truncated_index: INITIAL_INDEX,
            truncated_term: INITIAL_TERM,
        };
        engine.put_message(batch, Cf::Meta, &keys::region_state_key(region.id), &region_state)?;
        engine.put_message(batch, Cf::Meta, &keys::apply_state_key(region.id), &apply_state)?;
        engine.put_message(batch, Cf::Raft, &keys::raft_state_key(region.id), &raft_state)?;
        Ok(())
    }

    /// Writes the state of peer `peer_id` created empty on this store: it knows the
    /// region's id and nothing else until a snapshot arrives.
    pub(crate) fn initialize_empty(
        engine: &Engine,
        region_id: u64,
        peer_id: u64,
        batch: &mut WriteBatch,
    ) -> Result<(), EngineError> {
        let region_state = RegionLocalState {
            region: Some(Region { id: region_id, ..Region::default() }),
            state: crate::proto::metadata::PeerState::Normal as i32,
            conf_state: Some(ConfState::default()),
            peer_id,
            txn_fence_ts: 0,
        };
        engine.put_message(batch, Cf::Meta, &keys::region_state_key(region_id), &region_state)?;
        engine.put_message(batch, Cf::Meta, &keys::apply_state_key(region_id), &ApplyState::default())?;
        engine.put_message(batch, Cf::Raft, &keys::raft_state_key(region_id), &RaftLocalState::default())?;
        Ok(())
    }

    /// Loads a region's persisted state.
    pub(crate) fn open(engine: &Engine, region_id: u64) -> Result<PeerStorage, EngineError> {
        let missing = |record| EngineError::corrupt(record, Defect::Missing);
        let region_state: RegionLocalState = engine
            .get_message(Cf::Meta, &keys::region_state_key(region_id))?
            .ok_or_else(|| missing(Record::RegionState { region_id }))?;
        let apply_state: ApplyState = engine
            .get_message(Cf::Meta, &keys::apply_state_key(region_id))?
            .ok_or_else(|| missing(Record::ApplyState { region_id }))?;
        let raft_state: RaftLocalState = engine
            .get_message(Cf::Raft, &keys::raft_state_key(region_id))?
            .ok_or_else(|| missing(Record::RaftState { region_id }))?;
        Ok(PeerStorage { engine: engine.clone(), region_id, raft_state, apply_state, region_state })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn region_id(&self) -> u64 {
        self.region_id
    }

    pub(crate) fn region(&self) -> Region {
        self.region_state.region.clone().unwrap_or_default()
    }

    pub(crate) fn peer_id(&self) -> u64 {
        self.region_state.peer_id
    }

    /// Marks the peer removed in `batch`: its log goes, and a tombstone keeps a stale
    /// message from recreating it. The caller deletes the region's data range.
    pub(crate) fn tombstone(&mut self, batch: &mut WriteBatch) -> Result<(), EngineError> {
        self.clear_log(batch)?;
        self.region_state.state = crate::proto::metadata::PeerState::Tombstone as i32;
        self.engine.put_message(
            batch,
            Cf::Meta,
            &keys::region_state_key(self.region_id),
            &self.region_state,
        )?;
        batch.delete_cf(self.engine.cf(Cf::Meta)?, keys::apply_state_key(self.region_id));
        Ok(())
    }

    pub(crate) fn apply_state(&self) -> &ApplyState {
        &self.apply_state
    }

    /// Whether the peer holds data yet (false for a peer created empty, until its first
    /// snapshot).
    pub(crate) fn is_initialized(&self) -> bool {
        self.region_state
            .conf_state
            .as_ref()
            .is_some_and(|cs| !cs.voters.is_empty() || !cs.learners.is_empty())
    }

    /// Adds `entries` to the log in `batch`, replacing any entries from the first one's
    /// index on, as the Raft core requires.
    pub(crate) fn append(&mut self, entries: &[Entry], batch: &mut WriteBatch) -> Result<(), EngineError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return Ok(()) };
        // Checked before anything is queued: a log with a hole, or with entries out of
        // order, would be persisted as the truth and replayed after a restart.
        let old_last = self.raft_state.last_index;
        assert!(
            first.index <= old_last + 1,
            "invariant: appends never leave a gap (region {}: first new entry {}, last stored {old_last})",
            self.region_id,
            first.index
        );
        assert!(
            first.index > self.apply_state.truncated_index,
            "invariant: compacted entries are never rewritten (region {}: first new entry {}, truncated at {})",
            self.region_id,
            first.index,
            self.apply_state.truncated_index
        );
        for (previous, next) in entries.iter().zip(&entries[1..]) {
            assert!(
                next.index == previous.index + 1 && next.term >= previous.term,
                "invariant: appended entries are contiguous with non-decreasing terms (region {}: \
                 {}@{} followed by {}@{})",
                self.region_id,
                previous.index,
                previous.term,
                next.index,
                next.term
            );
        }
        let raft = self.engine.cf(Cf::Raft)?;
        for entry in entries {
            batch.put_cf(raft, keys::log_key(self.region_id, entry.index), entry.encode_to_vec());
        }
        if last.index < old_last {
            // The new entries replace a longer suffix: the rest of it must go too.
            batch.delete_range_cf(
                raft,
                keys::log_key(self.region_id, last.index + 1),
                keys::log_key(self.region_id, old_last + 1),
            );
        }
        self.raft_state.last_index = last.index;
        self.raft_state.last_term = last.term;
        self.engine.put_message(batch, Cf::Raft, &keys::raft_state_key(self.region_id), &self.raft_state)
    }

    pub(crate) fn set_hard_state(
        &mut self,
        hard_state: HardState,
        batch: &mut WriteBatch,
    ) -> Result<(), EngineError> {
        self.raft_state.hard_state = Some(hard_state);
        self.engine.put_message(batch, Cf::Raft, &keys::raft_state_key(self.region_id), &self.raft_state)
    }

    /// Records in `batch` that the state machine applied up to `applied_index`; the
    /// caller puts the applied data in the same batch.
    pub(crate) fn set_applied(
        &mut self,
        applied_index: u64,
        batch: &mut WriteBatch,
    ) -> Result<(), EngineError> {
        self.apply_state.applied_index = applied_index;
        self.engine.put_message(batch, Cf::Meta, &keys::apply_state_key(self.region_id), &self.apply_state)
    }

    /// Records a new region descriptor or configuration in `batch` (splits, membership
    /// changes), atomically with the apply index that produced it.
    pub(crate) fn set_region_state(
        &mut self,
        region: Region,
        conf_state: ConfState,
        batch: &mut WriteBatch,
    ) -> Result<(), EngineError> {
        self.region_state.region = Some(region);
        self.region_state.conf_state = Some(conf_state);
        self.engine.put_message(batch, Cf::Meta, &keys::region_state_key(self.region_id), &self.region_state)
    }

    /// The region's garbage-collection fence as applied here (`crate::gc`).
    pub(crate) fn txn_fence(&self) -> u64 {
        self.region_state.txn_fence_ts
    }

    /// Sets the fence in memory; the next [`PeerStorage::set_region_state`] (or
    /// [`PeerStorage::persist_region_state`]) writes it.
    pub(crate) fn set_txn_fence(&mut self, txn_fence_ts: u64) {
        self.region_state.txn_fence_ts = txn_fence_ts;
    }

    /// Writes the region state as it is in memory into `batch`.
    pub(crate) fn persist_region_state(&self, batch: &mut WriteBatch) -> Result<(), EngineError> {
        self.engine.put_message(batch, Cf::Meta, &keys::region_state_key(self.region_id), &self.region_state)
    }

    /// Discards log entries up to and including `index` (which must be applied) with one
    /// range delete.
    pub(crate) fn compact_to(&mut self, index: u64, batch: &mut WriteBatch) -> Result<bool, EngineError> {
        if index <= self.apply_state.truncated_index || index > self.apply_state.applied_index {
            return Ok(false);
        }
        let region_id = self.region_id;
        let term = self.term(index).map_err(|e| {
            EngineError::corrupt(Record::LogEntry { region_id, index }, Defect::Unreadable(e))
        })?;
        let raft = self.engine.cf(Cf::Raft)?;
        batch.delete_range_cf(
            raft,
            keys::log_key(self.region_id, self.apply_state.truncated_index + 1),
            keys::log_key(self.region_id, index + 1),
        );
        self.apply_state.truncated_index = index;
        self.apply_state.truncated_term = term;
        self.engine.put_message(
            batch,
            Cf::Meta,
            &keys::apply_state_key(self.region_id),
            &self.apply_state,
        )?;
        Ok(true)
    }

    /// Installs a snapshot's log position in `batch`: the whole log is dropped and the
    /// region restarts from the snapshot's index. The caller writes the snapshot's data
    /// and region state into the same batch.
    pub(crate) fn install_snapshot_position(
        &mut self,
        metadata: &SnapshotMetadata,
        batch: &mut WriteBatch,
    ) -> Result<(), EngineError> {
        let raft = self.engine.cf(Cf::Raft)?;
        batch.delete_range_cf(
            raft,
            keys::log_key(self.region_id, 0),
            keys::log_key(self.region_id, self.raft_state.last_index.max(metadata.index) + 1),
        );
        let mut hard_state = self.raft_state.hard_state.unwrap_or_default();
        hard_state.term = hard_state.term.max(metadata.term);
        hard_state.commit = hard_state.commit.max(metadata.index);
        self.raft_state = RaftLocalState {
            hard_state: Some(hard_state),
            last_index: metadata.index,
            last_term: metadata.term,
        };
        self.apply_state = ApplyState {
            applied_index: metadata.index,
            truncated_index: metadata.index,
            truncated_term: metadata.term,
        };
        self.engine.put_message(batch, Cf::Raft, &keys::raft_state_key(self.region_id), &self.raft_state)?;
        self.engine.put_message(batch, Cf::Meta, &keys::apply_state_key(self.region_id), &self.apply_state)
    }

    fn clear_log(&self, batch: &mut WriteBatch) -> Result<(), EngineError> {
        let raft = self.engine.cf(Cf::Raft)?;
        batch.delete_range_cf(
            raft,
            keys::log_key(self.region_id, 0),
            keys::log_key(self.region_id, u64::MAX),
        );
        batch.delete_cf(raft, keys::raft_state_key(self.region_id));
        Ok(())
    }
}

impl Storage for PeerStorage {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        Ok(RaftState {
            hard_state: self.raft_state.hard_state.unwrap_or_default(),
            conf_state: self.region_state.conf_state.clone().unwrap_or_default(),
        })
    }

    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        if low <= self.apply_state.truncated_index {
            return Err(StorageError::Compacted);
        }
        if high > self.raft_state.last_index + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut entries = Vec::with_capacity((high - low) as usize);
        if low >= high {
            return Ok(entries);
        }
        let raft = self.engine.cf(Cf::Raft).map_err(io)?;
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::log_key(self.region_id, high).to_vec());
        let start = keys::log_key(self.region_id, low);
        let iterator =
            self.engine.db().iterator_cf_opt(raft, options, IteratorMode::From(&start, Direction::Forward));
        let mut size = 0u64;
        let mut expected = low;
        for item in iterator {
            let (key, value) = item.map_err(|e| io(e.into()))?;
            let region_id = self.region_id;
            let entry = Entry::decode(value.as_ref())
                .map_err(|e| io(EngineError::corrupt(Record::LogEntry { region_id, index: expected }, e)))?;
            if keys::log_index(region_id, &key) != Some(expected) || entry.index != expected {
                let hole = Defect::Hole { expected, found: entry.index };
                return Err(io(EngineError::corrupt(Record::Log { region_id }, hole)));
            }
            size += entry.encoded_len() as u64;
            if max_size.is_some_and(|max| size > max) && !entries.is_empty() {
                return Ok(entries);
            }
            entries.push(entry);
            expected += 1;
        }
        if expected != high {
            let short = Defect::EndsEarly { found: expected - 1, recorded: self.raft_state.last_index };
            return Err(io(EngineError::corrupt(Record::Log { region_id: self.region_id }, short)));
        }
        Ok(entries)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.apply_state.truncated_index {
            return Ok(self.apply_state.truncated_term);
        }
        if index < self.apply_state.truncated_index {
            return Err(StorageError::Compacted);
        }
        if index > self.raft_state.last_index {
            return Err(StorageError::Unavailable);
        }
        if index == self.raft_state.last_index {
            return Ok(self.raft_state.last_term);
        }
        let record = || Record::LogEntry { region_id: self.region_id, index };
        let bytes = self
            .engine
            .get(Cf::Raft, &keys::log_key(self.region_id, index))
            .map_err(io)?
            .ok_or_else(|| io(EngineError::corrupt(record(), Defect::Missing)))?;
        Entry::decode(bytes.as_slice())
            .map(|entry| entry.term)
            .map_err(|e| io(EngineError::corrupt(record(), e)))
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.apply_state.truncated_index + 1)
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.raft_state.last_index)
    }

    fn snapshot(&self, _request_index: u64) -> Result<Snapshot, StorageError> {
        let built = super::snapshot::build(&self.engine, self.region_id);
        match &built {
            Ok(_) => METRICS.snapshots_generated.increment(1),
            Err(error) => {
                tracing::warn!(region_id = self.region_id, %error, "building a snapshot failed");
                METRICS.snapshot_failed(SnapshotFailure::Generate)
            }
        }
        built.map_err(io)
    }
}
