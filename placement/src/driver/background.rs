//! The replica's background loop: keeps its idea of who leads current, and on the
//! leader declares silent stores down, expires operators, founds the first region and
//! runs the schedulers. Raft round trips happen outside the state's lock.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tessera_engine::proto::metadata::{Peer, PeerRole, Region, RegionEpoch};
use tessera_engine::timestamp::wall_clock_milliseconds;

use super::Shared;
use super::leader::LeaderState;
use crate::cluster::StoreState;
use crate::metadata;
use crate::operator::Step;
use crate::schedulers;

/// Placeholder ids the schedulers decide with are above this: no real id gets there.
const PLACEHOLDER_IDS: u64 = u64::MAX - (1 << 32);

impl Shared {
    pub(super) fn run(&self) {
        let mut next_schedule = Duration::ZERO;
        while !self.stopping.load(Ordering::SeqCst) {
            std::thread::sleep(self.config.tick_interval);
            let Some(epoch) = self.refresh_leadership() else { continue };
            let now = self.now();
            self.watch(now);
            self.maybe_bootstrap(epoch);
            if now >= next_schedule {
                next_schedule = now + self.config.schedule_interval;
                self.record_member_addresses(epoch);
                self.promote_caught_up_members();
                self.schedule(epoch, now);
            }
        }
    }

    /// The timestamp oracle's own loop: moves its mark ahead on every tick while this
    /// replica serves as leader. Apart from the main loop, whose Raft round trips
    /// (scheduling, bootstrap) could otherwise hold it past half a window.
    pub(super) fn run_timestamp_oracle(&self) {
        while !self.stopping.load(Ordering::SeqCst) {
            std::thread::sleep(self.config.tick_interval);
            let Ok(epoch) = self.epoch() else { continue };
            // A failure is retried at the next tick; until then requests are refused.
            let _ = self.timestamps.extend(&self.metadata, epoch, wall_clock_milliseconds);
        }
    }

    /// Learns who leads; a replica that just became leader loads the metadata. Returns
    /// the metadata's epoch if this replica is the serving leader.
    fn refresh_leadership(&self) -> Option<RegionEpoch> {
        let leadership = self.metadata.leadership();
        *self.leadership.write() = leadership.map(|l| (l, self.now()));
        let Some(leadership) = leadership.filter(|l| l.is_leader) else {
            self.timestamps.stop();
            if let Some(state) = self.leader.lock().take() {
                tracing::info!(term = state.term, "placement driver stepped down");
            }
            return None;
        };
        if self.leader.lock().as_ref().is_some_and(|state| state.term == leadership.term) {
            return Some(leadership.epoch);
        }
        *self.leader.lock() = None;
        self.timestamps.stop();
        // A linearizable read: everything the previous leaders committed is in it.
        let loaded = self.metadata.load(leadership.epoch).ok()?;
        self.ids.reset(loaded.ids);
        if let Err(error) = self.timestamps.reset(leadership.term, loaded.timestamp_mark) {
            // The rest of the driver can serve; the oracle cannot until this is repaired.
            tracing::error!(%error, "the timestamp oracle cannot start");
        }
        tracing::info!(
            term = leadership.term,
            stores = loaded.stores.len(),
            regions = loaded.regions.len(),
            "placement driver leading; metadata loaded"
        );
        let state = LeaderState::new(
            leadership.term,
            loaded,
            self.now(),
            self.config.operator_timeout,
            self.config.schedulers.replicas,
        );
        *self.leader.lock() = Some(state);
        Some(leadership.epoch)
    }

    fn watch(&self, now: Duration) {
        let mut guard = self.leader.lock();
        let Some(state) = guard.as_mut() else { return };
        state.update_liveness(now, self.config.store_down_after);
        let LeaderState { operators, regions, .. } = state;
        operators.expire(now, |region_id| regions.get(region_id).is_some());
    }

