//! What only the driver's leader holds: the live view of stores and regions built from
//! heartbeats on top of the replicated metadata, and the operators in flight.
//!
//! Rebuilt from the metadata whenever a replica becomes leader; everything here that is
//! not in the metadata (leaders, loads, liveness, operators) is relearned from the next
//! heartbeats. Pure state and decisions, with the clock passed in: the replica
//! ([`super::PlacementDriver`]) does the Raft round trips around it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tessera_engine::proto::metadata::{Peer, PeerRole, Region};

use super::operators::OperatorController;
use super::region_map::{RegionEntry, RegionMap, Verdict};
use crate::cluster::{ClusterView, StoreInfo, StoreState};
use crate::errors::{InvalidRequest, PdError, Unavailability};
use crate::metadata::Loaded;
use crate::operator::{Operator, Step};
use crate::proto::{
    OperatorStep, RegionHeartbeat, RegionRoute, StoreHeartbeatResponse, StoreRecord, StoreStats, StoreView,
    operator_step,
};

pub(crate) struct StoreEntry {
    pub record: StoreRecord,
    pub stats: StoreStats,
    pub last_heartbeat: Duration,
    pub state: StoreState,
}

pub(crate) struct LeaderState {
    pub term: u64,
    pub stores: BTreeMap<u64, StoreEntry>,
    pub regions: RegionMap,
    /// The cluster's first region, while it may still need founding on its stores.
    pub bootstrap: Option<Region>,
    pub operators: OperatorController,
    /// When this replica took over.
    pub since: Duration,
    /// The garbage-collection safe point, as persisted (0: none yet).
    pub gc_safe_point: u64,
    /// The highest timestamp regions were fenced at, as persisted.
    pub gc_fence: u64,
    /// Services' holds on garbage collection, as persisted.
    pub gc_holds: BTreeMap<String, crate::metadata::GcHold>,
}

impl LeaderState {
    /// The state of a new leader at `now`: every registered store counts as just heard
    /// from, so none is declared down before it had the time to find the new leader.
    pub(crate) fn new(
        term: u64,
        loaded: Loaded,
        now: Duration,
        operator_timeout: Duration,
        replicas: usize,
    ) -> LeaderState {
        let stores = loaded
            .stores
            .into_iter()
            .map(|record| {
                let state = if record.tombstone { StoreState::Tombstone } else { StoreState::Up };
                (record.id, StoreEntry { record, stats: StoreStats::default(), last_heartbeat: now, state })
            })
            .collect();
        let mut regions = RegionMap::default();
        for region in loaded.regions {
            if matches!(regions.judge(&region), Verdict::Changed { .. }) {
                regions.insert(region);
            }
        }
        let bootstrap = loaded.bootstrap.filter(|first| match regions.get(first.id) {
            // Founding is only ever needed before the first region's first change.
            Some(entry) => entry.region() == first,
            // Never written (founding was interrupted), or deleted when a newer region
            // replaced it (a split's other half reported first): only the former is new.
            None => !matches!(regions.judge(first), Verdict::Stale(_)),
        });
        if let Some(first) = &bootstrap
            && regions.get(first.id).is_none()
        {
            regions.insert(first.clone());
        }
        let (gc_safe_point, gc_fence, gc_holds) = (loaded.gc_safe_point, loaded.gc_fence, loaded.gc_holds);
        LeaderState {
            gc_safe_point,
            gc_fence,
            gc_holds,
            term,
            stores,
            regions,
            bootstrap,
            operators: OperatorController::new(operator_timeout, replicas, term),
            since: now,
        }
    }

    pub(crate) fn is_bootstrapped(&self) -> bool {
        self.bootstrap.is_some() || self.regions.len() > 0
    }

    /// The region holding `key`.
    pub(crate) fn region_holding(&self, key: &[u8]) -> Result<&RegionEntry, PdError> {
        if !self.is_bootstrapped() {
            return Err(PdError::NotBootstrapped);
        }
        // A gap only exists while a split's halves are being reported.
        self.regions.by_key(key).ok_or_else(|| Unavailability::NoRegionHolds { key: key.to_vec() }.into())
    }

    pub(crate) fn store(&self, store_id: u64) -> Result<&StoreEntry, PdError> {
        let entry = self.stores.get(&store_id).ok_or(PdError::UnknownStore(store_id))?;
        if entry.state == StoreState::Tombstone {
            return Err(PdError::StoreRemoved(store_id));
        }
        Ok(entry)
    }

