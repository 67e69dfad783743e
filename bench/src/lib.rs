//! `tessera-bench`: workloads, load generation and latency reports, against Tessera and
//! against etcd with the same client-side harness.
//!
//! Not built yet (issue 7).
