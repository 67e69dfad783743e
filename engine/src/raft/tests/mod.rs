//! Tests of the Raft core that read like the paper.
//!
//! Each test states one rule of Raft, sets up the smallest situation where the rule
//! matters, and checks what the replicas do. Section numbers §5.x and Figures 7 and 8
//! are those of the Raft paper (Ongaro and Ousterhout, 2014); the others (§3, §4, §6,
//! §9, §10) are those of Ongaro's thesis, which the core follows.
//!
//! The tests drive the core through its API ([`RawNode`](super::RawNode) and the
//! messages of [`proto`](super::proto)) and read its state back. Where a rule is about
//! one replica's reaction they hand it messages directly; where it is about a group they
//! use the in-memory network of [`harness`], which follows the persistence contract of
//! `raw_node.rs` to the letter. A few tests arm one of the core's known-bug fail points
//! (`failpoint::points::RAFT_*`, on the test's own thread) to show that the scenario
//! next to them would catch the bug it guards against.

mod harness;

mod election;
mod membership;
mod persistence;
mod reads;
mod replication;
mod robustness;
mod snapshots;
mod transfer;
