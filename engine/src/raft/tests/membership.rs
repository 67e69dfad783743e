//! Membership changes (§4): learners (§4.2.1, non-voting members catching up), joint
//! consensus for every change of voters (§4.3), removing the leader (§4.2.2), and the
//! refusal of changes that are invalid or that overlap another.

use std::collections::BTreeSet;

use super::harness::{ELECTION_TICKS, Network, config, drain, single};
use crate::raft::proto::{ConfChange, ConfChangeSingle, ConfChangeType, ConfState, MessageType};
use crate::raft::{Error, MemStorage, Role};

fn voters(net: &Network, id: u64) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let voters = &net.raft(id).tracker.config.voters;
    (voters.incoming.ids().clone(), voters.outgoing.ids().clone())
}

fn set(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

/// 1, 2, 3 vote; 4 joins with an empty log as a learner and catches up.
fn with_learner_4() -> Network {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.propose(1, b"before 4");
    net.stabilize();
    net.add_node(config(4), MemStorage::new());
    net.raw(1).propose_conf_change(&single(ConfChangeType::AddLearner, 4)).unwrap();
    net.stabilize();
    net
}

/// §4.2.1: a new server joins as a non-voting member: it receives the log (here first
/// the snapshot carrying the founding configuration, then the entries), but it never
/// campaigns and nobody asks for its vote.
#[test]
fn a_learner_receives_the_log_but_neither_votes_nor_counts() {
    let mut net = with_learner_4();
    for id in 1..=4 {
        let config = &net.raft(id).tracker.config;
        assert_eq!(config.learners, set(&[4]), "replica {id} knows 4 as a learner");
        assert_eq!(voters(&net, id), (set(&[1, 2, 3]), set(&[])), "replica {id}");
    }
    assert_eq!(net.node(4).snapshots_installed, 1);
    assert_eq!(net.node(4).applied_data(), vec![b"before 4".to_vec()]);

    // Never campaigns, however long it hears nothing.
    net.isolate(4);
    let term = net.raft(4).term;
    for _ in 0..5 * ELECTION_TICKS {
        net.tick(4);
    }
    assert_eq!((net.raft(4).role, net.raft(4).term), (Role::Follower, term));
    assert!(drain(&mut net.raw(4).raft).is_empty());

    // A voter's campaign does not ask it either.
    net.heal();
    net.isolate(1);
    net.raw(2).campaign();
    net.stabilize();
    assert_eq!(net.count_delivered(2, 4, MessageType::RequestVote), 0);
}

/// Learners are not counted for commitment: with voters 2 and 3 cut off, the leader and
/// two learners store an entry (three of five members), but it does not commit.
#[test]
fn learners_do_not_count_towards_a_commit() {
    let mut net = Network::with_config(&[1, 2, 3], &[4, 5], |_| {});
    net.elect(1);
    net.isolate(2);
    net.isolate(3);
    let index = net.propose(1, b"x");
    net.stabilize();
    let progress = &net.raft(1).tracker.progress;
    assert!(progress[&4].matched >= index && progress[&5].matched >= index);
    assert_eq!(net.raft(1).log.committed, index - 1);
    net.heal();
    net.heartbeat(1);
    assert_eq!(net.raft(1).log.committed, index);
    for id in 1..=5 {
        assert_eq!(net.node(id).applied_data(), vec![b"x".to_vec()], "replica {id}");
    }
}

/// A group whose founding configuration is joint (old voters 1, 4, 5; new 1, 2, 3) and
/// is left only on request.
fn joint_group() -> Network {
    let conf = ConfState { voters: vec![1, 2, 3], voters_outgoing: vec![1, 4, 5], ..Default::default() };
    let mut net = Network::empty();
    for id in 1..=5 {
        net.add_node(config(id), MemStorage::new_bootstrapped(1, conf.clone()));
    }
    net
}

/// §4.3: in the joint configuration "agreement (for elections and entry commitment)
/// requires separate majorities from both the old and new configurations".
#[test]
fn joint_consensus_needs_majorities_of_both_configurations() {
    let mut net = joint_group();
    net.isolate(4);
    net.isolate(5);
    net.raw(1).campaign();
    net.stabilize();
    assert_ne!(net.raft(1).role, Role::Leader, "1, 2 and 3 are no majority of 1, 4, 5");
    net.heal();
    net.isolate(2);
    net.isolate(3);
    net.raw(1).campaign();
    net.stabilize();
    assert_ne!(net.raft(1).role, Role::Leader, "1, 4 and 5 are no majority of 1, 2, 3");
    net.heal();
    net.isolate(3);
    net.isolate(5);
    net.raw(1).campaign();
    net.stabilize();
    assert_eq!(net.raft(1).role, Role::Leader, "1, 2 and 4 are a majority of both");

    net.heal();
    net.isolate(4);
    net.isolate(5);
    let index = net.propose(1, b"x");
    net.stabilize();
    assert_eq!(net.raft(1).log.committed, index - 1, "stored by all of the new voters only");
    net.heal();
    net.isolate(2);
    net.isolate(3);
    net.isolate(5);
    net.heartbeat(1);
    assert_eq!(net.raft(1).log.committed, index, "now also on 4: 1 and 4 are a majority of the old voters");
}

/// §4.3: promoting a learner changes the voters, so it goes through a joint
/// configuration (old and new voters both decide); the leader leaves it on its own once
/// the entering entry is applied, and every replica ends with the new voters.
#[test]
fn promoting_a_learner_passes_through_a_joint_configuration_the_leader_leaves() {
    let mut net = with_learner_4();
    net.raw(1).propose_conf_change(&single(ConfChangeType::AddVoter, 4)).unwrap();
    net.stabilize();
    for id in 1..=4 {
        let changes = &net.node(id).conf_states;
        let n = changes.len();
        assert!(n >= 3, "replica {id} applied: {changes:?}");
        let joint = &changes[n - 2];
        assert_eq!((set(&joint.voters), set(&joint.voters_outgoing)), (set(&[1, 2, 3, 4]), set(&[1, 2, 3])));
        assert!(joint.auto_leave);
        let left = &changes[n - 1];
        assert_eq!(left, &ConfState { voters: vec![1, 2, 3, 4], ..Default::default() }, "replica {id}");
        assert_eq!(voters(&net, id), (set(&[1, 2, 3, 4]), set(&[])));
    }
    assert!(net.raft(4).promotable());

    // 4 now counts: with 3 and 2 gone, 1 and 4 are not a majority of four...
    net.isolate(2);
    net.isolate(3);
    let index = net.propose(1, b"y");
    net.stabilize();
    assert_eq!(net.raft(1).log.committed, index - 1);
    // ... but 1, 2 and 4 are.
    net.heal();
    net.isolate(3);
    net.heartbeat(1);
    assert_eq!(net.raft(1).log.committed, index);
}

/// §4.2.2: the leader can be removed. It keeps leading through the joint configuration,
/// steps down once the configuration without it is applied, and the remaining voters
/// elect a leader among themselves.
#[test]
fn removing_the_leader_hands_the_group_to_the_remaining_voters() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.raw(1).propose_conf_change(&single(ConfChangeType::Remove, 1)).unwrap();
    net.stabilize();
    assert_eq!(net.raft(1).role, Role::Follower, "the removed leader stepped down");
    let seen_by_1 = &net.node(1).conf_states;
    assert_eq!(seen_by_1.len(), 2, "entered the joint configuration, then left it: {seen_by_1:?}");
    assert_eq!(
        (set(&seen_by_1[0].voters), set(&seen_by_1[0].voters_outgoing)),
        (set(&[2, 3]), set(&[1, 2, 3]))
    );
    for id in 1..=3 {
        assert_eq!(voters(&net, id), (set(&[2, 3]), set(&[])), "replica {id}");
    }
    assert!(!net.raft(1).promotable());

    let mut ticks = 0;
    while net.leader().is_none_or(|id| id == 1) {
        net.tick_all();
        ticks += 1;
        assert!(ticks < 10 * ELECTION_TICKS, "no new leader");
    }
    let leader = net.leader().unwrap();
    assert!(leader == 2 || leader == 3);
    assert_eq!(net.raft(1).role, Role::Follower, "1 never campaigns again");
    net.propose(leader, b"z");
    net.stabilize();
    for id in [2, 3] {
        assert_eq!(net.node(id).applied_data(), vec![b"z".to_vec()], "replica {id}");
    }
}

