//! Frames from other stores: Raft messages of many regions and coalesced heartbeats.
//!
//! Nothing in a frame is trusted: a message whose ids are missing or inconsistent is
//! dropped, a snapshot must decode and be of the region it is addressed to, and a
//! message for a region with no peer here creates one only if it is a new member's
//! first append or snapshot, the region was not removed from this store, and no region
//! here claims any of its keys (two peers on one store must never write the same keys).
//! A snapshot claims its range before Raft sees it, and gives the claim back if Raft
//! refuses it (`super::super::ranges`): the check and the claim are one step, so two
//! overlapping snapshots handled by two workers at once cannot both install.

use rocksdb::WriteBatch;

use crate::failpoint::{self, points};
use crate::metrics::{METRICS, SnapshotFailure};
use crate::proto::frame::{HeartbeatEntry, RegionMessage, StoreFrame};
use crate::proto::metadata::{self, PeerState, RegionLocalState};
use crate::raft::proto::{Message, MessageType};
use crate::region::KeyRange;
use crate::storage::Defect;
use crate::storage::snapshot;
use crate::storage::{Cf, PeerStorage, keys};
use crate::store::heartbeat::expand;

use super::{Worker, fail_stop};

/// Whether a region message's ids are set and consistent. A snapshot's payload is
/// checked by [`snapshot_range`]; Raft checks the rest.
fn well_formed(message: &RegionMessage) -> bool {
    let (Some(from), Some(to), Some(raft)) = (&message.from_peer, &message.to_peer, &message.message) else {
        return false;
    };
    message.region_id != 0 && from.id != 0 && to.id != 0 && raft.from == from.id && raft.to == to.id
}

/// The key range a snapshot message would install, if it would install cleanly
/// ([`snapshot::check`]: an install that fails stops the store, so nothing that could
/// fail one gets past here).
fn snapshot_range(region_id: u64, message: &Message) -> Result<(Vec<u8>, Vec<u8>), Defect> {
    let snapshot = message.snapshot.as_ref().ok_or(Defect::Missing)?;
    let checked = snapshot::check(region_id, snapshot)?;
    Ok((checked.region.start_key, checked.region.end_key))
}

impl Worker {
    pub(super) fn on_inbound(&mut self, frame: StoreFrame) {
        for message in frame.messages {
            self.on_region_message(message);
        }
        METRICS.messages_received.count(MessageType::Heartbeat, frame.heartbeats.len() as u64);
        METRICS
            .messages_received
            .count(MessageType::HeartbeatResponse, frame.heartbeat_responses.len() as u64);
        for entry in frame.heartbeats {
            self.on_heartbeat(frame.from_store, entry);
        }
        for entry in frame.heartbeat_responses {
            let Some(peer) = self.peers.get_mut(&entry.region_id) else { continue };
            if peer.peer_id != entry.to_peer_id {
                continue;
            }
            let _ = peer.step(expand(&entry, MessageType::HeartbeatResponse));
            self.dirty.insert(entry.region_id);
        }
    }

    fn on_region_message(&mut self, message: RegionMessage) {
        if !well_formed(&message) {
            return;
        }
        let (Some(from_peer), Some(to_peer), Some(raft_message)) =
            (message.from_peer, message.to_peer, message.message)
        else {
            return;
        };
        let region_id = message.region_id;
        if to_peer.store_id != self.config.store_id {
            return;
        }
        METRICS.messages_received.count(raft_message.msg_type(), 1);
        // A snapshot is decoded once, here: it must be of the addressed region.
        let snapshot_range = match raft_message.msg_type() {
            MessageType::Snapshot => match snapshot_range(region_id, &raft_message) {
                Ok(range) => Some(range),
                Err(defect) => {
                    tracing::warn!(
                        region_id,
                        from_store_id = from_peer.store_id,
                        %defect,
                        "refused a snapshot that would not install"
                    );
                    METRICS.snapshot_failed(SnapshotFailure::Rejected);
                    return;
                }
            },
            _ => None,
        };
        let creates = matches!(raft_message.msg_type(), MessageType::Append | MessageType::Snapshot);
        let present = self.peers.contains_key(&region_id)
            || (creates
                && !failpoint::hit(points::STORE_DROP_CREATING_MESSAGES)
                && self.maybe_create_peer(region_id, to_peer.id, &message.start_key, &message.end_key));
        if !present || self.peers.get(&region_id).is_none_or(|peer| peer.peer_id != to_peer.id) {
            return;
        }
        let snapshot_claim = match &snapshot_range {
            Some(range) => match self.claim_for_snapshot(region_id, range) {
                Some(new_claim) => new_claim,
                None => return,
            },
            None => false,
        };
        let Some(peer) = self.peers.get_mut(&region_id) else { return };
        let snapshot_index =
            raft_message.snapshot.as_ref().and_then(|s| s.metadata.as_ref()).map(|m| m.index);
        peer.learn_peer(from_peer);
        peer.wake();
        let from_peer_id = from_peer.id;
        // A malformed or stale message is refused by Raft; the node carries on.
        let _ = peer.step(raft_message);
        peer.heard_from(from_peer_id);
        if let Some(range) = snapshot_range
            && snapshot_claim
            && peer.pending_snapshot_index() != snapshot_index
        {
            // Raft refused the snapshot: its range is not this replica's to claim.
            self.ranges.release(region_id, KeyRange::new(&range.0, &range.1));
        }
        self.dirty.insert(region_id);
    }

