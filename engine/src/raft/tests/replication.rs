//! Log replication (§3.5 / §5.3), the commitment rule (§3.6.2 / §5.4.2, Figure 8) and
//! the leader's pacing of replication (§10.2: pipelining with flow control; fast
//! backtracking).

use super::harness::{
    ELECTION_TICKS, Network, conf_state, config, drain, entry, log_of, message, new_raft, storage_with_log,
};
use crate::failpoint::{self, Action, points};
use crate::raft::Role;
use crate::raft::proto::{HardState, Message, MessageType};
use crate::raft::tracker::ProgressState;

fn append(from: u64, to: u64, term: u64, prev: (u64, u64), entries: &[(u64, u64)], commit: u64) -> Message {
    Message {
        index: prev.0,
        log_term: prev.1,
        entries: entries.iter().map(|&(index, term)| entry(index, term)).collect(),
        commit,
        ..message(from, to, MessageType::Append, term)
    }
}

/// §5.3: a follower accepts an AppendEntries whose previous entry it holds, appends the
/// entries and acknowledges the last one; if it does not hold the previous entry (the
/// consistency check fails) it refuses and its log is untouched.
#[test]
fn follower_appends_entries_and_acknowledges() {
    let mut follower = new_raft(config(2), storage_with_log(conf_state(&[1, 2, 3], &[]), &[2]));
    follower.step(append(1, 2, 2, (2, 2), &[(3, 2), (4, 2)], 3)).unwrap();
    assert_eq!(log_of(&follower), vec![(2, 2), (3, 2), (4, 2)]);
    assert_eq!(follower.log.committed, 3, "commit follows the leader's, up to the last new entry");
    let ack = drain(&mut follower).pop().unwrap();
    assert_eq!((ack.msg_type(), ack.to, ack.index, ack.reject), (MessageType::AppendResponse, 1, 4, false));

    follower.step(append(1, 2, 2, (6, 2), &[(7, 2)], 3)).unwrap();
    let refusal = drain(&mut follower).pop().unwrap();
    assert!(refusal.reject, "the follower does not hold entry 6");
    assert_eq!(refusal.index, 6);
    assert_eq!(log_of(&follower), vec![(2, 2), (3, 2), (4, 2)], "a refused append changes nothing");
}

/// §5.3: "If an existing entry conflicts with a new one (same index but different
/// terms), delete the existing entry and all that follow it." Entries that match are
/// kept: a delayed, shorter append must not erase what a later one added.
#[test]
fn conflicting_suffix_is_truncated_and_replaced() {
    let storage = storage_with_log(conf_state(&[1, 2, 3], &[]), &[2, 2, 2]);
    storage.set_hard_state(HardState { term: 3, vote: 0, commit: 1 });
    let mut follower = new_raft(config(2), storage);
    assert_eq!(log_of(&follower), vec![(2, 2), (3, 2), (4, 2)]);

    // A stale copy of an earlier append: everything in it is already held.
    follower.step(append(1, 2, 3, (1, 1), &[(2, 2)], 1)).unwrap();
    assert_eq!(log_of(&follower), vec![(2, 2), (3, 2), (4, 2)], "matching entries are kept");

    follower.step(append(1, 2, 3, (2, 2), &[(3, 3)], 1)).unwrap();
    assert_eq!(log_of(&follower), vec![(2, 2), (3, 3)], "entry 3 conflicted: it and 4 are replaced");
    let ack = drain(&mut follower).pop().unwrap();
    assert_eq!((ack.index, ack.reject), (3, false));
}

