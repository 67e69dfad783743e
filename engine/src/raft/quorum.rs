//! Quorum arithmetic for simple majorities and joint consensus.
//!
//! A [`JointConfig`] is two majority configurations, incoming and outgoing; outside a
//! membership change the outgoing one is empty. Every decision (commit, election, lease,
//! read confirmation) needs a majority of each non-empty half (§4.3 of the thesis).

use std::collections::BTreeSet;

/// Outcome of counting votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VoteResult {
    /// Not decided yet: missing votes could still swing it either way.
    Pending,
    Lost,
    Won,
}

/// A set of voters that decides by simple majority.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MajorityConfig {
    voters: BTreeSet<u64>,
}

impl MajorityConfig {
    pub(crate) fn new(voters: impl IntoIterator<Item = u64>) -> MajorityConfig {
        MajorityConfig { voters: voters.into_iter().collect() }
    }

    pub(crate) fn ids(&self) -> &BTreeSet<u64> {
        &self.voters
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.voters.contains(&id)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    /// The largest value acknowledged by a majority, given each voter's acknowledged
    /// value (`None` counts as 0). An empty configuration imposes no constraint, which is
    /// what a joint configuration with no outgoing half needs: `u64::MAX`.
    pub(crate) fn committed_index(&self, acked: impl Fn(u64) -> Option<u64>) -> u64 {
        if self.voters.is_empty() {
            return u64::MAX;
        }
        let mut values: Vec<u64> = self.voters.iter().map(|&id| acked(id).unwrap_or(0)).collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values[self.voters.len() / 2]
    }

    pub(crate) fn vote_result(&self, vote: impl Fn(u64) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut granted, mut missing) = (0, 0);
        for &id in &self.voters {
            match vote(id) {
                Some(true) => granted += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let quorum = self.voters.len() / 2 + 1;
        if granted >= quorum {
            VoteResult::Won
        } else if granted + missing >= quorum {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

/// Incoming and outgoing voter sets; a decision needs a majority of both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JointConfig {
    pub incoming: MajorityConfig,
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    #[cfg(test)]
    pub(crate) fn new(voters: impl IntoIterator<Item = u64>) -> JointConfig {
        JointConfig { incoming: MajorityConfig::new(voters), outgoing: MajorityConfig::default() }
    }

    pub(crate) fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// Every voter of either half.
    pub(crate) fn ids(&self) -> BTreeSet<u64> {
        self.incoming.ids().union(self.outgoing.ids()).copied().collect()
    }

    pub(crate) fn committed_index(&self, acked: impl Fn(u64) -> Option<u64>) -> u64 {
        let index = self.incoming.committed_index(&acked).min(self.outgoing.committed_index(&acked));
        // Both halves empty: nothing can be decided.
        if index == u64::MAX { 0 } else { index }
    }

    pub(crate) fn vote_result(&self, vote: impl Fn(u64) -> Option<bool>) -> VoteResult {
        match (self.incoming.vote_result(&vote), self.outgoing.vote_result(&vote)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_commit_is_the_median_acknowledgement() {
        let config = MajorityConfig::new([1, 2, 3]);
        let acked = |id| [(1, 5), (2, 3), (3, 9)].iter().find(|(i, _)| *i == id).map(|(_, v)| *v);
        assert_eq!(config.committed_index(acked), 5);
        let five = MajorityConfig::new([1, 2, 3, 4, 5]);
        assert_eq!(five.committed_index(|id| if id <= 2 { Some(7) } else { None }), 0);
        assert_eq!(five.committed_index(|id| if id <= 3 { Some(7) } else { None }), 7);
    }

    #[test]
    fn joint_commit_needs_both_majorities() {
        let mut joint = JointConfig::new([1, 2, 3]);
        joint.outgoing = MajorityConfig::new([3, 4, 5]);
        // 1, 2 and 3 acknowledged 10: a majority of the incoming half only.
        let acked = |id| if id <= 3 { Some(10) } else { Some(1) };
        assert_eq!(joint.committed_index(acked), 1);
        let acked = |id| if id <= 4 { Some(10) } else { Some(1) };
        assert_eq!(joint.committed_index(acked), 10);
    }

    #[test]
    fn votes_are_pending_until_decided() {
        let config = MajorityConfig::new([1, 2, 3]);
        assert_eq!(config.vote_result(|id| (id == 1).then_some(true)), VoteResult::Pending);
        assert_eq!(config.vote_result(|id| (id <= 2).then_some(true)), VoteResult::Won);
        assert_eq!(config.vote_result(|id| if id == 1 { Some(true) } else { Some(false) }), VoteResult::Lost);
        let mut joint = JointConfig::new([1, 2, 3]);
        joint.outgoing = MajorityConfig::new([4, 5, 6]);
        assert_eq!(joint.vote_result(|id| (id <= 3).then_some(true)), VoteResult::Pending);
        assert_eq!(joint.vote_result(|id| Some(id <= 4)), VoteResult::Lost);
        assert_eq!(joint.vote_result(|id| Some(id != 3 && id != 6)), VoteResult::Won);
    }
}
