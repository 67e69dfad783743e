//! Operators: what the placement driver asks a region's leader to do, one step at a
//! time. Every change of replicas is add-learner, then promote (joint consensus), then
//! remove, so that a region never has fewer copies than it needs while it moves.

use tessera_engine::proto::metadata::{Peer, PeerRole};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum OperatorKind {
    ReplicaRepair,
    BalanceRegion,
    BalanceLeader,
    HotRegion,
    /// A replica moved to spread a region over the location labels' failure domains.
    Location,
    /// A split asked for by an operator of the cluster (stores split oversized regions on
    /// their own).
    Split,
    /// A leader transfer asked for by an operator of the cluster.
    TransferLeader,
    /// A replica moved from one store to another, asked for by an operator of the cluster.
    MovePeer,
}

impl OperatorKind {
    /// The name used in metrics and logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            OperatorKind::ReplicaRepair => "replica_repair",
            OperatorKind::BalanceRegion => "balance_region",
            OperatorKind::BalanceLeader => "balance_leader",
            OperatorKind::HotRegion => "hot_region",
            OperatorKind::Location => "location",
            OperatorKind::Split => "split",
            OperatorKind::TransferLeader => "transfer_leader",
            OperatorKind::MovePeer => "move_peer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    AddLearner { peer: Peer },
    PromoteLearner { peer: Peer },
    RemovePeer { peer: Peer },
    TransferLeader { to_store: u64 },
    Split { key: Vec<u8> },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::AddLearner { peer } => write!(f, "add learner {} on store {}", peer.id, peer.store_id),
            Step::PromoteLearner { peer } => {
                write!(f, "promote learner {} on store {}", peer.id, peer.store_id)
            }
            Step::RemovePeer { peer } => write!(f, "remove peer {} on store {}", peer.id, peer.store_id),
            Step::TransferLeader { to_store } => write!(f, "transfer leader to store {to_store}"),
            Step::Split { key } => write!(f, "split at {}", String::from_utf8_lossy(key)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Operator {
    pub region_id: u64,
    pub kind: OperatorKind,
    pub steps: Vec<Step>,
}

/// The steps that move a region's replica `leaving` to store `to_store` as a new peer
/// `new_peer_id`: add it as a learner, promote it, remove the old one. A leader does not
/// remove itself, so when `leaving` leads (its store is `leader_store`) the region is
/// first handed to another of `peers`' voters; `None` if there is none.
pub(crate) fn move_replica_steps(
    peers: &[Peer],
    leader_store: Option<u64>,
    leaving: Peer,
    new_peer_id: u64,
    to_store: u64,
) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    if leader_store == Some(leaving.store_id) {
        let heir =
            peers.iter().find(|p| p.store_id != leaving.store_id && p.role == PeerRole::Voter as i32)?;
        steps.push(Step::TransferLeader { to_store: heir.store_id });
    }
    let learner = Peer { id: new_peer_id, store_id: to_store, role: PeerRole::Learner as i32 };
    steps.push(Step::AddLearner { peer: learner });
    steps.push(Step::PromoteLearner { peer: Peer { role: PeerRole::Voter as i32, ..learner } });
    steps.push(Step::RemovePeer { peer: leaving });
    Some(steps)
}
