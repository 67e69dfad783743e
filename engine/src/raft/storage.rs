//! The read side of the durable Raft log, and an in-memory implementation.
//!
//! The core only reads through [`Storage`]; writing is the application's job, driven by
//! each [`Ready`](super::Ready). [`MemStorage`] keeps everything in memory; tests and the
//! simulator treat it as the durable state that survives a crash.

use std::sync::Arc;

use parking_lot::RwLock;

use super::errors::StorageError;
use super::proto::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use super::util::limit_size;

/// What a replica restores from its storage when it starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RaftState {
    pub hard_state: HardState,
    /// The configuration in effect at [`Config::applied`](super::Config::applied):
    /// membership changes after it are handed out again as the log is replayed, those
    /// at or before it are not. An application that restarts from its snapshot (as
    /// [`MemStorage`] does) returns the snapshot's configuration; one that persists its
    /// applied index must persist the configuration with it.
    pub conf_state: ConfState,
}

/// Read access to the persisted log.
///
/// Index `first_index() - 1` is the snapshot's index: its term must still be answered by
/// [`Storage::term`] so that appends right after a snapshot can be checked.
pub trait Storage {
    fn initial_state(&self) -> Result<RaftState, StorageError>;
    /// Entries in `[low, high)`, cut after `max_size` encoded bytes (at least one entry).
    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>, StorageError>;
    fn term(&self, index: u64) -> Result<u64, StorageError>;
    fn first_index(&self) -> Result<u64, StorageError>;
    fn last_index(&self) -> Result<u64, StorageError>;
    /// The most recent snapshot; `request_index` is the index the receiver needs at least.
    fn snapshot(&self, request_index: u64) -> Result<Snapshot, StorageError>;
}

#[derive(Debug, Default)]
struct MemStorageCore {
    hard_state: HardState,
    snapshot_metadata: SnapshotMetadata,
    snapshot_data: Vec<u8>,
    /// Entries after the snapshot, contiguous from `snapshot_metadata.index + 1`.
    entries: Vec<Entry>,
}

impl MemStorageCore {
    fn first_index(&self) -> u64 {
        self.snapshot_metadata.index + 1
    }

    fn last_index(&self) -> u64 {
        self.snapshot_metadata.index + self.entries.len() as u64
    }
}

/// An in-memory [`Storage`] that the application also writes to. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    core: Arc<RwLock<MemStorageCore>>,
}

impl MemStorage {
    /// The hard state held (tests compare it with what was applied).
    #[cfg(test)]
    pub(crate) fn hard_state(&self) -> HardState {
        self.core.read().hard_state
    }

    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// A storage for a founding member: the log starts after a bootstrap snapshot at
    /// `index` (term `index` too) holding `conf_state`. Replicas added later start empty
    /// and therefore receive a snapshot first, which carries the configuration to them.
    pub fn new_bootstrapped(index: u64, conf_state: ConfState) -> MemStorage {
        let storage = MemStorage::new();
        {
            let mut core = storage.core.write();
            core.snapshot_metadata = SnapshotMetadata { conf_state: Some(conf_state), index, term: index };
            core.hard_state = HardState { term: index, vote: 0, commit: index };
        }
        storage
    }

    pub fn set_hard_state(&self, hard_state: HardState) {
        self.core.write().hard_state = hard_state;
    }

    /// Appends entries, replacing any existing entries at or after the first one's index.
    ///
    /// Panics if the entries would leave a gap or overwrite the snapshot: the Raft core
    /// never asks for either.
    pub fn append(&self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let mut core = self.core.write();
        assert!(
            first.index > core.snapshot_metadata.index,
            "invariant: appended entries ({}) must come after the snapshot ({})",
            first.index,
            core.snapshot_metadata.index
        );
        assert!(
            first.index <= core.last_index() + 1,
            "invariant: appended entries ({}) must not leave a gap after {}",
            first.index,
            core.last_index()
        );
        let keep = (first.index - core.first_index()) as usize;
        core.entries.truncate(keep);
        core.entries.extend_from_slice(entries);
    }

    /// Installs a snapshot, discarding the log. Older snapshots are ignored.
    pub fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let metadata = snapshot.metadata.clone().unwrap_or_default();
        let mut core = self.core.write();
        if metadata.index <= core.snapshot_metadata.index {
            return Err(StorageError::Compacted);
        }
        core.hard_state.term = core.hard_state.term.max(metadata.term);
        core.hard_state.commit = core.hard_state.commit.max(metadata.index);
        core.entries.clear();
        core.snapshot_metadata = metadata;
        core.snapshot_data = snapshot.data.clone();
        Ok(())
    }

    /// Records a snapshot of the application's state at `index` (which must be in the
    /// log) and discards all entries up to it.
    pub fn compact(&self, index: u64, conf_state: ConfState, data: Vec<u8>) -> Result<(), StorageError> {
        let mut core = self.core.write();
        if index <= core.snapshot_metadata.index {
            return Err(StorageError::Compacted);
        }
        if index > core.last_index() {
            return Err(StorageError::Unavailable);
        }
        let offset = (index - core.first_index()) as usize;
        let term = core.entries[offset].term;
        core.entries.drain(..=offset);
        core.snapshot_metadata = SnapshotMetadata { conf_state: Some(conf_state), index, term };
        core.snapshot_data = data;
        Ok(())
    }

    /// The snapshot currently held (data and metadata).
    pub fn current_snapshot(&self) -> Snapshot {
        let core = self.core.read();
        Snapshot { data: core.snapshot_data.clone(), metadata: Some(core.snapshot_metadata.clone()) }
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        let core = self.core.read();
        Ok(RaftState {
            hard_state: core.hard_state,
            conf_state: core.snapshot_metadata.conf_state.clone().unwrap_or_default(),
        })
    }

    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        let core = self.core.read();
        if low < core.first_index() {
            return Err(StorageError::Compacted);
        }
        if high > core.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let offset = core.first_index();
        let mut entries = core.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        limit_size(&mut entries, max_size);
        Ok(entries)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        let core = self.core.read();
        if index == core.snapshot_metadata.index {
            return Ok(core.snapshot_metadata.term);
        }
        if index < core.first_index() {
            return Err(StorageError::Compacted);
        }
        if index > core.last_index() {
            return Err(StorageError::Unavailable);
        }
        Ok(core.entries[(index - core.first_index()) as usize].term)
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.core.read().first_index())
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.core.read().last_index())
    }

    fn snapshot(&self, _request_index: u64) -> Result<Snapshot, StorageError> {
        Ok(self.current_snapshot())
    }
}
