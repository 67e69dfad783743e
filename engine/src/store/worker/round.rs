//! A round of Readies: what a worker does with every region that has work, in the order
//! the Raft core's persistence contract requires (see `crate::raft::RawNode`).
//!
//! 1. **Collect**: take each dirty region's Ready; queue the leaders' messages and stage
//!    all new log entries, hard states and snapshots of every region in ONE write batch.
//!    When the batch must be synced, the leaders' messages leave now, one frame per
//!    destination store, before it is durable: the followers write the new entries
//!    while the leader does (§10.2.1 of Ongaro's thesis; the leader counts its own copy
//!    towards a commit only once durable), so a write waits for one sync instead of two
//!    in a row.
//! 2. **Persist**: make that batch durable with the log writer, one sync shared with
//!    the other workers (group commit), or write it without a sync when it only
//!    advances commit indexes.
//! 3. **Send**: the messages that promise durable state (votes, append
//!    acknowledgements), and the leaders' if still queued, one frame per destination.
//! 4. **Apply**: apply all committed entries into ONE more batch, written without a sync
//!    (the log is durable already), then answer the clients.
//! 5. **Advance**: serve confirmed reads, advance every region, and carry out what
//!    applying asked for (start a split's new region, destroy a removed peer).
//!
//! A failed write stops the node: its Raft state would no longer match its disk.

use std::time::Instant;

use rocksdb::WriteBatch;

use crate::metrics::METRICS;
use crate::raft::Ready;
use crate::storage::ApplyBatch;
use crate::storage::snapshot;
use crate::store::heartbeat::Outgoing;
use crate::store::log_writer::LogWriteError;
use crate::store::operation::SideEffect;
use crate::store::peer::Peer;

use super::{Worker, fail_stop};

/// The Readies of one round and the log writes staged for them.
#[derive(Default)]
struct Collected {
    readies: Vec<(u64, Ready)>,
    log_batch: WriteBatch,
    /// Log entries staged, for the group-commit figures.
    entries: u64,
    /// Regions with something staged.
    regions: u64,
    /// Whether anything staged must be durable before anyone hears of it.
    must_sync: bool,
}

impl Worker {
    pub(super) fn process_readies(&mut self) {
        // New readies appear as rounds complete (a leader commits once its own write is
        // durable); a few rounds settle them, the rest waits for the next wake-up.
        for _ in 0..4 {
            if self.dirty.is_empty() {
                return;
            }
            self.round();
        }
    }

    fn round(&mut self) {
        let mut outgoing = Outgoing::new(self.config.store_id);
        let mut collected = self.collect(&mut outgoing);
        if collected.must_sync {
            // Only when a sync is to be waited for: otherwise one frame per destination
            // carries everything, as before.
            outgoing.flush(self.transport.as_ref());
        }
        self.persist(&mut collected);
        for (region_id, ready) in collected.readies.iter_mut() {
            if let Some(peer) = self.peers.get(region_id) {
                outgoing.add(peer, std::mem::take(&mut ready.persisted_messages));
            }
        }
        outgoing.flush(self.transport.as_ref());
        let effects = self.apply(&collected.readies);
        self.advance(collected.readies);
        for (region_id, effect) in effects {
            self.apply_side_effect(region_id, effect);
        }
    }

    /// Phase 1: takes the Ready of every dirty region that has one.
    fn collect(&mut self, outgoing: &mut Outgoing) -> Collected {
        let mut collected = Collected::default();
        for region_id in std::mem::take(&mut self.dirty) {
            // Before any of this round's messages leave: a lease that ended (a step down,
            // a transfer) is seen ended before anyone hears of a successor.
            self.publish_lease(region_id);
            let Some(peer) = self.peers.get_mut(&region_id) else { continue };
            if !peer.has_ready() {
                continue;
            }
            let mut ready = peer.ready();
            collected.must_sync |= ready.must_sync;
            outgoing.add(peer, std::mem::take(&mut ready.messages));
            let (entries, wrote) = stage(&self.engine, region_id, peer, &ready, &mut collected.log_batch);
            collected.entries += entries;
            collected.regions += u64::from(wrote);
            collected.readies.push((region_id, ready));
        }
        METRICS.entries_appended.increment(collected.entries);
        collected
    }

