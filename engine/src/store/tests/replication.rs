//! Replication across many regions, leader loss, catching up by snapshot, splits,
//! moving a peer, hibernation, and frames a store must refuse.

use super::*;

#[test]
fn one_region_replicates_puts_scans_deletes_and_compare_and_swap() {
    let cluster = Cluster::with_regions(1, |_| {});
    for i in 0..50 {
        cluster.write(1, vec![put(format!("k{i:02}").as_bytes(), b"v")]);
    }
    assert_eq!(cluster.get(1, b"k07"), Some(b"v".to_vec()));
    assert_eq!(cluster.get(1, b"missing"), None);
    let ReadResponse::Pairs(pairs) = cluster.read(
        1,
        ReadRequest::Scan { start: b"k10".to_vec(), end: b"k20".to_vec(), limit: 0, reverse: false },
    ) else {
        panic!("a scan answers pairs");
    };
    assert_eq!(pairs.len(), 10);
    assert_eq!(pairs[0].0, b"k10");
    let ReadResponse::Pairs(reversed) = cluster
        .read(1, ReadRequest::Scan { start: b"k10".to_vec(), end: b"k20".to_vec(), limit: 3, reverse: true })
    else {
        panic!("a scan answers pairs");
    };
    let keys: Vec<&[u8]> = reversed.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, vec![&b"k19"[..], b"k18", b"k17"]);

    let delete = Write {
        kind: Some(write::Kind::DeleteRange(DeleteRange {
            start_key: b"k00".to_vec(),
            end_key: b"k40".to_vec(),
        })),
    };
    cluster.write(1, vec![delete]);
    assert_eq!(cluster.get(1, b"k39"), None);
    assert_eq!(cluster.get(1, b"k40"), Some(b"v".to_vec()));

    let cas = |expected: Option<&[u8]>, new: &[u8]| Write {
        kind: Some(write::Kind::CompareAndSwap(CompareAndSwap {
            key: b"k40".to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new_value: Some(new.to_vec()),
        })),
    };
    let answers = cluster.write(1, vec![cas(Some(b"wrong"), b"x"), cas(Some(b"v"), b"w")]);
    assert_eq!((answers[0].succeeded, answers[1].succeeded), (false, true));
    assert_eq!(cluster.get(1, b"k40"), Some(b"w".to_vec()));

    // Every replica applied the same data.
    cluster.wait_for("followers to apply", |c| {
        c.stores.values().all(|store| data_on(store, b"k40") == Some(b"w".to_vec())).then_some(())
    });
}

#[test]
fn bad_requests_get_typed_errors_and_change_nothing() {
    let cluster = Cluster::with_regions(2, |_| {});
    let (store, status) = cluster.wait_for("a leader", |c| c.leader(1));
    let epoch = region::epoch(&status.region);
    let leader = &cluster.stores[&store];
    let answer = |writes| leader.write(1, epoch, writes).recv_timeout(WAIT).expect("an answer");
    assert!(matches!(answer(vec![put(b"", b"v")]), Err(StoreError::Kv(crate::kv::KvError::EmptyKey))));
    assert!(matches!(
        answer(vec![put(&region_key(1), b"v")]),
        Err(StoreError::Kv(crate::kv::KvError::Region(_)))
    ));
    let stale = RegionEpoch { conf_version: 1, version: 0 };
    let stale_answer = leader.write(1, stale, vec![put(b"a", b"v")]).recv_timeout(WAIT).expect("an answer");
    assert!(matches!(
        stale_answer,
        Err(StoreError::Region(crate::region::RegionError::EpochNotMatch { .. }))
    ));
    let unknown = leader.write(999, epoch, vec![put(b"a", b"v")]).recv_timeout(WAIT).expect("an answer");
    assert_eq!(unknown, Err(StoreError::RegionNotFound(999)));
    let follower = cluster.stores.keys().copied().find(|&id| id != store).expect("a follower");
    let not_leader = cluster.stores[&follower].write(1, epoch, vec![put(b"a", b"v")]).recv_timeout(WAIT);
    assert!(matches!(not_leader, Ok(Err(StoreError::NotLeader { leader: Some(_), .. }))), "{not_leader:?}");
    assert_eq!(cluster.get(1, b"a"), None);
}

