//! Leader election (§3.4 / §5.2), the election restriction (§3.6.1 / §5.4.1), and the
//! two guards against disruptive campaigns: PreVote and CheckQuorum (§9.6).

use super::harness::{
    ELECTION_TICKS, Network, Node, conf_state, config, drain, entry, message, new_raft, storage_with_log,
    vote_request,
};
use crate::raft::consensus::CampaignKind;
use crate::raft::proto::{EntryType, HardState, Message, MessageType};
use crate::raft::{Config, MemStorage, Raft, Role};

fn three_voters() -> MemStorage {
    MemStorage::new_bootstrapped(1, conf_state(&[1, 2, 3], &[]))
}

fn of_type(messages: &[Message], message_type: MessageType) -> Vec<Message> {
    messages.iter().filter(|m| m.msg_type() == message_type).cloned().collect()
}

/// Ticks a follower until it campaigns; returns how many ticks that took.
fn ticks_until_campaign(raft: &mut Raft<MemStorage>) -> u64 {
    for ticks in 1..=4 * ELECTION_TICKS {
        raft.tick();
        if raft.role != Role::Follower {
            return ticks;
        }
    }
    panic!("replica {} never campaigned", raft.id);
}

/// Figure 2: a follower converts to candidate when its election timeout elapses
/// "without receiving AppendEntries RPC from current leader or granting vote to
/// candidate". A vote request it refuses (a stale log) raises its term but must not
/// restart its timer: candidates with stale logs, campaigning in turn, would otherwise
/// keep the one replica whose log can win from ever campaigning (simulator seed
/// 7094968 on three replicas: no leader for over a hundred ticks after healing).
#[test]
fn refused_vote_requests_do_not_restart_the_election_timer() {
    // Replica 1's log reaches term 3; the candidates' end at term 1.
    let mut raft = new_raft(config(1), storage_with_log(conf_state(&[1, 2, 3], &[]), &[2, 3]));
    let mut term = raft.term;
    let mut ticks = 0;
    while raft.role == Role::Follower {
        assert!(
            ticks < 2 * ELECTION_TICKS,
            "replica 1 never campaigned: stale candidates restarted its timer"
        );
        if ticks % (ELECTION_TICKS / 2) == ELECTION_TICKS / 2 - 1 {
            term += 1;
            let candidate = 2 + ticks % 2;
            raft.step(vote_request(candidate, 1, term, 1, 1)).expect("a well-formed request");
            let answers = drain(&mut raft);
            assert!(answers.iter().all(|m| m.reject), "a stale log gets no vote: {answers:?}");
            assert_eq!(raft.term, term, "the request's term is adopted");
        }
        raft.tick();
        ticks += 1;
    }
    assert_eq!(raft.role, Role::Candidate);
}

/// A vote granted does restart the timer (Figure 2): the candidate gets its chance.
#[test]
fn a_granted_vote_restarts_the_election_timer() {
    let mut raft = new_raft(config(1), three_voters());
    for _ in 0..ELECTION_TICKS - 1 {
        raft.tick();
    }
    raft.step(vote_request(2, 1, raft.term + 1, 1, 1)).expect("a well-formed request");
    assert!(drain(&mut raft).iter().all(|m| !m.reject), "an up-to-date candidate gets the vote");
    for _ in 0..ELECTION_TICKS - 1 {
        raft.tick();
        assert_eq!(raft.role, Role::Follower, "the granted vote restarted the timer");
    }
}

/// §5.2: "If a follower receives no communication over a period of time called the
/// election timeout, then it ... begins an election": it increments its term, votes for
/// itself and asks every other voter for its vote, naming its last log entry.
#[test]
fn follower_campaigns_after_its_election_timeout() {
    let mut raft = new_raft(config(1), three_voters());
    for _ in 0..ELECTION_TICKS - 1 {
        raft.tick();
    }
    assert_eq!(raft.role, Role::Follower, "no campaign before an election timeout");
    assert!(drain(&mut raft).is_empty());

    let ticks = ELECTION_TICKS - 1 + ticks_until_campaign(&mut raft);
    assert!((ELECTION_TICKS..2 * ELECTION_TICKS).contains(&ticks), "campaigned after {ticks} ticks");
    assert_eq!(raft.role, Role::Candidate);
    assert_eq!((raft.term, raft.vote), (2, 1), "a candidate raises its term and votes for itself");
    let mut requests = drain(&mut raft);
    requests.sort_by_key(|m| m.to);
    assert_eq!(requests.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3]);
    for request in &requests {
        assert_eq!(request.msg_type(), MessageType::RequestVote);
        assert_eq!((request.term, request.index, request.log_term), (2, 1, 1));
    }
}