    /// Phase 2: makes the staged log writes durable (or just written, when only commit
    /// indexes moved: a lost commit index is learned again from the leader).
    fn persist(&mut self, collected: &mut Collected) {
        if collected.log_batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut collected.log_batch);
        let written = if collected.must_sync {
            self.log_writer.write(batch, collected.entries, collected.regions)
        } else {
            self.engine.write(batch, false).map_err(LogWriteError::from)
        };
        if let Err(error) = written {
            fail_stop("writing the raft log", error);
        }
    }

    /// Phase 4: applies every committed entry of the round in one batch, then answers
    /// the clients; returns what applying asked the worker to do.
    fn apply(&mut self, readies: &[(u64, Ready)]) -> Vec<(u64, SideEffect)> {
        let apply_started = Instant::now();
        crate::failpoint::hit(crate::failpoint::points::STORE_APPLY);
        let committed: usize = readies.iter().map(|(_, ready)| ready.committed_entries.len()).sum();
        let mut batch = ApplyBatch::default();
        let mut answers: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
        let mut effects = Vec::new();
        for (region_id, ready) in readies {
            let Some(peer) = self.peers.get_mut(region_id) else { continue };
            let mut peer_effects = Vec::new();
            let applied = peer.apply_entries(
                &self.engine,
                &ready.committed_entries,
                &mut batch,
                &mut answers,
                &mut peer_effects,
            );
            if let Err(error) = applied {
                fail_stop(&format!("applying region {region_id}"), error);
            }
            effects.extend(peer_effects.into_iter().map(|effect| (*region_id, effect)));
        }
        // A raised fence lets the compaction filter collect more once it is told; it
        // must not learn of a fence a crash could take back (`crate::gc`).
        let sync = effects.iter().any(|(_, effect)| matches!(effect, SideEffect::FenceRaised { .. }));
        if !batch.is_empty()
            && let Err(error) = self.engine.write(batch.take(), sync)
        {
            fail_stop("writing applied data", error);
        }
        for answer in answers {
            answer();
        }
        if committed > 0 {
            METRICS.entries_applied.increment(committed as u64);
            METRICS.apply_duration.record(apply_started.elapsed());
        }
        effects
    }

    /// Phase 5: serves the reads Raft confirmed and tells each region its Ready is done.
    fn advance(&mut self, readies: Vec<(u64, Ready)>) {
        for (region_id, mut ready) in readies {
            let Some(peer) = self.peers.get_mut(&region_id) else { continue };
            peer.on_read_states(
                std::mem::take(&mut ready.read_states),
                std::mem::take(&mut ready.dropped_reads),
            );
            peer.serve_reads(&self.engine);
            peer.advance();
            if peer.has_ready() {
                self.dirty.insert(region_id);
            }
        }
    }
}

/// Stages `ready`'s snapshot, entries and hard state for `peer` in `log_batch`; the
/// number of entries staged, and whether anything was.
fn stage(
    engine: &crate::storage::Engine,
    region_id: u64,
    peer: &mut Peer,
    ready: &Ready,
    log_batch: &mut WriteBatch,
) -> (u64, bool) {
    let storage = peer.storage_mut();
    let mut wrote = false;
    if let Some(snapshot) = &ready.snapshot {
        crate::failpoint::hit(crate::failpoint::points::STORE_INSTALL_SNAPSHOT);
        if let Err(error) = snapshot::install(engine, storage, snapshot, log_batch) {
            fail_stop(&format!("installing a snapshot of region {region_id}"), error);
        }
        wrote = true;
    }
    if !ready.entries.is_empty() {
        if let Err(error) = storage.append(&ready.entries, log_batch) {
            fail_stop(&format!("appending to region {region_id}"), error);
        }
        wrote = true;
    }
    if let Some(hard_state) = ready.hard_state {
        if let Err(error) = storage.set_hard_state(hard_state, log_batch) {
            fail_stop(&format!("saving the hard state of region {region_id}"), error);
        }
        wrote = true;
    }
    if ready.snapshot.is_some() {
        let region = storage.region();
        peer.refresh_region(region);
        peer.on_snapshot_installed();
        METRICS.snapshots_applied.increment(1);
    }
    (ready.entries.len() as u64, wrote)
}
