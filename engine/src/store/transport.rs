//! How stores reach each other: a round's messages in [`StoreFrame`]s, one per
//! destination store (two when the leaders' appends leave before the round's sync).
//!
//! The runtime only needs [`Transport::send`]; the server implements it over gRPC
//! streams, and [`LocalTransport`] delivers in-process for tests, with links that can
//! be cut to partition stores and a count of the log entries each store was sent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::proto::frame::StoreFrame;

/// Sends a store's outgoing frames. Delivery is best effort: Raft tolerates loss.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, batch: StoreFrame);
}

/// Where frames for one store are delivered.
pub trait BatchSink: Send + Sync + 'static {
    fn deliver(&self, batch: StoreFrame);
}

/// An in-process network of stores.
#[derive(Default, Clone)]
pub struct LocalTransport {
    inner: Arc<LocalTransportInner>,
}

#[derive(Default)]
struct LocalTransportInner {
    sinks: RwLock<HashMap<u64, Arc<dyn BatchSink>>>,
    cut: RwLock<HashSet<(u64, u64)>>,
    /// Log entries delivered, by destination store.
    entries_delivered: Mutex<HashMap<u64, u64>>,
}

impl LocalTransport {
    pub fn new() -> LocalTransport {
        LocalTransport::default()
    }

    pub fn register(&self, store_id: u64, sink: Arc<dyn BatchSink>) {
        self.inner.sinks.write().insert(store_id, sink);
    }

    /// A stopped store receives nothing.
    pub fn unregister(&self, store_id: u64) {
        self.inner.sinks.write().remove(&store_id);
    }

    /// Cuts the link between two stores, both ways.
    pub fn partition(&self, a: u64, b: u64) {
        let mut cut = self.inner.cut.write();
        cut.insert((a, b));
        cut.insert((b, a));
    }

    pub fn heal(&self) {
        self.inner.cut.write().clear();
    }

    /// How many Raft log entries were delivered to `store_id` so far (in appends).
    pub fn entries_delivered(&self, store_id: u64) -> u64 {
        self.inner.entries_delivered.lock().get(&store_id).copied().unwrap_or(0)
    }
}

impl Transport for LocalTransport {
    fn send(&self, batch: StoreFrame) {
        if self.inner.cut.read().contains(&(batch.from_store, batch.to_store)) {
            return;
        }
        let sink = self.inner.sinks.read().get(&batch.to_store).cloned();
        if let Some(sink) = sink {
            let entries: usize = batch
                .messages
                .iter()
                .filter_map(|message| message.message.as_ref())
                .map(|m| m.entries.len())
                .sum();
            *self.inner.entries_delivered.lock().entry(batch.to_store).or_default() += entries as u64;
            sink.deliver(batch);
        }
    }
}
