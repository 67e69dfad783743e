//! Linearizable reads without writing the log (§6.4): ReadIndex, the wait for the new
//! leader's first commit, leader leases (§6.4.1), and what happens to pending reads when
//! leadership is lost.

use super::harness::{ELECTION_TICKS, HEARTBEAT_TICKS, Network};
use crate::failpoint::{self, Action, points};
use crate::raft::proto::{Message, MessageType};
use crate::raft::{Error, LeaseClock, ReadMode, ReadState, Role};

fn heartbeats(messages: &[Message]) -> Vec<Message> {
    messages.iter().filter(|m| m.msg_type() == MessageType::Heartbeat).cloned().collect()
}

fn read(index: u64, context: &[u8]) -> ReadState {
    ReadState { index, context: context.to_vec() }
}

/// Delivers `messages`, then their answers, then lets the leader collect its reads.
fn exchange(net: &mut Network, messages: Vec<Message>) {
    net.deliver(messages);
    let answers = net.take_messages();
    net.deliver(answers);
    net.take_messages();
}

/// §6.4 ReadIndex: the leader records its commit index, then "sends a new round of
/// heartbeats and waits for their acknowledgments from a majority of the cluster".
/// A round that was already under way when the read arrived proves nothing about the
/// time of the read.
#[test]
fn read_index_waits_for_a_quorum_to_acknowledge_a_later_heartbeat_round() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    let commit = net.raft(1).log.committed;

    for _ in 0..HEARTBEAT_TICKS {
        net.tick(1);
    }
    let earlier_round = net.take_messages();
    assert_eq!(heartbeats(&earlier_round).len(), 2);

    net.raw(1).read_index(b"r".to_vec(), ReadMode::Safe).unwrap();
    let read_round = heartbeats(&net.take_messages());
    assert_eq!(read_round.len(), 2, "the read starts its own round at once");
    assert!(net.node(1).read_states.is_empty());

    exchange(&mut net, earlier_round);
    assert!(net.node(1).read_states.is_empty(), "acknowledgements of an earlier round do not count");

    exchange(&mut net, read_round.into_iter().filter(|m| m.to == 2).collect());
    assert_eq!(net.node(1).read_states, vec![read(commit, b"r")], "1 and 2 are a quorum");
}

/// The same scenario with the rule broken: the read is answered at once.
#[test]
fn read_index_without_the_heartbeat_round_is_answered_too_early() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    let _bug = failpoint::arm_on_this_thread(points::RAFT_READ_INDEX_WITHOUT_QUORUM, Action::Trigger);
    net.isolate(1);
    net.raw(1).read_index(b"r".to_vec(), ReadMode::Safe).unwrap();
    net.stabilize();
    assert_eq!(net.node(1).read_states.len(), 1, "answered with no quorum reachable");
}

/// §6.4: a new leader does not know the true commit index until it commits an entry of
/// its own term (its no-op); reads wait for that. Here 1 committed "a" at index 3, but 2
/// never heard it was committed; 2 then wins. Answering at 2's commit index (2) would
/// miss "a", which 1 has already applied.
#[test]
fn reads_wait_until_the_new_leader_commits_in_its_term() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.drop_if(|m| m.from == 1 && m.to == 2 && m.msg_type() == MessageType::Append && m.entries.is_empty());
    let index = net.propose(1, b"a");
    net.stabilize();
    assert_eq!(net.node(1).applied_data(), vec![b"a".to_vec()]);
    assert_eq!((net.raft(2).log.last_index(), net.raft(2).log.committed), (index, index - 1));

    net.heal();
    net.drop_if(|m| m.from == 2 && m.msg_type() == MessageType::Append);
    net.elect(2);
    net.raw(2).read_index(b"r".to_vec(), ReadMode::Safe).unwrap();
    net.stabilize();
    net.heartbeat(2);
    assert!(net.node(2).read_states.is_empty(), "no read before the no-op commits");

    net.heal();
    net.heartbeat(2);
    let noop = index + 1;
    assert_eq!(net.raft(2).log.committed, noop);
    assert_eq!(net.node(2).read_states, vec![read(noop, b"r")], "the read covers \"a\"");
}

