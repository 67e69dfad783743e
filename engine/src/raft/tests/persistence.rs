//! The persistence contract of `raw_node.rs`: what a replica promises is durable before
//! anyone hears of it (§3.8: "servers must persist their current term, vote and log
//! before responding"), while a leader may send its entries before writing them and
//! counts its own copy only once written (§10.2.1).

use super::harness::{Network, Node, conf_state, config, message, vote_request};
use crate::raft::proto::{Entry, Message, MessageType};
use crate::raft::{MemStorage, RawNode, Ready, Role};

fn raw_node(id: u64, voters: &[u64]) -> RawNode<MemStorage> {
    RawNode::new(config(id), MemStorage::new_bootstrapped(1, conf_state(voters, &[]))).unwrap()
}

/// Step 2 of the contract for a replica driven by hand: write the Ready to its storage.
fn persist(raw: &RawNode<MemStorage>, ready: &Ready) {
    let storage = &raw.raft.log.storage;
    if let Some(snapshot) = &ready.snapshot {
        storage.apply_snapshot(snapshot).unwrap();
    }
    storage.append(&ready.entries);
    if let Some(hard_state) = ready.hard_state {
        storage.set_hard_state(hard_state);
    }
}

fn types(messages: &[Message]) -> Vec<MessageType> {
    messages.iter().map(|m| m.msg_type()).collect()
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index).collect()
}

/// A vote is a promise: it goes out only once the vote (and term) are durable.
#[test]
fn vote_responses_wait_for_persistence() {
    let mut follower = raw_node(1, &[1, 2, 3]);
    follower.step(vote_request(2, 1, 2, 1, 1)).unwrap();
    let ready = follower.ready();
    assert!(ready.messages.is_empty(), "nothing may leave before the vote is written");
    assert_eq!(types(&ready.persisted_messages), vec![MessageType::RequestVoteResponse]);
    assert!(!ready.persisted_messages[0].reject);
    let hard_state = ready.hard_state.expect("the vote is persistent state");
    assert_eq!((hard_state.term, hard_state.vote), (2, 2));
    assert!(ready.must_sync);
    persist(&follower, &ready);
    follower.advance();
}

/// A candidate's own vote and new term are durable before it asks for votes.
#[test]
fn candidate_asks_for_votes_only_after_its_term_is_durable() {
    let mut candidate = raw_node(1, &[1, 2, 3]);
    candidate.campaign();
    let ready = candidate.ready();
    assert!(ready.messages.is_empty());
    assert_eq!(types(&ready.persisted_messages), vec![MessageType::RequestVote; 2]);
    let hard_state = ready.hard_state.unwrap();
    assert_eq!((hard_state.term, hard_state.vote), (2, 1));
    assert!(ready.must_sync);
}

/// An acknowledgement says "I hold these entries": it waits until they are written.
/// The leader's appends carry nothing it promised and leave at once.
#[test]
fn append_responses_wait_for_persistence_but_leader_appends_do_not() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    let index = net.propose(1, b"a");

    let leader_ready = net.raw(1).ready();
    assert_eq!(indexes(&leader_ready.entries), vec![index], "the leader still has to write it");
    let appends: Vec<Message> =
        leader_ready.messages.iter().filter(|m| m.msg_type() == MessageType::Append).cloned().collect();
    assert_eq!(appends.len(), 2, "and sends it meanwhile");
    assert!(appends.iter().all(|m| indexes(&m.entries) == vec![index]));
    assert!(leader_ready.persisted_messages.is_empty());

    net.raw(2).step(appends.into_iter().find(|m| m.to == 2).unwrap()).unwrap();
    let follower_ready = net.raw(2).ready();
    assert_eq!(indexes(&follower_ready.entries), vec![index]);
    assert!(follower_ready.messages.is_empty());
    assert_eq!(types(&follower_ready.persisted_messages), vec![MessageType::AppendResponse]);
    assert_eq!(follower_ready.persisted_messages[0].index, index);
    assert!(follower_ready.must_sync);
}

/// Entries are handed out for application only once committed *and* durable locally: a
/// follower told in one message of new entries and of their commitment writes them first.
#[test]
fn committed_entries_are_only_durable_ones() {
    let mut follower = raw_node(2, &[1, 2, 3]);
    let entries: Vec<Entry> = (2..=4).map(|i| super::harness::entry(i, 2)).collect();
    let append =
        Message { index: 1, log_term: 1, entries, commit: 4, ..message(1, 2, MessageType::Append, 2) };
    follower.step(append).unwrap();

    let ready = follower.ready();
    assert_eq!(indexes(&ready.entries), vec![2, 3, 4]);
    assert_eq!(ready.hard_state.unwrap().commit, 4, "the commit index is known...");
    assert!(ready.committed_entries.is_empty(), "...but the entries are not yet written");
    persist(&follower, &ready);
    follower.advance();

    let ready = follower.ready();
    assert_eq!(indexes(&ready.committed_entries), vec![2, 3, 4]);
    persist(&follower, &ready);
    follower.advance();
}

