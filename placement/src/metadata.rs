//! The placement driver's durable state, replicated by its own Raft group.
//!
//! The driver does not carry a second Raft runtime: its replicas run an engine
//! [`Store`] holding one region, [`METADATA_REGION`], over the whole key space of the
//! driver's own RocksDB. Metadata are keys of that region, written with the store's
//! replicated writes and compare-and-swaps and read with its linearizable reads, so
//! group commit, snapshots, log truncation and recovery are the store's, tested there.
//! (PD does the same with an embedded etcd.)
//!
//! Keys:
//! - `bootstrap`: the cluster's first region, written once by compare-and-swap;
//! - `ids`: the id high-water mark: every id below it was handed out or reserved;
//! - `tso`: the timestamp oracle's mark: every timestamp handed out has a physical part
//!   (milliseconds) below it;
//! - `gc_safe_point`: the garbage-collection safe point, a timestamp that only rises
//!   (`driver::gc`);
//! - `gc_fence`: the highest timestamp a garbage-collection pass has fenced regions at
//!   (reads at or below it may be refused already);
//! - `gc_hold/{service}`: a service's hold on garbage collection (a change feed's
//!   watchers): the safe point stays below its timestamp until it expires;
//! - `region/{id}`: a region's descriptor, rewritten on every change of epoch;
//! - `store/{id}`: a store's registration;
//! - `member/{id}`: a driver replica's record: address and join token (the member's id
//!   is its peer id in the metadata region, and its store id there).
//!
//! Membership: the founding members create the metadata region together, each from the
//! same member list. A replica that joins later starts with an empty store; the leader
//! records its address, adds it as a learner, and the region reaches it like any new
//! peer (a snapshot, then the log); the leader promotes it once it caught up.
//!
//! This module owns the layout and the round trips; it never decides anything.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tessera_engine::proto::{
    command::{CompareAndSwap, Delete, Put, Write, WriteResult, write},
    metadata::{Peer, PeerRole, Region, RegionEpoch},
};
use tessera_engine::raft::proto::ConfChangeType;
use tessera_engine::region;
use tessera_engine::storage::{Cf, EngineError, keys};
use tessera_engine::store::{ReadRequest, ReadResponse, Store, StoreConfig, StoreError, Transport};

use crate::errors::{Corruption, InvalidRequest, MetadataOperation, PdError, Unavailability};
use crate::proto::{MemberRecord, StoreRecord};

/// The one region of a driver replica's store.
pub(crate) const METADATA_REGION: u64 = 1;

const BOOTSTRAP_KEY: &[u8] = b"bootstrap";
const IDS_KEY: &[u8] = b"ids";
const TIMESTAMPS_KEY: &[u8] = b"tso";
const GC_SAFE_POINT_KEY: &[u8] = b"gc_safe_point";
const GC_FENCE_KEY: &[u8] = b"gc_fence";
const GC_HOLD_PREFIX: &[u8] = b"gc_hold/";
const REGION_PREFIX: &[u8] = b"region/";
const STORE_PREFIX: &[u8] = b"store/";
const MEMBER_PREFIX: &[u8] = b"member/";

fn key(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn put(key: Vec<u8>, value: Vec<u8>) -> Write {
    Write { kind: Some(write::Kind::Put(Put { key, value })) }
}

pub(crate) fn put_region(region: &Region) -> Write {
    put(key(REGION_PREFIX, region.id), region.encode_to_vec())
}

pub(crate) fn delete_region(region_id: u64) -> Write {
    Write { kind: Some(write::Kind::Delete(Delete { key: key(REGION_PREFIX, region_id) })) }
}

/// A service's hold on garbage collection, as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GcHold {
    /// The safe point stays below this timestamp.
    pub safe_point: u64,
    /// Wall-clock milliseconds after which the hold counts no more.
    pub expires_at_ms: u64,
}

fn gc_hold_key(service: &str) -> Vec<u8> {
    [GC_HOLD_PREFIX, service.as_bytes()].concat()
}

