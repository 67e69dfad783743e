//! The driver's API as its leader serves it. Requests that persist something
//! (registrations, changes of epoch) are serialized by the writer lock and make their
//! Raft round trip outside the state's lock.

use std::collections::BTreeSet;

use super::leader::StoreEntry;
use super::region_map::Verdict;
use super::{PlacementDriver, Shared, TimestampBatch};
use crate::client::PdClient;
use crate::cluster::StoreState;
use crate::errors::{HeartbeatDefect, InvalidRequest, PdError, Unavailability};
use crate::metadata;
use crate::operator::{Operator, OperatorKind, Step, move_replica_steps};
use crate::proto::{
    OperatorView, RegionHeartbeat, RegionHeartbeatResponse, RegionHeartbeatsRequest,
    RegionHeartbeatsResponse, RegionRoute, RegisterStoreRequest, RegisterStoreResponse,
    StoreHeartbeatRequest, StoreHeartbeatResponse, StoreRecord, StoreView,
};
use tessera_engine::proto::metadata::PeerRole;
use tessera_engine::region::KeyRange;
use tessera_engine::timestamp::wall_clock_milliseconds;

/// At most this many ids per request.
const MAX_IDS_PER_REQUEST: u32 = 10_000;

impl PlacementDriver {
    /// `count` consecutive timestamps from the oracle, each above every timestamp
    /// handed out before this call (see `timestamps`). Answered from memory: no Raft
    /// round trip, so callable from an async task.
    pub fn timestamps(&self, count: u32) -> Result<TimestampBatch, PdError> {
        let answer = self.shared.timestamps.allocate(count, wall_clock_milliseconds);
        answer.map_err(|error| self.name_leader(error))
    }

    /// Whether this replica's oracle serves now; if not, the error names the leader.
    pub fn check_timestamp_oracle(&self) -> Result<(), PdError> {
        self.shared.timestamps.check_serving().map_err(|error| self.name_leader(error))
    }

    /// The oracle knows no leader but itself: a refusal says who leads, as this
    /// replica knows it, or that it leads and its oracle is about to serve.
    fn name_leader(&self, error: PdError) -> PdError {
        let PdError::NotLeader { .. } = error else { return error };
        match self.shared.not_leader() {
            PdError::NotLeader { leader: Some(leader) } if leader == self.member_id() => {
                Unavailability::TimestampOracleNotReady.into()
            }
            not_leader => not_leader,
        }
    }
}

/// The most bytes of a store's address (and of its etcd address).
const MAX_STORE_ADDRESS_BYTES: usize = 256;
/// The most labels a store may have, and the most bytes of a label's name and value:
/// every store's record goes to every client that looks up stores, so a record must
/// stay small (zones, racks and hosts need a handful of short labels).
const MAX_STORE_LABELS: usize = 32;
const MAX_LABEL_NAME_BYTES: usize = 64;
const MAX_LABEL_VALUE_BYTES: usize = 256;

/// Whether a store's registration is of a size the driver keeps and hands out.
fn check_registration(request: &RegisterStoreRequest) -> Result<(), InvalidRequest> {
    if request.address.is_empty() {
        return Err(InvalidRequest::MissingStoreAddress);
    }
    for address in [&request.address, &request.etcd_address] {
        if address.len() > MAX_STORE_ADDRESS_BYTES {
            return Err(InvalidRequest::StoreAddressLength {
                bytes: address.len(),
                max: MAX_STORE_ADDRESS_BYTES,
            });
        }
    }
    if request.labels.len() > MAX_STORE_LABELS {
        return Err(InvalidRequest::StoreLabelCount { count: request.labels.len(), max: MAX_STORE_LABELS });
    }
    let too_long = |name: &String, value: &String| {
        name.is_empty() || name.len() > MAX_LABEL_NAME_BYTES || value.len() > MAX_LABEL_VALUE_BYTES
    };
    if let Some((name, _)) = request.labels.iter().find(|(name, value)| too_long(name, value)) {
        let name = name.chars().take(MAX_LABEL_NAME_BYTES).collect();
        return Err(InvalidRequest::StoreLabel {
            name,
            max_name: MAX_LABEL_NAME_BYTES,
            max_value: MAX_LABEL_VALUE_BYTES,
        });
    }
    Ok(())
}