/// §6.4.1 leader lease: once a quorum acknowledged a heartbeat round, the leader answers
/// lease reads at once, until `election_ticks - max_clock_drift_ticks` ticks after that
/// round was sent; after that it falls back to a ReadIndex round.
#[test]
fn lease_reads_are_immediate_within_the_lease_and_fall_back_after() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| c.check_quorum = true);
    net.elect(1);
    net.heartbeat(1);
    let commit = net.raft(1).log.committed;

    net.raw(1).read_index(b"in lease".to_vec(), ReadMode::Lease).unwrap();
    let out = net.take_messages();
    assert!(heartbeats(&out).is_empty(), "no round needed");
    assert_eq!(net.node(1).read_states, vec![read(commit, b"in lease")]);

    // No acknowledgement for a whole lease: the leader is cut off (CheckQuorum has not
    // deposed it yet).
    net.isolate(1);
    let lease = net.node(1).config.lease_ticks();
    for _ in 0..lease - HEARTBEAT_TICKS {
        net.tick(1);
    }
    net.take_messages();
    net.raw(1).read_index(b"still in lease".to_vec(), ReadMode::Lease).unwrap();
    net.take_messages();
    assert_eq!(net.node(1).read_states.len(), 2, "the lease still holds");

    for _ in 0..HEARTBEAT_TICKS {
        net.tick(1);
    }
    net.take_messages();
    assert_eq!(net.raft(1).role, Role::Leader);
    net.raw(1).read_index(b"lapsed".to_vec(), ReadMode::Lease).unwrap();
    let round = heartbeats(&net.take_messages());
    assert_eq!(round.len(), 2, "the lease lapsed: a heartbeat round confirms the read");
    assert_eq!(net.node(1).read_states.len(), 2);

    net.heal();
    exchange(&mut net, round);
    assert_eq!(net.node(1).read_states.last(), Some(&read(commit, b"lapsed")));
}

/// A lease counted in ticks outlives a pause of the leader's process: ticks stop while
/// the followers elect another leader. On the observed clock (§6.4.1's "clock" is the
/// leader's real one) the lease ends with time, whatever the ticks say. The same
/// history on the tick clock shows what the observed clock prevents.
#[test]
fn a_lease_on_the_observed_clock_ends_while_the_ticks_stand_still() {
    const TICK_LENGTH_MICROS: u64 = 100_000;
    for (lease_clock, answered_from_the_lease) in
        [(LeaseClock::Observed { tick_length: TICK_LENGTH_MICROS }, false), (LeaseClock::Ticks, true)]
    {
        let mut net = Network::with_config(&[1, 2, 3], &[], |c| {
            c.check_quorum = true;
            c.lease_clock = lease_clock;
        });
        let started_micros = 5_000_000;
        net.raw(1).observe_time(started_micros);
        net.elect(1);
        net.heartbeat(1);
        net.raw(1).read_index(b"in lease".to_vec(), ReadMode::Lease).unwrap();
        assert!(heartbeats(&net.take_messages()).is_empty(), "{lease_clock:?}: no round needed");
        assert_eq!(net.node(1).read_states.len(), 1, "{lease_clock:?}: answered from the lease");

        // The process is paused for a whole lease and more: not one tick, but the clock
        // moved on, and meanwhile the others may have elected a leader.
        let lease_micros = net.node(1).config.lease_ticks() * TICK_LENGTH_MICROS;
        net.raw(1).observe_time(started_micros + lease_micros);
        net.raw(1).read_index(b"after the pause".to_vec(), ReadMode::Lease).unwrap();
        let round = heartbeats(&net.take_messages());
        let answered = net.node(1).read_states.len() == 2;
        assert_eq!(answered, answered_from_the_lease, "{lease_clock:?}: answered from the lease");
        assert_eq!(round.is_empty(), answered_from_the_lease, "{lease_clock:?}: a round confirms the read");
    }
}