pub(crate) fn put_gc_hold(service: &str, hold: GcHold) -> Write {
    let value = [hold.safe_point.to_be_bytes(), hold.expires_at_ms.to_be_bytes()].concat();
    put(gc_hold_key(service), value)
}

pub(crate) fn delete_gc_hold(service: &str) -> Write {
    Write { kind: Some(write::Kind::Delete(Delete { key: gc_hold_key(service) })) }
}

fn decode_gc_hold(value: &[u8]) -> Result<GcHold, PdError> {
    let (safe_point, expires_at_ms) =
        value.split_at_checked(8).ok_or(Corruption::IdLength { bytes: value.len() })?;
    Ok(GcHold { safe_point: decode_id(safe_point)?, expires_at_ms: decode_id(expires_at_ms)? })
}

pub(crate) fn put_store(record: &StoreRecord) -> Write {
    put(key(STORE_PREFIX, record.id), record.encode_to_vec())
}

pub(crate) fn put_member(member_id: u64, record: &MemberRecord) -> Write {
    put(key(MEMBER_PREFIX, member_id), record.encode_to_vec())
}

fn compare_and_swap(key: &[u8], expected: Option<Vec<u8>>, new_value: Vec<u8>) -> Write {
    Write {
        kind: Some(write::Kind::CompareAndSwap(CompareAndSwap {
            key: key.to_vec(),
            expected,
            new_value: Some(new_value),
        })),
    }
}

/// Everything the metadata hold, as a new leader loads it.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub bootstrap: Option<Region>,
    pub ids: u64,
    /// Milliseconds: every timestamp handed out has a smaller physical part.
    pub timestamp_mark: u64,
    /// The garbage-collection safe point (a timestamp; 0: none yet).
    pub gc_safe_point: u64,
    /// The highest timestamp regions were fenced at for garbage collection.
    pub gc_fence: u64,
    /// Services' holds on garbage collection, by service.
    pub gc_holds: std::collections::BTreeMap<String, GcHold>,
    pub regions: Vec<Region>,
    pub stores: Vec<StoreRecord>,
}

/// How a replica's metadata region comes to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Founding {
    /// Founded on first start by these members together (every one with the same list).
    Members(Vec<u64>),
    /// Sent by the leader of a running driver, which added this replica as a learner.
    Joined,
}

/// Who leads the driver's Raft group, as this replica knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leadership {
    pub is_leader: bool,
    pub term: u64,
    /// Member id of the leader, if known.
    pub leader: Option<u64>,
    pub epoch: RegionEpoch,
}

/// One replica's handle on the replicated metadata.
pub(crate) struct Metadata {
    store: Store,
    timeout: Duration,
}