#[test]
fn a_hundred_regions_share_syncs() {
    let cluster = Cluster::with_regions(100, |_| {});
    let before = cluster.stores[&1].group_commit();
    for i in 0..100 {
        cluster.write(i as u64 + 1, vec![put(&[region_key(i), b"/x".to_vec()].concat(), b"1")]);
    }
    for i in (0..100).step_by(7) {
        assert_eq!(cluster.get(i as u64 + 1, &[region_key(i), b"/x".to_vec()].concat()), Some(b"1".to_vec()));
    }
    let after = cluster.stores[&1].group_commit();
    assert!(after.syncs > before.syncs);
    assert!(after.regions >= after.syncs, "{after:?}");
}

#[test]
fn writes_continue_after_the_leader_store_dies_and_it_catches_up_on_return() {
    let mut cluster = Cluster::with_regions(1, |_| {});
    for i in 0..20 {
        cluster.write(1, vec![put(format!("a{i:02}").as_bytes(), b"1")]);
    }
    let (old_leader, _) = cluster.wait_for("a leader", |c| c.leader(1));
    cluster.stop(old_leader);
    for i in 0..20 {
        cluster.write(1, vec![put(format!("b{i:02}").as_bytes(), b"2")]);
    }
    assert_eq!(cluster.get(1, b"a05"), Some(b"1".to_vec()), "acknowledged before the failure");
    cluster.start(old_leader);
    cluster.wait_for("the old leader to catch up", |c| {
        (data_on(&c.stores[&old_leader], b"b19") == Some(b"2".to_vec())).then_some(())
    });
}

#[test]
fn a_follower_behind_the_truncated_log_catches_up_by_snapshot() {
    let mut cluster = Cluster::with_regions(1, |config| {
        config.log_gc_max_lag = 5;
        config.log_gc_interval_ticks = 5;
    });
    cluster.write(1, vec![put(b"before", b"1")]);
    let (leader, _) = cluster.wait_for("a leader", |c| c.leader(1));
    let follower = cluster.stores.keys().copied().find(|&id| id != leader).expect("a follower");
    cluster.stop(follower);
    for i in 0..60 {
        cluster.write(1, vec![put(format!("k{i:02}").as_bytes(), b"v")]);
    }
    let leader_status = cluster.wait_for("the leader to truncate its log", |c| {
        c.stores[&leader].status(1).filter(|s| s.first_index > 20)
    });
    assert!(leader_status.first_index > 20);
    cluster.start(follower);
    cluster.wait_for("the follower to catch up", |c| {
        (data_on(&c.stores[&follower], b"k59") == Some(b"v".to_vec())).then_some(())
    });
    assert_eq!(data_on(&cluster.stores[&follower], b"before"), Some(b"1".to_vec()));
}