/// §5.2: "Raft uses randomized election timeouts to ensure that split votes are rare":
/// each replica draws its timeout from [election_ticks, 2 * election_ticks).
#[test]
fn election_timeouts_are_randomized_per_replica() {
    let timeouts: Vec<u64> = (1..=12)
        .map(|id| {
            let mut raft = new_raft(config(id), MemStorage::new_bootstrapped(1, conf_state(&[id, 100], &[])));
            ticks_until_campaign(&mut raft)
        })
        .collect();
    assert!(timeouts.iter().all(|t| (ELECTION_TICKS..2 * ELECTION_TICKS).contains(t)), "{timeouts:?}");
    let distinct: std::collections::BTreeSet<_> = timeouts.iter().collect();
    assert!(distinct.len() > 1, "every replica drew the same timeout: {timeouts:?}");
}

/// §5.2: "A candidate wins an election if it receives votes from a majority of the
/// servers in the full cluster for the same term." §6.4 / §8: on winning, the leader
/// appends a blank no-op entry of its own term and replicates it at once.
#[test]
fn candidate_with_a_majority_becomes_leader_and_appends_a_noop() {
    let mut raft = new_raft(config(1), MemStorage::new_bootstrapped(1, conf_state(&[1, 2, 3, 4, 5], &[])));
    raft.hup(CampaignKind::Election);
    drain(&mut raft);
    assert_eq!((raft.role, raft.term), (Role::Candidate, 2));

    let grant = |from| message(from, 1, MessageType::RequestVoteResponse, 2);
    raft.step(grant(2)).unwrap();
    assert_eq!(raft.role, Role::Candidate, "2 of 5 votes are not a majority");
    raft.step(Message { reject: true, ..grant(3) }).unwrap();
    assert_eq!(raft.role, Role::Candidate, "a refusal does not decide while a majority is possible");
    raft.step(grant(2)).unwrap();
    assert_eq!(raft.role, Role::Candidate, "a voter is counted once, however often it answers");
    raft.step(grant(4)).unwrap();
    assert_eq!((raft.role, raft.leader_id, raft.term), (Role::Leader, 1, 2));

    let noop = raft.log.entries(raft.log.last_index(), None).unwrap().remove(0);
    assert_eq!((noop.index, noop.term), (2, 2), "the no-op carries the new leader's term");
    assert_eq!(noop.entry_type(), EntryType::Normal);
    assert!(noop.data.is_empty());
    assert!(raft.messages_after_persist.is_empty());
    let appends = of_type(&raft.messages, MessageType::Append);
    let mut to: Vec<u64> = appends.iter().map(|m| m.to).collect();
    to.sort_unstable();
    assert_eq!(to, vec![2, 3, 4, 5]);
    assert!(appends.iter().all(|m| m.entries.iter().any(|e| e.index == 2 && e.term == 2)));
}

/// §5.2: a candidate that a majority refuses gives up; it keeps the term it raised.
#[test]
fn candidate_refused_by_a_majority_returns_to_follower() {
    let mut raft = new_raft(config(1), three_voters());
    raft.hup(CampaignKind::Election);
    drain(&mut raft);
    let refuse = |from| Message { reject: true, ..message(from, 1, MessageType::RequestVoteResponse, 2) };
    raft.step(refuse(2)).unwrap();
    assert_eq!(raft.role, Role::Candidate);
    raft.step(refuse(3)).unwrap();
    assert_eq!((raft.role, raft.term, raft.leader_id), (Role::Follower, 2, 0));
}

