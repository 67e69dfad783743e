//! Data writes: a batch of puts, deletes, range deletes and compare-and-swaps to one
//! region, applied atomically in order.
//!
//! - Propose: the epoch's range version must be the current one, and every write must
//!   pass the limits and lie inside the region ([`kv::check_write`]); a bad write is
//!   refused at once with a typed error.
//! - Apply: the epoch is checked again (a split may have applied while the command
//!   waited in the log; the command was then routed on a range that no longer holds),
//!   then the writes go into the round's batch ([`kv::apply_writes`]), which answers one
//!   result per write.
//! - After apply: the proposer gets the results; the region is due for a size check. A
//!   fence command that raised the region's garbage-collection fence is told to the
//!   compaction filter once the round's batch is durable ([`SideEffect::FenceRaised`]).
//!
//! A one-phase prewrite is checked against the leader's read watermark before it is
//! proposed: re-timed above it, or answered at once when refused (`one_phase.rs`).

use prost::Message as _;

use crate::kv;
use crate::proto::command::RaftCommand;
use crate::region::{self, EpochCheck};
use crate::storage::ApplyBatch;
use crate::storage::{Engine, EngineError};
use crate::store::errors::StoreError;
use crate::store::peer::Peer;

use super::super::one_phase::{one_phase_commit_ts, refused};
use super::{Applied, Proposed, SideEffect};
use crate::timestamp::Timestamp;

impl Peer {
    pub(super) fn propose_writes(&mut self, command: &RaftCommand) -> Result<Proposed, StoreError> {
        let requested = command.epoch.unwrap_or_default();
        region::check_epoch(&self.region, requested, EpochCheck::Data)?;
        for write in &command.writes {
            kv::check_write(&self.region, write)?;
        }
        let retimed = match self.admit_one_phase(command) {
            Ok(retimed) => retimed,
            Err(refusal) => return Ok(Proposed::Answered(refused(command, refusal))),
        };
        let command = retimed.as_ref().unwrap_or(command);
        let position = self.raw.propose(command.encode_to_vec()).map_err(|error| self.raft_refusal(error))?;
        if let Some(commit_ts) = one_phase_commit_ts(command) {
            self.one_phase_proposed(position.index, commit_ts, command);
        }
        Ok(Proposed::InLog(position))
    }

    pub(super) fn apply_writes(
        &mut self,
        engine: &Engine,
        command: &RaftCommand,
        batch: &mut ApplyBatch,
        effects: &mut Vec<SideEffect>,
    ) -> Result<Applied, EngineError> {
        let requested = command.epoch.unwrap_or_default();
        if let Err(error) = region::check_epoch(&self.region, requested, EpochCheck::Data) {
            return Ok(Applied::Refused(error.into()));
        }
        self.written_since_split_check |= !command.writes.is_empty();
        self.traffic.count_writes(&command.writes);
        let before = Timestamp::from_u64(self.raw.storage().txn_fence());
        let mut fence = before;
        let results = kv::apply_writes(engine, &self.region, &mut fence, &command.writes, batch)?;
        if fence > before {
            // In memory at once, for the commands after this one; on disk with this
            // round's batch; to the compaction filter once the batch is durable.
            self.raw.storage_mut().set_txn_fence(fence.as_u64());
            self.raw.storage().persist_region_state(&mut batch.batch)?;
            effects.push(SideEffect::FenceRaised { fence_ts: fence.as_u64() });
        }
        Ok(Applied::Done(results))
    }
}
