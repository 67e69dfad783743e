//! Destroying a peer removed from its region, and failing what waits on a peer that
//! stops.
//!
//! A destroyed peer's data and log are deleted and a tombstone is left in their place,
//! so that a stale message for the region cannot create it again; its range is released
//! in the store's range map. Its waiting reads are refused, and its proposals answered
//! with an unknown outcome: they may have committed already, and a client must not take
//! them for writes that did not happen.

use crate::storage::{Cf, Engine, EngineError, keys};
use crate::store::errors::StoreError;
use crate::store::peer::Peer;

impl Peer {
    /// Fails every request waiting on this peer (it stops or is destroyed). Reads get
    /// `error`; proposals get `OutcomeUnknown`.
    pub(crate) fn fail_all(&mut self, error: StoreError) {
        self.fail_proposals(&StoreError::OutcomeUnknown);
        self.fail_reads(&error);
        let reason = match error {
            StoreError::ShuttingDown => crate::feed::FeedClosed::ShuttingDown,
            _ => crate::feed::FeedClosed::RegionGone,
        };
        self.close_feed(reason);
    }

    /// Deletes the peer's data and log and leaves a tombstone, in `batch`.
    pub(crate) fn destroy(
        &mut self,
        engine: &Engine,
        batch: &mut rocksdb::WriteBatch,
    ) -> Result<(), EngineError> {
        tracing::info!(
            region_id = self.region_id,
            peer_id = self.peer_id,
            "replica destroyed: removed from its region"
        );
        self.destroyed = true;
        self.ranges.remove(self.region_id);
        engine.gc().remove_region(self.region_id);
        self.fail_all(StoreError::RegionNotFound(self.region_id));
        if self.raw.storage().is_initialized() && !self.region.peers.is_empty() {
            for cf in Cf::REGION_DATA {
                let (start, end) = keys::region_bounds(cf, &self.region.start_key, &self.region.end_key);
                batch.delete_range_cf(engine.cf(cf)?, start, end);
            }
        }
        self.raw.storage_mut().tombstone(batch)
    }
}
