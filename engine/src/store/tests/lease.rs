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