    /// Founds the cluster's first region once enough stores are up.
    fn maybe_bootstrap(&self, epoch: RegionEpoch) {
        let replicas = self.config.schedulers.replicas;
        let stores: Vec<u64> = {
            let guard = self.leader.lock();
            let Some(state) = guard.as_ref() else { return };
            if state.is_bootstrapped() {
                return;
            }
            state
                .stores
                .values()
                .filter(|s| s.state == StoreState::Up)
                .map(|s| s.record.id)
                .take(replicas)
                .collect()
        };
        if stores.len() < replicas.max(1) {
            return;
        }
        let Ok(ids) = self.ids.allocate(&self.metadata, epoch, 1 + stores.len() as u64) else { return };
        let region = Region {
            id: ids[0],
            start_key: Vec::new(),
            end_key: Vec::new(),
            epoch: Some(RegionEpoch { conf_version: 1, version: 1 }),
            peers: stores
                .iter()
                .zip(&ids[1..])
                .map(|(&store_id, &id)| Peer { id, store_id, role: PeerRole::Voter as i32 })
                .collect(),
        };
        match self.metadata.claim_bootstrap(epoch, &region) {
            Ok(true) => {
                tracing::info!(region_id = region.id, stores = ?stores, "cluster founded: first region placed");
                // The claim alone is enough: a new leader founds from it if this fails.
                let _ = self.metadata.write(epoch, vec![metadata::put_region(&region)]);
                if let Some(state) = self.leader.lock().as_mut() {
                    state.regions.insert(region.clone());
                    state.bootstrap = Some(region);
                }
            }
            // Another leader founded the cluster: reload.
            Ok(false) => *self.leader.lock() = None,
            Err(_) => {}
        }
    }

    /// Runs the schedulers. They decide under the lock with placeholder ids for new
    /// peers; the real ids are reserved afterwards, outside it, and substituted. Peer
    /// ids must grow over time (a store refuses to recreate a removed peer with an id
    /// not above the old one), so ids are never set aside for later.
    fn schedule(&self, epoch: RegionEpoch, now: Duration) {
        let (mut operators, wanted) = {
            let guard = self.leader.lock();
            let Some(state) = guard.as_ref() else { return };
            if !state.warmed_up(now, self.config.store_down_after) {
                return;
            }
            let view = state.view(now);
            let busy = state.operators.busy();
            let enabled = &self.config.schedulers;
            crate::metrics::schedulers_ran([
                enabled.replica_repair,
                !enabled.location_labels.is_empty(),
                enabled.hot_region,
                enabled.balance_region,
                enabled.balance_leader,
            ]);
            let mut placeholders = 0u64;
            let operators = schedulers::schedule(&view, &self.config.schedulers, &busy, &mut || {
                placeholders += 1;
                Some(PLACEHOLDER_IDS + placeholders)
            });
            (operators, placeholders)
        };
        if operators.is_empty() {
            return;
        }
        let ids = match wanted {
            0 => Vec::new(),
            _ => match self.ids.allocate(&self.metadata, epoch, wanted) {
                Ok(ids) => ids,
                Err(_) => return,
            },
        };
        let real = |id: u64| match id.checked_sub(PLACEHOLDER_IDS + 1) {
            Some(index) => ids.get(index as usize).copied(),
            None => Some(id),
        };
        for operator in &mut operators {
            for step in &mut operator.steps {
                if let Step::AddLearner { peer } | Step::PromoteLearner { peer } | Step::RemovePeer { peer } =
                    step
                {
                    // The allocator answers with exactly the count asked for.
                    peer.id = real(peer.id).unwrap_or(0);
                }
            }
        }
        let mut guard = self.leader.lock();
        let Some(state) = guard.as_mut() else { return };
        for operator in operators {
            let complete = operator.steps.iter().all(|step| match step {
                Step::AddLearner { peer } | Step::PromoteLearner { peer } | Step::RemovePeer { peer } => {
                    peer.id != 0
                }
                _ => true,
            });
            if complete {
                state.add_operator(operator, now);
            }
        }
    }
}