/// Figure 7: a new leader (term 8) meets followers with missing entries (a, b), extra
/// uncommitted entries (c, d) or both (e, f). By the consistency check and its
/// backtracking it brings every log to equal its own.
#[test]
fn figure7_followers_converge_on_the_new_leaders_log() {
    // The paper's logs from index 1; ours start after the bootstrap entry at index 1.
    let logs: [(u64, &[u64]); 7] = [
        (1, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6]),
        (2, &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        (3, &[1, 1, 1, 4]),
        (4, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        (5, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        (6, &[1, 1, 1, 4, 4, 4, 4]),
        (7, &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    let conf = conf_state(&[1, 2, 3, 4, 5, 6, 7], &[]);
    let mut net = Network::empty();
    for (id, terms) in logs {
        let storage = storage_with_log(conf.clone(), terms);
        if id == 1 {
            storage.set_hard_state(HardState { term: 7, vote: 0, commit: 1 });
        }
        net.add_node(config(id), storage);
    }
    net.raw(1).campaign();
    net.stabilize();
    assert_eq!((net.raft(1).role, net.raft(1).term), (Role::Leader, 8), "a, b, e and f vote for it");

    let leader_log = log_of(net.raft(1));
    assert_eq!(leader_log.last(), Some(&(12, 8)), "its no-op follows its log");
    for id in 2..=7 {
        assert_eq!(log_of(net.raft(id)), leader_log, "follower {id}");
        assert_eq!(net.node(id).applied_index, 12, "follower {id} applied everything");
    }
    net.assert_applied_agree();
}

/// §5.3 (the optimization the paper sketches) / §10.2: a follower's refusal names the
/// term of its conflicting entry and where that term starts, so the leader skips a
/// whole term per round trip instead of one entry.
#[test]
fn fast_backtracking_needs_one_round_trip_per_term_not_per_entry() {
    let conf = conf_state(&[1, 2, 3], &[]);
    // Leader and 3: 2..=4 of term 2, 5..=14 of term 3. Follower 2: 2..=16 all of term 2,
    // a 12-entry suffix that conflicts with the leader's.
    let leader_terms: Vec<u64> = [2, 2, 2].into_iter().chain(std::iter::repeat_n(3, 10)).collect();
    let mut net = Network::empty();
    net.add_node(config(1), storage_with_log(conf.clone(), &leader_terms));
    net.add_node(config(2), storage_with_log(conf.clone(), &[2; 15]));
    net.add_node(config(3), storage_with_log(conf, &leader_terms));
    net.raw(1).campaign();
    net.stabilize();
    assert_eq!(net.raft(1).role, Role::Leader);

    let refusals = net
        .delivered
        .iter()
        .filter(|m| m.from == 2 && m.msg_type() == MessageType::AppendResponse && m.reject)
        .count();
    assert_eq!(refusals, 1, "one refusal skips the follower's whole term-2 suffix");
    assert_eq!(log_of(net.raft(2)), log_of(net.raft(1)));
    assert_eq!(net.node(2).applied_index, 15);
}

/// Figure 8, steps (a) to (c): the entry at index 3 ("x", term 2) ends up stored on
/// a majority (1, 2, 3) while leader 1 leads term 4 and its own no-op (index 4) is only
/// on 1 and 2. Returns the network at (c).
fn figure8_up_to_c(commit_previous_term_entries: bool) -> Network {
    let mut net = Network::with_config(&[1, 2, 3, 4, 5], &[], |c| c.max_size_per_msg = 1);
    // (a) 1 leads term 2; its entries (no-op at 2, "x" at 3) reach only 2.
    net.drop_if(|m| m.from == 1 && m.msg_type() == MessageType::Append && m.to != 2);
    net.elect(1);
    net.propose(1, b"x");
    net.stabilize();
    // (b) 1 crashes; 5 wins term 3 with the votes of 3 and 4 and appends entries that
    // reach nobody.
    net.heal();
    net.isolate(1);
    net.restart(1);
    net.drop_if(|m| m.from == 5 && m.msg_type() == MessageType::Append);
    net.elect(5);
    assert_eq!(net.raft(5).term, 3);
    net.propose(5, b"y");
    net.stabilize();
    // (c) 5 crashes; 1 restarts and wins term 4 with 2 and 3 (after a failed try at
    // term 3, where 3 and 4 had voted for 5). It replicates "x" to 3, but its own
    // term-4 entry reaches only 2.
    net.heal();
    net.isolate(5);
    net.restart(5);
    net.cut(1, 4);
    // The known bug, if asked for, from here on: only 1 leads from here to (c).
    let _bug = commit_previous_term_entries
        .then(|| failpoint::arm_on_this_thread(points::RAFT_COMMIT_PREVIOUS_TERM_ENTRIES, Action::Trigger));
    let lose_term4_at_3 = |net: &Network, m: &Message| {
        m.from == 1
            && m.to == 3
            && m.msg_type() == MessageType::Append
            && m.entries.iter().any(|e| e.term == 4)
            && net.raft(3).log.last_index() >= 3
    };
    net.raw(1).campaign();
    net.stabilize_losing(lose_term4_at_3);
    net.raw(1).campaign();
    net.stabilize_losing(lose_term4_at_3);
    assert_eq!((net.raft(1).role, net.raft(1).term), (Role::Leader, 4));
    assert_eq!(log_of(net.raft(1)), vec![(2, 2), (3, 2), (4, 4)]);
    assert_eq!(log_of(net.raft(2)), vec![(2, 2), (3, 2), (4, 4)]);
    assert_eq!(log_of(net.raft(3)), vec![(2, 2), (3, 2)]);
    assert_eq!(log_of(net.raft(5)), vec![(2, 3), (3, 3)]);
    net
}

/// §5.4.2: "Raft never commits log entries from previous terms by counting replicas."
/// At (c) "x" is on a majority, yet the leader must not commit it: at (d) 5 can still be
/// elected (by 3 and 4) and replace it with its own term-3 entries.
#[test]
fn figure8_leader_does_not_commit_an_earlier_terms_entry_by_counting_replicas() {
    let mut net = figure8_up_to_c(false);
    let leader = net.raft(1);
    assert!(leader.tracker.progress[&2].matched >= 3 && leader.tracker.progress[&3].matched >= 3);
    assert_eq!(leader.log.committed, 1, "\"x\" is on a majority but not of the leader's term");
    assert!(net.nodes.values().all(|n| n.applied_data().is_empty()), "nobody applied anything");

    // (d) 1 crashes; 5 wins term 5 with 3 and 4, and its entries replace "x".
    net.heal();
    net.isolate(1);
    net.restart(1);
    net.raw(5).campaign();
    net.stabilize();
    net.raw(5).campaign();
    net.stabilize();
    assert_eq!((net.raft(5).role, net.raft(5).term), (Role::Leader, 5));
    for id in 2..=5 {
        assert_eq!(log_of(net.raft(id)), vec![(2, 3), (3, 3), (4, 5)], "replica {id}");
        assert_eq!(net.node(id).applied_data(), vec![b"y".to_vec()], "replica {id}");
    }
    net.assert_applied_agree();
}

/// The same scenario with the rule broken: the leader commits "x" at (c), which (d)
/// then overwrites. This is what the test above guards against.
#[test]
fn figure8_without_the_rule_the_leader_commits_too_early() {
    let net = figure8_up_to_c(true);
    assert_eq!(net.raft(1).log.committed, 3, "the broken leader commits \"x\" by counting replicas");
    assert_eq!(net.node(1).applied_data(), vec![b"x".to_vec()]);
}

/// §5.4.2 / Figure 8 (e): once the leader's own term-4 entry is on a majority, it commits
/// and so does everything before it, "x" included; 5 can then never win.
#[test]
fn figure8_committing_an_own_term_entry_commits_the_earlier_ones() {
    let mut net = figure8_up_to_c(false);
    net.heal();
    net.isolate(5);
    net.heartbeat(1);
    assert_eq!(net.raft(1).log.committed, 4);
    for id in 1..=4 {
        assert_eq!(net.node(id).applied_data(), vec![b"x".to_vec()], "replica {id}");
    }
    net.heal();
    net.isolate(1);
    net.restart(1);
    for _ in 0..3 {
        net.raw(5).campaign();
        net.stabilize();
        assert_ne!(net.raft(5).role, Role::Leader, "5's log is behind every voter's it needs");
    }
}

/// §5.3: an entry is committed once the leader has replicated it on a majority; then
/// every replica that stores it applies it. Without a majority it waits.
#[test]
fn entries_commit_once_a_majority_stores_them() {
    let mut net = Network::new(&[1, 2, 3, 4, 5]);
    net.elect(1);
    net.isolate(4);
    net.isolate(5);
    let index = net.propose(1, b"a");
    net.stabilize();
    assert_eq!(net.raft(1).log.committed, index);
    for id in 1..=3 {
        assert_eq!(net.node(id).applied_data(), vec![b"a".to_vec()], "replica {id}");
    }

    net.isolate(3);
    let index = net.propose(1, b"b");
    net.stabilize();
    assert_eq!(net.raft(1).log.committed, index - 1, "two of five do not commit");
    assert!(net.raft(2).log.last_index() >= index);

    net.heal();
    net.heartbeat(1);
    assert_eq!(net.raft(1).log.committed, index);
    for id in 1..=5 {
        assert_eq!(net.node(id).applied_data(), vec![b"a".to_vec(), b"b".to_vec()], "replica {id}");
    }
}

/// §10.2 (pipelining): in replicate mode the leader streams appends but keeps at most
/// `max_inflight_msgs` unacknowledged ones per follower; an acknowledgement frees room.
#[test]
fn flow_control_bounds_appends_in_flight() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| c.max_inflight_msgs = 2);
    net.elect(1);
    assert_eq!(net.raft(1).tracker.progress[&2].state, ProgressState::Replicate);
    let first = net.raft(1).log.last_index() + 1;
    for i in 0..5 {
        net.propose(1, format!("e{i}").as_bytes());
    }
    let appends_to_2 = |messages: &[Message]| -> Vec<Message> {
        let is_append = |m: &&Message| m.to == 2 && m.msg_type() == MessageType::Append;
        messages.iter().filter(is_append).filter(|m| !m.entries.is_empty()).cloned().collect()
    };
    let mut held = net.take_messages();
    let sent = appends_to_2(&held);
    assert_eq!(sent.len(), 2, "five proposals, but only two appends may be in flight");
    assert!(net.raft(1).tracker.progress[&2].inflights.full());

    // 2 receives and acknowledges the first one: room for one more, which carries
    // everything not yet sent.
    held.retain(|m| *m != sent[0]);
    net.deliver(vec![sent[0].clone()]);
    let ack = net.take_messages();
    net.deliver(ack);
    let more = net.take_messages();
    let sent_more = appends_to_2(&more);
    assert_eq!(sent_more.len(), 1);
    assert_eq!(sent_more[0].entries.first().map(|e| e.index), Some(first + 2));
    assert_eq!(sent_more[0].entries.last().map(|e| e.index), Some(first + 4));
    assert_eq!(net.raft(1).tracker.progress[&2].inflights.len(), 2);

    held.extend(more);
    net.deliver(held);
    net.stabilize();
    for id in 1..=3 {
        assert_eq!(net.node(id).applied_data().len(), 5, "replica {id}");
    }
}

/// A follower cut off while the leader kept proposing: its inflight window fills with
/// appends that were lost. Once the partition heals, heartbeats reach it again, and the
/// leader must resume replication to it: a heartbeat response frees an inflight slot
/// (the regression test of the liveness bug the simulator found first).
#[test]
fn leader_resumes_a_follower_whose_inflight_window_filled_with_lost_appends() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| c.max_inflight_msgs = 2);
    net.elect(1);
    net.isolate(3);
    for i in 0..5 {
        net.propose(1, format!("e{i}").as_bytes());
        net.stabilize();
    }
    net.heal();
    for _ in 0..5 {
        net.heartbeat(1);
    }
    assert_eq!(net.count_delivered(3, 1, MessageType::HeartbeatResponse), 5, "3 answers heartbeats");
    assert_eq!(net.node(3).applied_data().len(), 5, "3 caught up after the partition healed");
}

