//! Starting the operator steps the driver hands a region's leader.
//!
//! Steps are proposed and not awaited. The driver repeats the current step with every
//! heartbeat until it sees it done, so a step started here is not started again for
//! `retry_interval`: long enough for it to take effect, short enough to retry one that
//! was lost (a leader change, a full proposal queue).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prost::Message;

use tessera_engine::proto::metadata::{Peer, PeerRole, Region};
use tessera_engine::raft::proto::ConfChangeType;
use tessera_engine::region;
use tessera_engine::store::{IdAllocator, Store};

use crate::proto::{OperatorStep, operator_step};

pub(crate) struct StepRunner {
    retry_interval: Duration,
    /// Steps started, by region and encoded step.
    started: HashMap<(u64, Vec<u8>), Instant>,
}

impl StepRunner {
    pub(crate) fn new(retry_interval: Duration) -> StepRunner {
        StepRunner { retry_interval, started: HashMap::new() }
    }

    /// `ids` names a split's new region and peers (the store's pool, never the network).
    pub(crate) fn run(&mut self, store: &Store, ids: &dyn IdAllocator, region: &Region, step: OperatorStep) {
        let now = Instant::now();
        self.started.retain(|_, at| now.duration_since(*at) < self.retry_interval);
        let key = (region.id, step.encode_to_vec());
        if self.started.contains_key(&key) {
            return;
        }
        let Some(kind) = step.kind else { return };
        self.started.insert(key, now);
        let epoch = region::epoch(region);
        let change = |change_type: ConfChangeType, peer: Peer, role: PeerRole| {
            region::change_peer_command(change_type, Peer { role: role as i32, ..peer })
        };
        // Outcomes are not awaited: the driver sees them in the next heartbeats.
        match kind {
            operator_step::Kind::AddLearner(peer) => {
                store.admin(region.id, epoch, change(ConfChangeType::AddLearner, peer, PeerRole::Learner));
            }
            operator_step::Kind::PromoteLearner(peer) => {
                store.admin(region.id, epoch, change(ConfChangeType::AddVoter, peer, PeerRole::Voter));
            }
            operator_step::Kind::RemovePeer(peer) => {
                let role = PeerRole::try_from(peer.role).unwrap_or(PeerRole::Voter);
                store.admin(region.id, epoch, change(ConfChangeType::Remove, peer, role));
            }
            operator_step::Kind::TransferLeader(peer) => {
                store.transfer_leader(region.id, peer.id);
            }
            operator_step::Kind::SplitKey(split_key) => {
                let Ok(ids) = ids.allocate(region::split_id_count(region)) else { return };
                let Some(split) = region::split_command(split_key, &ids) else { return };
                store.admin(region.id, epoch, split);
            }
        }
    }
}
