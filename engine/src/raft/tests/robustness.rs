//! Messages no correct peer sends: each gets a typed error and leaves the replica as it
//! was. A corrupt or hostile frame must never crash a node.

use super::harness::{Network, message};
use crate::raft::proto::{
    ConfChange, ConfChangeSingle, ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata,
};
use crate::raft::{Error, Role};

fn leader_and_followers() -> Network {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.propose(1, b"a");
    net.stabilize();
    net
}

fn assert_invalid(net: &mut Network, to: u64, bad: Message) {
    let before = (net.raft(to).term, net.raft(to).log.last_index(), net.raft(to).log.committed);
    let result = net.raw(to).step(bad.clone());
    assert!(matches!(result, Err(Error::InvalidMessage(_))), "{bad:?} gave {result:?}");
    let after = (net.raft(to).term, net.raft(to).log.last_index(), net.raft(to).log.committed);
    assert_eq!(before, after, "a rejected message must change nothing");
}

fn append_from_leader(net: &Network, entries: Vec<Entry>) -> Message {
    let leader = net.raft(1);
    let (index, term) = (leader.log.last_index(), leader.log.last_term());
    Message { index, log_term: term, entries, ..message(1, 2, MessageType::Append, leader.term) }
}

#[test]
fn appends_with_entries_out_of_order_are_rejected() {
    let mut net = leader_and_followers();
    let last = net.raft(1).log.last_index();
    let term = net.raft(1).term;
    let gap = vec![Entry { index: last + 2, term, ..Default::default() }];
    let bad = append_from_leader(&net, gap);
    assert_invalid(&mut net, 2, bad);
    let backwards = vec![Entry { index: last - 1, term, ..Default::default() }];
    let bad = append_from_leader(&net, backwards);
    assert_invalid(&mut net, 2, bad);
    let future_term = vec![Entry { index: last + 1, term: term + 5, ..Default::default() }];
    let bad = append_from_leader(&net, future_term);
    assert_invalid(&mut net, 2, bad);
    let overflow =
        Message { index: u64::MAX, entries: vec![Entry::default()], ..append_from_leader(&net, vec![]) };
    assert_invalid(&mut net, 2, overflow);
}

#[test]
fn unknown_message_types_are_rejected() {
    let mut net = leader_and_followers();
    let term = net.raft(2).term;
    let unknown = Message { msg_type: 99, ..message(1, 2, MessageType::Append, term) };
    assert_invalid(&mut net, 2, unknown);
}

#[test]
fn malformed_snapshots_are_rejected() {
    let mut net = leader_and_followers();
    let term = net.raft(1).term;
    let snapshot_message = |index: u64, snapshot_term: u64, conf_state: Option<ConfState>| Message {
        snapshot: Some(Snapshot {
            data: Vec::new(),
            metadata: Some(SnapshotMetadata { conf_state, index, term: snapshot_term }),
        }),
        ..message(1, 2, MessageType::Snapshot, term)
    };
    let voters = Some(ConfState { voters: vec![1, 2, 3], ..Default::default() });
    assert_invalid(&mut net, 2, snapshot_message(100, term, None));
    assert_invalid(&mut net, 2, snapshot_message(u64::MAX, term, voters.clone()));
    assert_invalid(&mut net, 2, snapshot_message(100, 0, voters.clone()));
    assert_invalid(&mut net, 2, snapshot_message(100, term + 1, voters));
    assert_invalid(&mut net, 2, Message { snapshot: None, ..message(1, 2, MessageType::Snapshot, term) });
}

#[test]
fn a_heartbeat_committing_beyond_the_log_is_rejected() {
    let mut net = leader_and_followers();
    let term = net.raft(1).term;
    let commit = net.raft(2).log.last_index() + 10;
    assert_invalid(&mut net, 2, Message { commit, ..message(1, 2, MessageType::Heartbeat, term) });
}

#[test]
fn an_absurd_rejection_hint_does_not_crash_the_leader() {
    let mut net = leader_and_followers();
    let term = net.raft(1).term;
    let next = net.raft(1).tracker.progress[&2].next_index;
    let rejection = Message {
        index: next - 1,
        reject: true,
        reject_hint: u64::MAX,
        log_term: u64::MAX,
        ..message(2, 1, MessageType::AppendResponse, term)
    };
    net.raw(1).step(rejection).unwrap();
    assert_eq!(net.raft(1).role, Role::Leader);
    net.propose(1, b"b");
    net.stabilize();
    assert_eq!(net.raft(2).log.committed, net.raft(1).log.committed, "replication carries on");
}

#[test]
fn membership_changes_of_an_unknown_kind_are_refused() {
    let mut net = leader_and_followers();
    let change =
        ConfChange { changes: vec![ConfChangeSingle { change_type: 42, node_id: 4 }], ..Default::default() };
    let result = net.raw(1).propose_conf_change(&change);
    assert!(matches!(result, Err(Error::InvalidConfChange(_))), "{result:?}");
}
