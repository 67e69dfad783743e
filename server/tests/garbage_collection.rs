//! Garbage collection on real processes: a driver keeping versions for two seconds and
//! moving its safe point every few hundred milliseconds, three stores compacting soon
//! after it moves. What is checked: a snapshot read at or below the safe point is
//! refused with its typed error while reads above it see the latest versions; shadowed
//! versions are really removed from the stores; a dead coordinator's locks below the
//! safe point were resolved before it was published, and its late prewrite is refused
//! by the fence; a transaction that outlived the lifetime cannot commit.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tessera_engine::proto::command::{Mutation, Prewrite, TxnResult, write};
use tessera_engine::proto::mvcc;
use tessera_server::client::{Client, ClientError, Conflict};

const DRIVER_CONFIG: &str = "[pd.transactions]\ngc_lifetime_ms = 2000\ngc_interval_ms = 300\n";
const STORE_CONFIG: &str = "[store]\ngc_compaction_interval_ms = 200\n";

fn put(key: &[u8], value: &[u8]) -> Mutation {
    Mutation { op: mvcc::Mutation::Put as i32, key: key.to_vec(), value: value.to_vec() }
}

/// Prewrites `key` for a transaction that started at `start_ts`, straight to the
/// region's leader, as a coordinator would.
async fn prewrite(client: &Client, key: &[u8], start_ts: u64, ttl_ms: u64) -> TxnResult {
    let command = Prewrite {
        start_ts,
        primary: key.to_vec(),
        lock_ttl_ms: ttl_ms,
        mutations: vec![put(key, b"from-the-dead")],
        one_phase_commit_ts: 0,
    };
    send_txn_command(client, key, write::Kind::Prewrite(command)).await
}

/// Records the stores' garbage collection removed, as their last compaction logged.
fn removed_records(cluster: &Cluster) -> u64 {
    (0..3)
        .flat_map(|index| {
            cluster
                .logged(&format!("store{index}"), "transactional families compacted for garbage collection")
        })
        .filter_map(|event| event["removed_records_total"].as_u64())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_older_than_the_lifetime_are_collected_and_reads_below_the_safe_point_are_refused() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start_with_files(&["", "", ""], 1_000_000, DRIVER_CONFIG, Some(STORE_CONFIG));
    let client = Arc::new(cluster.client());
    wait_for_leader(&client).await;

    // Twenty versions of a (long values: they live in the versions family) and of z.
    let long = vec![b'v'; 400];
    for round in 0..20u8 {
        let mut transaction = client.begin().await.expect("a transaction");
        let mut value = long.clone();
        value.push(round);
        transaction.put(b"a", &value).expect("buffered");
        transaction.put(b"z", &[round]).expect("buffered");
        transaction.commit().await.expect("commits");
    }
    // A coordinator that dies after its prewrite, and one that lives on, too long.
    let dead_start = client.timestamp().await.expect("a timestamp").as_u64();
    assert!(prewrite(&client, b"q", dead_start, 500).await.errors.is_empty());
    let mut outlived = client.begin().await.expect("a transaction");
    outlived.put(b"late", b"never").expect("buffered");
    let written_at = client.timestamp().await.expect("a timestamp");

    // The safe point passes everything written so far within a few passes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !below_safe_point(&client, written_at).await {
        assert!(Instant::now() < deadline, "no safe point above {written_at} within a minute");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Above it, the newest versions, whole.
    let now = client.begin().await.expect("a transaction");
    let mut newest = long.clone();
    newest.push(19);
    assert_eq!(now.get(b"a").await.expect("a read"), Some(newest));
    assert_eq!(now.get(b"z").await.expect("a read"), Some(vec![19]));
    // The dead coordinator's lock was resolved (rolled back) before the safe point was
    // published, and its late prewrite of another key is refused by the fence.
    assert_eq!(now.get(b"q").await.expect("a read"), None);
    let late = prewrite(&client, b"r", dead_start, 500).await;
    assert!(late.below_fence >= dead_start, "a prewrite below the fence is refused: {late:?}");
    // The transaction that outlived the lifetime cannot commit.
    match outlived.commit().await {
        Err(ClientError::Conflict(Conflict::TooOld { .. })) => {}
        other => panic!("a transaction older than the safe point committed or failed otherwise: {other:?}"),
    }
    // And the shadowed versions are gone from the stores (38 of a's and z's 40, on
    // each replica that compacted).
    let deadline = Instant::now() + Duration::from_secs(30);
    while removed_records(&cluster) < 38 {
        assert!(
            Instant::now() < deadline,
            "the stores removed {} records within 30 s, expected at least 38",
            removed_records(&cluster)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