impl Shared {
    fn register_store(&self, request: RegisterStoreRequest) -> Result<RegisterStoreResponse, PdError> {
        check_registration(&request)?;
        let _writer = self.writer.lock();
        let epoch = self.epoch()?;
        let existing = self.with_leader(|state| {
            let same_address = state
                .stores
                .values()
                .find(|s| s.record.address == request.address && s.state != StoreState::Tombstone);
            if let Some(other) = same_address.filter(|s| s.record.id != request.store_id) {
                return Err(PdError::DuplicateAddress {
                    address: request.address.clone(),
                    store_id: other.record.id,
                });
            }
            match state.stores.get(&request.store_id) {
                Some(_) => Ok(Some(state.store(request.store_id)?.record.clone())),
                None => Ok(None),
            }
        })?;
        let store_id = match (&existing, request.store_id) {
            (Some(record), _) => record.id,
            // An id the store took from the allocator and kept before registering.
            (None, id) if id != 0 => id,
            (None, _) => self.ids.allocate(&self.metadata, epoch, 1)?[0],
        };
        let record = StoreRecord {
            id: store_id,
            address: request.address,
            labels: request.labels,
            tombstone: false,
            etcd_address: request.etcd_address,
        };
        if existing.as_ref() != Some(&record) {
            self.metadata.write(epoch, vec![metadata::put_store(&record)])?;
        }
        let now = self.now();
        self.with_leader(|state| {
            let entry = state.stores.entry(store_id).or_insert_with(|| StoreEntry {
                record: record.clone(),
                stats: Default::default(),
                last_heartbeat: now,
                state: StoreState::Up,
            });
            if let StoreState::Down { since } = entry.state {
                let down_for_seconds = now.saturating_sub(since).as_secs();
                tracing::info!(store_id, down_for_seconds, "store up again");
            }
            tracing::info!(store_id, address = %record.address, labels = ?record.labels, "store registered");
            entry.record = record;
            entry.last_heartbeat = now;
            entry.state = StoreState::Up;
            Ok(RegisterStoreResponse { store_id })
        })
    }

    fn region_heartbeats(
        &self,
        request: RegionHeartbeatsRequest,
    ) -> Result<RegionHeartbeatsResponse, PdError> {
        for heartbeat in &request.regions {
            check_heartbeat(request.store_id, heartbeat)?;
        }
        // Changes of epoch are judged, persisted and adopted by one writer at a time, so
        // that what is on disk and what is in memory cannot cross.
        let _writer = self.writer.lock();
        let epoch = self.epoch()?;
        let mut puts = Vec::new();
        let mut deletes = BTreeSet::new();
        let term = self.with_leader(|state| {
            state.store(request.store_id)?;
            for region in request.regions.iter().filter_map(|h| h.region.as_ref()) {
                if let Verdict::Changed { replaces } = state.regions.judge(region) {
                    puts.push(region.clone());
                    deletes.extend(replaces);
                }
            }
            Ok(state.term)
        })?;
        let persisted: BTreeSet<u64> = puts.iter().map(|r| r.id).collect();
        if !puts.is_empty() {
            // A split's halves can arrive in one batch, each replacing the other's old
            // descriptor: never delete what the batch also writes.
            let writes = deletes
                .iter()
                .filter(|id| !persisted.contains(id))
                .map(|&id| metadata::delete_region(id))
                .chain(puts.iter().map(metadata::put_region))
                .collect();
            self.metadata.write(epoch, writes)?;
        }

        let now = self.now();
        self.with_leader(|state| {
            if state.term != term {
                return Err(self.not_leader());
            }
            let regions = request
                .regions
                .iter()
                .filter_map(|heartbeat| {
                    let region = heartbeat.region.as_ref()?;
                    let newer = match state.regions.judge(region) {
                        Verdict::Stale(newer) => Some(newer),
                        _ => None,
                    };
                    let step = match newer {
                        Some(_) => None,
                        None => state.region_heartbeat(heartbeat, persisted.contains(&region.id), now),
                    };
                    Some(RegionHeartbeatResponse { region_id: region.id, step, newer })
                })
                .collect();
            Ok(RegionHeartbeatsResponse { regions })
        })
    }
}

/// A heartbeat must describe a region led from the store that sends it.
fn check_heartbeat(store_id: u64, heartbeat: &RegionHeartbeat) -> Result<(), PdError> {
    let invalid = |defect| Err(InvalidRequest::Heartbeat { store_id, defect }.into());
    let Some(region) = &heartbeat.region else { return invalid(HeartbeatDefect::NoRegion) };
    let Some(leader) = &heartbeat.leader else { return invalid(HeartbeatDefect::NoLeader) };
    if leader.store_id != store_id || !region.peers.iter().any(|p| p.id == leader.id) {
        return invalid(HeartbeatDefect::LeaderNotOnStore);
    }
    if KeyRange::of(region).is_empty() {
        return invalid(HeartbeatDefect::EmptyRange);
    }
    Ok(())
}

