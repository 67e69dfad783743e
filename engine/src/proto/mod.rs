//! The types every layer shares, generated from `engine/proto/` (protobuf, so that disk,
//! wire and other languages' clients agree on them), one module per concern:
//!
//! - [`metadata`]: what a region is (range, peers, epoch) and the per-region state a
//!   node persists beside its Raft log.
//! - [`command`]: what a region's Raft log carries (a batch of writes or one admin
//!   command) and what applying a write answers.
//! - [`frame`]: what one store sends another (Raft messages of many regions and
//!   coalesced heartbeats in one frame) and the payload of a region snapshot.
//! - [`mvcc`]: the records of transactions as stored: locks and commit records.
//!
//! The Raft core's own types stay in [`crate::raft::proto`]: the core depends on nothing
//! else. This module holds types only; behaviour lives with the layer that owns it
//! (key ranges and epochs in [`crate::region`], writes in [`crate::kv`]).

/// Regions, peers, epochs and the per-region state persisted beside the log.
pub mod metadata {
    include!(concat!(env!("OUT_DIR"), "/tessera.metadata.rs"));
}

/// The commands of a region's Raft log and the results of applying writes.
pub mod command {
    include!(concat!(env!("OUT_DIR"), "/tessera.command.rs"));
}

/// Store-to-store frames and region snapshot payloads.
pub mod frame {
    include!(concat!(env!("OUT_DIR"), "/tessera.frame.rs"));
}

/// Locks and commit records of transactions.
pub mod mvcc {
    include!(concat!(env!("OUT_DIR"), "/tessera.mvcc.rs"));
}
