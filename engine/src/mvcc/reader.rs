//! Snapshot reads at a timestamp: what a transaction that started at `read_ts` sees.
//!
//! A key's value at `read_ts` is decided by its newest commit record at or below
//! `read_ts` that is a put or a delete (records of `lock_keys` and rollbacks change no
//! value and are passed over): a put's value is in the record itself when short, and
//! otherwise in the versions family under the writing transaction's start timestamp;
//! a delete means no value.
//!
//! A lock decides first. A lock with `start_ts <= read_ts` belongs to a transaction
//! that may commit below `read_ts`; until it is resolved, the reader cannot know the
//! value and is answered [`MvccError::Locked`] (the caller resolves the lock through its
//! primary and reads again). A lock of a later transaction is invisible at `read_ts`,
//! and so is a lock that only guards a read (`lock_keys`: its commit writes no value).
//! A scan is blocked by a lock only on a key inside what it returns, or anywhere in
//! its range when it returned fewer pairs than its limit.
//!
//! Every read goes through one RocksDB snapshot, so the locks and the records it
//! checks are of one moment. This module reads; it never writes or resolves.

use prost::Message as _;
use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::key::{KeyDefect, lock_key, range_bounds, split_lock_key, split_version_key, version_key};
use crate::kv;
use crate::proto::command::LockInfo;
use crate::proto::mvcc::{Lock, Mutation, Write, WriteKind};
use crate::storage::{Cf, Engine, EngineError, Record};
use crate::timestamp::Timestamp;

/// Why a read at a timestamp did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    /// A transaction that may commit below the read timestamp holds a lock on the key:
    /// resolve it (through its primary) and read again.
    #[error("key is locked by the transaction that started at {} (primary {})", Timestamp::from_u64(.0.start_ts), crate::storage::hex(&.0.primary))]
    Locked(LockInfo),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("corrupt transactional record in {} at {}: {defect}", .cf.name(), crate::storage::hex(key))]
    Corrupt { cf: Cf, key: Vec<u8>, defect: RecordDefect },
}

impl MvccError {
    /// The failure as the storage layer reports it, or the lock in the way.
    pub fn into_lock(self) -> Result<LockInfo, EngineError> {
        match self {
            MvccError::Locked(lock) => Ok(lock),
            MvccError::Engine(error) => Err(error),
            MvccError::Corrupt { cf, key, defect } => {
                Err(EngineError::corrupt(Record::Key { cf, key }, defect))
            }
        }
    }
}

/// What is wrong with a stored record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordDefect {
    #[error(transparent)]
    Key(#[from] KeyDefect),
    #[error("does not decode: {0}")]
    Undecodable(#[from] prost::DecodeError),
    #[error("a put committed at {commit_ts} has no value at its start {start_ts}")]
    MissingValue { commit_ts: Timestamp, start_ts: Timestamp },
}

fn corrupt(cf: Cf, key: &[u8], defect: impl Into<RecordDefect>) -> MvccError {
    MvccError::Corrupt { cf, key: key.to_vec(), defect: defect.into() }
}

/// A snapshot of the node's database to read transactional data at timestamps from.
pub struct MvccReader<'a> {
    engine: &'a Engine,
    snapshot: rocksdb::Snapshot<'a>,
}

/// What a key's records say at a timestamp.
enum Visible {
    /// The value written by the transaction that started at `start_ts`: in the record
    /// when short, otherwise in the versions family.
    Put {
        commit_ts: Timestamp,
        start_ts: Timestamp,
        short_value: Option<Vec<u8>>,
    },
    Deleted,
}

