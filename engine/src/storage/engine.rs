//! The node's one RocksDB instance and its column families.
//!
//! Every region of the node lives here: Raft logs and states in `raft`, region
//! descriptors and apply states in `meta`, user data in `default`. A write batch that
//! spans column families is atomic and goes through one WAL, which is what lets the
//! store persist many regions' logs with one sync and apply data together with its
//! apply index. This module owns opening, reading and writing; it must never interpret
//! Raft state itself.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options, WriteBatch, WriteOptions,
};
use thiserror::Error;

/// The column families of a node's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    /// Raft log entries and Raft states of every region.
    Raft,
    /// Region descriptors and apply states.
    Meta,
    /// User data.
    Data,
}

impl Cf {
    pub const ALL: [Cf; 3] = [Cf::Raft, Cf::Meta, Cf::Data];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Raft => "raft",
            Cf::Meta => "meta",
            Cf::Data => rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
        }
    }
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("corrupt or missing {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("the database has no column family {0:?}")]
    MissingColumnFamily(&'static str),
}

/// A shared handle on the node's database.
#[derive(Clone)]
pub struct Engine {
    db: Arc<DB>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.db.path()).finish()
    }
}

impl Engine {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Engine, EngineError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(DBCompressionType::Lz4);
        options.set_bottommost_compression_type(DBCompressionType::Zstd);
        let descriptors = Cf::ALL.iter().map(|cf| {
            let mut cf_options = Options::default();
            cf_options.set_compression_type(DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(cf.name(), cf_options)
        });
        let db = DB::open_cf_descriptors(&options, path, descriptors)?;
        Ok(Engine { db: Arc::new(db) })
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
    pub fn get_message<M: prost::Message + Default>(
        &self,
        cf: Cf,
        key: &[u8],
    ) -> Result<Option<M>, EngineError> {
        let Some(bytes) = self.get(cf, key)? else { return Ok(None) };
        M::decode(bytes.as_slice()).map(Some).map_err(|e| EngineError::Corrupt {
            what: format!("{}/{}", cf.name(), hex(key)),
            reason: e.to_string(),
        })
    }

    /// Writes a batch atomically; `sync` makes it durable before returning.
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), EngineError> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        Ok(self.db.write_opt(batch, &options)?)
    }

    pub fn put_message(
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

/// Hex rendering of a key for error messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
