//! Linearizable reads of one region.
//!
//! - Accept: only the leader reads; the epoch's range version must be current and the
//!   key or range inside the region. The read waits in `reads` under an id that Raft
//!   carries as the ReadIndex context.
//! - Confirm: Raft confirms leadership (by the leader lease, or a heartbeat round) and
//!   names the commit index the read must see ([`Peer::on_read_states`]); a read whose
//!   leadership was lost first is refused with a not-leader hint.
//! - Serve: once the region has applied that index (and, for a snapshot read, any
//!   one-phase commit below its timestamp proposed before it: `one_phase.rs`), the
//!   read runs on the engine ([`Peer::serve_reads`]); the range is checked again, as a
//!   split may have applied meanwhile.

use crate::kv;
use crate::mvcc::reader::{MvccReader, Version, VersionedPair};
use crate::mvcc::refresh::Refresh;
use crate::proto::command::LockInfo;
use crate::proto::metadata::{Region, RegionEpoch};
use crate::raft::{ReadMode, ReadState};
use crate::region::{self, EpochCheck, KeyRange};
use crate::storage::{Cf, Engine, EngineError, keys};
use crate::store::errors::StoreError;
use crate::store::peer::Peer;
use crate::store::responder::Responder;
use crate::timestamp::Timestamp;

/// A linearizable read of one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRequest {
    Get {
        key: Vec<u8>,
    },
    /// Keys in `[start, end)` (empty end: the region's end), at most `limit` (0: no limit).
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        reverse: bool,
    },
    /// A transactional key's value at `read_ts` (a snapshot read).
    TxnGet {
        key: Vec<u8>,
        read_ts: Timestamp,
    },
    /// Transactional keys in `[start, end)` at `read_ts`, as [`ReadRequest::Scan`].
    TxnScan {
        start: Vec<u8>,
        end: Vec<u8>,
        read_ts: Timestamp,
        limit: usize,
        reverse: bool,
    },
    /// Whether transactional keys in `[start, end)` changed in `(after, up_to]`, other
    /// than by the transaction that started at `own_start_ts`: its read refresh before
    /// it commits at `up_to` (`crate::mvcc::refresh`). A read at `up_to`.
    TxnRefresh {
        start: Vec<u8>,
        end: Vec<u8>,
        after: Timestamp,
        up_to: Timestamp,
        own_start_ts: Timestamp,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResponse {
    Value(Option<Vec<u8>>),
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    /// A transactional get's answer: the version visible at its timestamp.
    Version(Option<Version>),
    /// A transactional scan's answer.
    Versions(Vec<VersionedPair>),
    /// A read refresh's answer.
    Refreshed(Refresh),
    /// A snapshot read met a lock of a transaction that may commit below its
    /// timestamp: resolve it and read again.
    Locked(LockInfo),
}

/// A key and its value, as a scan returns them.
type KeyValuePair = (Vec<u8>, Vec<u8>);

/// A read waiting for Raft to confirm it.
pub(in crate::store) struct PendingRead {
    request: ReadRequest,
    respond: Responder<ReadResponse>,
    /// A log index the read must see applied besides the one Raft names: a one-phase
    /// commit in flight below its timestamp (0: none).
    must_see: u64,
}

impl Peer {
    /// Starts a linearizable read; it is served once the leader confirmed it. `now_micros`
    /// is the store's clock read after the read arrived: a lease that held then makes
    /// that moment the read's linearization point.
    pub(crate) fn read(
        &mut self,
        now_micros: u64,
        epoch: RegionEpoch,
        request: ReadRequest,
        respond: Responder<ReadResponse>,
    ) {
        self.wake();
        self.raw.observe_time(now_micros);
        if let Err(error) = self.check_read(epoch, &request) {
            respond.send(Err(error));
            return;
        }
        let read_id = self.next_read_id;
        self.next_read_id += 1;
        let must_see = match &request {
            ReadRequest::TxnGet { key, read_ts } => self.observe_snapshot_read(*read_ts, Some(key)),
            ReadRequest::TxnScan { read_ts, .. } | ReadRequest::TxnRefresh { up_to: read_ts, .. } => {
                self.observe_snapshot_read(*read_ts, None)
            }
            ReadRequest::Get { .. } | ReadRequest::Scan { .. } => 0,
        };
        match self.raw.read_index(read_id.to_le_bytes().to_vec(), ReadMode::Lease) {
            Ok(()) => {
                self.reads.insert(read_id, PendingRead { request, respond, must_see });
            }
            Err(error) => {
                respond.send(Err(StoreError::Raft(error)));
            }
        }
    }

    fn check_read(&self, epoch: RegionEpoch, request: &ReadRequest) -> Result<(), StoreError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        region::check_epoch(&self.region, epoch, EpochCheck::Data)?;
        check_request(&self.region, request)
    }

    /// Takes the reads Raft confirmed (with the index each must see) and refuses those
    /// it dropped.
    pub(crate) fn on_read_states(&mut self, read_states: Vec<ReadState>, dropped: Vec<Vec<u8>>) {
        for state in read_states {
            if let Ok(bytes) = <[u8; 8]>::try_from(state.context.as_slice()) {
                let read_id = u64::from_le_bytes(bytes);
                let must_see = self.reads.get(&read_id).map_or(0, |read| read.must_see);
                self.confirmed_reads.push((read_id, state.index.max(must_see)));
            }
        }
        for context in dropped {
            let Ok(bytes) = <[u8; 8]>::try_from(context.as_slice()) else { continue };
            if let Some(read) = self.reads.remove(&u64::from_le_bytes(bytes)) {
                read.respond.send(Err(self.not_leader()));
            }
        }
    }

    /// Serves every confirmed read whose index is applied, from the engine.
    pub(crate) fn serve_reads(&mut self, engine: &Engine) {
        let applied = self.applied_index();
        let mut waiting = Vec::new();
        for (read_id, index) in std::mem::take(&mut self.confirmed_reads) {
            if index > applied {
                waiting.push((read_id, index));
                continue;
            }
            if let Some(read) = self.reads.remove(&read_id) {
                // The region may have split since the read was accepted.
                let fence = Timestamp::from_u64(self.raw.storage().txn_fence());
                let result = check_request(&self.region, &read.request)
                    .and_then(|()| execute_registered(engine, &self.region, fence, &read.request));
                if let Ok(response) = &result {
                    self.traffic.count_read(response);
                }
                read.respond.send(result);
            }
        }
        self.confirmed_reads = waiting;
    }

    /// Fails every read waiting on this peer with `error`.
    pub(in crate::store) fn fail_reads(&mut self, error: &StoreError) {
        for (_, read) in self.reads.drain() {
            read.respond.send(Err(error.clone()));
        }
        self.confirmed_reads.clear();
    }
}