    /// Records a store's heartbeat and tells it which of its neighbours are down and
    /// which regions it must found.
    pub(crate) fn store_heartbeat(
        &mut self,
        store_id: u64,
        stats: StoreStats,
        now: Duration,
    ) -> Result<StoreHeartbeatResponse, PdError> {
        self.store(store_id)?;
        if let Some(entry) = self.stores.get_mut(&store_id) {
            entry.stats = stats;
            entry.last_heartbeat = now;
            if let StoreState::Down { since } = entry.state {
                let down_for_seconds = now.saturating_sub(since).as_secs();
                tracing::info!(store_id, down_for_seconds, "store up again");
            }
            entry.state = StoreState::Up;
        }
        let down: BTreeSet<u64> = self
            .stores
            .values()
            .filter(|s| matches!(s.state, StoreState::Down { .. }))
            .map(|s| s.record.id)
            .collect();
        let mut down_stores = BTreeSet::new();
        if !down.is_empty() {
            for entry in self.regions.entries() {
                let peers = &entry.region().peers;
                if peers.iter().any(|p| p.store_id == store_id) {
                    down_stores.extend(peers.iter().map(|p| p.store_id).filter(|s| down.contains(s)));
                }
            }
        }
        let bootstrap_regions = self
            .bootstrap
            .iter()
            .filter(|first| first.peers.iter().any(|p| p.store_id == store_id))
            .filter(|first| self.regions.get(first.id).is_none_or(|entry| entry.leader.is_none()))
            .cloned()
            .collect();
        Ok(StoreHeartbeatResponse {
            down_stores: down_stores.into_iter().collect(),
            bootstrap_regions,
            gc_safe_point: self.gc_safe_point,
        })
    }

    /// Declares down every store silent for `down_after`.
    pub(crate) fn update_liveness(&mut self, now: Duration, down_after: Duration) {
        for entry in self.stores.values_mut() {
            if entry.state == StoreState::Up && now.saturating_sub(entry.last_heartbeat) >= down_after {
                tracing::warn!(
                    store_id = entry.record.id,
                    address = %entry.record.address,
                    silent_for_seconds = now.saturating_sub(entry.last_heartbeat).as_secs(),
                    "store down: no heartbeat"
                );
                entry.state = StoreState::Down { since: now };
            }
        }
    }

    /// Takes in a heartbeat and returns the step the region's leader should carry out.
    /// A changed descriptor is only adopted if the caller `persisted` it.
    pub(crate) fn region_heartbeat(
        &mut self,
        heartbeat: &RegionHeartbeat,
        persisted: bool,
        now: Duration,
    ) -> Option<OperatorStep> {
        let region = heartbeat.region.as_ref()?;
        match self.regions.judge(region) {
            Verdict::Stale(_) => return None,
            Verdict::Changed { .. } if !persisted => return None,
            Verdict::Changed { .. } => self.regions.insert(region.clone()),
            Verdict::Known => {}
        }
        let entry = self.regions.get_mut(region.id)?;
        if entry.region() != region || heartbeat.term < entry.term {
            // A stale leader's report: the region moved on.
            return None;
        }
        if self.bootstrap.as_ref().is_some_and(|first| first.id == region.id) {
            self.bootstrap = None;
        }
        entry.term = heartbeat.term;
        entry.leader = heartbeat.leader;
        entry.info.leader_store = heartbeat.leader.map(|p| p.store_id);
        entry.info.pending_peers = heartbeat.pending_peers.clone();
        entry.info.approximate_bytes = heartbeat.approximate_bytes;
        entry.info.write_bytes_per_sec = heartbeat.write_bytes_per_sec;
        entry.info.read_bytes_per_sec = heartbeat.read_bytes_per_sec;
        entry.approximate_keys = heartbeat.approximate_keys;
        entry.write_keys_per_sec = heartbeat.write_keys_per_sec;
        entry.read_keys_per_sec = heartbeat.read_keys_per_sec;
        let info = entry.info.clone();
        let stores = &self.stores;
        let is_up = |id: u64| stores.get(&id).is_some_and(|s| s.state == StoreState::Up);
        let step = self.operators.on_report(&info, &is_up, now)?;
        step_message(&step, &info.region)
    }

    /// Whether the view is complete enough to schedule on: every store that is up has
    /// reported since this replica took over (or had the time to), so that regions not
    /// heard from yet do not look like missing replicas.
    pub(crate) fn warmed_up(&self, now: Duration, down_after: Duration) -> bool {
        now.saturating_sub(self.since) >= down_after
            || self
                .stores
                .values()
                .filter(|s| s.state == StoreState::Up)
                .all(|s| s.last_heartbeat > self.since)
    }

    /// The view the schedulers decide on: regions whose leader reported in this term.
    pub(crate) fn view(&self, now: Duration) -> ClusterView {
        ClusterView {
            stores: self
                .stores
                .values()
                .map(|s| {
                    let info = StoreInfo {
                        id: s.record.id,
                        address: s.record.address.clone(),
                        state: s.state,
                        labels: s.record.labels.clone(),
                    };
                    (s.record.id, info)
                })
                .collect(),
            regions: self
                .regions
                .entries()
                .filter(|entry| entry.leader.is_some())
                .map(|entry| (entry.region().id, entry.info.clone()))
                .collect(),
            now,
        }
    }

