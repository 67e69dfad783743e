//! Membership changes: one peer added (as a voter or a learner) or removed per command.
//!
//! - Propose: the whole epoch must be current; a store may hold only one peer of a
//!   region. The change becomes a Raft membership change (joint consensus when it
//!   touches voters) whose context carries the peer's descriptor.
//! - Apply: the Raft core applies the change (or refuses it identically everywhere);
//!   the descriptor's peers and membership version follow, written with the
//!   configuration Raft now has.
//! - After apply: a peer no longer in the configuration is destroyed by the worker
//!   ([`SideEffect::Destroy`]).

use prost::Message as _;

use crate::proto::command::{ChangePeer, RaftCommand};
use crate::proto::metadata::{self, PeerRole};
use crate::raft::LogPosition;
use crate::raft::proto::{ConfChange, ConfChangeSingle, ConfChangeType, ConfState, Entry};
use crate::region::{self, EpochCheck};
use crate::storage::ApplyBatch;
use crate::storage::EngineError;
use crate::store::errors::{EntryKind, InvalidChange, StoreError};
use crate::store::peer::Peer;

use super::{Applied, SideEffect};

impl Peer {
    pub(super) fn propose_conf_change(
        &mut self,
        command: &RaftCommand,
        change: &ChangePeer,
    ) -> Result<LogPosition, StoreError> {
        let requested = command.epoch.unwrap_or_default();
        region::check_epoch(&self.region, requested, EpochCheck::Admin)?;
        let peer = change.peer.ok_or(InvalidChange::NoPeer)?;
        let adding = change.change_type != ConfChangeType::Remove as i32;
        if adding && self.region.peers.iter().any(|p| p.store_id == peer.store_id && p.id != peer.id) {
            return Err(
                InvalidChange::StoreHoldsPeer { store_id: peer.store_id, region_id: self.region_id }.into()
            );
        }
        let conf_change = ConfChange {
            changes: vec![ConfChangeSingle { change_type: change.change_type, node_id: peer.id }],
            context: peer.encode_to_vec(),
        };
        self.raw.propose_conf_change(&conf_change).map_err(|error| self.raft_refusal(error))
    }

    pub(super) fn apply_conf_change(
        &mut self,
        entry: &Entry,
        batch: &mut ApplyBatch,
        effects: &mut Vec<SideEffect>,
    ) -> Result<Applied, EngineError> {
        let change = match ConfChange::decode(entry.data.as_slice()) {
            Ok(change) => change,
            Err(source) => {
                let (index, expected) = (entry.index, EntryKind::MembershipChange);
                return Ok(Applied::Refused(StoreError::MalformedEntry { index, expected, source }));
            }
        };
        let conf_state = match self.raw.apply_conf_change(&change) {
            Ok(conf_state) => conf_state,
            // Refused identically on every replica: nothing changes.
            Err(error) => return Ok(Applied::Refused(StoreError::Raft(error))),
        };
        let region = self.region_after(&change);
        log_membership_change(&region, &change);
        self.raw.storage_mut().set_region_state(region.clone(), conf_state.clone(), &mut batch.batch)?;
        self.set_region(region);
        if !is_member(&conf_state, self.peer_id) {
            effects.push(SideEffect::Destroy);
        }
        Ok(Applied::Done(Vec::new()))
    }

    /// The region's descriptor once `change` applied: the peer added with its role, or
    /// removed, and the next membership version.
    fn region_after(&mut self, change: &ConfChange) -> metadata::Region {
        let mut region = self.region.clone();
        let (Some(single), Ok(peer)) =
            (change.changes.first(), metadata::Peer::decode(change.context.as_slice()))
        else {
            return region;
        };
        region.peers.retain(|p| p.id != peer.id);
        match single.change_type() {
            ConfChangeType::AddVoter => {
                region.peers.push(metadata::Peer { role: PeerRole::Voter as i32, ..peer })
            }
            ConfChangeType::AddLearner => {
                region.peers.push(metadata::Peer { role: PeerRole::Learner as i32, ..peer })
            }
            ConfChangeType::Remove => {}
        }
        let mut epoch = region::epoch(&region);
        epoch.conf_version += 1;
        region.epoch = Some(epoch);
        self.known_peers.insert(peer.id, peer);
        region
    }
}

fn log_membership_change(region: &metadata::Region, change: &ConfChange) {
    let Some(single) = change.changes.first() else { return };
    let voters = region.peers.iter().filter(|p| p.role() == PeerRole::Voter).count();
    tracing::info!(
        region_id = region.id,
        change = ?single.change_type(),
        peer_id = single.node_id,
        voters,
        replicas = region.peers.len(),
        conf_version = region::epoch(region).conf_version,
        "membership change applied"
    );
}

impl Peer {
    /// Whether the membership this replica applied no longer has it, in any role
    /// (outgoing voters of a joint configuration included: they still count for its
    /// quorums): a removal applied whose destruction did not happen. A replica that
    /// never received its region's state knows no members and is not counted as removed.
    pub(crate) fn removed_from_its_region(&self) -> bool {
        let conf_state = self.raw.conf_state();
        !self.region.peers.is_empty()
            && members(&conf_state).next().is_some()
            && !is_member(&conf_state, self.peer_id)
    }

    /// Whether this replica's applied membership is joint with it among the outgoing
    /// voters: it still counts for the region's quorums until the region leaves it.
    pub(crate) fn outgoing_voter(&self) -> bool {
        self.raw.conf_state().voters_outgoing.contains(&self.peer_id)
    }
}

/// Every member of the configuration, in any role.
fn members(conf_state: &ConfState) -> impl Iterator<Item = &u64> {
    conf_state
        .voters
        .iter()
        .chain(&conf_state.learners)
        .chain(&conf_state.voters_outgoing)
        .chain(&conf_state.learners_next)
}

/// Whether `peer_id` is in the configuration, in any role.
fn is_member(conf_state: &ConfState, peer_id: u64) -> bool {
    members(conf_state).any(|&id| id == peer_id)
}