/// A replica that does not exist yet answers neither appends nor heartbeats: its store
/// creates it only from an append. If the leader's first probe to it is lost, the leader
/// must probe again (once per election timeout, without entries) rather than wait for
/// an answer that cannot come; with the probe answered, replication resumes.
#[test]
fn a_lost_probe_to_a_silent_follower_is_sent_again_within_an_election_timeout() {
    let mut net = Network::new(&[1, 2, 3]);
    net.isolate(3);
    net.elect(1);
    for i in 0..3 {
        net.propose(1, format!("e{i}").as_bytes());
        net.stabilize();
    }
    assert_eq!(net.raft(1).tracker.progress[&3].state, ProgressState::Probe);
    assert!(net.raft(1).tracker.progress[&3].probe_sent, "the probe to 3 was lost");
    // 3 comes into being: appends reach it, heartbeats still do not (as to a replica
    // its store has not created), so no heartbeat answer unpauses the probe.
    net.heal();
    net.drop_if(|m| m.to == 3 && m.msg_type() == MessageType::Heartbeat);
    for _ in 0..ELECTION_TICKS {
        net.tick(1);
        net.stabilize();
    }
    assert!(net.count_delivered(1, 3, MessageType::Append) > 0, "the probe went again");
    net.heartbeat(1);
    let last = net.raft(1).log.last_index();
    assert_eq!(net.raft(1).tracker.progress[&3].matched, last, "3 caught up");
    assert_eq!(net.node(3).applied_data().len(), 3);
}