    /// Starts `operator`; its id, or `None` if its region already has one in flight.
    pub(crate) fn add_operator(&mut self, operator: Operator, now: Duration) -> Option<u64> {
        let kind = operator.kind;
        let region_id = operator.region_id;
        let steps = operator.steps.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let added = self.operators.add(operator, now);
        if let Some(id) = added {
            tracing::info!(region_id, operator_id = id, kind = kind.name(), steps, "operator started");
            crate::metrics::operator_created(kind);
        }
        added
    }

    /// The region's route, with the addresses of its replicas' stores.
    pub(crate) fn route(&self, entry: &RegionEntry) -> RegionRoute {
        let address_of = |store_id: u64| self.stores.get(&store_id).map(|s| s.record.address.clone());
        let store_addresses = entry
            .region()
            .peers
            .iter()
            .filter_map(|peer| Some((peer.store_id, address_of(peer.store_id)?)))
            .collect();
        let leader_address = entry.leader.and_then(|leader| address_of(leader.store_id)).unwrap_or_default();
        RegionRoute {
            region: Some(entry.region().clone()),
            leader: entry.leader,
            leader_address,
            store_addresses,
        }
    }

    /// The first region that would be left without a quorum of voters on up stores if
    /// `store_id` were gone, as the refusal to remove it.
    pub(crate) fn quorum_without(&self, store_id: u64) -> Option<InvalidRequest> {
        let is_up =
            |id: u64| id != store_id && self.stores.get(&id).is_some_and(|s| s.state == StoreState::Up);
        self.regions.entries().find_map(|entry| {
            let region = entry.region();
            if !region.peers.iter().any(|p| p.store_id == store_id) {
                return None;
            }
            let voters: Vec<u64> = region
                .peers
                .iter()
                .filter(|p| p.role == PeerRole::Voter as i32)
                .map(|p| p.store_id)
                .collect();
            let alive = voters.iter().filter(|&&id| is_up(id)).count();
            (alive * 2 <= voters.len()).then_some(InvalidRequest::RemovalBreaksQuorum {
                store_id,
                region_id: region.id,
                alive,
                voters: voters.len(),
            })
        })
    }

    /// Every store with its counts; a down store says when its replicas get replaced,
    /// `down_grace` after it went down.
    pub(crate) fn store_views(&self, now: Duration, down_grace: Duration) -> Vec<StoreView> {
        let mut counts: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for entry in self.regions.entries() {
            for peer in &entry.region().peers {
                counts.entry(peer.store_id).or_default().0 += 1;
            }
            if let Some(leader) = entry.info.leader_store {
                counts.entry(leader).or_default().1 += 1;
            }
        }
        self.stores
            .values()
            .map(|s| {
                let (region_count, leader_count) = counts.get(&s.record.id).copied().unwrap_or_default();
                let state = match s.state {
                    StoreState::Up => crate::proto::StoreState::Up,
                    StoreState::Down { .. } => crate::proto::StoreState::Down,
                    StoreState::Tombstone => crate::proto::StoreState::Tombstone,
                };
                let down_for = match s.state {
                    StoreState::Down { since } => now.saturating_sub(since),
                    StoreState::Up | StoreState::Tombstone => Duration::ZERO,
                };
                let replaced_in =
                    if down_for.is_zero() { Duration::ZERO } else { down_grace.saturating_sub(down_for) };
                StoreView {
                    store: Some(s.record.clone()),
                    state: state as i32,
                    stats: Some(s.stats),
                    region_count,
                    leader_count,
                    down_for_ms: down_for.as_millis() as u64,
                    replicas_replaced_in_ms: replaced_in.as_millis() as u64,
                }
            })
            .collect()
    }
}

/// The wire form of `step` for `region`'s leader.
fn step_message(step: &Step, region: &Region) -> Option<OperatorStep> {
    let kind = match step {
        Step::AddLearner { peer } => operator_step::Kind::AddLearner(*peer),
        Step::PromoteLearner { peer } => operator_step::Kind::PromoteLearner(*peer),
        Step::RemovePeer { peer } => operator_step::Kind::RemovePeer(*peer),
        Step::TransferLeader { to_store } => {
            let target: Peer = *region.peers.iter().find(|p| p.store_id == *to_store)?;
            operator_step::Kind::TransferLeader(target)
        }
        Step::Split { key } => operator_step::Kind::SplitKey(key.clone()),
    };
    Some(OperatorStep { kind: Some(kind) })
}