/// The lease starts from the reading taken before its round was sent, so a reading the
/// application hands over late only shortens it.
#[test]
fn a_lease_on_the_observed_clock_lasts_from_the_reading_before_its_round() {
    const TICK_LENGTH_MICROS: u64 = 1_000;
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| {
        c.check_quorum = true;
        c.lease_clock = LeaseClock::Observed { tick_length: TICK_LENGTH_MICROS };
    });
    net.raw(1).observe_time(10_000);
    net.elect(1);
    net.heartbeat(1);
    let lease_micros = net.node(1).config.lease_ticks() * TICK_LENGTH_MICROS;
    net.raw(1).observe_time(10_000 + lease_micros - 1);
    net.raw(1).read_index(b"last moment".to_vec(), ReadMode::Lease).unwrap();
    net.take_messages();
    assert_eq!(net.node(1).read_states.len(), 1, "within the lease");
    // A reading that goes back is ignored: it cannot revive the lease.
    net.raw(1).observe_time(10_000 + lease_micros);
    net.raw(1).observe_time(10_000);
    net.raw(1).read_index(b"lapsed".to_vec(), ReadMode::Lease).unwrap();
    assert_eq!(heartbeats(&net.take_messages()).len(), 2, "the lease lapsed: a round confirms the read");
    assert_eq!(net.node(1).read_states.len(), 1);
}

/// A lease is only sound if a leader that lost its quorum steps down (CheckQuorum).
#[test]
fn lease_reads_without_check_quorum_are_refused() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    assert_eq!(
        net.raw(1).read_index(b"r".to_vec(), ReadMode::Lease),
        Err(Error::LeaseReadWithoutCheckQuorum)
    );
    assert_eq!(net.raw(1).read_index(b"r".to_vec(), ReadMode::Safe), Ok(()));
}

/// Reads not yet confirmed when the leader loses its leadership go back to the
/// application in `dropped_reads`, both those waiting for a heartbeat round (the leader
/// steps down by CheckQuorum) ...
#[test]
fn reads_pending_when_the_leader_steps_down_are_dropped() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| c.check_quorum = true);
    net.elect(1);
    net.isolate(1);
    net.raw(1).read_index(b"r".to_vec(), ReadMode::Safe).unwrap();
    net.stabilize();
    assert!(net.node(1).dropped_reads.is_empty());
    for _ in 0..2 * ELECTION_TICKS {
        net.tick(1);
    }
    net.stabilize();
    assert_eq!(net.raft(1).role, Role::Follower);
    assert_eq!(net.node(1).dropped_reads, vec![b"r".to_vec()]);
    assert!(net.node(1).read_states.is_empty());
}

/// ... and those waiting for the leader's first commit (it is deposed by a higher term).
#[test]
fn reads_waiting_for_the_first_commit_are_dropped_when_deposed() {
    let mut net = Network::new(&[1, 2, 3]);
    net.drop_if(|m| m.from == 1 && m.msg_type() == MessageType::Append);
    net.elect(1);
    net.raw(1).read_index(b"early".to_vec(), ReadMode::Safe).unwrap();
    net.stabilize();
    assert!(net.node(1).read_states.is_empty() && net.node(1).dropped_reads.is_empty());

    net.heal();
    net.isolate(1);
    net.elect(2);
    net.heal();
    net.heartbeat(2);
    assert_eq!((net.raft(1).role, net.raft(1).leader_id), (Role::Follower, 2));
    assert_eq!(net.node(1).dropped_reads, vec![b"early".to_vec()]);
    assert!(net.node(1).read_states.is_empty());
}

/// §6.4: reads that arrive before the next round share it: many reads, one round.
#[test]
fn reads_arriving_together_share_one_heartbeat_round() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    for context in [b"a", b"b", b"c"] {
        net.raw(1).read_index(context.to_vec(), ReadMode::Safe).unwrap();
    }
    let round = heartbeats(&net.take_messages());
    assert_eq!(round.len(), 2, "one heartbeat per follower");
    exchange(&mut net, round);
    let commit = net.raft(1).log.committed;
    assert_eq!(net.node(1).read_states, vec![read(commit, b"a"), read(commit, b"b"), read(commit, b"c")]);
}