/// A follower learns the commit index from heartbeats too, when the append that told
/// it was lost...
#[test]
fn followers_learn_the_commit_index_from_heartbeats() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.drop_if(|m| m.from == 1 && m.msg_type() == MessageType::Append && m.entries.is_empty());
    let index = net.propose(1, b"a");
    net.stabilize();
    assert_eq!(net.raft(1).log.committed, index);
    assert_eq!(net.raft(2).log.committed, index - 1, "the commit notice was lost");
    net.heartbeat(1);
    assert_eq!(net.node(2).applied_data(), vec![b"a".to_vec()]);
    assert_eq!(net.node(3).applied_data(), vec![b"a".to_vec()]);
}

/// ... but only up to what it is known to hold of the leader's log: entries beyond its
/// match may be a deposed leader's, conflicting with committed ones.
#[test]
fn heartbeats_commit_only_what_the_follower_is_known_to_hold() {
    let conf = conf_state(&[1, 2, 3], &[]);
    let mut net = Network::empty();
    net.add_node(config(1), storage_with_log(conf.clone(), &[3]));
    net.add_node(config(2), storage_with_log(conf.clone(), &[3]));
    // 3 holds entries of term 2 at indexes 2 and 3 that nobody else has.
    net.add_node(config(3), storage_with_log(conf, &[2, 2]));
    net.drop_if(|m| m.to == 3 && m.msg_type() == MessageType::Append);
    net.raw(1).campaign();
    net.stabilize();
    assert_eq!(net.raft(1).log.committed, 3, "the no-op (3, term 4) is committed by 1 and 2");
    net.heartbeat(1);
    assert_eq!(net.raft(3).log.committed, 1, "3's own entries 2 and 3 are not the committed ones");
    assert!(net.node(3).applied.is_empty());

    net.heal();
    net.heartbeat(1);
    assert_eq!(log_of(net.raft(3)), log_of(net.raft(1)));
    net.assert_applied_agree();
}
