//! The driver's own membership: replicas that join a running driver, and their
//! promotion once caught up.
//!
//! Joining follows Raft's rule for adding servers (thesis §4.2.1): a new replica first
//! receives the log as a learner, with no vote, so that a quorum never waits on a server
//! that is far behind; the leader makes it a voter once its log has caught up. The
//! leader records the new member's address before adding it, so every replica that
//! applies the change can already address it. A retried join (the joiner crashed before
//! keeping its id, or lost the answer) gets the id it was given the first time.

use tessera_engine::raft::proto::ConfChangeType;
use tessera_engine::storage::proto::{PeerRole, RegionEpoch};

use super::{PlacementDriver, Shared};
use crate::errors::PdError;
use crate::metadata::{self, METADATA_REGION};

/// Longest address a member may give (a host name and a port).
const MAX_ADDRESS_BYTES: usize = 256;

/// One replica of the driver, as the leader sees the membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty if the member's address was never recorded (a founding member whose
    /// leader has not written it yet).
    pub address: String,
    pub voter: bool,
}

impl Shared {
    /// The metadata region's members, with their addresses.
    fn members(&self) -> Result<Vec<Member>, PdError> {
        let region = self.metadata.region().ok_or_else(|| self.not_leader())?;
        Ok(region
            .peers
            .iter()
            .map(|peer| Member {
                id: peer.id,
                address: self.member_address(peer.id).unwrap_or_default(),
                voter: peer.role == PeerRole::Voter as i32,
            })
            .collect())
    }

    pub(super) fn member_address(&self, member_id: u64) -> Option<String> {
        self.config
            .member_addresses
            .get(&member_id)
            .cloned()
            .or_else(|| self.metadata.local_member_address(member_id))
    }

    fn add_member(&self, address: &str) -> Result<(u64, Vec<Member>), PdError> {
        if address.is_empty() || address.len() > MAX_ADDRESS_BYTES {
            return Err(PdError::InvalidArgument(format!(
                "a member's address is 1 to {MAX_ADDRESS_BYTES} bytes, not {}",
                address.len()
            )));
        }
        let _writer = self.writer.lock();
        let epoch = self.epoch()?;
        self.with_leader(|_| Ok(()))?;
        let members = self.members()?;
        if let Some(existing) = members.iter().find(|member| member.address == address) {
            return Ok((existing.id, members));
        }
        // A member's id is its peer id in the metadata region: it must be above every
        // peer id the region has had (a store never recreates a removed peer under an
        // id not above its tombstone), and the founding members took small ids.
        let highest = members.iter().map(|member| member.id).max().unwrap_or(0);
        let mut id = 0;
        for _ in 0..=highest.min(16) {
            id = self.ids.allocate(&self.metadata, epoch, 1)?[0];
            if id > highest {
                break;
            }
        }
        if id <= highest {
            return Err(PdError::Unavailable("no member id above the current members' yet".into()));
        }
        self.metadata.write(epoch, vec![metadata::put_member(id, address)])?;
        self.metadata.change_member(epoch, ConfChangeType::AddLearner, id)?;
        let mut members = members;
        members.push(Member { id, address: address.to_string(), voter: false });
        Ok((id, members))
    }

    /// Records the addresses this replica was started with that the metadata lack, so
    /// that members joining later learn them.
    pub(super) fn record_member_addresses(&self, epoch: RegionEpoch, recorded: &[(u64, String)]) {
        let missing: Vec<_> = self
            .config
            .member_addresses
            .iter()
            .filter(|(id, address)| !recorded.iter().any(|(known, at)| known == *id && at == *address))
            .map(|(&id, address)| metadata::put_member(id, address))
            .collect();
        if !missing.is_empty() {
            // Retried by the next leader to load the metadata if this fails.
            let _ = self.metadata.write(epoch, missing);
        }
    }

    /// Makes a caught-up learner of the metadata region a voter, one at a time.
    pub(super) fn promote_caught_up_members(&self, epoch: RegionEpoch) {
        let Ok(report) = self.metadata.store().report() else { return };
        let Some(region) = report.leaders.iter().find(|led| led.region.id == METADATA_REGION) else { return };
        let caught_up = region.region.peers.iter().find(|peer| {
            peer.role == PeerRole::Learner as i32 && !region.pending_peers.iter().any(|p| p.id == peer.id)
        });
        if let Some(learner) = caught_up {
            // Retried on the next round if it fails (a change already pending, an
            // epoch that moved).
            let _ = self.metadata.change_member(epoch, ConfChangeType::AddVoter, learner.id);
        }
    }
}

impl PlacementDriver {
    /// Adds a replica listening at `address` to the driver, as a learner that the leader
    /// promotes once it caught up. Returns its member id and every member.
    pub fn add_member(&self, address: &str) -> Result<(u64, Vec<Member>), PdError> {
        self.shared.add_member(address)
    }

    /// Every member, as the leader knows them.
    pub fn members(&self) -> Result<Vec<Member>, PdError> {
        self.shared.with_leader(|_| Ok(()))?;
        self.shared.members()
    }

    /// A member's address, as this replica knows it (for addressing Raft messages and
    /// redirecting callers to the leader).
    pub fn member_address(&self, member_id: u64) -> Option<String> {
        self.shared.member_address(member_id)
    }
}
