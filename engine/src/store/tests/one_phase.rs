//! The one-phase commit's guard on real stores: a new leader syncs with the oracle
//! before it takes one, a commit below a served read of its keys is refused (a read of
//! other keys does not refuse it), and a read accepted while a one-phase commit below
//! its timestamp is in flight waits for it.

use super::*;
use crate::proto::command::{Mutation, OnePhaseRefusal, Prewrite, TxnResult};
use crate::proto::mvcc;
use crate::raft::OpaqueError;
use crate::timestamp::{Timestamp, TimestampRun, TimestampSource};

/// The oracle's answer to every sync: the same timestamp, at once.
const SYNCED_AT: u64 = 1_000;

#[derive(Debug)]
struct FixedOracle;

impl TimestampSource for FixedOracle {
    fn request(&self, count: u32, answer: Box<dyn FnOnce(Result<TimestampRun, OpaqueError>) + Send>) {
        answer(Ok(TimestampRun { first: Timestamp::from_u64(SYNCED_AT), count }));
    }
}

fn with_oracle(config: &mut StoreConfig) {
    config.timestamps = Some(Arc::new(FixedOracle));
}

fn one_phase(key: &[u8], start_ts: u64, commit_ts: u64) -> Write {
    let mutation =
        Mutation { op: mvcc::Mutation::Put as i32, key: key.to_vec(), value: b"one-phase".to_vec() };
    let prewrite = Prewrite {
        start_ts,
        primary: key.to_vec(),
        lock_ttl_ms: 0,
        mutations: vec![mutation],
        one_phase_commit_ts: commit_ts,
    };
    Write { kind: Some(write::Kind::Prewrite(prewrite)) }
}

fn outcome(results: Vec<WriteResult>) -> TxnResult {
    results.into_iter().next().and_then(|result| result.txn).expect("a transactional result")
}

fn refusal(result: &TxnResult) -> OnePhaseRefusal {
    OnePhaseRefusal::try_from(result.one_phase_refused).expect("a known refusal")
}

/// A cluster of one region whose leader has synced with the oracle (a warm-up
/// one-phase commit was accepted).
fn synced_cluster() -> Cluster {
    let cluster = Cluster::with_regions(1, with_oracle);
    cluster.wait_for("the sync", |cluster| {
        let result = outcome(cluster.write(1, vec![one_phase(b"warm-up", 1_100, 1_200)]));
        (refusal(&result) == OnePhaseRefusal::OnePhaseAccepted).then_some(())
    });
    cluster
}

/// A key that does not share `key`'s slot of the read watermark.
fn key_in_another_slot_than(key: &[u8]) -> Vec<u8> {
    let slot = crate::store::read_watermark::slot_of;
    let other = (0..).map(|n| format!("other-{n}").into_bytes()).find(|other| slot(other) != slot(key));
    other.expect("a key in another slot")
}

fn snapshot_get(cluster: &Cluster, key: &[u8], read_ts: u64) -> ReadResponse {
    cluster.txn_get(1, key, read_ts)
}

#[test]
fn a_new_leader_takes_one_phase_commits_only_after_syncing_with_the_oracle() {
    let cluster = Cluster::with_regions(1, with_oracle);
    let first = outcome(cluster.write(1, vec![one_phase(b"k", 2_000, 2_100)]));
    assert_eq!(refusal(&first), OnePhaseRefusal::OnePhaseNotSynced, "the first asks for a sync");
    let accepted = cluster.wait_for("the sync", |cluster| {
        let result = outcome(cluster.write(1, vec![one_phase(b"k", 2_000, 2_100)]));
        (refusal(&result) == OnePhaseRefusal::OnePhaseAccepted).then_some(result)
    });
    assert!(accepted.errors.is_empty());
    // No read was served yet: only the sync raised the watermark, to the oracle's answer.
    let below = outcome(cluster.write(1, vec![one_phase(b"j", 500, SYNCED_AT)]));
    assert_eq!(refusal(&below), OnePhaseRefusal::OnePhaseReadAbove);
    assert_eq!(snapshot_get(&cluster, b"k", 3_000), ReadResponse::Value(Some(b"one-phase".to_vec())));
    assert_eq!(snapshot_get(&cluster, b"j", 3_000), ReadResponse::Value(None), "a refusal writes nothing");
}

