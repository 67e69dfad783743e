//! Operators in flight: at most one per region, advanced by the region's heartbeats,
//! expired by their deadline, and counted by kind and outcome.
//!
//! A step is never assumed done because it was sent: the driver sends the current step
//! with every heartbeat until the region's descriptor (or leader) shows it happened.
//! Sending again is harmless: a membership change proposed again is refused while the
//! first is pending and fails its epoch check once the first applied; a split proposed
//! twice fails its epoch check the second time. A step that can no longer happen (its learner vanished,
//! its target store went down) cancels the operator.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tessera_engine::proto::metadata::{Peer, PeerRole};
use tessera_engine::region::KeyRange;

use crate::cluster::RegionInfo;
#[cfg(test)]
use crate::operator::OperatorKind;
use crate::operator::{Operator, Step};
use crate::proto::OperatorView;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OperatorOutcome {
    Finished,
    TimedOut,
    Cancelled,
}

impl OperatorOutcome {
    pub(crate) fn name(self) -> &'static str {
        match self {
            OperatorOutcome::Finished => "finished",
            OperatorOutcome::TimedOut => "timed_out",
            OperatorOutcome::Cancelled => "cancelled",
        }
    }
}

/// Where a step stands against a region's latest report.
#[derive(Debug, PartialEq, Eq)]
enum StepState {
    Done,
    /// Ask the leader to carry it out.
    Send,
    /// Under way (a learner catching up): nothing to send.
    Wait,
    Impossible,
}

fn step_state(step: &Step, info: &RegionInfo, is_up: &dyn Fn(u64) -> bool, replicas: usize) -> StepState {
    let region = &info.region;
    let peer_by_id = |id: u64| region.peers.iter().find(|p| p.id == id);
    let pending = |id: u64| info.pending_peers.iter().any(|p| p.id == id);
    match step {
        Step::AddLearner { peer } => match peer_by_id(peer.id) {
            Some(_) if pending(peer.id) => StepState::Wait,
            Some(_) => StepState::Done,
            None if info.peer_on(peer.store_id).is_some() || !is_up(peer.store_id) => StepState::Impossible,
            None => StepState::Send,
        },
        Step::PromoteLearner { peer } => match peer_by_id(peer.id) {
            Some(found) if found.role == PeerRole::Voter as i32 => StepState::Done,
            Some(_) if pending(peer.id) => StepState::Wait,
            Some(_) => StepState::Send,
            None => StepState::Impossible,
        },
        Step::RemovePeer { peer } => match peer_by_id(peer.id) {
            None => StepState::Done,
            // Whoever else changed the region meanwhile (another driver leader that did
            // not know it was deposed), a removal never takes it below its voters.
            Some(found) if found.role == PeerRole::Voter as i32 && info.voters().count() <= replicas => {
                StepState::Impossible
            }
            Some(_) => StepState::Send,
        },
        Step::TransferLeader { to_store } => {
            if info.leader_store == Some(*to_store) {
                StepState::Done
            } else if info.voters().any(|p| p.store_id == *to_store) && is_up(*to_store) {
                StepState::Send
            } else {
                StepState::Impossible
            }
        }
        Step::Split { key } => {
            if region.start_key == *key || region.end_key == *key {
                StepState::Done
            } else if KeyRange::of(region).contains_strictly(key) {
                StepState::Send
            } else {
                StepState::Impossible
            }
        }
    }
}

/// The invariants of an operator the schedulers built: it names a region, has a step
/// to take, and every peer it adds has an id and a store and the role its step gives.
fn check_operator(operator: &Operator) {
    assert!(operator.region_id != 0, "an operator names its region (region ids start at 1): {operator:?}");
    assert!(!operator.steps.is_empty(), "an operator has at least one step: {operator:?}");
    let named = |peer: &Peer| peer.id != 0 && peer.store_id != 0;
    for step in &operator.steps {
        match step {
            Step::AddLearner { peer } => assert!(
                named(peer) && peer.role == PeerRole::Learner as i32,
                "an added peer is a learner with an id and a store: {step} in {operator:?}"
            ),
            Step::PromoteLearner { peer } => assert!(
                named(peer) && peer.role == PeerRole::Voter as i32,
                "a promoted learner carries the voter role it is given: {step} in {operator:?}"
            ),
            Step::RemovePeer { peer } => assert!(named(peer), "a removed peer has an id and a store: {step}"),
            Step::TransferLeader { to_store } => {
                assert!(*to_store != 0, "a leadership transfer names its store: {operator:?}");
            }
            Step::Split { key } => assert!(!key.is_empty(), "the empty key splits nothing: {operator:?}"),
        }
    }
}

struct InFlight {
    id: u64,
    operator: Operator,
    step: usize,
    created: Duration,
}

/// How many ended operators are kept for `ctl` to learn how its operator ended.
const RECENTLY_ENDED: usize = 256;