/// Only voters confirm leadership: learners' heartbeat answers do not, even when they
/// outnumber the missing voters.
#[test]
fn learners_acknowledgements_do_not_confirm_a_read() {
    let mut net = Network::with_config(&[1, 2, 3], &[4, 5], |_| {});
    net.elect(1);
    net.isolate(2);
    net.isolate(3);
    net.raw(1).read_index(b"r".to_vec(), ReadMode::Safe).unwrap();
    net.stabilize();
    assert_eq!(net.count_delivered(4, 1, MessageType::HeartbeatResponse), 1);
    assert_eq!(net.count_delivered(5, 1, MessageType::HeartbeatResponse), 1);
    assert!(net.node(1).read_states.is_empty());
    net.heal();
    net.heartbeat(1);
    assert_eq!(net.node(1).read_states.len(), 1);
}

/// A replica that restarts may have acknowledged the leader's lease before it crashed,
/// and does not remember it: it ignores campaigns for an election timeout after it
/// starts, so no other leader can appear while the lease it granted may still hold.
#[test]
fn restarted_followers_do_not_elect_anyone_while_the_lease_may_hold() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| {
        c.check_quorum = true;
        c.pre_vote = true;
    });
    net.elect(1);
    net.heartbeat(1);
    net.isolate(1);
    net.restart(2);
    net.restart(3);
    net.raw(3).campaign();
    net.stabilize();
    assert_eq!((net.raft(2).term, net.raft(3).term), (2, 2), "the campaign was ignored");

    // The lease was confirmed by a round sent at tick 2; it lasts `lease_ticks` from there.
    let lease_left = net.node(1).config.lease_ticks() - HEARTBEAT_TICKS;
    for _ in 0..lease_left - 1 {
        net.tick_all();
        assert_eq!(net.leader(), Some(1), "no other leader while 1's lease holds");
    }
    net.raw(1).read_index(b"in lease".to_vec(), ReadMode::Lease).unwrap();
    net.take_messages();
    assert_eq!(net.node(1).read_states.len(), 1, "1 still answers from its lease");

    let mut ticks = 0;
    while net.leader().is_none_or(|id| id == 1) {
        net.tick_all();
        ticks += 1;
        assert!(ticks < 3 * ELECTION_TICKS, "2 and 3 never elected a leader");
    }
}

/// §3.10 / §6.4.1: once the leader hands leadership over, its target campaigns without
/// waiting for the voters' leases, so the old leader's lease means nothing any more.
#[test]
fn a_leader_transferring_leadership_stops_answering_from_its_lease() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| c.check_quorum = true);
    net.elect(1);
    net.heartbeat(1);
    net.raw(1).read_index(b"before".to_vec(), ReadMode::Lease).unwrap();
    net.take_messages();
    assert_eq!(net.node(1).read_states.len(), 1, "answered from the lease");

    net.isolate(2);
    net.raw(1).transfer_leader(2).unwrap();
    net.raw(1).read_index(b"during".to_vec(), ReadMode::Lease).unwrap();
    let round = heartbeats(&net.take_messages());
    assert_eq!(net.node(1).read_states.len(), 1, "not from the lease while transferring");
    assert_eq!(round.len(), 2, "a heartbeat round confirms it instead");
    exchange(&mut net, round);
    assert_eq!(net.node(1).read_states.len(), 2, "1 and 3 confirmed it");
}

/// Ticks the leader `id` through an election timeout, letting the network settle after
/// every tick but the last: a transfer still under way is abandoned at that tick, and
/// what the leader then sends is not delivered yet.
fn tick_to_abandonment(net: &mut Network, id: u64) {
    for _ in 1..ELECTION_TICKS {
        net.tick(id);
        net.stabilize();
    }
    net.tick(id);
}

