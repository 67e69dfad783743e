//! Tessera's placement driver: cluster metadata kept by a Raft group, store and region
//! heartbeats, and the schedulers that place and balance regions.
//!
//! Not built yet (issue 4). It will talk only through traits that the server implements
//! over gRPC and that tests implement in-process; it must never open a socket itself.