impl Shared {
    fn remove_store(&self, store_id: u64) -> Result<(), PdError> {
        let _writer = self.writer.lock();
        let epoch = self.epoch()?;
        let record = self.with_leader(|state| {
            let entry = match state.store(store_id) {
                Err(PdError::StoreRemoved(_)) => return Ok(None),
                other => other?,
            };
            if let Some(breach) = state.quorum_without(store_id) {
                return Err(breach.into());
            }
            Ok(Some(StoreRecord { tombstone: true, ..entry.record.clone() }))
        })?;
        let Some(record) = record else { return Ok(()) };
        self.metadata.write(epoch, vec![metadata::put_store(&record)])?;
        self.with_leader(|state| {
            if let Some(entry) = state.stores.get_mut(&store_id) {
                tracing::warn!(store_id, address = %record.address, "store removed for good; its replicas are replaced");
                entry.record = record;
                entry.state = StoreState::Tombstone;
            }
            Ok(())
        })
    }
}

impl PdClient for PlacementDriver {
    fn register_store(&self, request: RegisterStoreRequest) -> Result<RegisterStoreResponse, PdError> {
        self.shared.register_store(request)
    }

    fn store_heartbeat(&self, request: StoreHeartbeatRequest) -> Result<StoreHeartbeatResponse, PdError> {
        let now = self.shared.now();
        let stats = request.stats.unwrap_or_default();
        let answer = self.shared.with_leader(|state| state.store_heartbeat(request.store_id, stats, now))?;
        crate::metrics::DRIVER.store_heartbeats.increment(1);
        Ok(answer)
    }

    fn region_heartbeats(
        &self,
        request: RegionHeartbeatsRequest,
    ) -> Result<RegionHeartbeatsResponse, PdError> {
        let count = request.regions.len() as u64;
        let answer = self.shared.region_heartbeats(request)?;
        crate::metrics::DRIVER.region_heartbeats.increment(count);
        Ok(answer)
    }

    fn alloc_ids(&self, count: u32) -> Result<Vec<u64>, PdError> {
        if count == 0 || count > MAX_IDS_PER_REQUEST {
            return Err(InvalidRequest::IdCount { count, max: MAX_IDS_PER_REQUEST }.into());
        }
        let epoch = self.shared.epoch()?;
        // Only once this leader loaded the metadata (and with it the id mark).
        self.shared.with_leader(|_| Ok(()))?;
        self.shared.ids.allocate(&self.shared.metadata, epoch, u64::from(count))
    }

    fn region_by_key(&self, key: &[u8]) -> Result<RegionRoute, PdError> {
        self.shared.with_leader(|state| state.region_holding(key).map(|entry| state.route(entry)))
    }

    fn region_by_id(&self, region_id: u64) -> Result<RegionRoute, PdError> {
        self.shared.with_leader(|state| {
            state
                .regions
                .get(region_id)
                .map(|entry| state.route(entry))
                .ok_or(PdError::UnknownRegion(region_id))
        })
    }

    fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<RegionRoute>, PdError> {
        if KeyRange::new(start, end).is_inverted() {
            return Err(InvalidRequest::InvertedRange.into());
        }
        self.shared.with_leader(|state| {
            let limit = if limit == 0 { usize::MAX } else { limit };
            let regions = state.regions.range(KeyRange::new(start, end)).take(limit);
            Ok(regions.map(|entry| state.route(entry)).collect())
        })
    }

    fn stores(&self) -> Result<Vec<StoreView>, PdError> {
        let (now, down_grace) = (self.shared.now(), self.shared.config.schedulers.down_grace);
        self.shared.with_leader(|state| Ok(state.store_views(now, down_grace)))
    }

    fn split_region(&self, key: &[u8]) -> Result<Option<u64>, PdError> {
        if key.is_empty() {
            return Err(InvalidRequest::SplitAtEmptyKey.into());
        }
        let now = self.shared.now();
        self.shared.with_leader(|state| {
            let entry = state.region_holding(key)?;
            if entry.region().start_key == key {
                return Ok(None);
            }
            let route = state.route(entry);
            let region_id = entry.region().id;
            let operator = Operator {
                region_id,
                kind: OperatorKind::Split,
                steps: vec![Step::Split { key: key.to_vec() }],
            };
            let id = state.add_operator(operator, now).ok_or_else(|| PdError::RegionBusy(Box::new(route)))?;
            Ok(Some(id))
        })
    }