impl<'a> MvccReader<'a> {
    pub fn new(engine: &'a Engine) -> MvccReader<'a> {
        MvccReader { engine, snapshot: engine.db().snapshot() }
    }

    fn options(&self) -> ReadOptions {
        let mut options = ReadOptions::default();
        options.set_snapshot(&self.snapshot);
        options
    }

    /// The value of `key` at `read_ts`.
    pub fn get(&self, key: &[u8], read_ts: Timestamp) -> Result<Option<Vec<u8>>, MvccError> {
        Ok(self.get_version(key, read_ts)?.map(|version| version.value))
    }

    /// The version of `key` visible at `read_ts`: its value and when it was committed.
    pub fn get_version(&self, key: &[u8], read_ts: Timestamp) -> Result<Option<Version>, MvccError> {
        if let Some(lock) = self.blocking_lock(key, read_ts)? {
            return Err(MvccError::Locked(lock));
        }
        self.committed_version(key, read_ts)
    }

    /// The version of `key` that the newest put or delete committed at or below
    /// `read_ts` left, whatever locks there are: for a caller that knows no lock in the
    /// way can commit at or below `read_ts`.
    pub(super) fn committed_version(
        &self,
        key: &[u8],
        read_ts: Timestamp,
    ) -> Result<Option<Version>, MvccError> {
        let start = version_key(key, read_ts);
        let (_, end) = range_bounds(key, &[key, &[0][..]].concat());
        let mut options = self.options();
        options.set_iterate_upper_bound(end);
        let iterator = self.engine.db().iterator_cf_opt(
            self.engine.cf(Cf::Write)?,
            options,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut newest_first = Vec::new();
        for item in iterator {
            let (stored, value) = item.map_err(EngineError::from)?;
            newest_first.push(decode_write(&stored, &value)?);
        }
        match visible(newest_first.into_iter().map(|(_, commit_ts, write)| (commit_ts, write)), read_ts) {
            Some(Visible::Put { commit_ts, short_value: Some(value), .. }) => {
                Ok(Some(Version { value, commit_ts }))
            }
            Some(Visible::Put { commit_ts, start_ts, short_value: None }) => {
                let value = self.value(key, commit_ts, start_ts)?;
                Ok(Some(Version { value, commit_ts }))
            }
            Some(Visible::Deleted) | None => Ok(None),
        }
    }

    /// Up to `limit` pairs (0: no limit) of `[start, end)` at `read_ts` (an empty end:
    /// to the end of the key space), in key order or, with `reverse`, from the end.
    pub fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        read_ts: Timestamp,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValuePair>, MvccError> {
        let versions = self.scan_versions(start, end, read_ts, limit, reverse)?;
        Ok(versions.into_iter().map(|(key, version)| (key, version.value)).collect())
    }

    /// As [`MvccReader::scan`], each key with its version: value and commit timestamp.
    pub fn scan_versions(
        &self,
        start: &[u8],
        end: &[u8],
        read_ts: Timestamp,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<VersionedPair>, MvccError> {
        let locks = self.blocking_locks(start, end, read_ts)?;
        let mut pairs: Vec<VersionedPair> = Vec::new();
        let mut bytes = 0;
        let mut group: Option<KeyRecords> = None;
        // Stopped at the limit or at the byte budget (`kv::MAX_SCAN_RESPONSE_BYTES`).
        let mut stopped = false;
        for item in self.write_records(start, end, reverse)? {
            let (stored, value) = item.map_err(EngineError::from)?;
            let (key, commit_ts, write) = decode_write(&stored, &value)?;
            match &mut group {
                Some((current, records)) if *current == key => records.push((commit_ts, write)),
                _ => {
                    if let Some(finished) = group.replace((key, vec![(commit_ts, write)])) {
                        bytes += self.add_visible(finished, read_ts, reverse, &mut pairs)?;
                    }
                    if (limit != 0 && pairs.len() == limit) || bytes >= kv::MAX_SCAN_RESPONSE_BYTES {
                        group = None;
                        stopped = true;
                        break;
                    }
                }
            }
        }
        if let Some(finished) = group {
            self.add_visible(finished, read_ts, reverse, &mut pairs)?;
        }
        // The part of the range the answer speaks for: all of it, or up to its last key
        // (when it stopped early, or its last key, added after the loop, reached the limit).
        let full = !stopped && (limit == 0 || pairs.len() < limit);
        let last = pairs.last().map(|(key, _)| key.as_slice());
        let covered = |key: &[u8]| match (full, last, reverse) {
            (true, _, _) | (false, None, _) => true,
            (false, Some(last), false) => key <= last,
            (false, Some(last), true) => key >= last,
        };
        if let Some(lock) = locks.into_iter().find(|lock| covered(&lock.key)) {
            return Err(MvccError::Locked(lock));
        }
        Ok(pairs)
    }

    /// The lock on `key` that a read at `read_ts` must wait for, if any.
    fn blocking_lock(&self, key: &[u8], read_ts: Timestamp) -> Result<Option<LockInfo>, MvccError> {
        let stored = lock_key(key);
        let Some(value) =
            self.snapshot.get_cf(self.engine.cf(Cf::Lock)?, &stored).map_err(EngineError::from)?
        else {
            return Ok(None);
        };
        let lock = Lock::decode(value.as_slice()).map_err(|error| corrupt(Cf::Lock, &stored, error))?;
        Ok(blocks(key.to_vec(), &lock, read_ts))
    }

    /// Every lock in `[start, end)` that a read at `read_ts` must wait for.
    pub(super) fn blocking_locks(
        &self,
        start: &[u8],
        end: &[u8],
        read_ts: Timestamp,
    ) -> Result<Vec<LockInfo>, MvccError> {
        let (lower, upper) = range_bounds(start, end);
        let mut options = self.options();
        options.set_iterate_upper_bound(upper);
        let mode = IteratorMode::From(&lower, Direction::Forward);
        let mut locks = Vec::new();
        for item in self.engine.db().iterator_cf_opt(self.engine.cf(Cf::Lock)?, options, mode) {
            let (stored, value) = item.map_err(EngineError::from)?;
            let key = split_lock_key(&stored).map_err(|defect| corrupt(Cf::Lock, &stored, defect))?;
            let lock = Lock::decode(value.as_ref()).map_err(|error| corrupt(Cf::Lock, &stored, error))?;
            locks.extend(blocks(key, &lock, read_ts));
        }
        Ok(locks)
    }

    /// The commit records of every key in `[start, end)`, each key's newest first;
    /// keys in order, or from the end with `reverse` (each key's records then come
    /// oldest first).
    pub(super) fn write_records(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
    ) -> Result<rocksdb::DBIteratorWithThreadMode<'a, rocksdb::DB>, MvccError> {
        let (lower, upper) = range_bounds(start, end);
        let mut options = self.options();
        options.set_iterate_lower_bound(lower.clone());
        options.set_iterate_upper_bound(upper);
        let mode = if reverse { IteratorMode::End } else { IteratorMode::From(&lower, Direction::Forward) };
        Ok(self.engine.db().iterator_cf_opt(self.engine.cf(Cf::Write)?, options, mode))
    }

    /// Adds the pair a key's records make visible at `read_ts`, if any; answers the
    /// bytes it counts for against the scan's budget (0 if none).
    fn add_visible(
        &self,
        (key, mut records): KeyRecords,
        read_ts: Timestamp,
        reverse: bool,
        pairs: &mut Vec<VersionedPair>,
    ) -> Result<usize, MvccError> {
        if reverse {
            // Backwards, a key's records came oldest first.
            records.reverse();
        }
        let Some(Visible::Put { commit_ts, start_ts, short_value }) = visible(records.into_iter(), read_ts)
        else {
            return Ok(0);
        };
        let value = match short_value {
            Some(value) => value,
            None => self.value(&key, commit_ts, start_ts)?,
        };
        let bytes = kv::scanned_bytes(&key, &value);
        pairs.push((key, Version { value, commit_ts }));
        Ok(bytes)
    }

    /// The value a put committed at `commit_ts` wrote.
    pub(super) fn value(
        &self,
        key: &[u8],
        commit_ts: Timestamp,
        start_ts: Timestamp,
    ) -> Result<Vec<u8>, MvccError> {
        let stored = version_key(key, start_ts);
        self.snapshot
            .get_cf(self.engine.cf(Cf::Versions)?, &stored)
            .map_err(EngineError::from)?
            .ok_or_else(|| corrupt(Cf::Versions, &stored, RecordDefect::MissingValue { commit_ts, start_ts }))
    }
}

/// A user key and its value.
pub type KeyValuePair = (Vec<u8>, Vec<u8>);

/// A committed version of a key: its value and the timestamp it was committed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub value: Vec<u8>,
    pub commit_ts: Timestamp,
}

/// A user key and its version.
pub type VersionedPair = (Vec<u8>, Version);

/// A key and its commit records, newest first.
type KeyRecords = (Vec<u8>, Vec<(Timestamp, Write)>);

/// The lock as a reader at `read_ts` sees it: in its way, or not.
fn blocks(key: Vec<u8>, lock: &Lock, read_ts: Timestamp) -> Option<LockInfo> {
    let start_ts = Timestamp::from_u64(lock.start_ts);
    let guards_only_a_read = lock.mutation() == Mutation::Lock;
    (start_ts <= read_ts && !guards_only_a_read).then(|| super::lock_info(&key, lock))
}

pub(super) fn decode_write(stored: &[u8], value: &[u8]) -> Result<(Vec<u8>, Timestamp, Write), MvccError> {
    let (key, commit_ts) = split_version_key(stored).map_err(|defect| corrupt(Cf::Write, stored, defect))?;
    let write = Write::decode(value).map_err(|error| corrupt(Cf::Write, stored, error))?;
    Ok((key, commit_ts, write))
}

/// What a key's records, newest first, say at `read_ts`: None if nothing was ever
/// visible there.
fn visible(newest_first: impl Iterator<Item = (Timestamp, Write)>, read_ts: Timestamp) -> Option<Visible> {
    for (commit_ts, write) in newest_first.filter(|(commit_ts, _)| *commit_ts <= read_ts) {
        match write.kind() {
            WriteKind::WritePut => {
                let start_ts = Timestamp::from_u64(write.start_ts);
                return Some(Visible::Put { commit_ts, start_ts, short_value: write.short_value });
            }
            WriteKind::WriteDelete => return Some(Visible::Deleted),
            WriteKind::WriteLock | WriteKind::WriteRollback => {}
        }
    }
    None
}
