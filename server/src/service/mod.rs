//! The gRPC services a node serves: [`kv::KvService`] on stores, [`pd::PdService`] on
//! driver replicas; both serve the Raft transport too (`crate::transport`).

pub(crate) mod feed;
pub mod kv;
pub mod pd;
pub mod reserved;
mod watch;