/// A transfer whose TimeoutNow was lost is abandoned after an election timeout, and the
/// leader's lease comes back once the entry it appends then commits: the TimeoutNow may
/// still arrive, but can no longer lead to a winning campaign. (It once stayed
/// suspended for the rest of the term, and every change feed of an idle region with it.)
#[test]
fn an_abandoned_transfer_gives_the_lease_back_once_the_entry_after_it_commits() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| c.check_quorum = true);
    net.elect(1);
    net.heartbeat(1);
    net.isolate(2);
    net.raw(1).transfer_leader(2).unwrap();
    net.stabilize();
    assert_eq!(net.count_delivered(1, 2, MessageType::TimeoutNow), 0, "the TimeoutNow is lost");
    let last_before = net.raft(1).log.last_index();

    tick_to_abandonment(&mut net, 1);
    assert_eq!((net.raft(1).role, net.raft(1).lead_transferee()), (Role::Leader, None), "abandoned");
    assert_eq!(net.raft(1).log.last_index(), last_before + 1, "an entry appended at the abandonment");
    assert_eq!(net.raw(1).leader_lease_expires_at(), None, "no lease before that entry commits");

    net.stabilize();
    assert!(net.raft(1).log.committed > last_before, "1 and 3 committed it");
    net.heartbeat(1);
    assert!(net.raw(1).leader_lease_expires_at().is_some(), "the lease is back");
    net.raw(1).read_index(b"after".to_vec(), ReadMode::Lease).unwrap();
    net.take_messages();
    assert_eq!(net.node(1).read_states, vec![read(net.raft(1).log.committed, b"after")]);
}

/// 1 leads 2 and 3 under a lease and transfers to 2; the TimeoutNow is held back,
/// everything else delivered.
fn transferring_to_2_with_the_timeout_now_held_back() -> (Network, Vec<Message>) {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| c.check_quorum = true);
    net.elect(1);
    net.heartbeat(1);
    net.raw(1).transfer_leader(2).unwrap();
    let (late, others): (Vec<Message>, Vec<Message>) =
        net.take_messages().into_iter().partition(|m| m.msg_type() == MessageType::TimeoutNow);
    assert_eq!(late.len(), 1, "the TimeoutNow went out at once");
    net.deliver(others);
    (net, late)
}

/// A TimeoutNow delayed past its transfer's abandonment reaches a target that holds the
/// entry appended at the abandonment: the target ignores it, so the leader whose lease
/// came back is not deposed under it.
#[test]
fn a_timeout_now_arriving_after_its_transfer_was_abandoned_is_ignored() {
    let (mut net, late) = transferring_to_2_with_the_timeout_now_held_back();
    tick_to_abandonment(&mut net, 1);
    net.stabilize();
    net.heartbeat(1);
    assert!(net.raw(1).leader_lease_expires_at().is_some(), "the lease is back");
    let term = net.raft(1).term;

    net.deliver(late);
    net.stabilize();
    assert_eq!((net.raft(2).role, net.raft(2).term), (Role::Follower, term), "2 did not campaign");
    assert_eq!((net.raft(1).role, net.raft(1).term), (Role::Leader, term));
    assert!(net.raw(1).leader_lease_expires_at().is_some());
}

/// The same late TimeoutNow at a target that missed the entry appended at the
/// abandonment: it campaigns (the leader steps down to its term, and stops serving
/// from its lease), but a quorum holds a newer log than its own, so it cannot win
/// (§5.4.1).
#[test]
fn a_late_timeout_now_to_a_target_that_missed_the_abandonment_cannot_win() {
    let (mut net, late) = transferring_to_2_with_the_timeout_now_held_back();
    net.isolate(2);
    tick_to_abandonment(&mut net, 1);
    net.stabilize();
    net.heartbeat(1);
    assert!(net.raw(1).leader_lease_expires_at().is_some(), "the lease is back");
    let term = net.raft(1).term;

    net.heal();
    net.deliver(late);
    net.stabilize();
    assert_eq!(net.raft(2).term, term + 1, "2 campaigned");
    assert_eq!(net.raft(2).role, Role::Follower, "and lost: 1 and 3 hold a newer log");
    assert_eq!(net.leader(), None);
}
