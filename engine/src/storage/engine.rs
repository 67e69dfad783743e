//! The node's one RocksDB instance and its column families.
//!
//! Every region of the node lives here: Raft logs and states in `raft`, region
//! descriptors and apply states in `meta`, user data of the raw key space in `default`,
//! and transactions' locks, commit records and values in `lock`, `write` and
//! `versions` ([`crate::mvcc`]). A write batch that
//! spans column families is atomic and goes through one WAL, which is what lets the
//! store persist many regions' logs with one sync and apply data together with its
//! apply index. This module owns opening, reading and writing; it must never interpret
//! Raft state itself.

use std::path::Path;
use std::sync::Arc;

use rocksdb::statistics::{StatsLevel, Ticker};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options,
    WriteBatch, WriteOptions, properties,
};
use thiserror::Error;

use super::keys;
use crate::gc::{GcState, VersionFilterFactory};
use crate::timestamp::Timestamp;

/// The column families of a node's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cf {
    /// Raft log entries and Raft states of every region.
    Raft,
    /// Region descriptors and apply states.
    Meta,
    /// User data of the raw key space.
    Data,
    /// Transactions' locks, one per key at most (see [`crate::mvcc`]).
    Lock,
    /// Transactions' commit and rollback records, per key and timestamp.
    Write,
    /// Transactions' values, per key and start timestamp.
    Versions,
}

impl Cf {
    pub(crate) const ALL: [Cf; 6] = [Cf::Raft, Cf::Meta, Cf::Data, Cf::Lock, Cf::Write, Cf::Versions];

    /// The column families that hold a region's data: its key range in each of them
    /// belongs to it (snapshots, splits and destruction cover all of them).
    pub(crate) const REGION_DATA: [Cf; 4] = [Cf::Data, Cf::Lock, Cf::Write, Cf::Versions];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Cf::Raft => "raft",
            Cf::Meta => "meta",
            Cf::Data => rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
            Cf::Lock => "lock",
            Cf::Write => "write",
            Cf::Versions => "versions",
        }
    }
}

/// Failures of the node's database. Cloneable, since the log writer reports one
/// failure to every worker waiting on its sync.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EngineError {
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    /// The database holds something the node never wrote, or lacks something it did.
    #[error("corrupt or missing {record}: {defect}")]
    Corrupt {
        record: Record,
        #[source]
        defect: Defect,
    },
    #[error("the database has no column family {0:?}")]
    MissingColumnFamily(&'static str),
}

/// The record a corruption is found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    RegionState {
        region_id: u64,
    },
    ApplyState {
        region_id: u64,
    },
    RaftState {
        region_id: u64,
    },
    /// A region's Raft log as a whole (its entries must be contiguous).
    Log {
        region_id: u64,
    },
    LogEntry {
        region_id: u64,
        index: u64,
    },
    /// A key of the data column family.
    DataKey {
        key: Vec<u8>,
    },
    Snapshot {
        region_id: u64,
    },
    /// Any other key, as read by [`Engine::get_message`].
    Key {
        cf: Cf,
        key: Vec<u8>,
    },
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Record::RegionState { region_id } => write!(f, "region state of region {region_id}"),
            Record::ApplyState { region_id } => write!(f, "apply state of region {region_id}"),
            Record::RaftState { region_id } => write!(f, "raft state of region {region_id}"),
            Record::Log { region_id } => write!(f, "log of region {region_id}"),
            Record::LogEntry { region_id, index } => write!(f, "log entry {index} of region {region_id}"),
            Record::DataKey { key } => write!(f, "data key {}", hex(key)),
            Record::Snapshot { region_id } => write!(f, "snapshot of region {region_id}"),
            Record::Key { cf, key } => write!(f, "{}/{}", cf.name(), hex(key)),
        }
    }
}