impl Metadata {
    /// Opens the replica's database; a founding member founds the metadata region on
    /// first start (every member founds the same one).
    pub(crate) fn open(
        path: &Path,
        config: StoreConfig,
        founding: &Founding,
        transport: Arc<dyn Transport>,
        timeout: Duration,
    ) -> Result<Metadata, PdError> {
        let member = config.store_id;
        let store = Store::open(path, config, transport).map_err(unavailable)?;
        let Founding::Members(members) = founding else {
            // The leader added this member before it could listen: an empty replica
            // answers its heartbeats, and the region follows.
            store.create_empty_peer(METADATA_REGION, member).map_err(unavailable)?;
            return Ok(Metadata { store, timeout });
        };
        if !members.contains(&member) {
            return Err(InvalidRequest::NotAFoundingMember { member, members: members.clone() }.into());
        }
        let region = Region {
            id: METADATA_REGION,
            start_key: Vec::new(),
            end_key: Vec::new(),
            epoch: Some(RegionEpoch { conf_version: 1, version: 1 }),
            peers: members
                .iter()
                .map(|&id| Peer { id, store_id: id, role: PeerRole::Voter as i32 })
                .collect(),
        };
        match store.bootstrap_region(&region) {
            Ok(()) | Err(StoreError::RegionExists(_)) => {}
            Err(error) => return Err(unavailable(error)),
        }
        Ok(Metadata { store, timeout })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn leadership(&self) -> Option<Leadership> {
        let status = self.store.status(METADATA_REGION)?;
        Some(Leadership {
            is_leader: status.is_leader,
            term: status.term,
            leader: (status.leader_peer_id != 0).then_some(status.leader_peer_id),
            epoch: region::epoch(&status.region),
        })
    }

    /// Replicates `writes` as one command; answers once they are applied.
    pub(crate) fn write(&self, epoch: RegionEpoch, writes: Vec<Write>) -> Result<Vec<WriteResult>, PdError> {
        self.store
            .write(METADATA_REGION, epoch, writes)
            .recv_timeout(self.timeout)
            .map_err(|_| Unavailability::TimedOut(MetadataOperation::Write))?
            .map_err(PdError::from_store)
    }

    /// Claims the first region; false if another one was claimed first.
    pub(crate) fn claim_bootstrap(&self, epoch: RegionEpoch, region: &Region) -> Result<bool, PdError> {
        let answers =
            self.write(epoch, vec![compare_and_swap(BOOTSTRAP_KEY, None, region.encode_to_vec())])?;
        Ok(answers.first().is_some_and(|answer| answer.succeeded))
    }

    /// Moves `mark` from `from` to `to`; answers where it was found instead if another
    /// leader moved it meanwhile.
    pub(crate) fn advance_mark(
        &self,
        mark: Mark,
        epoch: RegionEpoch,
        from: u64,
        to: u64,
    ) -> Result<MarkUpdate, PdError> {
        let expected = (from > 0).then(|| from.to_be_bytes().to_vec());
        let answers =
            self.write(epoch, vec![compare_and_swap(mark.key(), expected, to.to_be_bytes().to_vec())])?;
        let answer = answers.first().ok_or(Unavailability::NoAnswerToMarkUpdate)?;
        if answer.succeeded {
            return Ok(MarkUpdate::Advanced);
        }
        Ok(MarkUpdate::Raced { found: answer.previous.as_deref().map(decode_id).transpose()?.unwrap_or(0) })
    }

    /// Reads everything, linearizably: a new leader sees every change committed before.
    pub(crate) fn load(&self, epoch: RegionEpoch) -> Result<Loaded, PdError> {
        let request = ReadRequest::Scan { start: Vec::new(), end: Vec::new(), limit: 0, reverse: false };
        let response = self
            .store
            .read(METADATA_REGION, epoch, request)
            .recv_timeout(self.timeout)
            .map_err(|_| Unavailability::TimedOut(MetadataOperation::Read))?
            .map_err(unavailable)?;
        let ReadResponse::Pairs(pairs) = response else {
            return Err(Unavailability::ScanAnsweredValue.into());
        };
        let mut loaded = Loaded::default();
        for (key, value) in pairs {
            let corrupt = |source: prost::DecodeError| Corruption::Undecodable { key: key.to_vec(), source };
            if key == BOOTSTRAP_KEY {
                loaded.bootstrap = Some(Region::decode(value.as_slice()).map_err(corrupt)?);
            } else if key == IDS_KEY {
                loaded.ids = decode_id(&value)?;
            } else if key == TIMESTAMPS_KEY {
                loaded.timestamp_mark = decode_id(&value)?;
            } else if key == GC_SAFE_POINT_KEY {
                loaded.gc_safe_point = decode_id(&value)?;
            } else if key == GC_FENCE_KEY {
                loaded.gc_fence = decode_id(&value)?;
            } else if let Some(service) = key.strip_prefix(GC_HOLD_PREFIX) {
                let service = String::from_utf8_lossy(service).into_owned();
                loaded.gc_holds.insert(service, decode_gc_hold(&value)?);
            } else if key.starts_with(REGION_PREFIX) {
                loaded.regions.push(Region::decode(value.as_slice()).map_err(corrupt)?);
            } else if key.starts_with(STORE_PREFIX) {
                loaded.stores.push(StoreRecord::decode(value.as_slice()).map_err(corrupt)?);
            } else if key.starts_with(MEMBER_PREFIX) {
                // Membership is read from the replica's applied state (`local_members`).
            } else {
                return Err(Corruption::UnknownKey { key: key.to_vec() }.into());
            }
        }
        Ok(loaded)
    }
}

impl Metadata {
    /// The metadata region as this replica last applied it, if it holds a replica yet.
    pub(crate) fn region(&self) -> Option<Region> {
        self.store.status(METADATA_REGION).map(|status| status.region)
    }

