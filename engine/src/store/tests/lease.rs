//! Leader leases on the store's clock: a leader whose process was paused answers no
//! read from a lease that ended while it stood still.

use super::*;
use crate::clock::ControlledClock;

/// The leader on store 1 is cut off from the other two and its clock stops, as when its
/// process is paused: it neither ticks nor steps down. Stores 2 and 3 elect a leader
/// and take a newer write. When store 1 resumes, ten seconds later by its clock but
/// only a tick later by its tick count, a read sent to it must not be answered from
/// the old lease (with leases counted in ticks it was, with the old value).
#[test]
fn a_leader_paused_past_its_lease_answers_no_read_from_it() {
    let clock = ControlledClock::new();
    let cluster = Cluster::with_regions_and_clock(1, 1, clock.clone());
    cluster.write(1, vec![put(b"k", b"old")]);
    let (leader, _) = cluster.wait_for("store 1 to lead", |c| c.leader(1).filter(|(store, _)| *store == 1));
    assert_eq!(cluster.get(1, b"k"), Some(b"old".to_vec()), "a read on store {leader} renews its lease");

    cluster.transport.partition(1, 2);
    cluster.transport.partition(1, 3);
    clock.stop();
    let (new_leader, status) = cluster.wait_for("stores 2 and 3 to elect a leader", |c| {
        [2, 3].into_iter().find_map(|store| {
            c.stores[&store].status(1).filter(|s| s.is_leader).map(|status| (store, status))
        })
    });
    let epoch = region::epoch(&status.region);
    let write = cluster.stores[&new_leader].write(1, epoch, vec![put(b"k", b"new")]);
    assert!(matches!(write.recv_timeout(WAIT), Ok(Ok(_))), "the new leader takes the write");
    assert!(status_of(&cluster, 1).is_leader, "store 1 still believes it leads: its clock stood still");

    clock.resume_after(Duration::from_secs(10));
    let epoch = region::epoch(&status_of(&cluster, 1).region);
    let answer = cluster.stores[&1].read(1, epoch, ReadRequest::Get { key: b"k".to_vec() });
    let early = answer.recv_timeout(Duration::from_millis(200));
    assert!(
        !matches!(early, Ok(Ok(ReadResponse::Value(Some(ref value)))) if value == b"old"),
        "a stale read from a lease that ended during the pause: {early:?}"
    );
    cluster.transport.heal();
    let outcome = match early {
        Ok(outcome) => outcome,
        Err(_) => answer.recv_timeout(WAIT).expect("an answer once store 1 hears the new term"),
    };
    match outcome {
        Err(StoreError::NotLeader { .. }) => {}
        Ok(ReadResponse::Value(Some(value))) => assert_eq!(value, b"new", "only the newer write may be read"),
        other => panic!("the read after the pause answered {other:?}"),
    }
    assert_eq!(cluster.get(1, b"k"), Some(b"new".to_vec()));
}

/// The lease published for code outside the store (the driver's timestamp oracle) holds
/// while the leader is confirmed by its followers, past any one lease's length, and is
/// seen revoked once the transfer is accepted, before its target can lead: the oracle
/// on the old leader stops before one on the new leader can start.
#[test]
fn a_published_lease_holds_while_leading_and_is_revoked_before_a_transfer_target_leads() {
    let cluster = Cluster::with_regions(1, |config| config.hibernate_after_ticks = u64::MAX);
    cluster.write(1, vec![put(b"k", b"v")]);
    let (from, status) = cluster.wait_for("a leader", |c| c.leader(1));
    let lease = cluster.stores[&from].watch_leader_lease(1);
    cluster.wait_for("the lease to be published", |_| lease.held_in_term().filter(|&t| t == status.term));
    // Several election timeouts (10 ticks of 10 ms): renewed by heartbeats throughout.
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(lease.held_in_term(), Some(status.term), "a confirmed leader's lease lapsed");
    }
    let target = status.region.peers.iter().find(|p| p.store_id != from).copied().expect("another peer");
    cluster.wait_for("the transfer to be accepted", |c| {
        c.stores[&from].transfer_leader(1, target.id).recv_timeout(WAIT).ok().and_then(Result::ok)
    });
    assert_eq!(lease.held_in_term(), None, "a lease held once its transfer was accepted");
    let deadline = Instant::now() + WAIT;
    while cluster.stores[&target.store_id].status(1).is_none_or(|s| !s.is_leader) {
        assert!(Instant::now() < deadline, "the target never led");
    }
    assert_eq!(lease.held_in_term(), None, "the old leader's lease outlived the transfer");
}