/// What is wrong with a record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Defect {
    #[error("missing")]
    Missing,
    #[error("does not decode: {0}")]
    Undecodable(#[from] prost::DecodeError),
    #[error("no data prefix")]
    NoDataPrefix,
    #[error("no metadata")]
    NoMetadata,
    #[error("no region")]
    NoRegion,
    #[error("it holds a key of the {cf} column family outside its region: {}", hex(key))]
    OutsideRegion { cf: &'static str, key: Vec<u8> },
    #[error("it is of region {found}")]
    OtherRegion { found: u64 },
    #[error("its range [{}, {}) holds no key", hex(start), hex(end))]
    EmptyRange { start: Vec<u8>, end: Vec<u8> },
    #[error("it has a hole: expected entry {expected}, found {found}")]
    Hole { expected: u64, found: u64 },
    #[error("it ends at {found} but its state says {recorded}")]
    EndsEarly { found: u64, recorded: u64 },
    #[error("it is {0} bytes long, not 8")]
    Length(usize),
    #[error("malformed transactional record: {0}")]
    Mvcc(#[from] crate::mvcc::reader::RecordDefect),
    /// The log could not be read back at all.
    #[error("unreadable: {0}")]
    Unreadable(#[source] crate::raft::StorageError),
}

impl EngineError {
    pub fn corrupt(record: Record, defect: impl Into<Defect>) -> EngineError {
        EngineError::Corrupt { record, defect: defect.into() }
    }
}

/// A shared handle on the node's database.
#[derive(Clone)]
pub struct Engine {
    db: Arc<DB>,
    /// The options the database was opened with: they hold its statistics.
    options: Arc<Options>,
    /// Garbage collection's state: the write family's compaction filter reads it.
    gc: Arc<GcState>,
}

/// One column family's figures, from RocksDB's properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ColumnFamilyStats {
    pub memtable_bytes: u64,
    pub pending_compaction_bytes: u64,
    pub live_sst_bytes: u64,
}

/// What RocksDB says about its health, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// In the order of [`Cf::ALL`].
    pub column_families: [ColumnFamilyStats; Cf::ALL.len()],
    /// Writes are stopped until compaction or flushes catch up.
    pub write_stopped: bool,
    /// The rate writes are slowed to, in bytes per second; 0 when they are not.
    pub delayed_write_rate: u64,
    /// Time writers spent stalled or delayed since the database was opened.
    pub write_stall_micros: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.db.path()).finish()
    }
}

impl Engine {
    /// Opens (creating if needed) the database at `path`, with the default block cache
    /// (tests; a store sizes its cache from its configuration).
    #[cfg(test)]
    pub(crate) fn open(path: &Path) -> Result<Engine, EngineError> {
        Engine::open_with_cache(path, DEFAULT_BLOCK_CACHE_BYTES)
    }

    /// Opens (creating if needed) the database at `path`, with a block cache of
    /// `block_cache_bytes` shared by every column family.
    pub(crate) fn open_with_cache(path: &Path, block_cache_bytes: usize) -> Result<Engine, EngineError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(DBCompressionType::Lz4);
        options.set_bottommost_compression_type(DBCompressionType::Zstd);
        // Tickers only (stall time among them): histograms and timers would cost every
        // write a clock read.
        options.enable_statistics();
        options.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);
        let gc = Arc::new(GcState::default());
        let block_cache = Cache::new_lru_cache(block_cache_bytes);
        let descriptors = Cf::ALL
            .iter()
            .map(|&cf| ColumnFamilyDescriptor::new(cf.name(), column_family_options(cf, &gc, &block_cache)));
        let db = DB::open_cf_descriptors(&options, path, descriptors)?;
        let engine = Engine { db: Arc::new(db), options: Arc::new(options), gc };
        if let Some(safe_point) = engine.persisted_gc_safe_point()? {
            engine.gc.raise(safe_point);
        }
        Ok(engine)
    }

    /// The store's garbage-collection state.
    pub fn gc(&self) -> &Arc<GcState> {
        &self.gc
    }

    fn persisted_gc_safe_point(&self) -> Result<Option<Timestamp>, EngineError> {
        let Some(bytes) = self.get(Cf::Meta, keys::GC_SAFE_POINT_KEY)? else { return Ok(None) };
        let record = || Record::Key { cf: Cf::Meta, key: keys::GC_SAFE_POINT_KEY.to_vec() };
        let bytes: [u8; 8] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| EngineError::corrupt(record(), Defect::Length(bytes.len())))?;
        Ok(Some(Timestamp::from_u64(u64::from_be_bytes(bytes))))
    }

    /// Raises the store's garbage-collection safe point to `safe_point`, durably before
    /// anything may be collected below it; false if it is not above the current one.
    pub fn advance_gc_safe_point(&self, safe_point: Timestamp) -> Result<bool, EngineError> {
        if safe_point <= self.gc.safe_point() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(Cf::Meta)?, keys::GC_SAFE_POINT_KEY, safe_point.as_u64().to_be_bytes());
        self.write(batch, true)?;
        Ok(self.gc.raise(safe_point))
    }

    /// Deletes values of the versions family that garbage collection found unreachable;
    /// answers how many.
    pub fn delete_unreachable_values(&self) -> Result<usize, EngineError> {
        let keys = self.gc.take_unreachable_values();
        if keys.is_empty() {
            return Ok(0);
        }
        let versions = self.cf(Cf::Versions)?;
        let mut batch = WriteBatch::default();
        for key in &keys {
            batch.delete_cf(versions, key);
        }
        self.write(batch, false)?;
        Ok(keys.len())
    }

    /// Compacts the transactional write and versions families: what garbage collection
    /// may remove goes (`crate::gc`).
    pub fn compact_versions(&self) -> Result<(), EngineError> {
        for cf in [Cf::Write, Cf::Versions] {
            self.db.compact_range_cf(self.cf(cf)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Bytes the database takes: its live SST files and memtables, over every column
    /// family (an estimate, as RocksDB keeps it).
    pub fn approximate_size_bytes(&self) -> u64 {
        let stats = self.stats();
        let per_family = stats.column_families.iter();
        per_family.map(|family| family.live_sst_bytes.saturating_add(family.memtable_bytes)).sum()
    }

    /// RocksDB's figures; a property RocksDB cannot give reads as 0.
    pub(crate) fn stats(&self) -> EngineStats {
        let db_property = |name| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        let mut column_families = [ColumnFamilyStats::default(); Cf::ALL.len()];
        for (stats, cf) in column_families.iter_mut().zip(Cf::ALL) {
            let Ok(handle) = self.cf(cf) else { continue };
            let property = |name| self.db.property_int_value_cf(handle, name).ok().flatten().unwrap_or(0);
            *stats = ColumnFamilyStats {
                memtable_bytes: property(properties::CUR_SIZE_ALL_MEM_TABLES),
                pending_compaction_bytes: property(properties::ESTIMATE_PENDING_COMPACTION_BYTES),
                live_sst_bytes: property(properties::LIVE_SST_FILES_SIZE),
            };
        }
        EngineStats {
            column_families,
            write_stopped: db_property(properties::IS_WRITE_STOPPED) != 0,
            delayed_write_rate: db_property(properties::ACTUAL_DELAYED_WRITE_RATE),
            write_stall_micros: self.options.get_ticker_count(Ticker::StallMicros),
        }
    }

    pub fn cf(&self, cf: Cf) -> Result<&ColumnFamily, EngineError> {
        self.db.cf_handle(cf.name()).ok_or(EngineError::MissingColumnFamily(cf.name()))
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.db.get_cf(self.cf(cf)?, key)?)
    }

    /// Reads and decodes a protobuf value.
    pub(crate) fn get_message<M: prost::Message + Default>(
        &self,
        cf: Cf,
        key: &[u8],
    ) -> Result<Option<M>, EngineError> {
        let Some(bytes) = self.get(cf, key)? else { return Ok(None) };
        M::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| EngineError::corrupt(Record::Key { cf, key: key.to_vec() }, e))
    }

    /// Writes a batch atomically; `sync` makes it durable before returning.
    pub(crate) fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), EngineError> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        Ok(self.db.write_opt(batch, &options)?)
    }

    pub(crate) fn put_message(
        &self,
        batch: &mut WriteBatch,
        cf: Cf,
        key: &[u8],
        message: &impl prost::Message,
    ) -> Result<(), EngineError> {
        batch.put_cf(self.cf(cf)?, key, message.encode_to_vec());
        Ok(())
    }
}

