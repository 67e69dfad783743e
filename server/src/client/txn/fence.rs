//! Garbage collection's pass over the regions: every region fenced at a timestamp and
//! cleared of the locks at or below it (the engine's `gc` module tells why), which is
//! what the placement driver needs before it may publish that timestamp as the safe
//! point.
//!
//! The pass walks the key space by key, not by a list of regions taken once: each step
//! fences the region holding the cursor as the client's routing finds it, then moves
//! the cursor to that region's end. A region that splits behind the cursor passes its
//! fence to both halves (the engine copies it at the split), so nothing is missed.

use tessera_engine::proto::command::{KeyError, TxnFence, Write, key_error, write};
use tessera_engine::timestamp::Timestamp;

use super::resolve::{Resolution, txn_result};
use crate::client::{Client, ClientError, Resend};
use crate::proto::WriteRequest;

/// Locks a fence answers at a time; a region with more is fenced again once they are
/// resolved.
const LOCKS_PER_FENCE: u32 = 256;

/// How a pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FencePass {
    /// Every region is fenced and holds no lock at or below the fence.
    Cleared { regions: u64, locks_resolved: u64 },
    /// A live transaction that started at or below the fence holds this key: the safe
    /// point must wait for it.
    Blocked { key: Vec<u8>, start_ts: Timestamp },
}

impl Client {
    /// Fences every region at `fence` and resolves the locks at or below it.
    pub async fn fence_all_regions(&self, fence: Timestamp) -> Result<FencePass, ClientError> {
        let (mut cursor, mut regions, mut locks_resolved) = (Vec::new(), 0, 0);
        loop {
            let command = TxnFence { fence_ts: fence.as_u64(), lock_limit: LOCKS_PER_FENCE };
            let writes = vec![Write { kind: Some(write::Kind::TxnFence(command)) }];
            let (answer, region) = self
                .on_region(&cursor, Resend::Always, |mut kv, context, _| {
                    let writes = writes.clone();
                    async move { kv.write(WriteRequest { context: Some(context), writes }).await }
                })
                .await?;
            let locks = txn_result(fence, answer.into_inner().results)?.errors;
            if locks.is_empty() {
                regions += 1;
                if region.end_key.is_empty() {
                    return Ok(FencePass::Cleared { regions, locks_resolved });
                }
                cursor = region.end_key;
                continue;
            }
            for KeyError { key, kind } in locks {
                let Some(key_error::Kind::Locked(lock)) = kind else {
                    let detail = format!("a fence answered {kind:?} for key {key:?}");
                    return Err(ClientError::ProtocolViolation { start_ts: fence, detail });
                };
                match self.resolve_lock(&lock).await? {
                    Resolution::Resolved => locks_resolved += 1,
                    Resolution::Alive => {
                        return Ok(FencePass::Blocked { key, start_ts: Timestamp::from_u64(lock.start_ts) });
                    }
                }
            }
        }
    }
}
