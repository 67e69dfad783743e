//! Deterministic simulation of Raft groups under faults: a test tool, kept out of the
//! product (`tessera-engine` does not depend on it).
//!
//! A run is a pure function of its seed: one seeded RNG draws the fault profile, the
//! Raft settings, the network's losses and delays, crashes, membership changes and the
//! client workload, over virtual time. After every step the [`checker`] verifies Election
//! Safety, Log Matching, Leader Completeness, State Machine Safety, durability of
//! committed entries and linearizable reads; after the faults heal it demands liveness.
//! A failure names its seed and prints the last events, and the same seed replays it
//! exactly: `ops/dev.sh soak --start SEED --seeds 1`.
//!
//! The simulator only drives the Raft core over in-memory storage, through the core's
//! public API ([`RawNode`](tessera_engine::raft::RawNode) and what it exposes); it never
//! touches the disk, a clock or a thread, so that nothing but the seed decides what
//! happens. The `raft-sim` example is its soak command.

pub mod checker;
mod cluster;
mod network;
mod node;
pub mod state_machine;
mod trace;

#[cfg(test)]
mod tests;

use std::fmt;

use tessera_engine::failpoint;

pub use checker::{Violation, ViolationKind};

/// Settings of a simulation run that do not come from the seed.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Founding replicas: 3 or 5.
    pub nodes: usize,
    /// Ticks of the fault phase.
    pub chaos_ticks: u64,
    /// Ticks after healing within which a new proposal must commit.
    pub liveness_bound_ticks: u64,
    /// Events kept for the failure trace.
    pub trace_events: usize,
    /// Fail points armed (to trigger) on the thread running the seed, for the whole run:
    /// the Raft core's known bugs (`failpoint::points::RAFT_*`), which tests switch on
    /// to prove the checker catches them. Empty for a real soak.
    pub fail_points: Vec<&'static str>,
}

impl SimConfig {
    pub fn new(nodes: usize) -> SimConfig {
        SimConfig {
            nodes,
            chaos_ticks: 300,
            liveness_bound_ticks: 150,
            trace_events: 80,
            fail_points: Vec::new(),
        }
    }
}

/// What a passing run did, for the soak command's summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub messages: u64,
    pub elections: u64,
    pub applied: u64,
    pub acknowledged: u64,
    pub reads: u64,
    pub crashes: u64,
    pub snapshots_installed: u64,
    pub conf_changes_applied: u64,
    pub transfers_started: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.messages += other.messages;
        self.elections += other.elections;
        self.applied += other.applied;
        self.acknowledged += other.acknowledged;
        self.reads += other.reads;
        self.crashes += other.crashes;
        self.snapshots_installed += other.snapshots_installed;
        self.conf_changes_applied += other.conf_changes_applied;
        self.transfers_started += other.transfers_started;
    }
}

/// A failed seed: the violation and the events that led to it.
#[derive(Debug, Clone)]
pub struct SeedFailure {
    pub seed: u64,
    pub nodes: usize,
    pub violation: Violation,
    pub trace: String,
}

impl fmt::Display for SeedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} ({} replicas): {}", self.seed, self.nodes, self.violation)?;
        writeln!(f, "reproduce: ops/dev.sh soak --start {} --seeds 1 --nodes {}", self.seed, self.nodes)?;
        write!(f, "last events:\n{}", self.trace)
    }
}

/// Runs one seed on the calling thread, with `config.fail_points` armed on it.
pub fn run_seed(seed: u64, config: &SimConfig) -> Result<Stats, SeedFailure> {
    let _armed: Vec<failpoint::ThreadPoint> = config
        .fail_points
        .iter()
        .map(|&name| failpoint::arm_on_this_thread(name, failpoint::Action::Trigger))
        .collect();
    let failure = |(violation, trace)| SeedFailure { seed, nodes: config.nodes, violation, trace };
    let simulation =
        cluster::Simulation::new(seed, config.clone()).map_err(|v| failure((v, String::new())))?;
    simulation.run().map_err(failure)
}