    /// A member's record as this replica last applied it: not linearizable, which is
    /// enough to address Raft messages (the leader records a member before it adds it,
    /// so every replica that hears of a member knows where it is).
    pub(crate) fn local_member(&self, member_id: u64) -> Option<MemberRecord> {
        let key = keys::data_key(&key(MEMBER_PREFIX, member_id));
        let value = self.store.engine().get(Cf::Data, &key).ok()??;
        MemberRecord::decode(value.as_slice()).ok()
    }

    /// Every member record this replica has applied, by member id. On the leader, under
    /// the driver's writer lock, that is every record written.
    pub(crate) fn local_members(&self) -> Result<Vec<(u64, MemberRecord)>, PdError> {
        let engine = self.store.engine();
        let cf = engine.cf(Cf::Data).map_err(Unavailability::from)?;
        let start = keys::data_key(MEMBER_PREFIX);
        let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
        let mut members = Vec::new();
        for item in engine.db().iterator_cf(cf, mode) {
            let (key, value) = item.map_err(|e| Unavailability::from(EngineError::from(e)))?;
            let Some(id) = key.strip_prefix(start.as_slice()) else { break };
            let corrupt = |source: prost::DecodeError| Corruption::Undecodable { key: key.to_vec(), source };
            members.push((decode_id(id)?, MemberRecord::decode(value.as_ref()).map_err(corrupt)?));
        }
        Ok(members)
    }

    /// Proposes a change of the metadata region's membership; answers once applied.
    pub(crate) fn change_member(
        &self,
        epoch: RegionEpoch,
        change_type: ConfChangeType,
        member_id: u64,
    ) -> Result<(), PdError> {
        let role =
            if change_type == ConfChangeType::AddLearner { PeerRole::Learner } else { PeerRole::Voter };
        let peer = Peer { id: member_id, store_id: member_id, role: role as i32 };
        let admin = region::change_peer_command(change_type, peer);
        self.store
            .admin(METADATA_REGION, epoch, admin)
            .recv_timeout(self.timeout)
            .map_err(|_| Unavailability::TimedOut(MetadataOperation::MembershipChange))?
            .map(|_| ())
            .map_err(PdError::from_store)
    }
}

/// The metadata's store could not serve: the driver cannot either, whatever the kind.
fn unavailable(error: StoreError) -> PdError {
    PdError::Unavailable(Unavailability::Store(error))
}

/// A high-water mark in the metadata, moved forward only by compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Every id below it was handed out or reserved.
    Ids,
    /// Every timestamp handed out has a physical part (milliseconds) below it.
    Timestamps,
    /// The garbage-collection safe point.
    GcSafePoint,
    /// The highest timestamp regions were fenced at for garbage collection.
    GcFence,
}

impl Mark {
    fn key(self) -> &'static [u8] {
        match self {
            Mark::Ids => IDS_KEY,
            Mark::Timestamps => TIMESTAMPS_KEY,
            Mark::GcSafePoint => GC_SAFE_POINT_KEY,
            Mark::GcFence => GC_FENCE_KEY,
        }
    }
}

/// How moving a high-water mark went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MarkUpdate {
    /// The mark is where it was asked to go.
    Advanced,
    /// Another leader moved it first; `found` is where it is.
    Raced { found: u64 },
}

fn decode_id(bytes: &[u8]) -> Result<u64, PdError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| Corruption::IdLength { bytes: bytes.len() })?;
    Ok(u64::from_be_bytes(bytes))
}