/// §5.2: "Each server will vote for at most one candidate in a given term, on a
/// first-come-first-served basis", and the vote is persistent state: a crash does not
/// free it.
#[test]
fn votes_are_granted_at_most_once_per_term() {
    let mut node = Node::new(config(1), three_voters());
    let answer = |node: &mut Node, request: Message| -> Message {
        node.raw.step(request).unwrap();
        let mut out = node.handle_readies();
        assert_eq!(out.len(), 1, "exactly one answer: {out:?}");
        out.remove(0)
    };

    let granted = answer(&mut node, vote_request(2, 1, 2, 1, 1));
    assert_eq!(
        (granted.msg_type(), granted.to, granted.term, granted.reject),
        (MessageType::RequestVoteResponse, 2, 2, false)
    );
    let refused = answer(&mut node, vote_request(3, 1, 2, 1, 1));
    assert!(refused.reject, "a second candidate of the same term is refused");
    let again = answer(&mut node, vote_request(2, 1, 2, 1, 1));
    assert!(!again.reject, "a retransmitted request of the same candidate is granted again");

    // Crash and restart from what was persisted: the vote is remembered.
    let mut node = Node::new(config(1), node.storage.clone());
    assert_eq!((node.raw.raft.term, node.raw.raft.vote), (2, 2));
    let refused = answer(&mut node, vote_request(3, 1, 2, 1, 1));
    assert!(refused.reject, "the vote of term 2 survives a restart");

    let next_term = answer(&mut node, vote_request(3, 1, 3, 1, 1));
    assert!(!next_term.reject, "a new term frees the vote");
    assert_eq!((node.raw.raft.term, node.raw.raft.vote), (3, 3));
}

/// §5.4.1, the election restriction: "the voter denies its vote if its own log is more
/// up-to-date than that of the candidate ... If the logs have last entries with
/// different terms, then the log with the later term is more up-to-date. If the logs end
/// with the same term, then whichever log is longer is more up-to-date."
#[test]
fn voter_refuses_a_candidate_whose_log_is_less_up_to_date() {
    // The voter's log ends at index 3 with term 2.
    let cases = [
        ((3, 2), true, "same last entry"),
        ((4, 2), true, "same last term, longer"),
        ((2, 3), true, "later last term, shorter"),
        ((2, 2), false, "same last term, shorter"),
        ((9, 1), false, "earlier last term, however long"),
    ];
    for ((last_index, last_term), expect_granted, case) in cases {
        let mut voter = new_raft(config(1), storage_with_log(conf_state(&[1, 2, 3], &[]), &[2, 2]));
        voter.step(vote_request(2, 1, 3, last_index, last_term)).unwrap();
        let answer = drain(&mut voter).pop().expect("an answer");
        assert_eq!(answer.msg_type(), MessageType::RequestVoteResponse);
        assert_eq!(!answer.reject, expect_granted, "{case}");
        assert_eq!(voter.vote, if expect_granted { 2 } else { 0 }, "{case}");
        assert_eq!(voter.term, 3, "{case}: the term is adopted either way");
    }
}

/// §5.1: a server that sees a higher term updates its term and reverts to follower.
/// §5.2: a candidate that hears an AppendEntries from a leader of its own term accepts it.
#[test]
fn higher_terms_and_current_leaders_turn_candidates_and_leaders_into_followers() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.raw(1).step(message(3, 1, MessageType::Heartbeat, 5)).unwrap();
    assert_eq!((net.raft(1).role, net.raft(1).term, net.raft(1).leader_id), (Role::Follower, 5, 3));

    let mut candidate = new_raft(config(2), three_voters());
    candidate.hup(CampaignKind::Election);
    assert_eq!((candidate.role, candidate.term), (Role::Candidate, 2));
    candidate.step(message(3, 2, MessageType::Heartbeat, 2)).unwrap();
    assert_eq!((candidate.role, candidate.term, candidate.leader_id), (Role::Follower, 2, 3));
}

