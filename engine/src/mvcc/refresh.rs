//! A read refresh: whether a key range a transaction read at its start is still as it
//! read it at its commit timestamp. With it, a transaction that acted on what a range
//! held (a scan, a range compare) is serializable at its commit timestamp: no key was
//! created, changed or deleted in the range in between (CockroachDB refreshes its
//! read spans the same way before it commits above its start).
//!
//! A put or a delete committed in `(after, up_to]` is a change; a committed
//! `lock_keys` or a rollback changes no value and is passed over. A lock of another
//! transaction that may commit at or below `up_to` is answered as it stands: the
//! refreshing transaction holds locks of its own (it has prewritten), so waiting for
//! the other one could wait for a transaction that waits for it; the caller gives up
//! and runs again instead. Its own locks (`own_start_ts`) are its writes, not changes.

use crate::storage::EngineError;
use crate::timestamp::Timestamp;

use super::reader::{MvccError, MvccReader, decode_write};
use crate::proto::mvcc::WriteKind;

/// What a refresh found in a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// Nothing changed in the range between the two timestamps.
    Unchanged,
    /// This key was written (put or deleted) in between.
    Changed(Vec<u8>),
}

impl MvccReader<'_> {
    /// Whether a put or delete committed in `[start, end)` (an empty end: to the end of
    /// the key space) in `(after, up_to]`, other than by the transaction that started
    /// at `own_start_ts`; [`MvccError::Locked`] for another transaction's lock that may
    /// still commit at or below `up_to`.
    pub fn refresh(
        &self,
        (start, end): (&[u8], &[u8]),
        after: Timestamp,
        up_to: Timestamp,
        own_start_ts: Timestamp,
    ) -> Result<Refresh, MvccError> {
        if after >= up_to {
            // An empty span of time: nothing committed in it.
            return Ok(Refresh::Unchanged);
        }
        let locks = self.blocking_locks(start, end, up_to)?;
        if let Some(lock) = locks.into_iter().find(|lock| lock.start_ts != own_start_ts.as_u64()) {
            return Err(MvccError::Locked(lock));
        }
        for item in self.write_records(start, end, false)? {
            let (stored, record) = item.map_err(EngineError::from)?;
            let (key, commit_ts, write) = decode_write(&stored, &record)?;
            let changes_a_value = matches!(write.kind(), WriteKind::WritePut | WriteKind::WriteDelete);
            if changes_a_value && commit_ts > after && commit_ts <= up_to {
                return Ok(Refresh::Changed(key));
            }
        }
        Ok(Refresh::Unchanged)
    }
}
