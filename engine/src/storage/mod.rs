//! The node's one RocksDB: column families, key layout, per-region Raft storage and
//! region snapshots.
//!
//! Everything the node keeps lives in one database so that one write batch, with one
//! WAL sync, can carry the Raft logs of many regions (group commit) and so that applied
//! data and the apply index always land together. This module knows how things are laid
//! out on disk; it never decides what to write or when.

mod apply_batch;
mod engine;
pub mod keys;
mod peer_storage;
pub mod snapshot;

#[cfg(test)]
mod tests;

pub use apply_batch::{ApplyBatch, Staged};
pub use engine::hex;
pub use engine::{
    Cf, ColumnFamilyStats, DEFAULT_BLOCK_CACHE_BYTES, Defect, Engine, EngineError, EngineStats, Record,
};
pub use peer_storage::{INITIAL_INDEX, INITIAL_TERM, PeerStorage};
