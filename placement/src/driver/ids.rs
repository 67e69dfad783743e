//! Cluster-wide unique ids, handed out from ranges that the leader reserves through Raft
//! a batch at a time.
//!
//! The metadata hold a high-water mark; a leader moves it forward by compare-and-swap
//! before handing out anything below it, so two leaders (a deposed one that does not
//! know it yet, and its successor) can never reserve the same range. A new leader starts
//! above the mark and never reuses what its predecessor left unused.

use parking_lot::Mutex;
use tessera_engine::proto::metadata::RegionEpoch;

use crate::errors::{PdError, Unavailability};
use crate::metadata::{Mark, MarkUpdate, Metadata};

#[derive(Default)]
struct Range {
    next: u64,
    end: u64,
}

pub(crate) struct IdPool {
    range: Mutex<Range>,
    batch: u64,
}

impl IdPool {
    pub(crate) fn new(batch: u64) -> IdPool {
        IdPool { range: Mutex::new(Range::default()), batch: batch.max(1) }
    }

    /// Starts over from the persisted mark (a new leader's).
    pub(crate) fn reset(&self, mark: u64) {
        *self.range.lock() = Range { next: mark.max(1), end: mark };
    }

    /// `count` ids; the range is extended through Raft when it runs short.
    pub(crate) fn allocate(
        &self,
        metadata: &Metadata,
        epoch: RegionEpoch,
        count: u64,
    ) -> Result<Vec<u64>, PdError> {
        // Held across the Raft round trip: allocations are serialized by design.
        let mut range = self.range.lock();
        if range.next + count > range.end {
            let from = range.end;
            let to = range.end.max(range.next) + self.batch.max(count);
            match metadata.advance_mark(Mark::Ids, epoch, from, to)? {
                MarkUpdate::Advanced => range.end = to,
                MarkUpdate::Raced { found } => {
                    *range = Range { next: found.max(1), end: found };
                    return Err(Unavailability::IdsReservedMeanwhile.into());
                }
            }
        }
        let ids = (range.next..range.next + count).collect();
        range.next += count;
        Ok(ids)
    }
}