#[test]
fn a_one_phase_commit_at_or_below_a_served_read_is_refused() {
    let cluster = synced_cluster();
    assert_eq!(snapshot_get(&cluster, b"k", 5_000), ReadResponse::Value(None));
    for commit_ts in [4_000, 5_000] {
        let refused = outcome(cluster.write(1, vec![one_phase(b"k", 3_000, commit_ts)]));
        assert_eq!(refusal(&refused), OnePhaseRefusal::OnePhaseReadAbove, "at {commit_ts}");
    }
    assert_eq!(snapshot_get(&cluster, b"k", 5_000), ReadResponse::Value(None), "the read's snapshot holds");
    let above = outcome(cluster.write(1, vec![one_phase(b"k", 3_000, 6_000)]));
    assert_eq!(refusal(&above), OnePhaseRefusal::OnePhaseAccepted);
}

#[test]
fn a_point_read_of_another_key_does_not_refuse_a_one_phase_commit_but_a_scan_does() {
    let cluster = synced_cluster();
    let other = key_in_another_slot_than(b"k");
    assert_eq!(snapshot_get(&cluster, &other, 5_000), ReadResponse::Value(None));
    let below_other_read = outcome(cluster.write(1, vec![one_phase(b"k", 3_000, 4_000)]));
    assert_eq!(refusal(&below_other_read), OnePhaseRefusal::OnePhaseAccepted, "another key's read");
    let below_own_read = outcome(cluster.write(1, vec![one_phase(&other, 3_000, 4_500)]));
    assert_eq!(refusal(&below_own_read), OnePhaseRefusal::OnePhaseReadAbove, "its own key's read");
    let scan = ReadRequest::TxnScan {
        start: b"a".to_vec(),
        end: b"b".to_vec(),
        read_ts: Timestamp::from_u64(7_000),
        limit: 0,
        reverse: false,
    };
    cluster.read(1, scan);
    let below_scan = outcome(cluster.write(1, vec![one_phase(b"k", 6_000, 6_500)]));
    assert_eq!(refusal(&below_scan), OnePhaseRefusal::OnePhaseReadAbove, "a scan counts for every key");
}

#[test]
fn without_an_oracle_every_one_phase_commit_is_refused() {
    let cluster = Cluster::with_regions(1, |_| {});
    let refused = outcome(cluster.write(1, vec![one_phase(b"k", 2_000, 2_100)]));
    assert_eq!(refusal(&refused), OnePhaseRefusal::OnePhaseUnsupported);
}

#[test]
fn a_read_accepted_while_a_one_phase_commit_below_it_is_in_flight_waits_for_it() {
    let cluster = synced_cluster();
    let (leader, status) = cluster.leader(1).expect("a leader");
    let epoch = region::epoch(&status.region);
    let mut scenario = failpoint::Scenario::begin();
    // The commit is proposed and cannot commit: its appends are lost on the way out.
    scenario.arm(points::STORE_DROP_OUTGOING_APPENDS, Action::Trigger);
    let committing = cluster.stores[&leader].write(1, epoch, vec![one_phase(b"k", 2_000, 2_100)]);
    while scenario.hits(points::STORE_DROP_OUTGOING_APPENDS) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // A read above the commit, accepted now, must not see the key without it.
    let read_ts = Timestamp::from_u64(3_000);
    let reading = cluster.stores[&leader].read(1, epoch, ReadRequest::TxnGet { key: b"k".to_vec(), read_ts });
    assert!(
        reading.recv_timeout(Duration::from_millis(300)).is_err(),
        "the read waits while the commit below it is in flight"
    );
    // A read of a key the commit does not write has nothing to wait for.
    let other = key_in_another_slot_than(b"k");
    let unrelated = cluster.stores[&leader].read(1, epoch, ReadRequest::TxnGet { key: other, read_ts });
    let answer = unrelated.recv_timeout(WAIT).expect("answered while the commit is in flight").expect("read");
    assert_eq!(answer, ReadResponse::Version(None));
    scenario.release(points::STORE_DROP_OUTGOING_APPENDS);
    let committed = committing.recv_timeout(WAIT).expect("answered").expect("committed");
    assert!(outcome(committed).errors.is_empty());
    let answer = reading.recv_timeout(WAIT).expect("answered").expect("read");
    let ReadResponse::Version(Some(version)) = answer else { panic!("a version, not {answer:?}") };
    assert_eq!((version.value.as_slice(), version.commit_ts.as_u64()), (&b"one-phase"[..], 2_100));
}