/// §10.2.1: the leader counts its own log towards a commit only once it is durable, so a
/// group of one commits a proposal only after the Ready holding it was advanced.
#[test]
fn single_voter_commits_only_after_advance() {
    let mut leader = raw_node(1, &[1]);
    leader.campaign();
    assert_eq!(leader.raft.role, Role::Leader, "a group of one elects itself at once");
    let ready = leader.ready();
    assert_eq!(indexes(&ready.entries), vec![2], "the no-op");
    assert!(ready.committed_entries.is_empty());
    assert_eq!(leader.raft.log.committed, 1, "not committed before it is written");
    persist(&leader, &ready);
    leader.advance();
    assert_eq!(leader.raft.log.committed, 2);
    let ready = leader.ready();
    assert_eq!(indexes(&ready.committed_entries), vec![2]);
    persist(&leader, &ready);
    leader.advance();

    let index = leader.propose(b"a".to_vec()).unwrap().index;
    let ready = leader.ready();
    assert_eq!(indexes(&ready.entries), vec![index]);
    assert!(ready.committed_entries.is_empty());
    assert_eq!(leader.raft.log.committed, index - 1);
    persist(&leader, &ready);
    leader.advance();
    assert_eq!(leader.raft.log.committed, index);
    let ready = leader.ready();
    assert_eq!(indexes(&ready.committed_entries), vec![index]);
    assert_eq!(ready.committed_entries[0].data, b"a");
    persist(&leader, &ready);
    leader.advance();
}

/// §10.2.1: followers' durable copies can commit an entry before the leader's own write
/// finishes; the leader still hands it out for application only once its copy is durable.
#[test]
fn leader_commits_on_followers_acks_but_applies_only_its_durable_entries() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    let index = net.propose(1, b"a");
    // Take the leader's appends as they would leave with its next Ready, without
    // handling that Ready yet.
    let appends = std::mem::take(&mut net.raw(1).raft.messages);
    net.deliver(appends);
    let acks: Vec<Message> = [2, 3].iter().flat_map(|&id| net.node_mut(id).handle_readies()).collect();
    net.deliver(acks);
    let leader = &net.raft(1);
    assert_eq!(leader.log.committed, index, "two followers hold it durably: committed");
    assert!(leader.log.persisted < index, "the leader's own copy is not written yet");

    let ready = net.raw(1).ready();
    assert_eq!(indexes(&ready.entries), vec![index]);
    assert!(ready.committed_entries.iter().all(|e| e.index < index), "not applied before written");
    persist(net.raw(1), &ready);
    net.raw(1).advance();
    let ready = net.raw(1).ready();
    assert_eq!(indexes(&ready.committed_entries), vec![index]);
    persist(net.raw(1), &ready);
    net.raw(1).advance();
}

/// A follower that crashes before writing what it received loses it, but it had
/// promised nothing: it never acknowledged, and the leader sends the entries again.
#[test]
fn follower_crash_before_persisting_loses_nothing_it_promised() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    let index = net.propose(1, b"a");
    let appends = net.take_messages();
    let (to_2, others): (Vec<Message>, Vec<Message>) = appends.into_iter().partition(|m| m.to == 2);
    net.deliver(to_2);
    let ready = net.raw(2).ready();
    assert_eq!(indexes(&ready.entries), vec![index]);
    assert_eq!(types(&ready.persisted_messages), vec![MessageType::AppendResponse]);
    // The crash: the Ready is neither written nor are its messages sent.
    drop(ready);
    net.restart(2);
    assert!(net.raft(2).log.last_index() < index, "the unwritten entry is gone");
    assert_eq!(net.raft(1).tracker.progress[&2].matched, index - 1, "and was never acknowledged");

    net.deliver(others);
    net.stabilize();
    net.heartbeat(1);
    assert_eq!(net.node(2).applied_data(), vec![b"a".to_vec()], "2 received it again");
    net.assert_applied_agree();
}

/// Restarting from storage restores the term, the vote and the log, and entries that
/// were committed but not yet applied are handed out again.
#[test]
fn restart_restores_hard_state_and_replays_unapplied_entries() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.propose(1, b"a");
    net.stabilize();
    net.heartbeat(1);
    let before = (net.raft(2).term, net.raft(2).vote, net.raft(2).log.committed);
    // Pretend the application of 2 lost its state machine: it restarts from applied 1.
    let node = net.nodes.remove(&2).unwrap();
    let mut restarted = Node::new(node.config.clone(), node.storage.clone());
    let raft = &restarted.raw.raft;
    assert_eq!((raft.term, raft.vote, raft.log.committed), before);
    restarted.handle_readies();
    assert_eq!(restarted.applied_data(), vec![b"a".to_vec()]);
}

/// A lone voter wins its election within one Ready. Its appends to learners must wait
/// until the new term is durable: if it crashed first, it could be elected for the same
/// term again after a restart and send different entries under it, and a learner would
/// keep the first ones as if they matched.
#[test]
fn a_lone_voter_speaks_in_a_new_term_only_once_it_is_durable() {
    let storage = MemStorage::new_bootstrapped(1, conf_state(&[1], &[2]));
    let mut raw = RawNode::new(crate::raft::Config { new_group: true, ..config(1) }, storage).unwrap();
    raw.campaign();
    assert_eq!(raw.raft.role, Role::Leader, "a lone voter wins at once");
    let ready = raw.ready();
    assert!(ready.hard_state.is_some_and(|hs| hs.term == 2 && hs.vote == 1));
    assert!(ready.messages.is_empty(), "sent before the term is durable: {:?}", types(&ready.messages));
    assert!(types(&ready.persisted_messages).contains(&MessageType::Append));
    persist(&raw, &ready);
    raw.advance();

    // Once the term is durable the leader's messages go out at once again.
    for _ in 0..super::harness::HEARTBEAT_TICKS {
        raw.tick();
    }
    let ready = raw.ready();
    assert!(ready.hard_state.is_none_or(|hs| hs.term == 2));
    assert!(types(&ready.messages).contains(&MessageType::Heartbeat));
}
