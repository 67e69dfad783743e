//! Deterministic simulation of Raft groups under faults.
//!
//! A run is a pure function of its seed: one seeded RNG draws the fault profile, the
//! Raft settings, the network's losses and delays, crashes, membership changes and the
//! client workload, over virtual time. After every step the [`checker`] verifies Election
//! Safety, Log Matching, Leader Completeness, State Machine Safety, durability of
//! committed entries and linearizable reads; after the faults heal it demands liveness.
//! A failure names its seed and prints the last events, and the same seed replays it
//! exactly: `cargo run --release -p tessera-engine --example raft-sim -- --start SEED
//! --seeds 1`.
//!
//! The simulator only drives the Raft core over in-memory storage; it never touches the
//! disk, a clock or a thread, so that nothing but the seed decides what happens.

pub mod checker;
mod cluster;
mod network;
mod node;
pub mod state_machine;
mod trace;

#[cfg(test)]
mod tests;

use std::fmt;

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
    #[cfg(test)]
    pub bugs: crate::raft::BugSwitches,
}

impl SimConfig {
    pub fn new(nodes: usize) -> SimConfig {
        SimConfig {
            nodes,
            chaos_ticks: 300,
            liveness_bound_ticks: 150,
            trace_events: 80,
            #[cfg(test)]
            bugs: crate::raft::BugSwitches::default(),
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
        writeln!(
            f,
            "reproduce: cargo run --release -p tessera-engine --example raft-sim -- --start {} --seeds 1 --nodes {}",
            self.seed, self.nodes
        )?;
        write!(f, "last events:\n{}", self.trace)
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64, config: &SimConfig) -> Result<Stats, SeedFailure> {
    let failure = |(violation, trace)| SeedFailure { seed, nodes: config.nodes, violation, trace };
    let simulation =
        cluster::Simulation::new(seed, config.clone()).map_err(|v| failure((v, String::new())))?;
    simulation.run().map_err(failure)
}