/// §5.1: "If a server receives a request with a stale term number, it rejects the
/// request." A deposed leader's append changes nothing; with CheckQuorum (or PreVote) the
/// answer carries the newer term, which makes the deposed leader step down.
#[test]
fn requests_of_an_earlier_term_are_rejected() {
    let storage = storage_with_log(conf_state(&[1, 2, 3], &[]), &[2]);
    storage.set_hard_state(HardState { term: 3, vote: 0, commit: 1 });
    let mut follower = new_raft(config(2), storage);
    let stale_append = Message {
        index: 2,
        log_term: 2,
        entries: vec![entry(3, 2)],
        ..message(1, 2, MessageType::Append, 2)
    };
    follower.step(stale_append).unwrap();
    assert_eq!(follower.log.last_index(), 2, "nothing appended");
    assert!(drain(&mut follower).iter().all(|m| m.term == 3), "no answer speaks for term 2");
    follower.step(vote_request(3, 2, 2, 9, 2)).unwrap();
    assert_eq!((follower.term, follower.vote), (3, 0), "no vote for an earlier term");

    let mut net = Network::with_config(&[1, 2, 3], &[], |c| c.check_quorum = true);
    net.elect(1);
    net.isolate(1);
    net.elect(2);
    net.heal();
    net.heartbeat(1);
    assert_eq!((net.raft(1).role, net.raft(1).term), (Role::Follower, 3), "the deposed leader learned");
    assert_eq!((net.raft(2).role, net.raft(2).term), (Role::Leader, 3), "and disturbed nobody");
}

/// A replica cut off from a group while the group made progress, then reconnected.
fn lagging_replica_campaigns(pre_vote: bool) -> Network {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| c.pre_vote = pre_vote);
    net.elect(1);
    net.isolate(3);
    net.propose(1, b"x");
    net.stabilize();
    net.heal();
    net.raw(3).campaign();
    net.stabilize();
    net
}

/// §9.6: with PreVote, a candidate first asks whether it could win, without raising its
/// term; a replica whose log is behind learns it cannot, and nobody's term changes.
/// Without PreVote the same campaign raises terms and deposes a healthy leader.
#[test]
fn prevote_that_loses_does_not_raise_the_term() {
    let net = lagging_replica_campaigns(true);
    assert_eq!((net.raft(3).role, net.raft(3).term), (Role::Follower, 2));
    assert_eq!((net.raft(1).role, net.raft(1).term), (Role::Leader, 2));
    assert_eq!(net.raft(2).term, 2);
    assert_eq!(net.count_delivered(3, 1, MessageType::RequestVote), 0, "no real vote was asked for");

    let net = lagging_replica_campaigns(false);
    assert_eq!(net.raft(3).term, 3, "without PreVote the lagging replica raised its term");
    assert_ne!(net.raft(1).role, Role::Leader, "and deposed the leader");
}

/// §9.6: a replica partitioned away keeps campaigning with PreVote but never raises
/// its term, so it does not disrupt the leader when it comes back.
#[test]
fn partitioned_prevote_replica_keeps_its_term_and_rejoins_quietly() {
    // With CheckQuorum too, as PreVote is meant to be used: an up-to-date replica could
    // otherwise win a PreVote round against a healthy leader.
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    net.elect(1);
    net.isolate(3);
    for _ in 0..10 * ELECTION_TICKS {
        net.tick_all();
    }
    assert_eq!(net.raft(3).term, 2, "ten election timeouts, no term raised");
    assert_ne!(net.raft(3).role, Role::Leader);
    net.heal();
    for _ in 0..ELECTION_TICKS {
        net.tick_all();
    }
    assert_eq!((net.raft(1).role, net.raft(1).term), (Role::Leader, 2));
    assert_eq!((net.raft(3).role, net.raft(3).leader_id), (Role::Follower, 1));
}

/// §6.2 (CheckQuorum): "a leader steps down if an election timeout elapses without a
/// successful round of heartbeats to a majority of its cluster". A leader that keeps
/// hearing from a quorum stays.
#[test]
fn check_quorum_leader_without_a_quorum_steps_down() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| c.check_quorum = true);
    net.elect(1);
    for _ in 0..5 * ELECTION_TICKS {
        net.tick_all();
    }
    assert_eq!((net.raft(1).role, net.raft(1).term), (Role::Leader, 2), "a connected leader stays");

    net.isolate(1);
    for _ in 0..ELECTION_TICKS - 1 {
        net.tick(1);
    }
    assert_eq!(net.raft(1).role, Role::Leader, "not before an election timeout");
    for _ in 0..ELECTION_TICKS + 1 {
        net.tick(1);
    }
    let leader = net.raft(1);
    assert_eq!((leader.role, leader.term, leader.leader_id), (Role::Follower, 2, 0));
}

