//! Everything inside one Tessera node, with no networking.
//!
//! - [`proto`]: the types every layer shares: region metadata, commands, store frames.
//! - [`raft`]: the pure Raft state machine. Its deterministic simulator is a test tool
//!   outside this crate (`engine/simulation`, the `tessera-raft-simulation` crate), which
//!   drives it through its public API only.
//! - [`region`]: region descriptors, epochs, key-range arithmetic and splits.
//! - [`storage`]: the node's one RocksDB: column families, key layout, per-region Raft
//!   storage and region snapshots.
//!
//! - [`gc`]: garbage collection of old transactional versions: the store's safe
//!   point, its reads' registry and the write family's compaction filter.
//! - [`feed`]: change feeds on a region's leader: captured changes, its locks and its
//!   resolved timestamp.
//! - [`failpoint`]: named places where tests inject pauses, failures and known bugs.
//! - [`kv`]: the replicated state machine: command checks and applying writes.
//! - [`log_limit`]: rate limits for log events that can repeat per request.
//! - [`metrics`]: what a store exports about itself (through the `metrics` facade).
//! - [`mvcc`]: the storage layout of transactions: versions, locks and commit records.
//! - [`store`]: the multi-raft runtime: many regions per node, group commit, batched
//!   messages, coalesced heartbeats, hibernation.
//! - [`timestamp`]: transaction timestamps (physical milliseconds and a logical
//!   counter), shared by the oracle, the MVCC layer and the clients.
//! - [`txn`]: transactional commands (Percolator's prewrite, commit, rollback and
//!   status checks) applied to the MVCC column families.

pub mod clock;
pub mod failpoint;
pub mod feed;
pub mod gc;
pub mod kv;
pub mod log_limit;
pub mod metrics;
pub mod mvcc;
pub mod proto;
pub mod raft;
pub mod region;
pub mod storage;
pub mod store;
pub mod timestamp;
pub mod txn;
