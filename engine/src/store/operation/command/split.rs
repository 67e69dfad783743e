//! Splits: the region `[start, end)` becomes `[start, split_key)` (same id) and
//! `[split_key, end)` (a new id, one new peer per store of the original).
//!
//! - Propose: the whole epoch (range and membership) must be current. Leaders propose
//!   splits on their own when their region outgrows the thresholds (`split_check.rs`),
//!   or when the placement driver asks.
//! - Apply: the epoch is checked again, both halves get the next range version, the
//!   left half's descriptor is written, and the new region's state is initialized in
//!   the same batch, unless a peer of it on this store is already ahead of the split (a
//!   snapshot initialized it, or it was removed). The new range is claimed in the
//!   store's range map before the batch is written, so that no message can create an
//!   empty peer over it meanwhile.
//! - After apply: the worker starts the new region's peer ([`SideEffect::SplitCreated`]);
//!   it campaigns at once if this peer led the parent, so the new region does not wait
//!   an election timeout for a leader.

use prost::Message as _;

use crate::metrics::METRICS;
use crate::proto::command::{RaftCommand, Split};
use crate::proto::metadata::{PeerState, RegionLocalState};
use crate::raft::LogPosition;
use crate::region::{self, EpochCheck};
use crate::storage::ApplyBatch;
use crate::storage::{Cf, Engine, EngineError, PeerStorage, keys};
use crate::store::errors::StoreError;
use crate::store::peer::Peer;

use super::{Applied, SideEffect};

impl Peer {
    /// Proposes an admin command other than a membership change (a split).
    pub(super) fn propose_admin(&mut self, command: &RaftCommand) -> Result<LogPosition, StoreError> {
        let requested = command.epoch.unwrap_or_default();
        region::check_epoch(&self.region, requested, EpochCheck::Admin)?;
        self.raw.propose(command.encode_to_vec()).map_err(|error| self.raft_refusal(error))
    }

    pub(super) fn apply_split(
        &mut self,
        engine: &Engine,
        command: &RaftCommand,
        split: &Split,
        batch: &mut ApplyBatch,
        effects: &mut Vec<SideEffect>,
    ) -> Result<Applied, EngineError> {
        let requested = command.epoch.unwrap_or_default();
        if let Err(error) = region::check_epoch(&self.region, requested, EpochCheck::Admin) {
            return Ok(Applied::Refused(error.into()));
        }
        let (left, right) =
            match region::split(&self.region, &split.split_key, split.new_region_id, &split.new_peer_ids) {
                Ok(halves) => halves,
                Err(error) => return Ok(Applied::Refused(error.into())),
            };
        let conf_state = self.raw.conf_state();
        self.raw.storage_mut().set_region_state(left.clone(), conf_state, &mut batch.batch)?;
        // The watchers of the old range reopen it over the regions it became.
        self.close_feed(crate::feed::FeedClosed::RangeChanged);
        let new_peer = region::peer_on_store(&right, self.store_id).map(|p| p.id);
        if let Some(peer_id) = new_peer
            && !new_region_is_ahead(engine, right.id)?
        {
            // Claimed now, before the batch is written, so that no message can create an
            // empty peer of the new region in the meantime.
            self.ranges.set(&right);
            PeerStorage::initialize(
                engine,
                &right,
                peer_id,
                self.raw.storage().txn_fence(),
                &mut batch.batch,
            )?;
            effects.push(SideEffect::SplitCreated { region: right, parent_was_leader: self.is_leader() });
        }
        tracing::info!(
            region_id = left.id,
            new_region_id = split.new_region_id,
            split_key = %split.split_key.escape_ascii(),
            version = left.epoch.map_or(0, |epoch| epoch.version),
            "split applied"
        );
        self.set_region(left);
        METRICS.splits.increment(1);
        Ok(Applied::Done(Vec::new()))
    }
}

/// Whether a peer of the new region on this store is ahead of the split: a snapshot
/// already initialized it, or it was removed. Either way the split leaves it as it is.
fn new_region_is_ahead(engine: &Engine, region_id: u64) -> Result<bool, EngineError> {
    let existing: Option<RegionLocalState> =
        engine.get_message(Cf::Meta, &keys::region_state_key(region_id))?;
    Ok(existing.is_some_and(|state| {
        state.state == PeerState::Tombstone as i32
            || state.conf_state.is_some_and(|cs| !cs.voters.is_empty() || !cs.learners.is_empty())
    }))
}
