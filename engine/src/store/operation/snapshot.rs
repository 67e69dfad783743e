//! Snapshots, from the peer's side (building, sending and installing them is the
//! storage layer's and the worker's).
//!
//! - A leader whose snapshot to a follower stays unanswered for ten election timeouts
//!   reports it failed, so that Raft sends another: a snapshot the transport lost
//!   silently would otherwise leave the follower paused for good.
//! - A peer that installed a snapshot moved past its pending proposals: whether they
//!   were applied is unknown here, and their clients are told exactly that.

use crate::metrics::{METRICS, SnapshotFailure};
use crate::raft::ProgressState;
use crate::store::StoreConfig;
use crate::store::errors::StoreError;
use crate::store::peer::Peer;

impl Peer {
    /// Reports snapshots unanswered for ten election timeouts as failed.
    pub(super) fn expire_lost_snapshots(&mut self, config: &StoreConfig) {
        if !self.is_leader() {
            self.snapshots_in_flight.clear();
            return;
        }
        let ticks = self.ticks;
        let waiting: Vec<u64> = self
            .raw
            .progress()
            .filter(|(_, pr)| pr.state == ProgressState::Snapshot)
            .map(|(id, _)| id)
            .collect();
        self.snapshots_in_flight.retain(|id, _| waiting.contains(id));
        let limit = 10 * config.election_ticks;
        for id in waiting {
            let since = *self.snapshots_in_flight.entry(id).or_insert(ticks);
            if ticks - since > limit {
                tracing::warn!(
                    region_id = self.region_id,
                    to_peer_id = id,
                    waited_ticks = ticks - since,
                    "snapshot unanswered; reporting it lost so that another is sent"
                );
                self.raw.report_snapshot(id, false);
                self.snapshots_in_flight.remove(&id);
                METRICS.snapshot_failed(SnapshotFailure::Lost);
            }
        }
    }

    /// A snapshot moved the peer past its pending proposals: whether they were applied
    /// is unknown here, so the clients are told exactly that.
    pub(crate) fn on_snapshot_installed(&mut self) {
        tracing::info!(
            region_id = self.region_id,
            peer_id = self.peer_id,
            applied_index = self.applied_index(),
            "snapshot applied"
        );
        self.fail_proposals(&StoreError::OutcomeUnknown);
    }
}
