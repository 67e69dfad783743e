//! Everything inside one Tessera node, with no networking.
//!
//! - [`raft`]: the pure Raft state machine.
//! - [`simulation`]: the deterministic simulator that checks Raft's safety and liveness
//!   under faults; later layers reuse it.
//!
//! Storage, regions, the multi-raft store and the replicated KV state machine arrive with
//! their own modules (see `DESIGN.md` in the project's documentation).

pub mod raft;
pub mod simulation;
