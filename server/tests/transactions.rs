//! Transactions on real processes: a driver (whose oracle hands out the timestamps)
//! and three stores, the key space split into regions so that transactions span
//! several. Each test states the property it checks: atomic visibility across regions,
//! snapshot reads, first committer wins, lock_keys against write skew, range refreshes
//! against phantoms, locks of a dead
//! coordinator resolved by readers either way, and a bank whose total never changes
//! under concurrent transfers.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tessera_engine::proto::command::{Commit, write};
use tessera_server::client::{Client, ClientError, Conflict};

async fn started() -> (Cluster, Arc<Client>) {
    let cluster = Cluster::start(3, 1_000_000);
    let client = Arc::new(cluster.client());
    wait_for_leader(&client).await;
    split_at(&client, &[b"m", b"t"]).await;
    (cluster, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_three_regions_is_seen_whole_or_not_at_all() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, client) = started().await;
    let before = client.begin().await.expect("a transaction");
    let mut writer = client.begin().await.expect("a transaction");
    for key in [&b"apple"[..], b"orange", b"zucchini"] {
        writer.put(key, b"fresh").expect("buffered");
    }
    assert_eq!(writer.get(b"orange").await.expect("read"), Some(b"fresh".to_vec()), "reads its own writes");
    let commit_ts = writer.commit().await.expect("commits");
    assert!(commit_ts > before.start_ts().await.expect("a start timestamp"));

    let after = client.begin().await.expect("a transaction");
    let seen = after.scan(b"", b"", 0, false).await.expect("a scan at the snapshot");
    assert_eq!(seen.len(), 3, "every key of the committed transaction: {seen:?}");
    let reversed = after.scan(b"", b"", 2, true).await.expect("a reverse scan");
    assert_eq!(
        reversed.iter().map(|pair| pair.key.as_slice()).collect::<Vec<_>>(),
        [&b"zucchini"[..], b"orange"]
    );
    // A transaction that started before the commit sees none of it.
    assert!(before.scan(b"", b"", 0, false).await.expect("a scan").is_empty());
    assert_eq!(before.get(b"zucchini").await.expect("read"), None);
    // Raw and transactional keys never mix.
    assert_eq!(client.get(b"apple").await.expect("a raw read"), None);
    client.put(b"apple", b"raw").await.expect("a raw write");
    assert_eq!(
        client.begin().await.expect("txn").get(b"apple").await.expect("read"),
        Some(b"fresh".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_transactions_writing_one_key_the_first_to_commit_wins() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, client) = started().await;
    let mut first = client.begin().await.expect("txn");
    let mut second = client.begin().await.expect("txn");
    first.put(b"key", b"first").expect("buffered");
    second.put(b"key", b"second").expect("buffered");
    second.put(b"other", b"second").expect("buffered");
    first.commit().await.expect("the first committer wins");
    match second.commit().await {
        Err(ClientError::Conflict(Conflict::WriteConflict { key, .. })) => assert_eq!(key, b"key"),
        other => panic!("the second must conflict on the key: {other:?}"),
    }
    let reader = client.begin().await.expect("txn");
    assert_eq!(reader.get(b"key").await.expect("read"), Some(b"first".to_vec()));
    assert_eq!(reader.get(b"other").await.expect("read"), None, "nothing of the loser is visible");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locking_the_keys_read_prevents_write_skew() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, client) = started().await;
    // Two doctors on call; each may leave if the other stays. Without locks both leave.
    let mut setup = client.begin().await.expect("txn");
    setup.put(b"alice", b"on").expect("buffered");
    setup.put(b"zoe", b"on").expect("buffered");
    setup.commit().await.expect("set up");
    let mut alice = client.begin().await.expect("txn");
    let mut zoe = client.begin().await.expect("txn");
    assert_eq!(alice.get(b"zoe").await.expect("read"), Some(b"on".to_vec()));
    assert_eq!(zoe.get(b"alice").await.expect("read"), Some(b"on".to_vec()));
    alice.lock_keys([b"zoe"]).expect("locked");
    zoe.lock_keys([b"alice"]).expect("locked");
    alice.put(b"alice", b"off").expect("buffered");
    zoe.put(b"zoe", b"off").expect("buffered");
    alice.commit().await.expect("the first commits");
    assert!(zoe.commit().await.expect_err("the second read a key the first wrote").is_conflict());
    let reader = client.begin().await.expect("txn");
    assert_eq!(reader.get(b"zoe").await.expect("read"), Some(b"on".to_vec()), "someone stays on call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_refreshed_at_commit_admits_no_phantom() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, client) = started().await;
    // At least one on call, at most two: each joins after counting one in [a, z), a
    // range over all three regions. Without the refresh both join (a phantom each).
    let mut setup = client.begin().await.expect("txn");
    setup.put(b"alice", b"on").expect("buffered");
    setup.commit().await.expect("set up");
    let mut nora = client.begin().await.expect("txn");
    let mut walt = client.begin().await.expect("txn");
    for joining in [&mut nora, &mut walt] {
        assert_eq!(joining.scan(b"a", b"z", 0, false).await.expect("a scan").len(), 1);
        joining.refresh_on_commit(b"a", b"z").expect("a range");
    }
    // Each writes inside the range it refreshes: its own writes are no phantom.
    nora.put(b"nora", b"on").expect("buffered");
    walt.put(b"walt", b"on").expect("buffered");
    nora.commit().await.expect("the first commits");
    match walt.commit().await {
        Err(ClientError::Conflict(Conflict::RangeChanged { key, .. })) => assert_eq!(key, b"nora"),
        other => panic!("the second must fail on the key that appeared in its range: {other:?}"),
    }
    let reader = client.begin().await.expect("txn");
    assert_eq!(reader.scan(b"a", b"z", 0, false).await.expect("a scan").len(), 2, "at most two on call");
    assert_eq!(reader.get(b"walt").await.expect("read"), None, "nothing of the loser is visible");
    // A change after the commit timestamp is no conflict: serialized after.
    let mut late = client.begin().await.expect("txn");
    assert_eq!(late.scan(b"a", b"z", 0, false).await.expect("a scan").len(), 2);
    late.refresh_on_commit(b"a", b"z").expect("a range");
    late.put(b"alice", b"off").expect("buffered");
    late.commit().await.expect("nothing changed in the range since its start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_coordinators_locks_are_resolved_by_readers_to_its_primarys_fate() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, client) = started().await;
    // Died after committing its primary: a reader of the secondary commits it.
    let start_ts = prewrite_and_die(&client, &[b"apple", b"zucchini"], 60_000).await;
    let commit_ts = client.timestamp().await.expect("a timestamp").as_u64();
    let commit = Commit { start_ts, commit_ts, keys: vec![b"apple".to_vec()] };
    assert!(send_txn_command(&client, b"apple", write::Kind::Commit(commit)).await.errors.is_empty());
    let reader = client.begin().await.expect("txn");
    assert_eq!(reader.get(b"zucchini").await.expect("resolved"), Some(b"from-the-dead".to_vec()));

    // Died before its commit point: a reader waits out the time to live, then the
    // transaction is rolled back and its late commit refused.
    let ttl_ms = 1_500;
    let start_ts = prewrite_and_die(&client, &[b"banana", b"tomato"], ttl_ms).await;
    let reader = client.begin().await.expect("txn");
    let began = Instant::now();
    assert_eq!(reader.get(b"tomato").await.expect("resolved"), None);
    assert!(
        began.elapsed() >= Duration::from_millis(500),
        "a live lock is waited for, not rolled back at once"
    );
    let late = client.timestamp().await.expect("a timestamp").as_u64();
    let commit = Commit { start_ts, commit_ts: late, keys: vec![b"banana".to_vec()] };
    let refused = send_txn_command(&client, b"banana", write::Kind::Commit(commit)).await;
    assert_eq!(refused.errors.len(), 1, "a rolled-back transaction can no longer commit");
    assert_eq!(client.begin().await.expect("txn").get(b"banana").await.expect("read"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banks_total_never_changes_under_concurrent_transfers() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, client) = started().await;
    const ACCOUNTS: usize = 8;
    const OPENING: i64 = 100;
    let account =
        |index: usize| format!("{}-account", (b'a' + (index * 25 / ACCOUNTS) as u8) as char).into_bytes();
    let mut opening = client.begin().await.expect("txn");
    for index in 0..ACCOUNTS {
        opening.put(&account(index), OPENING.to_string().as_bytes()).expect("buffered");
    }
    opening.commit().await.expect("accounts opened");

    let transfers = (0..4).map(|worker| {
        let client = client.clone();
        tokio::spawn(async move {
            let mut committed = 0;
            for round in 0..15 {
                let (from, to) = ((worker + round) % ACCOUNTS, (worker * 3 + round * 5 + 1) % ACCOUNTS);
                if from == to {
                    continue;
                }
                let mut transfer = client.begin().await.expect("txn");
                let balance = |value: Option<Vec<u8>>| -> i64 {
                    String::from_utf8(value.expect("an account")).expect("utf-8").parse().expect("a number")
                };
                let from_balance = balance(transfer.get(&account(from)).await.expect("read"));
                let to_balance = balance(transfer.get(&account(to)).await.expect("read"));
                transfer.put(&account(from), (from_balance - 7).to_string().as_bytes()).expect("buffered");
                transfer.put(&account(to), (to_balance + 7).to_string().as_bytes()).expect("buffered");
                match transfer.commit().await {
                    Ok(_) => committed += 1,
                    Err(error) if error.is_conflict() => {}
                    Err(error) => panic!("a transfer failed other than by conflict: {error}"),
                }
            }
            committed
        })
    });
    let audits = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut audits = 0;
            for _ in 0..20 {
                let audit = client.begin().await.expect("txn");
                let pairs = audit.scan(b"", b"", 0, false).await.expect("a snapshot scan");
                assert_eq!(pairs.len(), ACCOUNTS);
                let read_ts = audit.start_ts().await.expect("a start timestamp");
                let total: i64 = pairs
                    .iter()
                    .map(|pair| String::from_utf8_lossy(&pair.value).parse::<i64>().expect("a number"))
                    .sum();
                assert_eq!(total, OPENING * ACCOUNTS as i64, "a snapshot saw half a transfer at {read_ts}");
                audits += 1;
            }
            audits
        })
    };
    let mut committed = 0;
    for transfer in transfers {
        committed += transfer.await.expect("the worker finishes");
    }
    assert_eq!(audits.await.expect("the auditor finishes"), 20);
    assert!(committed > 0, "some transfers commit");
    let last = client.begin().await.expect("txn");
    let pairs = last.scan(b"", b"", 0, false).await.expect("a final scan");
    let total: i64 =
        pairs.iter().map(|pair| String::from_utf8_lossy(&pair.value).parse::<i64>().expect("a number")).sum();
    assert_eq!(total, OPENING * ACCOUNTS as i64);
}
