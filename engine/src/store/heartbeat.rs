//! Outgoing messages of one round, grouped into one frame per destination store, with
//! heartbeats coalesced into compact entries.
//!
//! A store leading thousands of regions would otherwise send thousands of heartbeat
//! messages per tick to each peer store. Here every heartbeat of a round to one store
//! rides in that store's single frame, as a few integers each, and the answers come
//! back the same way.

use std::collections::BTreeMap;

use crate::failpoint::{self, points};
use crate::metrics::METRICS;
use crate::proto::frame::{HeartbeatEntry, RegionMessage, StoreFrame};
use crate::raft::proto::{Message, MessageType};

use super::peer::Peer;
use super::transport::Transport;

pub(crate) struct Outgoing {
    store_id: u64,
    frames: BTreeMap<u64, StoreFrame>,
}

impl Outgoing {
    pub(crate) fn new(store_id: u64) -> Outgoing {
        Outgoing { store_id, frames: BTreeMap::new() }
    }

    fn frame(&mut self, to_store: u64) -> &mut StoreFrame {
        let from_store = self.store_id;
        self.frames.entry(to_store).or_insert_with(|| StoreFrame {
            from_store,
            to_store,
            ..StoreFrame::default()
        })
    }

    /// Adds `peer`'s messages; a message to a peer whose store is unknown is dropped
    /// (Raft retries).
    pub(crate) fn add(&mut self, peer: &Peer, messages: Vec<Message>) {
        for message in messages {
            let Some(to_peer) = peer.descriptor_of(message.to) else { continue };
            // Lost on the way out while armed; Raft sends them again once heartbeats
            // show the follower behind. Tests hold entries uncommitted with it.
            if message.msg_type() == MessageType::Append
                && failpoint::hit(points::STORE_DROP_OUTGOING_APPENDS)
            {
                continue;
            }
            METRICS.messages_sent.count(message.msg_type(), 1);
            match message.msg_type() {
                MessageType::Heartbeat => {
                    let entry = heartbeat_entry(peer.region_id, &message, false);
                    self.frame(to_peer.store_id).heartbeats.push(entry);
                }
                MessageType::HeartbeatResponse => {
                    let entry = heartbeat_entry(peer.region_id, &message, false);
                    self.frame(to_peer.store_id).heartbeat_responses.push(entry);
                }
                kind => {
                    if kind == MessageType::Snapshot {
                        METRICS.snapshots_sent.increment(1);
                        tracing::info!(
                            region_id = peer.region_id,
                            to_peer_id = to_peer.id,
                            to_store_id = to_peer.store_id,
                            bytes = message.snapshot.as_ref().map_or(0, |s| s.data.len()),
                            "snapshot sent"
                        );
                    }
                    let region_message = RegionMessage {
                        region_id: peer.region_id,
                        from_peer: peer.descriptor_of(peer.peer_id),
                        to_peer: Some(to_peer),
                        epoch: peer.region.epoch,
                        message: Some(message),
                        start_key: peer.region.start_key.clone(),
                        end_key: peer.region.end_key.clone(),
                    };
                    self.frame(to_peer.store_id).messages.push(region_message);
                }
            }
        }
    }

    /// The heartbeat a leader sends when it hibernates its region: followers stop
    /// ticking on it.
    pub(crate) fn add_hibernation(&mut self, peer: &Peer) {
        let raft = peer.raft_status();
        for (id, progress) in peer.raft_progress() {
            if id == peer.peer_id {
                continue;
            }
            let Some(to_peer) = peer.descriptor_of(id) else { continue };
            let entry = HeartbeatEntry {
                region_id: peer.region_id,
                from_peer_id: peer.peer_id,
                to_peer_id: id,
                term: raft.term,
                commit: progress.matched.min(raft.commit_index),
                round: 0,
                hibernate: true,
            };
            self.frame(to_peer.store_id).heartbeats.push(entry);
            METRICS.messages_sent.count(MessageType::Heartbeat, 1);
        }
    }

    pub(crate) fn flush(&mut self, transport: &dyn Transport) {
        for (_, frame) in std::mem::take(&mut self.frames) {
            let heartbeats = frame.heartbeats.len() + frame.heartbeat_responses.len();
            if heartbeats > 0 {
                METRICS.heartbeats_per_frame.record(heartbeats as f64);
            }
            transport.send(frame);
        }
    }
}

fn heartbeat_entry(region_id: u64, message: &Message, hibernate: bool) -> HeartbeatEntry {
    HeartbeatEntry {
        region_id,
        from_peer_id: message.from,
        to_peer_id: message.to,
        term: message.term,
        commit: message.commit,
        round: message.heartbeat_round,
        hibernate,
    }
}

/// The Raft message a received heartbeat entry stands for.
pub(crate) fn expand(entry: &HeartbeatEntry, message_type: MessageType) -> Message {
    Message {
        msg_type: message_type as i32,
        from: entry.from_peer_id,
        to: entry.to_peer_id,
        term: entry.term,
        commit: entry.commit,
        heartbeat_round: entry.round,
        ..Message::default()
    }
}
