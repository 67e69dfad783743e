//! What a change feed reads from MVCC: the versions a key range committed after a
//! timestamp (a new watcher's catch-up), and the value a committed version replaced
//! (an event's previous value).
//!
//! Only puts and deletes are history: a committed `lock_keys` changes no value and a
//! rollback commits nothing. Both reads go through the reader's one snapshot; neither
//! looks at locks: a catch-up reports what has committed (what is still locked reaches
//! the watcher when it commits), and nothing can still commit below a version that
//! has committed on the same key (its writer would have met a write conflict).

use crate::feed::FeedEvent;
use crate::proto::mvcc::WriteKind;
use crate::storage::EngineError;
use crate::timestamp::Timestamp;

use super::reader::{MvccError, MvccReader, Version, decode_write};

impl MvccReader<'_> {
    /// Every put and delete committed in `[start, end)` (an empty end: to the end of
    /// the key space) at a timestamp above `after_ts`, with its value: in key order,
    /// each key's newest first, handed to `deliver` in batches of at most
    /// `batch_events`, cut earlier once their keys and values reach `batch_bytes`.
    /// Stops early, answering false, when `deliver` answers false.
    pub fn committed_after(
        &self,
        (start, end): (&[u8], &[u8]),
        after_ts: Timestamp,
        (batch_events, batch_bytes): (usize, usize),
        mut deliver: impl FnMut(Vec<FeedEvent>) -> bool,
    ) -> Result<bool, MvccError> {
        assert!(batch_events > 0, "a catch-up batch must be able to hold an event");
        let (mut batch, mut bytes) = (Vec::new(), 0);
        for item in self.write_records(start, end, false)? {
            let (stored, record) = item.map_err(EngineError::from)?;
            let (key, commit_ts, write) = decode_write(&stored, &record)?;
            // Rollback records sit under their start timestamp, which may be above
            // `after_ts`: they are passed over by their kind.
            if commit_ts <= after_ts {
                continue;
            }
            let start_ts = Timestamp::from_u64(write.start_ts);
            let value = match (write.kind(), write.short_value) {
                (WriteKind::WritePut, Some(value)) => Some(value),
                (WriteKind::WritePut, None) => Some(self.value(&key, commit_ts, start_ts)?),
                (WriteKind::WriteDelete, _) => None,
                (WriteKind::WriteLock | WriteKind::WriteRollback, _) => continue,
            };
            bytes += key.len() + value.as_ref().map_or(0, Vec::len);
            batch.push(FeedEvent { key, value, start_ts, commit_ts });
            if batch.len() == batch_events || bytes >= batch_bytes {
                bytes = 0;
                if !deliver(std::mem::take(&mut batch)) {
                    return Ok(false);
                }
            }
        }
        Ok(batch.is_empty() || deliver(batch))
    }

    /// The version `key` had just before the one committed at `commit_ts`: what the
    /// newest put or delete below it left (None: no value).
    pub fn version_before(&self, key: &[u8], commit_ts: Timestamp) -> Result<Option<Version>, MvccError> {
        match commit_ts.as_u64().checked_sub(1) {
            Some(below) => self.committed_version(key, Timestamp::from_u64(below)),
            None => Ok(None),
        }
    }
}