/// Changes that do not make sense against the current configuration are refused, and
/// nothing is appended.
#[test]
fn invalid_membership_changes_are_refused() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    let last = net.raft(1).log.last_index();
    let remove_all = ConfChange {
        changes: [1, 2, 3]
            .into_iter()
            .map(|id| ConfChangeSingle { change_type: ConfChangeType::Remove as i32, node_id: id })
            .collect(),
        ..Default::default()
    };
    let invalid = [
        ("leaving a joint configuration that is not joint", ConfChange::default()),
        ("node id 0", single(ConfChangeType::AddVoter, 0)),
        ("removing every voter", remove_all),
    ];
    for (case, change) in invalid {
        let result = net.raw(1).propose_conf_change(&change);
        assert!(matches!(result, Err(Error::InvalidConfChange(_))), "{case}: {result:?}");
    }
    assert_eq!(net.raft(1).log.last_index(), last);
}

/// §4.1: one change at a time. A second change is refused while the first is not yet
/// applied, and while the group is in a joint configuration.
#[test]
fn a_second_change_while_one_is_pending_is_refused() {
    let mut net = with_learner_4();
    net.raw(1).propose_conf_change(&single(ConfChangeType::AddLearner, 5)).unwrap();
    let second = net.raw(1).propose_conf_change(&single(ConfChangeType::AddLearner, 6));
    assert_eq!(second.unwrap_err(), Error::ConfChangeInProgress);
    net.stabilize();

    // Enter a joint configuration, and stop delivering before it is left.
    net.raw(1).propose_conf_change(&single(ConfChangeType::AddVoter, 4)).unwrap();
    for _ in 0..100 {
        if !voters(&net, 1).1.is_empty() {
            break;
        }
        let messages = net.take_messages();
        net.deliver(messages);
    }
    assert_eq!(voters(&net, 1).1, set(&[1, 2, 3]), "the leader is in the joint configuration");
    let during_joint = net.raw(1).propose_conf_change(&single(ConfChangeType::AddLearner, 6));
    assert_eq!(during_joint.unwrap_err(), Error::ConfChangeInProgress);
    net.stabilize();
    assert!(voters(&net, 1).1.is_empty());
    assert!(net.raw(1).propose_conf_change(&single(ConfChangeType::AddLearner, 6)).is_ok());

    // A joint configuration that is left only on request: no other change before that.
    let mut net = joint_group();
    net.elect(1);
    let change = net.raw(1).propose_conf_change(&single(ConfChangeType::AddLearner, 6));
    assert_eq!(change.unwrap_err(), Error::ConfChangeInProgress);
    net.raw(1).propose_conf_change(&ConfChange::default()).unwrap();
    net.stabilize();
    assert_eq!(voters(&net, 1), (set(&[1, 2, 3]), set(&[])));
    assert!(net.raw(1).propose_conf_change(&single(ConfChangeType::AddLearner, 6)).is_ok());
}
