//! What a store tells the placement driver about its regions: for every region it leads,
//! the descriptor, the replicas still catching up, the region's approximate size and its
//! traffic.
//!
//! Traffic counters are cumulative since the peer started: the reporter owns the clock
//! and turns differences between two reports into rates, so the runtime never reads
//! time for this.

use crate::proto::{
    command::{Write, write},
    metadata::{self, Region},
};
use crate::raft::ProgressState;

use super::operation::ReadResponse;
use super::peer::Peer;

/// A follower whose log is further than this many entries behind the leader's commit
/// index (or that is probing or receiving a snapshot, or is a learner that did not
/// answer within the last election timeout) has not caught up: promoting it would leave
/// the new configuration waiting for it.
const PENDING_LAG_ENTRIES: u64 = 64;

/// Bytes and keys a region's leader wrote and served, counted since the peer started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub written_bytes: u64,
    pub written_keys: u64,
    pub read_bytes: u64,
    pub read_keys: u64,
}

impl Traffic {
    pub(crate) fn count_writes(&mut self, writes: &[Write]) {
        for write in writes {
            let (bytes, keys) = match &write.kind {
                Some(write::Kind::Put(put)) => (put.key.len() + put.value.len(), 1),
                Some(write::Kind::Delete(delete)) => (delete.key.len(), 1),
                Some(write::Kind::DeleteRange(range)) => (range.start_key.len() + range.end_key.len(), 1),
                Some(write::Kind::CompareAndSwap(cas)) => {
                    (cas.key.len() + cas.new_value.as_ref().map_or(0, Vec::len), 1)
                }
                Some(write::Kind::Prewrite(prewrite)) => (
                    prewrite.mutations.iter().map(|mutation| mutation.key.len() + mutation.value.len()).sum(),
                    prewrite.mutations.len(),
                ),
                Some(write::Kind::Commit(commit)) => {
                    (commit.keys.iter().map(Vec::len).sum(), commit.keys.len())
                }
                Some(write::Kind::Rollback(rollback)) => {
                    (rollback.keys.iter().map(Vec::len).sum(), rollback.keys.len())
                }
                Some(write::Kind::CheckTxnStatus(check)) => (check.primary.len(), 1),
                Some(write::Kind::TxnHeartBeat(heart_beat)) => (heart_beat.primary.len(), 1),
                // Garbage collection's bookkeeping, not user traffic.
                Some(write::Kind::TxnFence(_)) | None => (0, 0),
            };
            self.written_bytes += bytes as u64;
            self.written_keys += keys as u64;
        }
    }

    pub(crate) fn count_read(&mut self, response: &ReadResponse) {
        match response {
            ReadResponse::Value(value) => {
                self.read_bytes += value.as_ref().map_or(0, Vec::len) as u64;
                self.read_keys += 1;
            }
            ReadResponse::Version(version) => {
                self.read_bytes += version.as_ref().map_or(0, |version| version.value.len()) as u64;
                self.read_keys += 1;
            }
            ReadResponse::Locked(_) | ReadResponse::Refreshed(_) => self.read_keys += 1,
            ReadResponse::Pairs(pairs) => {
                self.read_bytes += pairs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum::<u64>();
                self.read_keys += pairs.len() as u64;
            }
            ReadResponse::Versions(pairs) => {
                let bytes = pairs.iter().map(|(key, version)| (key.len() + version.value.len()) as u64);
                self.read_bytes += bytes.sum::<u64>();
                self.read_keys += pairs.len() as u64;
            }
        }
    }
}

/// One region, as its leader sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionReport {
    pub region: Region,
    pub term: u64,
    pub leader: metadata::Peer,
    /// Replicas that have not caught up with the leader.
    pub pending_peers: Vec<metadata::Peer>,
    /// From the last size check (zero until the region's first check).
    pub approximate_keys: u64,
    pub approximate_bytes: u64,
    pub traffic: Traffic,
}

/// A store's regions: how many it holds, and a report for each one it leads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreReport {
    pub regions: u64,
    /// Replicas that are hibernating.
    pub hibernating: u64,
    /// Awake replicas that know no leader of their region (an election under way, or a
    /// region that lost its quorum).
    pub without_leader: u64,
    pub leaders: Vec<RegionReport>,
    /// Replicas that have known no leader for `leader_missing_report_ticks`: perhaps
    /// removed from their region while this store was away.
    pub leaderless: Vec<LeaderlessReplica>,
}

/// A replica that has known no leader for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderlessReplica {
    pub region_id: u64,
    pub peer_id: u64,
    /// The membership version of the region as this replica knows it (0: it never
    /// received its region's state).
    pub conf_version: u64,
}

impl StoreReport {
    pub(crate) fn merge(&mut self, other: StoreReport) {
        self.regions += other.regions;
        self.hibernating += other.hibernating;
        self.without_leader += other.without_leader;
        self.leaders.extend(other.leaders);
        self.leaderless.extend(other.leaderless);
    }
}

impl Peer {
    /// This leader's report of its region.
    pub(crate) fn report(&self) -> RegionReport {
        let raft = self.raft_status();
        let committed = raft.commit_index;
        let pending_peers = self
            .region
            .peers
            .iter()
            .filter(|peer| peer.id != self.peer_id)
            .filter(|peer| {
                self.raft_progress().find(|(id, _)| *id == peer.id).is_none_or(|(_, progress)| {
                    progress.state != ProgressState::Replicate
                        || progress.matched + PENDING_LAG_ENTRIES < committed
                        || (progress.is_learner && !progress.recent_active)
                })
            })
            .copied()
            .collect();
        RegionReport {
            region: self.region.clone(),
            term: raft.term,
            leader: metadata::Peer { id: self.peer_id, store_id: self.store_id, role: 0 },
            pending_peers,
            approximate_keys: self.size.0,
            approximate_bytes: self.size.1,
            traffic: self.traffic,
        }
    }
}
