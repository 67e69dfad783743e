//! Tessera's Raft core: a pure state machine, close to Ongaro's thesis.
//!
//! It owns the consensus rules and nothing else: no clocks (time is [`RawNode::tick`]),
//! no threads, no I/O, no global randomness (election timeouts come from a seeded RNG in
//! [`Config`]). The application feeds it ticks, messages and proposals and takes back a
//! [`Ready`]: entries and hard state to persist, messages to send, committed entries to
//! apply, confirmed reads. The same inputs always give the same outputs, which is what
//! lets [`crate::simulation`] explore faults deterministically.
//!
//! Beyond the paper's core it implements what production needs: PreVote and CheckQuorum,
//! pipelined replication with flow control and fast backtracking, snapshots, ReadIndex
//! and leader-lease reads, leader transfer, learners, and joint consensus for every
//! change of voters. Wire and disk types are prost messages from `engine/proto/raft.proto`.
//!
//! This module must never block, sleep, read a clock or touch the disk: the store's
//! batching and the simulator both depend on it being a pure function of its inputs.

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

pub use config::{Config, ReadMode};
#[cfg(test)]
pub use consensus::BugSwitches;
pub use consensus::{LogPosition, Raft, Role};
pub use errors::{Error, Result, StorageError};
pub use raw_node::{RawNode, Ready, SoftState};
pub use read_index::ReadState;
pub use storage::{MemStorage, RaftState, Storage};
pub use tracker::{Progress, ProgressState, TrackerConfig};
