//! How replicas come to exist on a store: a new replica whose first messages are lost,
//! and two snapshots over the same keys racing to install.

use super::*;

fn learner_on_store_4(peer_id: u64) -> AdminCommand {
    let learner = Peer { id: peer_id, store_id: 4, role: PeerRole::Learner as i32 };
    region::change_peer_command(ConfChangeType::AddLearner, learner)
}

/// The leader's first messages to a new learner are lost before its store could create
/// it. Heartbeats to a replica that does not exist are dropped, so only the leader
/// probing again can bring it into being: it must, within a few heartbeats.
#[test]
fn a_new_replica_whose_first_appends_are_lost_still_appears_and_catches_up() {
    let cluster = Cluster::one_region_on_three_of_four(20);
    let mut scenario = failpoint::Scenario::begin();
    scenario.arm(points::STORE_DROP_CREATING_MESSAGES, Action::Trigger);
    cluster.admin(1, learner_on_store_4(14));
    let deadline = Instant::now() + WAIT;
    while scenario.hits(points::STORE_DROP_CREATING_MESSAGES) == 0 {
        assert!(Instant::now() < deadline, "no message to the new learner was ever sent");
        std::thread::sleep(Duration::from_millis(5));
    }
    scenario.release(points::STORE_DROP_CREATING_MESSAGES);
    // A heartbeat interval is 20 ms here; a few of them, and a snapshot, fit in a second.
    let caught_up_by = Instant::now() + Duration::from_secs(3);
    while data_on(&cluster.stores[&4], b"k19") != Some(b"v".to_vec()) {
        assert!(
            Instant::now() < caught_up_by,
            "the learner never appeared after its first appends were lost"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A learner of region 1 on store 4 has accepted a snapshot of the whole key space, and
/// its install is held. Meanwhile region 1 splits at `m`; the new region 2 has a
/// replica on store 4 too, whose leader starts sending there. Region 2's replica must
/// not be created (nor its snapshot accepted) while region 1's snapshot claims its keys:
/// both would install, and region 1's log replay would then write into region 2's
/// range on that store. Regions 1 and 2 live on different workers of store 4, so the
/// held install blocks only region 1.
#[test]
fn a_held_snapshot_keeps_an_overlapping_region_from_being_created_on_its_store() {
    let cluster = Cluster::one_region_on_three_of_four(20);
    let mut scenario = failpoint::Scenario::begin();
    scenario.arm(points::STORE_INSTALL_SNAPSHOT, Action::Pause);
    cluster.admin(1, learner_on_store_4(14));
    assert!(
        scenario.wait_until_paused(points::STORE_INSTALL_SNAPSHOT, WAIT),
        "store 4 never received region 1's snapshot"
    );
    let split = region::split_command(b"m".to_vec(), &[2, 21, 22, 23, 24]).expect("ids are given");
    cluster.admin(1, split);
    cluster.wait_for("region 2's leader", |c| c.leader(2));
    cluster.write(2, vec![put(b"x", b"in region 2")]);
    // Ample time for region 2's leader to probe store 4 many times over.
    std::thread::sleep(Duration::from_millis(500));
    let state_of_2 = cluster.stores[&4].engine().get(Cf::Meta, &keys::region_state_key(2)).expect("read");
    assert_eq!(state_of_2, None, "region 2 was created on store 4 over keys region 1's snapshot claims");
    assert_eq!(scenario.hits(points::STORE_INSTALL_SNAPSHOT), 1, "a second snapshot reached its install");

    scenario.release(points::STORE_INSTALL_SNAPSHOT);
    cluster.wait_for("region 2's replica on store 4 to apply", |c| {
        (data_on(&c.stores[&4], b"x") == Some(b"in region 2".to_vec())).then_some(())
    });
    let left = cluster.wait_for("region 1 on store 4 to apply the split", |c| {
        c.stores[&4].status(1).filter(|s| s.region.end_key == b"m").map(|s| s.region)
    });
    let right = cluster.stores[&4].status(2).expect("region 2 on store 4").region;
    assert_eq!(
        (left.start_key.as_slice(), right.start_key.as_slice(), right.end_key.as_slice()),
        (&b""[..], &b"m"[..], &b""[..])
    );
    assert_eq!(data_on(&cluster.stores[&4], b"k19"), Some(b"v".to_vec()));
}

/// A store applies its replica's removal and stops before destroying the replica. On
/// restart the replica's own region no longer lists it: the store must finish the
/// destruction (data deleted, a tombstone left) instead of keeping a non-member.
#[test]
fn a_restart_finishes_the_destruction_of_a_removed_replica() {
    let mut cluster = Cluster::one_region_on_three_of_four(20);
    cluster
        .wait_for("store 3 to hold the data", |c| (data_on(&c.stores[&3], b"k19").is_some()).then_some(()));
    let mut scenario = failpoint::Scenario::begin();
    scenario.arm(points::STORE_SKIP_DESTROY_AFTER_REMOVAL, Action::Trigger);
    cluster
        .admin(1, region::change_peer_command(ConfChangeType::Remove, Peer { id: 13, store_id: 3, role: 0 }));
    let deadline = Instant::now() + WAIT;
    while scenario.hits(points::STORE_SKIP_DESTROY_AFTER_REMOVAL) == 0 {
        assert!(Instant::now() < deadline, "store 3 never applied its removal");
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.stop(3);
    drop(scenario);
    assert!(data_on_disk(&cluster, 3, b"k19"), "the skipped destruction left the data");
    cluster.start(3);
    cluster.wait_for("store 3 to finish destroying its removed replica", |c| {
        c.stores[&3].status(1).is_none().then_some(())
    });
    assert_eq!(data_on(&cluster.stores[&3], b"k19"), None, "the removed replica's data is gone");
    let state: Option<crate::proto::metadata::RegionLocalState> =
        cluster.stores[&3].engine().get_message(Cf::Meta, &keys::region_state_key(1)).expect("read");
    assert_eq!(state.map(|s| s.state), Some(crate::proto::metadata::PeerState::Tombstone as i32));
}

/// Whether a stopped store's directory still holds `key` (opened read-only here).
fn data_on_disk(cluster: &Cluster, store_id: u64, key: &[u8]) -> bool {
    let engine =
        crate::storage::Engine::open(cluster.dirs[&store_id].path()).expect("the stopped store's database");
    engine.get(Cf::Data, &keys::data_key(key)).expect("read").is_some()
}