    fn transfer_leader(&self, region_id: u64, to_store: u64) -> Result<Option<u64>, PdError> {
        let now = self.shared.now();
        self.shared.with_leader(|state| {
            state.store(to_store)?;
            let entry = state.regions.get(region_id).ok_or(PdError::UnknownRegion(region_id))?;
            let route = state.route(entry);
            if !entry
                .region()
                .peers
                .iter()
                .any(|p| p.store_id == to_store && p.role == PeerRole::Voter as i32)
            {
                return Err(InvalidRequest::NoVoterOnStore { region_id, store_id: to_store }.into());
            }
            if route.leader.is_some_and(|leader| leader.store_id == to_store) {
                return Ok(None);
            }
            let operator = Operator {
                region_id,
                kind: OperatorKind::TransferLeader,
                steps: vec![Step::TransferLeader { to_store }],
            };
            let id = state.add_operator(operator, now).ok_or_else(|| PdError::RegionBusy(Box::new(route)))?;
            Ok(Some(id))
        })
    }

    fn move_peer(&self, region_id: u64, from_store: u64, to_store: u64) -> Result<Option<u64>, PdError> {
        // The new replica's id comes from the allocator before the state is locked: the
        // allocation is a Raft round trip. An id left unused by a refusal is harmless.
        let epoch = self.shared.epoch()?;
        let new_peer_id = self.shared.ids.allocate(&self.shared.metadata, epoch, 1)?[0];
        let now = self.shared.now();
        self.shared.with_leader(|state| {
            state.store(to_store)?;
            let entry = state.regions.get(region_id).ok_or(PdError::UnknownRegion(region_id))?;
            let route = state.route(entry);
            let region = entry.region();
            let Some(leaving) = region.peers.iter().find(|p| p.store_id == from_store).copied() else {
                return Err(InvalidRequest::NoReplicaOnStore { region_id, store_id: from_store }.into());
            };
            if region.peers.iter().any(|p| p.store_id == to_store) {
                return Err(InvalidRequest::ReplicaOnStore { region_id, store_id: to_store }.into());
            }
            let leader_store = route.leader.map(|leader| leader.store_id);
            let steps = move_replica_steps(&region.peers, leader_store, leaving, new_peer_id, to_store)
                .ok_or(InvalidRequest::NoOtherVoter { region_id })?;
            let operator = Operator { region_id, kind: OperatorKind::MovePeer, steps };
            let id = state.add_operator(operator, now).ok_or_else(|| PdError::RegionBusy(Box::new(route)))?;
            Ok(Some(id))
        })
    }

    fn remove_store(&self, store_id: u64) -> Result<(), PdError> {
        self.shared.remove_store(store_id)
    }

    fn operators(&self) -> Result<Vec<OperatorView>, PdError> {
        let now = self.shared.now();
        self.shared.with_leader(|state| Ok(state.operators.views(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(labels: &[(&str, &str)]) -> RegisterStoreRequest {
        RegisterStoreRequest {
            store_id: 1,
            address: "127.0.0.1:20160".into(),
            labels: labels.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect(),
            etcd_address: String::new(),
        }
    }

    #[test]
    fn a_registration_too_large_to_hand_out_is_refused() {
        assert_eq!(check_registration(&registration(&[("zone", "z1"), ("host", "h1")])), Ok(()));
        let no_address = RegisterStoreRequest { address: String::new(), ..registration(&[]) };
        assert_eq!(check_registration(&no_address), Err(InvalidRequest::MissingStoreAddress));
        let long_address = RegisterStoreRequest { etcd_address: "x".repeat(257), ..registration(&[]) };
        assert!(matches!(check_registration(&long_address), Err(InvalidRequest::StoreAddressLength { .. })));
        let names: Vec<String> = (0..33).map(|n| format!("label-{n}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "v")).collect();
        assert!(matches!(
            check_registration(&registration(&many)),
            Err(InvalidRequest::StoreLabelCount { count: 33, max: 32 })
        ));
        let huge_value = "v".repeat(3 << 20);
        assert!(matches!(
            check_registration(&registration(&[("zone", &huge_value)])),
            Err(InvalidRequest::StoreLabel { .. })
        ));
        assert!(matches!(
            check_registration(&registration(&[("", "v")])),
            Err(InvalidRequest::StoreLabel { .. })
        ));
    }
}
