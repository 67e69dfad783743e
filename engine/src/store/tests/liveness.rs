//! Liveness between stores: hibernating regions still fail over when the store leading
//! them is cut off from the other stores.

use super::*;

/// Region 1 hibernates with its leader on store 1. Store 1 then loses its links to
/// stores 2 and 3 (nothing tells them: no placement driver declares it down, and a
/// hibernating region sends nothing). The other two must notice the silent store, wake
/// the region and elect a leader within a few election timeouts (100 ms each here), and
/// take writes while the partition lasts.
#[test]
fn a_hibernating_region_fails_over_when_its_leaders_store_is_cut_off() {
    let cluster = Cluster::with_regions(1, |_| {});
    cluster.write(1, vec![put(b"k", b"before")]);
    cluster.wait_for("store 1 to lead", |c| c.leader(1).filter(|(store, _)| *store == 1));
    cluster.wait_for("the region to hibernate on every store", |c| {
        c.stores.values().all(|store| store.status(1).is_some_and(|s| s.hibernating)).then_some(())
    });
    cluster.transport.partition(1, 2);
    cluster.transport.partition(1, 3);
    let cut_at = Instant::now();
    let (leader, status) = cluster.wait_for("stores 2 and 3 to elect a leader", |c| {
        [2, 3].into_iter().find_map(|store| {
            c.stores[&store].status(1).filter(|s| s.is_leader).map(|status| (store, status))
        })
    });
    let took = cut_at.elapsed();
    assert!(took < Duration::from_secs(2), "a leader took {took:?} to emerge behind the partition");
    let epoch = region::epoch(&status.region);
    let write = cluster.stores[&leader].write(1, epoch, vec![put(b"k", b"during")]);
    assert!(matches!(write.recv_timeout(WAIT), Ok(Ok(_))), "the new leader takes writes");
    cluster.wait_for("store 1 to step down", |c| c.stores[&1].status(1).filter(|s| !s.is_leader).map(|_| ()));
}
