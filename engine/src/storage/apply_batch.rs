//! The write batch of one apply round, readable before it is written.
//!
//! All committed commands of a round go into one [`WriteBatch`], written together with
//! the regions' apply indexes. A command must see the commands before it in the same
//! round, which are not in RocksDB yet: a compare-and-swap reads the value an earlier
//! put wrote, a commit the lock an earlier prewrite took. So the batch keeps an overlay
//! of what it has written, per column family, and every read during apply goes through
//! it ([`ApplyBatch::get`], [`ApplyBatch::overlay_range`]).
//!
//! This module owns the overlay's consistency with the batch; it decides nothing about
//! what to write.

use std::collections::BTreeMap;
use std::ops::Bound;

use rocksdb::WriteBatch;

use super::{Cf, Engine, EngineError};
use crate::feed::Change;

/// What the batch holds for one key: a new value, or a deletion.
pub type Staged = Option<Vec<u8>>;

/// A write batch under construction, with what it has written so far readable.
#[derive(Default)]
pub struct ApplyBatch {
    pub batch: WriteBatch,
    /// Latest value written per column family and key in this batch (`None`: deleted).
    written: BTreeMap<(Cf, Vec<u8>), Staged>,
    /// Key ranges deleted in this batch, per column family.
    deleted_ranges: Vec<(Cf, Vec<u8>, Vec<u8>)>,
    /// What transactional commands did, while a region with a change feed applies
    /// (`None`: nobody watches, nothing is captured).
    captured: Option<Vec<Change>>,
}

impl ApplyBatch {
    /// Starts capturing changes for a change feed (the applying region has one).
    pub(crate) fn start_capture(&mut self) {
        assert!(self.captured.is_none(), "invariant: one region's changes are captured at a time");
        self.captured = Some(Vec::new());
    }

    /// Ends capturing; answers what was captured since [`ApplyBatch::start_capture`].
    pub(crate) fn take_captured(&mut self) -> Vec<Change> {
        self.captured.take().unwrap_or_default()
    }

    /// Whether changes are being captured (a caller skips the work of describing one
    /// otherwise).
    pub(crate) fn capturing(&self) -> bool {
        self.captured.is_some()
    }

    /// Notes a change, if changes are being captured.
    pub(crate) fn capture(&mut self, change: Change) {
        if let Some(captured) = &mut self.captured {
            captured.push(change);
        }
    }

    /// The value of `key` in `cf` as the database will hold it once this batch is
    /// written.
    pub fn get(&self, engine: &Engine, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        if let Some(value) = self.written.get(&(cf, key.to_vec())) {
            return Ok(value.clone());
        }
        if self.in_deleted_range(cf, key) {
            return Ok(None);
        }
        engine.get(cf, key)
    }

    /// Whether a range deletion of this batch covers `key` in `cf`.
    pub fn in_deleted_range(&self, cf: Cf, key: &[u8]) -> bool {
        self.deleted_ranges
            .iter()
            .any(|(family, start, end)| *family == cf && key >= start.as_slice() && key < end.as_slice())
    }

    /// What this batch wrote in `cf` within `[start, end)`, in key order. A reader
    /// merges it over the database's own entries (this batch's entries win).
    pub fn overlay_range<'a>(
        &'a self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a Staged)> + 'a {
        let lower = Bound::Included((cf, start.to_vec()));
        let upper = Bound::Excluded((cf, end.to_vec()));
        self.written.range((lower, upper)).map(|((_, key), value)| (key.as_slice(), value))
    }

    pub fn put(&mut self, engine: &Engine, cf: Cf, key: Vec<u8>, value: Vec<u8>) -> Result<(), EngineError> {
        self.batch.put_cf(engine.cf(cf)?, &key, &value);
        self.written.insert((cf, key), Some(value));
        Ok(())
    }

    pub fn delete(&mut self, engine: &Engine, cf: Cf, key: Vec<u8>) -> Result<(), EngineError> {
        self.batch.delete_cf(engine.cf(cf)?, &key);
        self.written.insert((cf, key), None);
        Ok(())
    }

    /// Deletes `[start, end)` of `cf`.
    pub fn delete_range(
        &mut self,
        engine: &Engine,
        cf: Cf,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> Result<(), EngineError> {
        self.batch.delete_range_cf(engine.cf(cf)?, &start, &end);
        let lower = Bound::Included((cf, start.clone()));
        let upper = Bound::Excluded((cf, end.clone()));
        for (_, value) in self.written.range_mut((lower, upper)) {
            *value = None;
        }
        self.deleted_ranges.push((cf, start, end));
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Takes the batch to write, leaving this one empty.
    pub(crate) fn take(&mut self) -> WriteBatch {
        self.written.clear();
        self.deleted_ranges.clear();
        std::mem::take(&mut self.batch)
    }
}
