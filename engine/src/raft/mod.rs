//! Tessera's Raft core: a pure state machine, close to Ongaro's thesis.
//!
//! It owns the consensus rules and nothing else: no clocks (time is [`RawNode::tick`],
//! and the readings of the application's clock it hands over for the leader lease),
//! no threads, no I/O, no global randomness (election timeouts come from a seeded RNG in
//! [`Config`]). The application feeds it ticks, messages and proposals and takes back a
//! [`Ready`]: entries and hard state to persist, messages to send, committed entries to
//! apply, confirmed reads. The same inputs always give the same outputs, which is what
//! lets the deterministic simulator (the `tessera-raft-simulation` crate, through this
//! module's public API only) explore faults deterministically.
//!
//! Beyond the paper's core it implements what production needs: PreVote and CheckQuorum,
//! pipelined replication with flow control and fast backtracking, snapshots, ReadIndex
//! and leader-lease reads, leader transfer, learners, and joint consensus for every
//! change of voters. Wire and disk types are prost messages from `engine/proto/raft.proto`.
//!
//! This module must never block, sleep, read a clock or touch the disk: the store's
//! batching and the simulator both depend on it being a pure function of its inputs.
//! Its state stays inside: the application reads it through [`RawNode::status`] and the
//! few accessors beside it (see `raw_node.rs`). Known bugs that tests inject to prove
//! the simulator catches them are fail points ([`crate::failpoint::points`]`::RAFT_*`),
//! which cost the product one relaxed atomic load.

mod confchange;
mod config;
mod consensus;
mod errors;
mod follower;
mod leader;
mod log;
mod log_unstable;
mod quorum;
mod raw_node;
mod read_index;
mod storage;
mod tracker;
mod util;

#[cfg(test)]
mod tests;

/// Generated wire and disk types.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/tessera.raft.rs"));
}

pub use config::{Config, LeaseClock, ReadMode};
#[cfg(test)]
use consensus::Raft;
pub use consensus::{LogPosition, Role};
pub use errors::{
    ConfChangeRefusal, ConfigError, Error, MessageDefect, OpaqueError, Result, StorageError, TransferRefusal,
};
pub use raw_node::{RawNode, Ready, SoftState, Status};
pub use read_index::ReadState;
pub use storage::{MemStorage, RaftState, Storage};
pub use tracker::{Progress, ProgressState};