pub(crate) struct OperatorController {
    timeout: Duration,
    /// Voters a region must keep.
    replicas: usize,
    in_flight: BTreeMap<u64, InFlight>,
    /// The most recent operators that ended, oldest first, as views with their outcome.
    ended: VecDeque<OperatorView>,
    next_id: u64,
    /// Operators ended, by kind and outcome: what tests check (the metrics carry the
    /// same counts for operators of the cluster).
    #[cfg(test)]
    outcomes: BTreeMap<(OperatorKind, OperatorOutcome), u64>,
}

impl OperatorController {
    /// The operators of the driver leader of `term`: their ids start at `term << 32`,
    /// so that an id never names an operator of another leader.
    pub(crate) fn new(timeout: Duration, replicas: usize, term: u64) -> OperatorController {
        OperatorController {
            timeout,
            replicas,
            in_flight: BTreeMap::new(),
            ended: VecDeque::new(),
            next_id: (term << 32) + 1,
            #[cfg(test)]
            outcomes: BTreeMap::new(),
        }
    }

    pub(crate) fn running(&self) -> usize {
        self.in_flight.len()
    }

    /// Regions with an operator in flight.
    pub(crate) fn busy(&self) -> BTreeSet<u64> {
        self.in_flight.keys().copied().collect()
    }

    /// Starts `operator`; its id, or `None` if its region already has one.
    pub(crate) fn add(&mut self, operator: Operator, now: Duration) -> Option<u64> {
        check_operator(&operator);
        if self.in_flight.contains_key(&operator.region_id) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight.insert(operator.region_id, InFlight { id, operator, step: 0, created: now });
        Some(id)
    }

    fn finish(&mut self, region_id: u64, outcome: OperatorOutcome, now: Duration) {
        if let Some(done) = self.in_flight.remove(&region_id) {
            let mut view = done.view(now);
            view.outcome = outcome.name().to_string();
            if self.ended.len() == RECENTLY_ENDED {
                self.ended.pop_front();
            }
            self.ended.push_back(view);
            #[cfg(test)]
            {
                *self.outcomes.entry((done.operator.kind, outcome)).or_default() += 1;
            }
            let (kind, steps_done, operator_id) = (done.operator.kind, done.step, done.id);
            let (kind_name, outcome_name) = (kind.name(), outcome.name());
            tracing::info!(
                region_id,
                operator_id,
                kind = kind_name,
                outcome = outcome_name,
                steps_done,
                "operator ended"
            );
            crate::metrics::operator_ended(kind, outcome);
        }
    }

    /// Advances the region's operator past every step its report shows done, and
    /// returns the step its leader should carry out now. `is_up` says which stores are
    /// up (a step that needs a store that is not cannot happen).
    pub(crate) fn on_report(
        &mut self,
        info: &RegionInfo,
        is_up: &dyn Fn(u64) -> bool,
        now: Duration,
    ) -> Option<Step> {
        let region_id = info.region.id;
        let flight = self.in_flight.get_mut(&region_id)?;
        assert_eq!(
            flight.operator.region_id, region_id,
            "a report advances only the operator of the region it describes"
        );
        loop {
            let Some(step) = flight.operator.steps.get(flight.step) else {
                self.finish(region_id, OperatorOutcome::Finished, now);
                return None;
            };
            match step_state(step, info, is_up, self.replicas) {
                StepState::Done => flight.step += 1,
                StepState::Send => return Some(step.clone()),
                StepState::Wait => return None,
                StepState::Impossible => {
                    self.finish(region_id, OperatorOutcome::Cancelled, now);
                    return None;
                }
            }
        }
    }

    /// Ends every operator older than the timeout, and those of regions that vanished
    /// (merged away or replaced by a split's newer descriptors).
    pub(crate) fn expire(&mut self, now: Duration, exists: impl Fn(u64) -> bool) {
        let expired: Vec<(u64, OperatorOutcome)> = self
            .in_flight
            .iter()
            .filter_map(|(&region_id, flight)| {
                if !exists(region_id) {
                    Some((region_id, OperatorOutcome::Cancelled))
                } else if now.saturating_sub(flight.created) >= self.timeout {
                    Some((region_id, OperatorOutcome::TimedOut))
                } else {
                    None
                }
            })
            .collect();
        for (region_id, outcome) in expired {
            self.finish(region_id, outcome, now);
        }
    }

    /// Operators ended, by kind and outcome.
    #[cfg(test)]
    pub(crate) fn outcomes(&self) -> &BTreeMap<(OperatorKind, OperatorOutcome), u64> {
        &self.outcomes
    }

    /// The operators in flight, then the most recent that ended (with their outcome).
    pub(crate) fn views(&self, now: Duration) -> Vec<OperatorView> {
        let in_flight = self.in_flight.values().map(|flight| flight.view(now));
        in_flight.chain(self.ended.iter().cloned()).collect()
    }
}

impl InFlight {
    fn view(&self, now: Duration) -> OperatorView {
        OperatorView {
            region_id: self.operator.region_id,
            kind: self.operator.kind.name().to_string(),
            steps: self.operator.steps.iter().map(ToString::to_string).collect(),
            current_step: self.step as u32,
            age_ms: now.saturating_sub(self.created).as_millis() as u64,
            id: self.id,
            outcome: String::new(),
        }
    }
}