/// RocksDB's block cache when the configuration does not size it: room for the index,
/// filter and data blocks of the recently read part of a store's data.
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 256 << 20;

/// One column family's options. Every family reads through the one block cache, and
/// keeps its upper levels uncompressed: they hold the recent data that reads and
/// compactions touch most, where decompression would cost CPU on every read of a block
/// the cache misses; lower levels use LZ4, the bottom two Zstd. Point lookups (raw
/// gets, a key's lock, a version's value) meet a whole-key bloom filter first, in the
/// memtable too: most lock lookups find no lock. The lock family's memtable is kept
/// small: locks live for milliseconds, so it fills with locks and their deletions,
/// which every lookup searches through until a flush lets compaction drop the pairs.
/// The write family is read by seeks, which a whole-key filter cannot help; it carries
/// garbage collection's compaction filter.
fn column_family_options(cf: Cf, gc: &Arc<GcState>, block_cache: &Cache) -> Options {
    const BLOOM_BITS_PER_KEY: f64 = 10.0;
    const LOCK_MEMTABLE_BYTES: usize = 8 << 20;
    use DBCompressionType::{Lz4, None as Uncompressed, Zstd};
    let mut options = Options::default();
    options.set_compression_per_level(&[Uncompressed, Uncompressed, Lz4, Lz4, Lz4, Zstd, Zstd]);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(block_cache);
    match cf {
        Cf::Data | Cf::Lock | Cf::Versions => {
            table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
            options.set_memtable_prefix_bloom_ratio(0.1);
            options.set_memtable_whole_key_filtering(true);
            if cf == Cf::Lock {
                options.set_write_buffer_size(LOCK_MEMTABLE_BYTES);
            }
        }
        Cf::Write => options.set_compaction_filter_factory(VersionFilterFactory::new(Arc::clone(gc))),
        Cf::Raft | Cf::Meta => {}
    }
    options.set_block_based_table_factory(&table);
    options
}

/// Hex rendering of a key for error messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
