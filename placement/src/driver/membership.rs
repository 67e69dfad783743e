//! The driver's own membership: replicas that join a running driver, and their
//! promotion once caught up.
//!
//! Joining follows Raft's rule for adding servers (thesis §4.2.1): a new replica first
//! receives the log as a learner, with no vote, so that a quorum never waits on a server
//! that is far behind; the leader makes it a voter once it has caught up and is
//! answering. One membership change at a time: the store refuses a second while one is
//! pending.
//!
//! The leader records a member (address and join token) before adding it, so every
//! replica that applies the change can already address it. The join token, chosen by
//! the joiner and kept in its data directory, makes a join idempotent: a join retried
//! from the same directory (an answer lost, a crash before the id was kept, a change
//! that timed out) finds its member and finishes adding it. A replica that lost its data
//! has a new token and an address already taken; it is refused rather than given a
//! voter's id with an empty log, which could elect a leader without committed entries.
//! Members cannot be removed yet.

use tessera_engine::proto::metadata::{PeerRole, RegionEpoch};
use tessera_engine::raft::proto::ConfChangeType;
use tessera_engine::region;

use super::{PlacementDriver, Shared};
use crate::errors::{InvalidRequest, PdError, Unavailability};
use crate::metadata::{self, METADATA_REGION};
use crate::proto::MemberRecord;

/// Longest address a member may give (a host name and a port).
const MAX_ADDRESS_BYTES: usize = 256;

/// Longest join token a replica may choose.
const MAX_TOKEN_BYTES: usize = 64;

/// Ids the allocator may have to skip to get above the founding members' ids.
const MAX_SKIPPED_IDS: u64 = 1 << 16;

/// One replica of the driver, as the leader sees the membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty if the member's address is not recorded yet (a founding member whose
    /// leader has not written it).
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
            .or_else(|| self.metadata.local_member(member_id).map(|record| record.address))
    }

    fn add_member(&self, address: &str, join_token: &str) -> Result<(u64, Vec<Member>), PdError> {
        if address.is_empty() || address.len() > MAX_ADDRESS_BYTES {
            return Err(InvalidRequest::AddressLength { bytes: address.len(), max: MAX_ADDRESS_BYTES }.into());
        }
        if join_token.is_empty() || join_token.len() > MAX_TOKEN_BYTES {
            return Err(InvalidRequest::TokenLength { bytes: join_token.len(), max: MAX_TOKEN_BYTES }.into());
        }
        let _writer = self.writer.lock();
        self.with_leader(|_| Ok(()))?;
        // The region as applied here, under the writer lock: its epoch is current.
        let region = self.metadata.region().ok_or_else(|| self.not_leader())?;
        let epoch = region::epoch(&region);
        if let Some(unknown) = region.peers.iter().find(|peer| self.member_address(peer.id).is_none()) {
            // The new member could not answer it.
            return Err(Unavailability::NoRecordedAddress { member_id: unknown.id }.into());
        }
        let records = self.metadata.local_members()?;
        let id = match records.iter().find(|(_, record)| record.join_token == join_token) {
            Some((id, _)) => *id,
            None => {
                if let Some((taken_by, _)) = records.iter().find(|(_, record)| record.address == address) {
                    let address = address.to_string();
                    return Err(InvalidRequest::AddressTaken { address, member_id: *taken_by }.into());
                }
                let highest =
                    region.peers.iter().map(|p| p.id).chain(records.iter().map(|(id, _)| *id)).max();
                let id = self.new_member_id(epoch, highest.unwrap_or(0))?;
                let record =
                    MemberRecord { address: address.to_string(), join_token: join_token.to_string() };
                self.metadata.write(epoch, vec![metadata::put_member(id, &record)])?;
                id
            }
        };
        if !region.peers.iter().any(|peer| peer.id == id) {
            self.metadata.change_member(epoch, ConfChangeType::AddLearner, id)?;
        }
        Ok((id, self.members()?))
    }

    /// An id for a new member, above every id the metadata region has had (a store
    /// never recreates a removed peer under an id not above its tombstone's); the
    /// founding members chose theirs, usually small, outside the allocator.
    fn new_member_id(&self, epoch: RegionEpoch, highest: u64) -> Result<u64, PdError> {
        let first = self.ids.allocate(&self.metadata, epoch, 1)?[0];
        if first > highest {
            return Ok(first);
        }
        let skip = highest - first + 1;
        if skip > MAX_SKIPPED_IDS {
            return Err(InvalidRequest::MemberIdsAboveAllocator { highest, first }.into());
        }
        let ids = self.ids.allocate(&self.metadata, epoch, skip)?;
        ids.last().copied().filter(|&id| id > highest).ok_or(Unavailability::NoIdAbove { highest }.into())
    }

    /// Records the addresses this replica was started with that the metadata lack (a
    /// founding member's), so that replicas joining later learn them. Runs every
    /// scheduling round: a failed write is retried.
    pub(super) fn record_member_addresses(&self, epoch: RegionEpoch) {
        let Ok(records) = self.metadata.local_members() else { return };
        let missing: Vec<_> = self
            .config
            .member_addresses
            .iter()
            .filter(|(id, _)| !records.iter().any(|(recorded, _)| recorded == *id))
            .map(|(&id, address)| {
                metadata::put_member(
                    id,
                    &MemberRecord { address: address.clone(), join_token: String::new() },
                )
            })
            .collect();
        if !missing.is_empty() {
            let _ = self.metadata.write(epoch, missing);
        }
    }

    /// Makes a learner of the metadata region a voter once it has caught up and is
    /// answering (a learner that went silent would only weaken the quorum), one at a
    /// time.
    pub(super) fn promote_caught_up_members(&self) {
        let Ok(report) = self.metadata.store().report() else { return };
        let Some(led) = report.leaders.iter().find(|led| led.region.id == METADATA_REGION) else { return };
        let caught_up = led.region.peers.iter().find(|peer| {
            peer.role == PeerRole::Learner as i32 && !led.pending_peers.iter().any(|p| p.id == peer.id)
        });
        if let Some(learner) = caught_up {
            // Retried on the next round if it fails (a change already pending, an
            // epoch that moved).
            let epoch = region::epoch(&led.region);
            let _ = self.metadata.change_member(epoch, ConfChangeType::AddVoter, learner.id);
        }
    }
}

impl PlacementDriver {
    /// Adds a replica listening at `address` to the driver, as a learner that the leader
    /// promotes once it caught up; `join_token` identifies the joiner across retries.
    /// Returns its member id and every member.
    pub fn add_member(&self, address: &str, join_token: &str) -> Result<(u64, Vec<Member>), PdError> {
        self.shared.add_member(address, join_token)
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
