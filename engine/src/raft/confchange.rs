//! Computing a new membership configuration from a [`ConfChange`].
//!
//! Every change of the voter set goes through joint consensus (§4.3): the first step
//! enters a joint configuration where old and new voters both decide, and the leader
//! leaves it on its own once the entering entry is applied. Changes that touch only
//! learners are applied in one step, since learners take no part in any decision.
//! Nothing here mutates the tracker: a change is validated completely first, so that an
//! invalid change leaves the configuration untouched on every replica alike.

use std::collections::BTreeMap;

use super::errors::{ConfChangeRefusal, Error, Result};
use super::proto::{ConfChange, ConfChangeSingle, ConfChangeType};
use super::quorum::MajorityConfig;
use super::tracker::{Progress, ProgressTracker, TrackerConfig};

/// The configuration and progress map a change leads to.
pub(crate) struct Changed {
    pub config: TrackerConfig,
    pub progress: BTreeMap<u64, Progress>,
}

fn invalid(refusal: ConfChangeRefusal) -> Error {
    Error::InvalidConfChange(refusal)
}

/// Whether applying `change` alters who votes.
pub(crate) fn changes_voters(tracker: &ProgressTracker, change: &ConfChange) -> bool {
    change.changes.iter().any(|single| {
        let voter = tracker.config.voters.incoming.contains(single.node_id);
        match single.change_type() {
            ConfChangeType::AddVoter => !voter,
            ConfChangeType::AddLearner | ConfChangeType::Remove => voter,
        }
    })
}

/// Validates `change` against the current configuration and computes its result.
pub(crate) fn apply(tracker: &ProgressTracker, change: &ConfChange, last_index: u64) -> Result<Changed> {
    if change.changes.is_empty() {
        return leave_joint(tracker);
    }
    if tracker.config.voters.is_joint() {
        return Err(invalid(ConfChangeRefusal::InJointConfiguration));
    }
    if change.changes.iter().any(|single| single.node_id == 0) {
        return Err(invalid(ConfChangeRefusal::ReservedNodeId));
    }
    if let Some(single) = change.changes.iter().find(|s| ConfChangeType::try_from(s.change_type).is_err()) {
        let (change_type, node_id) = (single.change_type, single.node_id);
        return Err(invalid(ConfChangeRefusal::UnknownChangeType { change_type, node_id }));
    }
    let entering_joint = changes_voters(tracker, change);
    let mut changed = Changed { config: tracker.config.clone(), progress: tracker.progress.clone() };
    if entering_joint {
        changed.config.voters.outgoing = changed.config.voters.incoming.clone();
        changed.config.auto_leave = true;
    }
    for single in &change.changes {
        apply_single(&mut changed, single, last_index, tracker.max_inflight);
    }
    if changed.config.voters.incoming.is_empty() {
        return Err(invalid(ConfChangeRefusal::NoVoterLeft));
    }
    check_invariants(&changed)?;
    Ok(changed)
}

fn leave_joint(tracker: &ProgressTracker) -> Result<Changed> {
    if !tracker.config.voters.is_joint() {
        return Err(invalid(ConfChangeRefusal::NotInJointConfiguration));
    }
    let mut changed = Changed { config: tracker.config.clone(), progress: tracker.progress.clone() };
    let learners_next = std::mem::take(&mut changed.config.learners_next);
    for id in learners_next {
        changed.config.learners.insert(id);
        if let Some(pr) = changed.progress.get_mut(&id) {
            pr.is_learner = true;
        }
    }
    changed.config.voters.outgoing = MajorityConfig::default();
    changed.config.auto_leave = false;
    let members = changed.config.all_ids();
    changed.progress.retain(|id, _| members.contains(id));
    check_invariants(&changed)?;
    Ok(changed)
}

fn apply_single(changed: &mut Changed, single: &ConfChangeSingle, last_index: u64, max_inflight: usize) {
    let id = single.node_id;
    let config = &mut changed.config;
    let mut incoming: std::collections::BTreeSet<u64> = config.voters.incoming.ids().clone();
    match single.change_type() {
        ConfChangeType::AddVoter => {
            config.learners.remove(&id);
            config.learners_next.remove(&id);
            incoming.insert(id);
        }
        ConfChangeType::AddLearner => {
            incoming.remove(&id);
            // A voter of the outgoing half keeps voting there until the joint
            // configuration is left, then turns into a learner.
            if config.voters.outgoing.contains(id) {
                config.learners_next.insert(id);
            } else {
                config.learners.insert(id);
            }
        }
        ConfChangeType::Remove => {
            incoming.remove(&id);
            config.learners.remove(&id);
            config.learners_next.remove(&id);
        }
    }
    config.voters.incoming = MajorityConfig::new(incoming);
    let is_learner = config.learners.contains(&id);
    let member = config.all_ids().contains(&id);
    if !member {
        changed.progress.remove(&id);
        return;
    }
    changed.progress.entry(id).and_modify(|pr| pr.is_learner = is_learner).or_insert_with(|| {
        // Start probing at the leader's last entry; recently active so that a new
        // member is not counted against CheckQuorum before it could answer.
        let mut pr = Progress::new(last_index.max(1), max_inflight, is_learner);
        pr.recent_active = true;
        pr
    });
}

fn check_invariants(changed: &Changed) -> Result<()> {
    let config = &changed.config;
    for id in &config.learners {
        if config.voters.contains(*id) {
            return Err(invalid(ConfChangeRefusal::VoterAndLearner { node_id: *id }));
        }
    }
    for id in &config.learners_next {
        if !config.voters.outgoing.contains(*id) || config.voters.incoming.contains(*id) {
            return Err(invalid(ConfChangeRefusal::LearnerNextNotOutgoingVoter { node_id: *id }));
        }
    }
    for id in config.all_ids() {
        if !changed.progress.contains_key(&id) {
            return Err(invalid(ConfChangeRefusal::MemberWithoutProgress { node_id: id }));
        }
    }
    Ok(())
}