    /// Claims a snapshot's range for its region before Raft may accept it: `None` if
    /// another region here claims part of it (installing it would make two regions here
    /// cover the same keys), else whether the claim is new.
    fn claim_for_snapshot(&self, region_id: u64, range: &(Vec<u8>, Vec<u8>)) -> Option<bool> {
        let range = KeyRange::new(&range.0, &range.1);
        if range.is_inverted() {
            tracing::warn!(region_id, "refused a snapshot whose range ends before it starts");
            METRICS.snapshot_failed(SnapshotFailure::Rejected);
            return None;
        }
        match self.ranges.claim(region_id, range) {
            Ok(new_claim) => Some(new_claim),
            Err(other_region_id) => {
                tracing::info!(
                    region_id,
                    other_region_id,
                    "refused a snapshot that overlaps another region here"
                );
                METRICS.snapshot_failed(SnapshotFailure::Rejected);
                None
            }
        }
    }

    fn on_heartbeat(&mut self, from_store: u64, entry: HeartbeatEntry) {
        let Some(peer) = self.peers.get_mut(&entry.region_id) else { return };
        if peer.peer_id != entry.to_peer_id {
            return;
        }
        // A heartbeat's sender is on the store that sent the frame: a peer that knows
        // nothing of its region yet (created empty, waiting for its first snapshot) can
        // answer it, and the answer unblocks the leader's probe.
        peer.learn_peer(metadata::Peer { id: entry.from_peer_id, store_id: from_store, role: 0 });
        let _ = peer.step(expand(&entry, MessageType::Heartbeat));
        peer.heard_from(entry.from_peer_id);
        if entry.hibernate && peer.leader_id() == entry.from_peer_id && peer.term() == entry.term {
            peer.hibernating = true;
        } else {
            peer.wake();
        }
        self.dirty.insert(entry.region_id);
    }

    /// A message for a region with no peer here: create an empty peer if the message
    /// says one should exist (a new member's first append or snapshot), unless the
    /// region was removed from this store.
    fn maybe_create_peer(&mut self, region_id: u64, peer_id: u64, start: &[u8], end: &[u8]) -> bool {
        let range = KeyRange::new(start, end);
        // A claim of the region itself without a peer: a split here has just created
        // it and its state is being written; the split starts the peer.
        if range.is_inverted()
            || self.ranges.holds(region_id)
            || self.ranges.overlapping(region_id, range).is_some()
        {
            // A region here still covers part of it: most likely the parent that has not
            // applied its split yet, which will create this peer itself.
            return false;
        }
        let state: Option<RegionLocalState> =
            match self.engine.get_message(Cf::Meta, &keys::region_state_key(region_id)) {
                Ok(state) => state,
                // Unreadable state: never create over it.
                Err(_) => return false,
            };
        if let Some(state) = state {
            if state.state == PeerState::Tombstone as i32 && state.peer_id >= peer_id {
                return false;
            }
            if state.state != PeerState::Tombstone as i32 {
                // Persisted but not started: a split's new half not yet applied here.
                return false;
            }
        }
        if self.ranges.claim(region_id, range).is_err() {
            // Claimed by another worker's region since the check above.
            return false;
        }
        let mut batch = WriteBatch::default();
        if let Err(error) = PeerStorage::initialize_empty(&self.engine, region_id, peer_id, &mut batch)
            .and_then(|()| self.engine.write(batch, true))
        {
            fail_stop(&format!("creating a peer of region {region_id}"), error);
        }
        self.start_peer(region_id, true, false);
        true
    }
}
