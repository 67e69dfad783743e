//! `tessera-bench`: one load generator for Tessera and for etcd, so that the two are
//! measured by the same client-side harness.
//!
//! - [`workload`]: what a run does: YCSB's core workloads A–F, put, get and scan mixes.
//! - [`keys`]: which keys it touches: uniform, zipfian (scrambled, as YCSB) or latest.
//! - [`target`]: the system under test: Tessera through its client library, or etcd's
//!   v3 API through the `etcd-client` crate.
//! - [`runner`]: requests in flight, an optional rate, warm-up, duration or operation
//!   count, latencies in HDR histograms, errors counted, a progress line every second.
//! - [`report`]: the final table and the JSON lines.
//! - [`watch_lag`], [`idle_watch`]: what watches see (commit-to-delivery lag) and cost
//!   (idle watches' memory and CPU on the nodes).
//!
//! Latency is measured from the moment a request was due: with a rate limit, a request
//! that waits behind a slow one counts its wait (no coordinated omission).

pub mod idle_watch;
pub mod keys;
pub mod report;
pub mod runner;
pub mod target;
pub mod watch_lag;
pub mod workload;
