//! Resolving the locks that hold change feeds back: a region leading a feed reports a
//! lock that has kept its resolved timestamp still for too long (the engine's `feed`
//! module says when), and this node resolves it through its client as a reader would
//! ([`Client::resolve_stale_lock`]): committed, rolled back, or left to its live
//! coordinator.
//!
//! Reports arrive on raft workers, which must never wait: they go through a bounded
//! queue, and one that finds it full is dropped (the region reports the lock again a
//! second later). A lock already being resolved is not asked about twice, and at most
//! [`MAX_RESOLVING`] are resolved at once, so a burst of stale locks cannot flood the
//! cluster with status checks.

use std::collections::HashSet;
use std::sync::Arc;

use metrics::Unit;
use tessera_engine::feed::{StaleLock, StaleLockSink};
use tessera_engine::timestamp::Timestamp;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, StaleLockOutcome};

/// Reports waiting to be taken.
const QUEUED_REPORTS: usize = 1024;
/// Locks resolved at once.
pub(crate) const MAX_RESOLVING: usize = 16;

const RESOLVED: &str = "tessera_feed_stale_locks_resolved_total";

/// The raft workers' end: a report is queued, or dropped if the queue is full.
#[derive(Debug)]
pub(crate) struct StaleLockQueue {
    sender: mpsc::Sender<StaleLock>,
}

impl StaleLockSink for StaleLockQueue {
    fn report(&self, lock: StaleLock) {
        // Full or closed: the lock is reported again while it stays.
        let _ = self.sender.try_send(lock);
    }
}

/// A queue for the store's configuration, and the end [`run`] takes reports from.
pub(crate) fn queue() -> (Arc<StaleLockQueue>, mpsc::Receiver<StaleLock>) {
    metrics::describe_counter!(
        RESOLVED,
        Unit::Count,
        "Locks that held a change feed back, asked about through their primary, by what was found."
    );
    let (sender, receiver) = mpsc::channel(QUEUED_REPORTS);
    (Arc::new(StaleLockQueue { sender }), receiver)
}

/// Resolves reported locks until `stopping` is cancelled or every sender is gone.
pub(crate) async fn run(
    mut reports: mpsc::Receiver<StaleLock>,
    client: Arc<Client>,
    stopping: CancellationToken,
) {
    let mut resolving: HashSet<(Vec<u8>, Timestamp)> = HashSet::new();
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            Some(done) = tasks.join_next() => {
                if let Ok(lock) = done {
                    resolving.remove(&lock);
                }
            }
            report = reports.recv() => {
                let Some(report) = report else { return };
                let lock = (report.key, report.start_ts);
                if tasks.len() >= MAX_RESOLVING || resolving.contains(&lock) {
                    continue;
                }
                resolving.insert(lock.clone());
                tasks.spawn(resolve(client.clone(), report.region_id, lock));
            }
        }
    }
}

/// Asks about one lock; answers it, so that it may be asked about again.
async fn resolve(client: Arc<Client>, region_id: u64, lock: (Vec<u8>, Timestamp)) -> (Vec<u8>, Timestamp) {
    let (key, start_ts) = &lock;
    let outcome = match client.resolve_stale_lock(key, *start_ts).await {
        Ok(outcome) => {
            tracing::debug!(region_id, %start_ts, ?outcome, "a lock holding a change feed back was asked about");
            match outcome {
                StaleLockOutcome::Resolved => "resolved",
                StaleLockOutcome::Alive => "alive",
                StaleLockOutcome::Gone => "gone",
            }
        }
        Err(error) => {
            tracing::info!(region_id, %start_ts, %error, "a lock holding a change feed back could not be resolved; it is reported again");
            "failed"
        }
    };
    metrics::counter!(RESOLVED, "outcome" => outcome).increment(1);
    lock
}
