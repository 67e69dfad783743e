//! The locks of one region, by key and by start timestamp, for its resolved timestamp.

use std::collections::{BTreeMap, HashMap};

use prost::Message as _;
use rocksdb::{Direction, IteratorMode, ReadOptions};

use crate::mvcc::key::{range_bounds, split_lock_key};
use crate::mvcc::reader::RecordDefect;
use crate::proto::metadata::Region;
use crate::proto::mvcc::Lock;
use crate::storage::{Cf, Engine, EngineError, Record};
use crate::timestamp::Timestamp;

/// The locks a region holds. A key has at most one lock; the oldest lock bounds the
/// region's resolved timestamp.
#[derive(Debug, Default)]
pub struct LockTracker {
    by_key: HashMap<Vec<u8>, Timestamp>,
    /// How many keys each start timestamp has locked.
    by_start: BTreeMap<Timestamp, usize>,
}

impl LockTracker {
    /// Notes a lock of `start_ts` on `key`; a lock already there is replaced (a key has
    /// one lock: the replaced one was released in the same batch, or it is the same).
    pub fn lock(&mut self, key: Vec<u8>, start_ts: Timestamp) {
        if let Some(previous) = self.by_key.insert(key, start_ts) {
            self.forget_start(previous);
        }
        *self.by_start.entry(start_ts).or_default() += 1;
    }

    /// Notes that the lock of `start_ts` on `key` is gone; a lock of another
    /// transaction there stays.
    pub fn unlock(&mut self, key: &[u8], start_ts: Timestamp) {
        if self.by_key.get(key) == Some(&start_ts) {
            self.by_key.remove(key);
            self.forget_start(start_ts);
        }
    }

    fn forget_start(&mut self, start_ts: Timestamp) {
        let count = self.by_start.get_mut(&start_ts);
        let Some(count) = count else {
            unreachable!("invariant: every tracked key's start timestamp is counted ({start_ts})")
        };
        *count -= 1;
        if *count == 0 {
            self.by_start.remove(&start_ts);
        }
    }

    /// The start timestamp of the oldest lock, if any.
    pub fn oldest(&self) -> Option<Timestamp> {
        self.by_start.keys().next().copied()
    }

    /// The oldest lock: its key and start timestamp. Looking for the key walks every
    /// lock, so it is for the rare moments a lock holds a feed back too long.
    pub fn oldest_lock(&self) -> Option<(&[u8], Timestamp)> {
        let oldest = self.oldest()?;
        let found = self.by_key.iter().find(|(_, start_ts)| **start_ts == oldest);
        let Some((key, _)) = found else {
            unreachable!("invariant: a counted start timestamp ({oldest}) has a tracked key")
        };
        Some((key.as_slice(), oldest))
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

impl LockTracker {
    /// The locks of `region` in the database (every applied command written).
    pub fn read(engine: &Engine, region: &Region) -> Result<LockTracker, EngineError> {
        let (start, end) = range_bounds(&region.start_key, &region.end_key);
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(end);
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut tracker = LockTracker::default();
        for item in engine.db().iterator_cf_opt(engine.cf(Cf::Lock)?, options, mode) {
            let (encoded, value) = item?;
            let corrupt = |defect: RecordDefect| {
                EngineError::corrupt(Record::Key { cf: Cf::Lock, key: encoded.to_vec() }, defect)
            };
            let lock = Lock::decode(value.as_ref()).map_err(|error| corrupt(error.into()))?;
            let key = split_lock_key(&encoded).map_err(|defect| corrupt(defect.into()))?;
            tracker.lock(key, Timestamp::from_u64(lock.start_ts));
        }
        Ok(tracker)
    }
}
