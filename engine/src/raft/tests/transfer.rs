//! Leadership transfer (§3.10) and how a replica that is not the leader refuses
//! leader-only requests.

use super::harness::{ELECTION_TICKS, Network, single};
use crate::raft::proto::{ConfChangeType, MessageType};
use crate::raft::{Error, ReadMode, Role, TransferRefusal};

/// §3.10: the leader "sends a TimeoutNow request to the target server. This request has
/// the same effect as the target server's election timer firing": it campaigns at once
/// and wins, even though the voters heard from the old leader a moment ago.
#[test]
fn timeout_now_makes_the_target_campaign_and_win() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| {
        c.check_quorum = true;
        c.pre_vote = true;
    });
    net.elect(1);
    net.heartbeat(1);
    net.raw(1).transfer_leader(2).unwrap();
    net.stabilize();
    assert_eq!(net.count_delivered(1, 2, MessageType::TimeoutNow), 1);
    assert_eq!((net.raft(2).role, net.raft(2).term), (Role::Leader, 3));
    assert_eq!((net.raft(1).role, net.raft(1).leader_id), (Role::Follower, 2));
    assert_eq!(net.raft(3).leader_id, 2);
}

/// §3.10: "the prior leader ... must first bring the target server's log up to date",
/// then sends TimeoutNow.
#[test]
fn transfer_to_a_lagging_target_first_catches_it_up() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    let index = net.propose(1, b"a");
    net.stabilize();
    net.heal();
    net.raw(1).transfer_leader(3).unwrap();
    let out = net.take_messages();
    assert!(out.iter().all(|m| m.msg_type() != MessageType::TimeoutNow), "not before 3 holds \"a\"");
    net.deliver(out);
    net.stabilize();
    assert_eq!(net.count_delivered(1, 3, MessageType::TimeoutNow), 1);
    assert_eq!(net.raft(3).role, Role::Leader);
    assert!(net.raft(3).log.last_index() > index, "it leads with \"a\" in its log");
    net.stabilize();
    assert_eq!(net.node(3).applied_data(), vec![b"a".to_vec()]);
}

/// While leadership is being handed over the old leader takes no proposals (§3.10:
/// "the prior leader stops accepting new client requests"); a transfer that does not
/// finish within an election timeout is abandoned and proposals resume.
#[test]
fn proposals_during_a_transfer_are_refused_until_it_is_abandoned() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(2);
    net.propose(1, b"2 misses this");
    net.stabilize();
    net.raw(1).transfer_leader(2).unwrap();
    let refused = Error::LeaderTransferInProgress { transferee: 2 };
    assert_eq!(net.raw(1).propose(b"a".to_vec()).unwrap_err(), refused);
    let change = single(ConfChangeType::AddLearner, 4);
    assert_eq!(net.raw(1).propose_conf_change(&change).unwrap_err(), refused);

    for _ in 0..ELECTION_TICKS {
        net.tick_all();
    }
    assert_eq!(net.raft(1).role, Role::Leader, "2 is cut off: no transfer happened");
    assert!(net.raw(1).propose(b"a".to_vec()).is_ok(), "the transfer was abandoned");
}

/// A transfer is refused while a membership change is in flight: the target could be
/// campaigning under a configuration about to change.
#[test]
fn transfer_is_refused_while_a_membership_change_is_pending() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.raw(1).propose_conf_change(&single(ConfChangeType::AddLearner, 4)).unwrap();
    assert_eq!(net.raw(1).transfer_leader(2), Err(Error::ConfChangeInProgress));
    net.stabilize();
    assert_eq!(net.raw(1).transfer_leader(2), Ok(()), "accepted once the change is applied");
}

#[test]
fn transfer_to_itself_or_a_non_voter_is_refused() {
    let mut net = Network::with_config(&[1, 2, 3], &[4], |_| {});
    net.elect(1);
    let refused = |target, reason| Err(Error::TransferRefused { target, reason });
    assert_eq!(net.raw(1).transfer_leader(1), refused(1, TransferRefusal::AlreadyLeader));
    assert_eq!(net.raw(1).transfer_leader(4), refused(4, TransferRefusal::NotAVoter), "4 is a learner");
    assert_eq!(net.raw(1).transfer_leader(9), refused(9, TransferRefusal::NotAVoter));
    assert!(net.raw(1).propose(b"a".to_vec()).is_ok(), "nothing is being transferred");
}

/// Every leader-only request on another replica fails with `NotLeader`, naming the
/// leader it knows of (§6.2: "if a client contacts a follower, the follower ... supplies
/// information about the most recent leader it has heard from").
#[test]
fn not_leader_errors_carry_the_leader_hint() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    let hint = Error::NotLeader { leader_hint: Some(1) };
    let follower = net.raw(2);
    assert_eq!(follower.propose(b"a".to_vec()).unwrap_err(), hint);
    assert_eq!(follower.propose_conf_change(&single(ConfChangeType::AddLearner, 4)).unwrap_err(), hint);
    assert_eq!(follower.read_index(b"r".to_vec(), ReadMode::Safe).unwrap_err(), hint);
    assert_eq!(follower.transfer_leader(3).unwrap_err(), hint);

    // A replica that knows no leader says so.
    let mut net = Network::new(&[1, 2, 3]);
    let no_hint = Error::NotLeader { leader_hint: None };
    assert_eq!(net.raw(2).propose(b"a".to_vec()).unwrap_err(), no_hint);
    net.isolate(2);
    net.raw(2).campaign();
    net.stabilize();
    assert_eq!(net.raft(2).role, Role::Candidate);
    assert_eq!(net.raw(2).read_index(b"r".to_vec(), ReadMode::Safe).unwrap_err(), no_hint);
}