fn check_request(region: &Region, request: &ReadRequest) -> Result<(), StoreError> {
    match request {
        ReadRequest::Get { key } | ReadRequest::TxnGet { key, .. } => {
            kv::check_key(key)?;
            region::check_key(region, key)?;
        }
        ReadRequest::Scan { start, end, .. }
        | ReadRequest::TxnScan { start, end, .. }
        | ReadRequest::TxnRefresh { start, end, .. } => {
            region::check_range(region, KeyRange::new(start, end))?
        }
    }
    Ok(())
}

/// Runs a read; a snapshot read registers with garbage collection while it runs, and
/// is refused at or below the store's safe point or the region's applied `fence`
/// ([`crate::gc::GcState::begin_read`]).
fn execute_registered(
    engine: &Engine,
    region: &Region,
    fence: Timestamp,
    request: &ReadRequest,
) -> Result<ReadResponse, StoreError> {
    let _registration = match request {
        ReadRequest::TxnGet { read_ts, .. } | ReadRequest::TxnScan { read_ts, .. } => {
            Some(engine.gc().begin_read(*read_ts, fence)?)
        }
        // It reads the records above its start: those must not have been collected.
        ReadRequest::TxnRefresh { after, .. } => Some(engine.gc().begin_read(*after, fence)?),
        ReadRequest::Get { .. } | ReadRequest::Scan { .. } => None,
    };
    Ok(execute(engine, region, request)?)
}

fn execute(engine: &Engine, region: &Region, request: &ReadRequest) -> Result<ReadResponse, EngineError> {
    match request {
        ReadRequest::Get { key } => Ok(ReadResponse::Value(engine.get(Cf::Data, &keys::data_key(key))?)),
        ReadRequest::Scan { start, end, limit, reverse } => {
            // Checked inside the region already: clamping only bounds an unbounded end.
            let end = KeyRange::of(region).clamp(&KeyRange::new(start, end)).end();
            Ok(ReadResponse::Pairs(scan(engine, start, end, *limit, *reverse)?))
        }
        ReadRequest::TxnGet { key, read_ts } => {
            let answer = MvccReader::new(engine).get_version(key, *read_ts);
            answer.map(ReadResponse::Version).or_else(|error| error.into_lock().map(ReadResponse::Locked))
        }
        ReadRequest::TxnScan { start, end, read_ts, limit, reverse } => {
            let end = KeyRange::of(region).clamp(&KeyRange::new(start, end)).end();
            let answer = MvccReader::new(engine).scan_versions(start, end, *read_ts, *limit, *reverse);
            answer.map(ReadResponse::Versions).or_else(|error| error.into_lock().map(ReadResponse::Locked))
        }
        ReadRequest::TxnRefresh { start, end, after, up_to, own_start_ts } => {
            let end = KeyRange::of(region).clamp(&KeyRange::new(start, end)).end();
            let answer = MvccReader::new(engine).refresh((start, end), *after, *up_to, *own_start_ts);
            answer.map(ReadResponse::Refreshed).or_else(|error| error.into_lock().map(ReadResponse::Locked))
        }
    }
}

/// Keys in `[start, end)` (end already clamped to the region), at most `limit` (0: no
/// limit), from the top when `reverse`.
fn scan(
    engine: &Engine,
    start: &[u8],
    end: &[u8],
    limit: usize,
    reverse: bool,
) -> Result<Vec<KeyValuePair>, EngineError> {
    let (low, high) = (keys::data_key(start), keys::data_end_key(end));
    let mut options = rocksdb::ReadOptions::default();
    options.set_iterate_lower_bound(low.clone());
    options.set_iterate_upper_bound(high);
    let mode = if reverse {
        rocksdb::IteratorMode::End
    } else {
        rocksdb::IteratorMode::From(&low, rocksdb::Direction::Forward)
    };
    let mut pairs = Vec::new();
    let mut bytes = 0;
    for item in engine.db().iterator_cf_opt(engine.cf(Cf::Data)?, options, mode) {
        let (key, value) = item?;
        let Some(user_key) = keys::user_key(&key) else { continue };
        bytes += kv::scanned_bytes(user_key, &value);
        pairs.push((user_key.to_vec(), value.to_vec()));
        if (limit > 0 && pairs.len() >= limit) || bytes >= kv::MAX_SCAN_RESPONSE_BYTES {
            break;
        }
    }
    Ok(pairs)
}
