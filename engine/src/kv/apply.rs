//! Applying committed writes: raw writes to the data column family here, transactional
//! commands through [`crate::txn`].
//!
//! All writes of one apply round go into one [`ApplyBatch`], written together with the
//! region's apply index; a compare-and-swap sees the writes before it in the same round
//! through the batch's overlay.

use crate::proto::{
    command::{TxnResult, Write, WriteResult, write},
    metadata::Region,
};
use crate::region::KeyRange;
use crate::storage::{ApplyBatch, Cf, Engine, EngineError, keys};
use crate::timestamp::Timestamp;
use crate::txn;

impl WriteResult {
    /// Records a transactional command's outcome: it succeeded if no key refused it.
    fn set_txn(&mut self, result: TxnResult) {
        self.succeeded = result.errors.is_empty() && result.below_fence == 0;
        self.txn = Some(result);
    }
}

/// Applies the writes of one committed command of `region` into `batch`; returns one
/// response per write. The writes were checked against the region when proposed; the
/// caller checked the epoch again before calling. `txn_fence` is the region's
/// garbage-collection fence (`crate::txn::fence`), which a fence command raises.
pub fn apply_writes(
    engine: &Engine,
    region: &Region,
    txn_fence: &mut Timestamp,
    writes: &[Write],
    batch: &mut ApplyBatch,
) -> Result<Vec<WriteResult>, EngineError> {
    let mut responses = Vec::with_capacity(writes.len());
    for write in writes {
        let mut response = WriteResult { succeeded: true, previous: None, txn: None };
        match &write.kind {
            None => response.succeeded = false,
            Some(write::Kind::Put(put)) => {
                batch.put(engine, Cf::Data, keys::data_key(&put.key), put.value.clone())?
            }
            Some(write::Kind::Delete(delete)) => {
                batch.delete(engine, Cf::Data, keys::data_key(&delete.key))?
            }
            Some(write::Kind::DeleteRange(range)) => {
                // Clamp to the region: a command never writes outside its range.
                let requested = KeyRange::new(&range.start_key, &range.end_key);
                let clamped = KeyRange::of(region).clamp(&requested);
                batch.delete_range(
                    engine,
                    Cf::Data,
                    keys::data_key(clamped.start()),
                    keys::data_end_key(clamped.end()),
                )?;
            }
            Some(write::Kind::CompareAndSwap(cas)) => {
                let data_key = keys::data_key(&cas.key);
                let current = batch.get(engine, Cf::Data, &data_key)?;
                response.succeeded = current == cas.expected;
                if response.succeeded {
                    match &cas.new_value {
                        Some(value) => batch.put(engine, Cf::Data, data_key, value.clone())?,
                        None => batch.delete(engine, Cf::Data, data_key)?,
                    }
                }
                response.previous = current;
            }
            Some(write::Kind::Prewrite(prewrite)) => {
                response.set_txn(txn::prewrite(engine, batch, *txn_fence, prewrite)?)
            }
            Some(write::Kind::Commit(commit)) => {
                response.set_txn(txn::commit(engine, batch, *txn_fence, commit)?)
            }
            Some(write::Kind::Rollback(rollback)) => {
                response.set_txn(txn::rollback(engine, batch, *txn_fence, rollback)?)
            }
            Some(write::Kind::CheckTxnStatus(check)) => {
                response.set_txn(txn::check_txn_status(engine, batch, *txn_fence, check)?)
            }
            Some(write::Kind::TxnHeartBeat(heart_beat)) => {
                response.set_txn(txn::heart_beat(engine, batch, heart_beat)?)
            }
            Some(write::Kind::TxnFence(command)) => {
                response.set_txn(txn::fence(engine, batch, region, txn_fence, command)?)
            }
        }
        responses.push(response);
    }
    Ok(responses)
}