/// §4.2.3: "if a server receives a RequestVote request within the minimum election
/// timeout of hearing from a current leader, it does not update its term or grant its
/// vote" — unless the campaign was ordered by the leader itself (leader transfer, §3.10).
#[test]
fn follower_that_heard_from_a_leader_ignores_request_vote() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| c.check_quorum = true);
    net.elect(1);
    net.heartbeat(1);
    let (last_index, last_term) = (net.raft(3).log.last_index(), net.raft(3).log.last_term());
    let request = vote_request(3, 2, 3, last_index, last_term);

    net.raw(2).step(request.clone()).unwrap();
    let follower = &net.raft(2);
    assert_eq!((follower.term, follower.vote, follower.leader_id), (2, 1, 1), "request ignored");
    assert!(follower.messages.is_empty() && follower.messages_after_persist.is_empty(), "not even answered");

    net.raw(2).step(Message { leader_transfer: true, ..request }).unwrap();
    assert_eq!((net.raft(2).term, net.raft(2).vote), (3, 3), "a transfer campaign is heard");
}

/// The protection outlives a change of term that no leader caused (§4.2.3 counts from
/// the last time the voter heard from a leader): a higher-term rejection of a stale
/// PreVote moves the follower to that term with no known leader, yet it must still
/// refuse to vote while the old leader's lease may hold.
#[test]
fn a_term_change_without_a_leader_does_not_lift_the_lease_protection() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| {
        c.check_quorum = true;
        c.pre_vote = true;
    });
    net.elect(1);
    net.heartbeat(1);
    let rejection = Message { reject: true, ..message(3, 2, MessageType::RequestPreVoteResponse, 3) };
    net.raw(2).step(rejection).unwrap();
    assert_eq!((net.raft(2).term, net.raft(2).leader_id), (3, 0), "the follower adopted the higher term");

    let (last_index, last_term) = (net.raft(3).log.last_index(), net.raft(3).log.last_term());
    net.raw(2).step(vote_request(3, 2, 3, last_index, last_term)).unwrap();
    assert_eq!(net.raft(2).vote, 0, "a vote here would let a second leader in during 1's lease");
}

/// The same follower considers campaigns once an election timeout passed without a
/// leader.
#[test]
fn follower_that_lost_its_leader_considers_request_vote() {
    // PreVote keeps the follower's own campaign (should its timer fire) from raising its term.
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| {
        c.check_quorum = true;
        c.pre_vote = true;
    });
    net.elect(1);
    net.heartbeat(1);
    for _ in 0..ELECTION_TICKS {
        net.tick(2);
    }
    let (last_index, last_term) = (net.raft(3).log.last_index(), net.raft(3).log.last_term());
    net.raw(2).step(vote_request(3, 2, 3, last_index, last_term)).unwrap();
    assert_eq!((net.raft(2).term, net.raft(2).vote), (3, 3));
}

/// [`RawNode::campaign`](crate::raft::RawNode::campaign) elects a first leader without
/// waiting for a timeout: with the default configuration (PreVote and CheckQuorum on), a
/// group created just now elects the replica that campaigns at once.
#[test]
fn campaign_elects_a_first_leader_at_once_in_a_new_group() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| {
        *c = Config::new(c.id);
        c.new_group = true;
    });
    net.raw(1).campaign();
    net.stabilize();
    assert_eq!(net.raft(1).role, Role::Leader, "the campaign was ignored by every peer");
    assert_eq!(net.raft(2).leader_id, 1);
}

/// A replica that restarts may have acknowledged a leader lease before it crashed, so
/// for one election timeout it neither campaigns, even when asked to, nor answers a
/// campaign.
#[test]
fn replicas_that_may_have_acknowledged_a_lease_ignore_an_early_campaign() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |c| *c = Config::new(c.id));
    net.raw(1).campaign();
    net.stabilize();
    assert_eq!(net.raft(1).role, Role::Follower, "an explicit campaign must wait out the quiet period");
    assert!(net.delivered.is_empty(), "nothing may be sent: {:?}", net.delivered);

    let (last_index, last_term) = (net.raft(2).log.last_index(), net.raft(2).log.last_term());
    let term = net.raft(2).term;
    net.raw(2).step(vote_request(3, 2, term + 1, last_index, last_term)).unwrap();
    assert_eq!((net.raft(2).term, net.raft(2).vote), (term, 0), "the vote request must be ignored");
    assert!(drain(&mut net.raw(2).raft).is_empty());
}