#[test]
fn a_split_under_load_leaves_two_regions_that_both_serve() {
    let cluster = Arc::new(Cluster::with_regions(1, |_| {}));
    for i in 0..30 {
        cluster.write(1, vec![put(format!("k{i:02}").as_bytes(), b"v")]);
    }
    // A writer keeps writing across the whole key space while the region splits,
    // following the split by refreshing its routing when a write is refused.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let written_before = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let written_after = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        let (before_split, after_split) = (written_before.clone(), written_after.clone());
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            let mut n = 0u64;
            let count = |acknowledged: &Vec<(u64, Vec<u8>)>, region| {
                acknowledged.iter().filter(|(r, _)| *r == region).count() as u64
            };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("k{:02}/{n}", n % 60).into_bytes();
                let region =
                    if cluster.leader(2).is_some() && key.as_slice() >= b"k15".as_slice() { 2 } else { 1 };
                let Some((store, status)) = cluster.leader(region) else { continue };
                let epoch = region::epoch(&status.region);
                if let Ok(Ok(_)) =
                    cluster.stores[&store].write(region, epoch, vec![put(&key, b"w")]).recv_timeout(WAIT)
                {
                    acknowledged.push((region, key));
                    before_split.store(count(&acknowledged, 1), std::sync::atomic::Ordering::SeqCst);
                    after_split.store(count(&acknowledged, 2), std::sync::atomic::Ordering::SeqCst);
                }
                n += 1;
            }
            acknowledged
        })
    };
    // The split happens under load, and the load goes on into the new region: waits on
    // what the writer achieved, not on time.
    cluster.wait_for("writes before the split", |_| (written_before.load(SeqCst) >= 20).then_some(()));
    let split = region::split_command(b"k15".to_vec(), &[2, 21, 22, 23]).expect("ids are given");
    cluster.admin(1, split);
    let (_, right) = cluster.wait_for("the new region's leader", |c| c.leader(2));
    assert_eq!(right.region.start_key, b"k15");
    cluster.wait_for("writes into the new region", |_| (written_after.load(SeqCst) >= 20).then_some(()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = writer.join().expect("the writer thread");
    assert!(acknowledged.len() > 20, "the load kept going: {} writes", acknowledged.len());
    assert!(acknowledged.iter().any(|(region, _)| *region == 2), "writes reached the new region");
    for (_, key) in &acknowledged {
        let region = if key.as_slice() >= b"k15".as_slice() { 2 } else { 1 };
        assert_eq!(cluster.get(region, key), Some(b"w".to_vec()), "acknowledged write {key:?} lost");
    }
    assert_eq!(cluster.get(2, b"k20"), Some(b"v".to_vec()), "data moved with the range, without copying");
    let (store, left) = cluster.wait_for("the left region's leader", |c| c.leader(1));
    assert_eq!(left.region.end_key, b"k15");
    let stale = cluster.stores[&store]
        .write(1, RegionEpoch { conf_version: 1, version: 1 }, vec![put(b"k01", b"x")])
        .recv_timeout(WAIT)
        .expect("an answer");
    assert!(matches!(stale, Err(StoreError::Region(crate::region::RegionError::EpochNotMatch { .. }))));
    let outside = cluster.stores[&store]
        .write(1, region::epoch(&left.region), vec![put(b"k20", b"x")])
        .recv_timeout(WAIT);
    assert!(matches!(outside, Ok(Err(StoreError::Kv(crate::kv::KvError::Region(_))))), "{outside:?}");
}

#[test]
fn a_thousand_regions_take_writes_and_reads() {
    // Three stores of a thousand regions each share this process's cores: tick at a
    // production-like pace so that heartbeats do not crowd out the work.
    let cluster = Cluster::with_regions(1000, |config| config.tick_interval = Duration::from_millis(50));
    let answers: Vec<_> = (0..1000)
        .map(|i| {
            let region = i as u64 + 1;
            let (store, status) = cluster.wait_for("a leader", |c| c.leader(region));
            let epoch = region::epoch(&status.region);
            let write = vec![put(&[region_key(i), b"/x".to_vec()].concat(), b"1")];
            (i, cluster.stores[&store].write(region, epoch, write.clone()), write)
        })
        .collect();
    for (i, answer, write) in answers {
        if !matches!(answer.recv_timeout(WAIT), Ok(Ok(_))) {
            // Leadership moved while the write was in flight: retry through the leader.
            cluster.write(i as u64 + 1, write);
        }
    }
    for i in (0..1000).step_by(37) {
        assert_eq!(cluster.get(i as u64 + 1, &[region_key(i), b"/x".to_vec()].concat()), Some(b"1".to_vec()));
    }
    let entries: u64 = cluster.stores.values().map(|store| store.group_commit().entries).sum();
    assert!(entries > 1000, "{entries} entries persisted");
}

#[test]
fn leadership_moves_on_request() {
    let cluster = Cluster::with_regions(1, |_| {});
    cluster.write(1, vec![put(b"a", b"1")]);
    let (from, status) = cluster.wait_for("a leader", |c| c.leader(1));
    let target = status.region.peers.iter().find(|p| p.store_id != from).copied().expect("another peer");
    cluster.wait_for("the transfer to be accepted", |c| {
        c.stores[&from].transfer_leader(1, target.id).recv_timeout(WAIT).ok().and_then(Result::ok)
    });
    cluster.wait_for("the target to lead", |c| c.leader(1).filter(|(store, _)| *store == target.store_id));
    cluster.write(1, vec![put(b"b", b"2")]);
    assert_eq!(cluster.get(1, b"a"), Some(b"1".to_vec()));
}

#[test]
fn a_peer_moves_to_another_store_by_learner_promote_remove() {
    let mut cluster = Cluster::one_region_on_three_of_four(20);
    let newcomer = Peer { id: 14, store_id: 4, role: PeerRole::Learner as i32 };
    let change = region::change_peer_command;
    cluster.admin(1, change(ConfChangeType::AddLearner, newcomer));
    cluster.wait_for("the learner to receive the data", |c| {
        (data_on(&c.stores[&4], b"k19") == Some(b"v".to_vec())).then_some(())
    });
    cluster.admin(1, change(ConfChangeType::AddVoter, Peer { role: 0, ..newcomer }));
    let leaving = Peer { id: 13, store_id: 3, role: 0 };
    cluster.admin(1, change(ConfChangeType::Remove, leaving));
    cluster.wait_for("the removed peer to be destroyed", |c| c.stores[&3].status(1).is_none().then_some(()));
    assert_eq!(data_on(&cluster.stores[&3], b"k05"), None, "the removed peer's data is gone");
    cluster.stop(3);
    cluster.write(1, vec![put(b"after", b"1")]);
    cluster.wait_for("the moved peer to apply", |c| {
        (data_on(&c.stores[&4], b"after") == Some(b"1".to_vec())).then_some(())
    });
    let (_, status) = cluster.wait_for("a leader", |c| c.leader(1));
    let stores: Vec<u64> = status.region.peers.iter().map(|p| p.store_id).collect();
    assert_eq!(stores, vec![1, 2, 4]);
}

#[test]
fn idle_regions_hibernate_and_wake_on_a_write() {
    let cluster = Cluster::with_regions(20, |_| {});
    for i in 0..20 {
        cluster.write(i as u64 + 1, vec![put(&region_key(i), b"1")]);
    }
    cluster.wait_for("every replica to hibernate", |c| {
        c.stores
            .values()
            .all(|store| (1..=20).all(|region| store.status(region).is_some_and(|s| s.hibernating)))
            .then_some(())
    });
    cluster.write(5, vec![put(&region_key(4), b"2")]);
    assert_eq!(cluster.get(5, &region_key(4)), Some(b"2".to_vec()));
    let awake =
        cluster.stores.values().filter(|store| store.status(5).is_some_and(|s| !s.hibernating)).count();
    assert!(awake >= 1, "the written region woke up");
}

#[test]
fn a_region_over_the_key_count_threshold_splits_itself() {
    let ids: Arc<dyn IdAllocator> = Arc::new(CountingIds(std::sync::atomic::AtomicU64::new(1000)));
    let cluster = Cluster::with_regions_and_ids(
        1,
        |config| {
            config.split_max_keys = 20;
            config.split_check_interval_ticks = 5;
        },
        Some(ids),
    );
    // One command, so that the split cannot land between the writes.
    cluster.write(1, (0..30).map(|i| put(format!("k{i:02}").as_bytes(), b"v")).collect());
    let (_, left) =
        cluster.wait_for("region 1 to split", |c| c.leader(1).filter(|(_, s)| !s.region.end_key.is_empty()));
    let split_key = left.region.end_key.clone();
    assert!(
        split_key.as_slice() > b"k00".as_slice() && split_key.as_slice() < b"k29".as_slice(),
        "{split_key:?}"
    );
    assert_eq!(region::epoch(&left.region).version, 2);
    let new_region = 1000;
    let (_, right) = cluster.wait_for("the new region's leader", |c| c.leader(new_region));
    assert_eq!(right.region.start_key, split_key);
    let new_peers: Vec<u64> = right.region.peers.iter().map(|p| p.id).collect();
    assert_eq!(new_peers, vec![1001, 1002, 1003]);
    for i in 0..30 {
        let key = format!("k{i:02}").into_bytes();
        let region = if key >= split_key { new_region } else { 1 };
        assert_eq!(cluster.get(region, &key), Some(b"v".to_vec()), "key {i} after the split");
    }
}

#[test]
fn malformed_frames_neither_crash_a_store_nor_create_peers() {
    use crate::proto::frame::StoreFrame;
    use crate::raft::proto::{Message, MessageType, Snapshot, SnapshotMetadata};
    let cluster = Cluster::with_regions(1, |_| {});
    cluster.write(1, vec![put(b"a", b"1")]);
    let raft = |from: u64, to: u64, message_type: MessageType| Message {
        msg_type: message_type as i32,
        from,
        to,
        term: 100,
        ..Message::default()
    };
    let garbage_snapshot = Message {
        snapshot: Some(Snapshot {
            data: b"not a snapshot".to_vec(),
            metadata: Some(SnapshotMetadata { conf_state: Some(Default::default()), index: 50, term: 100 }),
        }),
        ..raft(71, 72, MessageType::Snapshot)
    };
    // Decodable, of the addressed region, from a leader of a later term: but its range
    // is inverted, or it carries a key outside its range. Raft would accept it, and an
    // install that fails stops the store.
    let forged_snapshot = |start: &[u8], end: &[u8], key: &[u8]| {
        let payload = crate::proto::frame::RegionSnapshotData {
            region: Some(Region {
                id: 1,
                start_key: start.to_vec(),
                end_key: end.to_vec(),
                ..Region::default()
            }),
            pairs: vec![crate::proto::frame::KeyValue { key: key.to_vec(), value: b"forged".to_vec() }],
            ..Default::default()
        };
        let metadata = SnapshotMetadata { conf_state: Some(Default::default()), index: 1_000, term: 100 };
        let snapshot = Snapshot { data: prost::Message::encode_to_vec(&payload), metadata: Some(metadata) };
        Message { snapshot: Some(snapshot), ..raft(11, 12, MessageType::Snapshot) }
    };
    let everything: (&[u8], &[u8]) = (b"", b"");
    let messages = vec![
        region_message(1, (11, 12), everything, Some(forged_snapshot(b"z", b"a", b"b"))),
        region_message(1, (11, 12), everything, Some(forged_snapshot(b"a", b"c", b"x"))),
        region_message(0, (1, 2), everything, Some(raft(1, 2, MessageType::Append))),
        region_message(7, (71, 0), everything, Some(raft(71, 0, MessageType::Append))),
        region_message(7, (71, 72), everything, Some(garbage_snapshot)),
        region_message(1, (11, 12), everything, None),
        region_message(
            1,
            (11, 12),
            everything,
            Some(Message { msg_type: 99, ..raft(11, 12, MessageType::Append) }),
        ),
        // Well formed, but for a region whose range overlaps region 1, which store 2
        // holds: creating it would let two regions write the same keys.
        region_message(9, (91, 92), (b"a", b"c"), Some(raft(91, 92, MessageType::Append))),
    ];
    let frame = StoreFrame {
        from_store: 1,
        to_store: 2,
        messages,
        heartbeats: Vec::new(),
        heartbeat_responses: Vec::new(),
    };
    cluster.stores[&2].sink().deliver(frame);
    cluster.write(1, vec![put(b"b", b"2")]);
    assert_eq!(data_on(&cluster.stores[&2], b"x"), None, "the forged snapshot's key");
    cluster.wait_for("store 2 to keep applying", |c| {
        (data_on(&c.stores[&2], b"b") == Some(b"2".to_vec())).then_some(())
    });
    let engine = cluster.stores[&2].engine();
    for region in [0, 7, 9] {
        assert_eq!(
            engine.get(Cf::Meta, &keys::region_state_key(region)).expect("read"),
            None,
            "region {region} created"
        );
        assert!(cluster.stores[&2].status(region).is_none());
    }
}

#[test]
fn a_region_cannot_be_bootstrapped_twice_nor_get_two_peers_on_one_store() {
    let cluster = Cluster::with_regions(1, |_| {});
    cluster.write(1, vec![put(b"a", b"1")]);
    let (store, status) = cluster.wait_for("a leader", |c| c.leader(1));
    assert_eq!(cluster.stores[&store].bootstrap_region(&status.region), Err(StoreError::RegionExists(1)));
    let second = Peer { id: 99, store_id: store, role: PeerRole::Learner as i32 };
    let request = region::change_peer_command(ConfChangeType::AddLearner, second);
    let epoch = region::epoch(&status.region);
    let answer = cluster.stores[&store].admin(1, epoch, request).recv_timeout(WAIT).expect("an answer");
    let refusal = InvalidChange::StoreHoldsPeer { store_id: store, region_id: 1 };
    assert_eq!(answer, Err(StoreError::InvalidChange(refusal)), "{answer:?}");
    assert_eq!(cluster.get(1, b"a"), Some(b"1".to_vec()));
}

/// §10.2.1 of Ongaro's thesis: a leader sends new entries to its followers before they
/// are durable in its own log, so that its write and theirs overlap. With every log
/// writer of the process held before it writes, a proposal's entry still reaches both
/// followers (sent after the leader's own write, it would wait for it); nothing
/// commits until the writers go on.
#[test]
fn a_leader_sends_entries_before_its_own_log_write_is_durable() {
    let cluster = Cluster::with_regions(1, |_| {});
    cluster.write(1, vec![put(b"k00", b"v")]);
    cluster.wait_for("every replica to apply the first write", |c| {
        c.stores.values().all(|store| data_on(store, b"k00").is_some()).then_some(())
    });
    let (leader, status) = cluster.wait_for("a leader", |c| c.leader(1));
    let followers: Vec<u64> = cluster.stores.keys().copied().filter(|&id| id != leader).collect();
    let delivered = |c: &Cluster| -> Vec<u64> {
        followers.iter().map(|&store| c.transport.entries_delivered(store)).collect()
    };
    let before = delivered(&cluster);
    let mut scenario = failpoint::Scenario::begin();
    scenario.arm(points::STORE_LOG_WRITE, Action::Pause);
    let answer = cluster.stores[&leader].write(1, region::epoch(&status.region), vec![put(b"k01", b"v")]);
    assert!(
        scenario.wait_until_paused(points::STORE_LOG_WRITE, WAIT),
        "the leader's log write reaches the writer and is held there"
    );
    // Every store's log writer in this process is held meanwhile, other tests' too: the
    // wait is kept short, so that a regression fails here and not in them.
    let held_until = Instant::now() + Duration::from_secs(3);
    while delivered(&cluster).iter().zip(&before).any(|(now, then)| now <= then) {
        assert!(
            Instant::now() < held_until,
            "the entry must reach both followers while the leader's own log write is held"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(answer.try_recv().is_err(), "nothing commits while no replica's log is durable");
    scenario.release(points::STORE_LOG_WRITE);
    assert!(matches!(answer.recv_timeout(WAIT), Ok(Ok(_))), "the write commits once the logs are written");
    assert_eq!(cluster.get(1, b"k01"), Some(b"v".to_vec()));
}

/// Writes proposed behind a split entry, with the epoch from before the split, are
/// refused when applied (the split changed the range version) and none of them lands,
/// on either side of the split key. Appends are dropped while they are proposed, so
/// that on every run they sit in the log behind the uncommitted split.
#[test]
fn writes_proposed_behind_a_split_are_refused_when_applied() {
    let cluster = Cluster::with_regions(1, |_| {});
    cluster.write(1, vec![put(b"k00", b"v")]);
    let (leader, status) = cluster.wait_for("a leader", |c| c.leader(1));
    let epoch_before = region::epoch(&status.region);
    let mut scenario = failpoint::Scenario::begin();
    scenario.arm(points::STORE_DROP_OUTGOING_APPENDS, Action::Trigger);
    let admin = region::split_command(b"k15".to_vec(), &[2, 21, 22, 23]).expect("ids are given");
    let split_answer = cluster.stores[&leader].admin(1, epoch_before, admin);
    let late_writes: Vec<_> = [&b"k05"[..], &b"k20"[..]]
        .into_iter()
        .map(|key| (key, cluster.stores[&leader].write(1, epoch_before, vec![put(key, b"late")])))
        .collect();
    // The status request queues behind the proposals on the region's worker: once it is
    // answered, both writes are in the leader's log behind the split entry.
    // Nothing commits while appends are dropped, so the split has not applied either.
    assert_eq!(status_of(&cluster, leader).region.end_key, b"", "the split must not apply yet");
    scenario.release(points::STORE_DROP_OUTGOING_APPENDS);
    assert!(matches!(split_answer.recv_timeout(WAIT), Ok(Ok(_))), "the split commits once appends flow");
    for (key, answer) in late_writes {
        let outcome = answer.recv_timeout(WAIT).expect("an answer to a late write");
        assert!(
            matches!(outcome, Err(StoreError::Region(crate::region::RegionError::EpochNotMatch { .. }))),
            "a write proposed before the split with the old epoch must be refused when applied: {key:?} got {outcome:?}"
        );
    }
    assert_eq!(cluster.get(1, b"k05"), None, "a refused write must not land in the left region");
    cluster.wait_for("the new region's leader", |c| c.leader(2));
    assert_eq!(cluster.get(2, b"k20"), None, "a refused write must not land in the right region");
    assert_eq!(cluster.get(1, b"k00"), Some(b"v".to_vec()));
}
