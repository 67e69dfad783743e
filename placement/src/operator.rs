//! Operators: what the placement driver asks a region's leader to do, one step at a
//! time. Every change of replicas is add-learner, then promote (joint consensus), then
//! remove, so that a region never has fewer copies than it needs while it moves.

use tessera_engine::storage::proto::Peer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OperatorKind {
    ReplicaRepair,
    BalanceRegion,
    BalanceLeader,
    HotRegion,
}

impl OperatorKind {
    /// The name used in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            OperatorKind::ReplicaRepair => "replica-repair",
            OperatorKind::BalanceRegion => "balance-region",
            OperatorKind::BalanceLeader => "balance-leader",
            OperatorKind::HotRegion => "hot-region",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    AddLearner { peer: Peer },
    PromoteLearner { peer: Peer },
    RemovePeer { peer: Peer },
    TransferLeader { to_store: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub region_id: u64,
    pub kind: OperatorKind,
    pub steps: Vec<Step>,
}
