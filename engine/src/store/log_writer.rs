//! Group commit: one thread makes the Raft writes of every worker durable with as few
//! syncs as it can.
//!
//! Each worker hands over one write batch per round holding the log entries and hard
//! states of all the regions it processed. The writer takes every batch waiting, writes
//! them to RocksDB without syncing, then syncs the WAL once for all of them, and only
//! then tells the workers their batches are durable. Under load the batches of several
//! rounds and workers share one fsync.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use rocksdb::WriteBatch;
use thiserror::Error;

use crate::metrics::METRICS;
use crate::storage::{Engine, EngineError};

/// Why a batch handed to the log writer is not known to be durable. Cloneable: one
/// failed sync is reported to every worker whose batch it carried.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum LogWriteError {
    /// The writer's thread is gone (it panicked, or the store is stopping).
    #[error("the log writer has stopped")]
    Stopped,
    /// The write or the sync failed; no batch of that sync can be trusted to be durable.
    #[error("the log write failed: {0}")]
    Engine(#[from] EngineError),
}

/// Counters of the log writer (they become metrics).
#[derive(Debug, Default)]
pub(crate) struct GroupCommitStats {
    pub syncs: AtomicU64,
    pub entries: AtomicU64,
    pub regions: AtomicU64,
    pub batches: AtomicU64,
}

/// A snapshot of [`GroupCommitStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitFigures {
    pub syncs: u64,
    pub entries: u64,
    pub regions: u64,
    pub batches: u64,
}

impl GroupCommitStats {
    pub(crate) fn figures(&self) -> GroupCommitFigures {
        GroupCommitFigures {
            syncs: self.syncs.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            regions: self.regions.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct WriteTask {
    pub batch: WriteBatch,
    pub entries: u64,
    pub regions: u64,
    pub done: Sender<Result<(), LogWriteError>>,
}

#[derive(Clone)]
pub(crate) struct LogWriter {
    tasks: Sender<WriteTask>,
}

impl LogWriter {
    pub(crate) fn start(
        engine: Engine,
        sync: bool,
        stats: Arc<GroupCommitStats>,
    ) -> (LogWriter, JoinHandle<()>) {
        let (tasks, inbox) = unbounded();
        let handle = std::thread::Builder::new()
            .name("tessera-log-writer".into())
            .spawn(move || {
                super::fatal::fail_stop_on_panic("log writer", move || run(engine, sync, stats, inbox))
            })
            .unwrap_or_else(|error| panic!("cannot start the log writer thread: {error}"));
        (LogWriter { tasks }, handle)
    }

    /// Writes `batch` durably; returns once it is.
    pub(crate) fn write(&self, batch: WriteBatch, entries: u64, regions: u64) -> Result<(), LogWriteError> {
        let (done, result) = bounded(1);
        self.tasks.send(WriteTask { batch, entries, regions, done }).map_err(|_| LogWriteError::Stopped)?;
        result.recv().map_err(|_| LogWriteError::Stopped)?
    }
}

fn run(engine: Engine, sync: bool, stats: Arc<GroupCommitStats>, inbox: Receiver<WriteTask>) {
    while let Ok(first) = inbox.recv() {
        crate::failpoint::hit(crate::failpoint::points::STORE_LOG_WRITE);
        let started = Instant::now();
        let mut tasks = vec![first];
        tasks.extend(inbox.try_iter());
        let mut result: Result<(), LogWriteError> = Ok(());
        let (mut entries, mut regions) = (0, 0);
        let mut waiting = Vec::with_capacity(tasks.len());
        for task in tasks {
            entries += task.entries;
            regions += task.regions;
            if result.is_ok() {
                result = engine.write(task.batch, false).map_err(LogWriteError::from);
            }
            waiting.push(task.done);
        }
        if result.is_ok() && sync {
            result = engine.db().flush_wal(true).map_err(|e| EngineError::from(e).into());
        }
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        stats.entries.fetch_add(entries, Ordering::Relaxed);
        stats.regions.fetch_add(regions, Ordering::Relaxed);
        stats.batches.fetch_add(waiting.len() as u64, Ordering::Relaxed);
        METRICS.log_syncs.increment(1);
        METRICS.log_sync_duration.record(started.elapsed());
        METRICS.log_sync_entries.record(entries as f64);
        METRICS.log_sync_regions.record(regions as f64);
        for done in waiting {
            // A worker that gave up waiting has stopped; nothing to tell it.
            let _ = done.send(result.clone());
        }
    }
}
