//! Applying committed writes to the data column family.
//!
//! All writes of one apply round go into one [`WriteBatch`], written together with the
//! region's apply index. A compare-and-swap must see the writes before it in the same
//! round, which are not in RocksDB yet, so the batch keeps an overlay of the keys it
//! has written and the ranges it has deleted.

use std::collections::BTreeMap;

use rocksdb::WriteBatch;

use crate::proto::{
    command::{Write, WriteResult, write},
    metadata::Region,
};
use crate::region::KeyRange;
use crate::storage::{Cf, Engine, EngineError, keys};

/// A write batch under construction, with what it has written so far readable.
#[derive(Default)]
pub struct ApplyBatch {
    pub batch: WriteBatch,
    /// Latest value written per data key in this batch (`None`: deleted).
    written: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Data key ranges deleted in this batch.
    deleted_ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ApplyBatch {
    /// The value of `data_key` as the database will hold it once this batch is written.
    fn read(&self, engine: &Engine, data_key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        if let Some(value) = self.written.get(data_key) {
            return Ok(value.clone());
        }
        if self
            .deleted_ranges
            .iter()
            .any(|(start, end)| data_key >= start.as_slice() && data_key < end.as_slice())
        {
            return Ok(None);
        }
        engine.get(Cf::Data, data_key)
    }

    fn put(&mut self, engine: &Engine, data_key: Vec<u8>, value: Vec<u8>) -> Result<(), EngineError> {
        self.batch.put_cf(engine.cf(Cf::Data)?, &data_key, &value);
        self.written.insert(data_key, Some(value));
        Ok(())
    }

    fn delete(&mut self, engine: &Engine, data_key: Vec<u8>) -> Result<(), EngineError> {
        self.batch.delete_cf(engine.cf(Cf::Data)?, &data_key);
        self.written.insert(data_key, None);
        Ok(())
    }

    fn delete_range(&mut self, engine: &Engine, start: Vec<u8>, end: Vec<u8>) -> Result<(), EngineError> {
        self.batch.delete_range_cf(engine.cf(Cf::Data)?, &start, &end);
        for (_, value) in self.written.range_mut(start.clone()..end.clone()) {
            *value = None;
        }
        self.deleted_ranges.push((start, end));
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

/// Applies the writes of one committed command of `region` into `batch`; returns one
/// response per write. The writes were checked against the region when proposed; the
/// caller checked the epoch again before calling.
pub fn apply_writes(
    engine: &Engine,
    region: &Region,
    writes: &[Write],
    batch: &mut ApplyBatch,
) -> Result<Vec<WriteResult>, EngineError> {
    let mut responses = Vec::with_capacity(writes.len());
    for write in writes {
        let mut response = WriteResult { succeeded: true, previous: None };
        match &write.kind {
            None => response.succeeded = false,
            Some(write::Kind::Put(put)) => batch.put(engine, keys::data_key(&put.key), put.value.clone())?,
            Some(write::Kind::Delete(delete)) => batch.delete(engine, keys::data_key(&delete.key))?,
            Some(write::Kind::DeleteRange(range)) => {
                // Clamp to the region: a command never writes outside its range.
                let requested = KeyRange::new(&range.start_key, &range.end_key);
                let clamped = KeyRange::of(region).clamp(&requested);
                batch.delete_range(
                    engine,
                    keys::data_key(clamped.start()),
                    keys::data_end_key(clamped.end()),
                )?;
            }
            Some(write::Kind::CompareAndSwap(cas)) => {
                let data_key = keys::data_key(&cas.key);
                let current = batch.read(engine, &data_key)?;
                response.succeeded = current == cas.expected;
                if response.succeeded {
                    match &cas.new_value {
                        Some(value) => batch.put(engine, data_key, value.clone())?,
                        None => batch.delete(engine, data_key)?,
                    }
                }
                response.previous = current;
            }
        }
        responses.push(response);
    }
    Ok(responses)
}
