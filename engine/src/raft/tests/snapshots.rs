//! Log compaction and InstallSnapshot (§5.1 of the thesis / §7 of the paper): a leader
//! that no longer holds the entries a follower needs sends its snapshot instead.

use super::harness::{ELECTION_TICKS, Network, log_of};
use crate::raft::proto::MessageType;
use crate::raft::tracker::ProgressState;

/// 3 falls behind while 1 and 2 commit five entries; then the leader compacts its log
/// past everything 3 holds. Returns the network and the compaction index.
fn lagging_follower_behind_compaction() -> (Network, u64) {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    for i in 0..5 {
        net.propose(1, format!("e{i}").as_bytes());
    }
    net.stabilize();
    let applied = net.node(1).applied_index;
    assert_eq!(applied, net.raft(1).log.last_index(), "everything is committed and applied on 1");
    let conf_state = net.raft(1).tracker.config.to_conf_state();
    net.node(1).storage.compact(applied, conf_state, b"state after e4".to_vec()).unwrap();
    assert_eq!(net.raft(1).log.first_index(), applied + 1);
    assert!(net.raft(3).log.last_index() < applied);
    net.heal();
    (net, applied)
}

#[test]
fn lagging_follower_installs_a_snapshot_and_catches_up() {
    let (mut net, snapshot_index) = lagging_follower_behind_compaction();
    net.heartbeat(1);

    let snapshots: Vec<_> =
        net.delivered.iter().filter(|m| m.msg_type() == MessageType::Snapshot).cloned().collect();
    assert_eq!(snapshots.len(), 1);
    assert_eq!((snapshots[0].from, snapshots[0].to), (1, 3));
    let snapshot = snapshots[0].snapshot.as_ref().unwrap();
    assert_eq!(snapshot.metadata.as_ref().unwrap().index, snapshot_index);
    assert_eq!(snapshot.data, b"state after e4");

    let follower = net.node(3);
    assert_eq!(follower.snapshots_installed, 1);
    assert_eq!(follower.storage.current_snapshot().data, b"state after e4", "installed through the Ready");
    assert_eq!(follower.applied_index, snapshot_index);
    assert_eq!(follower.raw.raft.log.committed, snapshot_index);
    let progress = &net.raft(1).tracker.progress[&3];
    assert_eq!((progress.state, progress.matched), (ProgressState::Replicate, snapshot_index));

    // From here on it replicates normally.
    net.propose(1, b"after");
    net.stabilize();
    assert_eq!(log_of(net.raft(3)), log_of(net.raft(1)));
    assert_eq!(net.node(3).applied_data(), vec![b"after".to_vec()], "entries after the snapshot apply");
    assert_eq!(net.node(3).applied_index, net.node(1).applied_index);
    net.assert_applied_agree();
}

/// The application reports a snapshot it could not deliver: the leader returns the
/// follower to probe mode, waits for a sign of life (a heartbeat response) and tries
/// again.
#[test]
fn failed_snapshot_returns_the_follower_to_probe() {
    let (mut net, snapshot_index) = lagging_follower_behind_compaction();
    net.drop_if(|m| m.msg_type() == MessageType::Snapshot);
    net.heartbeat(1);
    let progress = &net.raft(1).tracker.progress[&3];
    assert_eq!((progress.state, progress.pending_snapshot), (ProgressState::Snapshot, snapshot_index));
    assert!(progress.is_paused(), "nothing else is sent while a snapshot is in flight");

    net.raw(1).report_snapshot(3, false);
    let progress = &net.raft(1).tracker.progress[&3];
    assert_eq!(progress.state, ProgressState::Probe);
    assert!(progress.is_paused(), "it waits for a heartbeat response before probing again");
    assert!(net.take_messages().iter().all(|m| m.to != 3), "no immediate retry");

    net.heal();
    net.heartbeat(1);
    assert_eq!(net.count_delivered(1, 3, MessageType::Snapshot), 1, "retried after the heartbeat");
    assert_eq!(net.node(3).applied_index, snapshot_index);
    assert_eq!(net.raft(1).tracker.progress[&3].state, ProgressState::Replicate);
}

/// A follower that already holds a snapshot's last entry only commits up to it. Entries it
/// holds after that point may be a deposed leader's, so it must acknowledge the snapshot's
/// index and no more: acknowledging its whole log would let the leader count the stale
/// suffix towards a commit.
#[test]
fn follower_holding_the_snapshot_entry_acknowledges_only_the_snapshot() {
    use super::harness::{conf_state, config, drain, message, new_raft, storage_with_log};
    use crate::raft::proto::{Snapshot, SnapshotMetadata};

    // Entries 2..=4 of term 2, then 5 and 6 of term 3 from a leader that was deposed.
    let storage = storage_with_log(conf_state(&[1, 2, 3], &[]), &[2, 2, 2, 3, 3]);
    let mut follower = new_raft(config(2), storage);
    let snapshot = Snapshot {
        data: b"state at 4".to_vec(),
        metadata: Some(SnapshotMetadata { conf_state: Some(conf_state(&[1, 2, 3], &[])), index: 4, term: 2 }),
    };
    let install =
        crate::raft::proto::Message { snapshot: Some(snapshot), ..message(1, 2, MessageType::Snapshot, 4) };
    follower.step(install).unwrap();

    assert_eq!(follower.log.committed, 4);
    let responses = drain(&mut follower);
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].msg_type(), MessageType::AppendResponse);
    assert!(!responses[0].reject);
    assert_eq!(responses[0].index, 4, "entries 5 and 6 are not known to match the leader's log");
}

/// A replica its store has not created yet answers nothing, heartbeats included (only
/// an append or a snapshot creates it), so with CheckQuorum on it never counts as
/// recently active, and a leader ships no snapshot to a replica that may be down. When
/// the log is compacted past the leader's probe to it, the leader must still send what
/// creates it: an empty append at the start of its log, whose refusal makes the replica
/// recently active and brings the snapshot. (Found by the chaos suite: a learner added
/// to a busy region while its first appends were lost was never created.)
#[test]
fn a_silent_replica_behind_the_compacted_log_is_probed_at_the_log_start_and_gets_the_snapshot() {
    let mut net = Network::with_config(&[1, 2, 3], &[], |config| config.check_quorum = true);
    net.isolate(3);
    net.elect(1);
    for i in 0..5 {
        net.propose(1, format!("e{i}").as_bytes());
        net.stabilize();
    }
    assert!(net.raft(1).tracker.progress[&3].probe_sent, "the probes to 3 were lost");
    let applied = net.node(1).applied_index;
    let conf_state = net.raft(1).tracker.config.to_conf_state();
    net.node(1).storage.compact(applied, conf_state, b"state after e4".to_vec()).unwrap();
    assert!(net.raft(1).tracker.progress[&3].next_index <= applied, "3's next index is compacted away");
    // 3 comes into being: appends and snapshots reach it, heartbeats never do.
    net.heal();
    net.drop_if(|m| m.to == 3 && m.msg_type() == MessageType::Heartbeat);
    for _ in 0..2 * ELECTION_TICKS {
        net.tick(1);
        net.stabilize();
    }
    assert_eq!(net.count_delivered(1, 3, MessageType::Snapshot), 1, "the snapshot followed the probe");
    assert_eq!(net.node(3).applied_index, applied);
    net.propose(1, b"after");
    net.stabilize();
    assert_eq!(net.node(3).applied_data(), vec![b"after".to_vec()], "3 replicates from the snapshot on");
    net.assert_applied_agree();
}
