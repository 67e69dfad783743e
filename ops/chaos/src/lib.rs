//! Tessera's fault-injection suite: real clusters of `tessera` processes in network
//! namespaces, clients recording what they saw, a nemesis killing, pausing and cutting
//! off nodes, and a checker that judges the history linearizable or not.
//!
//! The parts, in the order a round uses them: [`cluster`] (namespaces, processes),
//! [`workload`] (clients and their [`history`]), [`nemesis`] (faults), [`checker`]
//! (linearizability per key, lost writes), [`round`] (one round, its evidence), and
//! [`availability`] (how long the cluster took to serve again after each fault).
//! [`transactions`] holds the checkers of transactional histories (list-append
//! anomalies, the bank's invariant); [`etcd`] the clients of the etcd API and the
//! checker of its watch.

pub mod availability;
pub mod checker;
pub mod cluster;
pub mod etcd;
pub mod history;
pub mod nemesis;
pub mod round;
pub mod transactions;
pub mod workload;
