//! Watches on real processes: a driver and three stores, the key space in several
//! regions. Writers commit transactions over keys of every region while the regions
//! split and their leaders move; watches opened before, during and after the writes
//! (through the client library, `tessera ctl watch` and the stores' gRPC `Watch`) must
//! each deliver exactly the committed history of their range after their start: every
//! transaction once, in commit order, whole, with the values it replaced, and nothing
//! at or below a progress notification already sent. A watch from a timestamp garbage
//! collection has passed is refused as compacted.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tessera_engine::timestamp::Timestamp;
use tessera_server::client::{Client, Watch, WatchError, WatchMessage, WatchOptions};
use tessera_server::proto::{WatchRequest, kv_client::KvClient};

/// A committed transaction as its writer knows it: commit timestamp and, by key, the
/// new value (None: deleted).
type Committed = (Timestamp, BTreeMap<Vec<u8>, Option<Vec<u8>>>);

/// What a watch delivered: commit timestamp and `(key, value, previous version)` in the
/// order received, the previous version as its value and commit timestamp.
type Delivered = (Timestamp, Vec<(Vec<u8>, Option<Vec<u8>>, Option<(Vec<u8>, Timestamp)>)>);

const WRITERS: usize = 3;
const TRANSACTIONS_PER_WRITER: usize = 40;

fn options(start: &[u8], end: &[u8], from: Timestamp) -> WatchOptions {
    WatchOptions {
        start: start.to_vec(),
        end: end.to_vec(),
        from: Some(from),
        prev_values: true,
        progress_interval: Some(Duration::from_millis(100)),
    }
}

/// Writer `writer`'s keys: one per region-to-be, so that its transactions span regions.
fn writer_keys(writer: usize) -> Vec<Vec<u8>> {
    ["b", "h", "n", "q", "w"].iter().map(|prefix| format!("{prefix}-{writer}").into_bytes()).collect()
}

/// Commits transactions writing one to three of the writer's keys (every fifth a
/// delete), at least `TRANSACTIONS_PER_WRITER` and until `stop` is set; answers what
/// each committed.
async fn write(client: Arc<Client>, writer: usize, stop: Arc<AtomicBool>) -> Vec<Committed> {
    let keys = writer_keys(writer);
    let mut committed = Vec::new();
    for round in 0.. {
        if round >= TRANSACTIONS_PER_WRITER && stop.load(Ordering::SeqCst) {
            break;
        }
        let mut transaction = client.begin().await.expect("a transaction");
        let mut writes = BTreeMap::new();
        for offset in 0..=(round % 3) {
            let key = &keys[(round + offset * 2) % keys.len()];
            let value = (round % 5 != 4).then(|| format!("w{writer}-r{round}").into_bytes());
            match &value {
                Some(value) => transaction.put(key, value).expect("buffered"),
                None => transaction.delete(key).expect("buffered"),
            }
            writes.insert(key.clone(), value);
        }
        let commit_ts = transaction.commit().await.expect("a writer's keys are its own: it commits");
        committed.push((commit_ts, writes));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    committed
}

/// Reads `watch` until it has notified progress to `until`, checking on the way that
/// transactions come in commit order and none at or below a notified progress.
async fn collect(watch: &mut Watch, until: Timestamp, name: &str) -> Vec<Delivered> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delivered: Vec<Delivered> = Vec::new();
    let mut progress = watch.from();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, watch.next())
            .await
            .unwrap_or_else(|_| panic!("{name}: no progress to {until} within a minute (at {progress})"))
            .unwrap_or_else(|| panic!("{name}: the watch ended"))
            .unwrap_or_else(|error| panic!("{name}: the watch failed: {error}"));
        match message {
            WatchMessage::Transaction { commit_ts, events } => {
                assert!(
                    commit_ts > progress,
                    "{name}: a transaction at {commit_ts} after progress to {progress}"
                );
                if let Some((last, _)) = delivered.last() {
                    assert!(commit_ts > *last, "{name}: {commit_ts} delivered after {last}");
                }
                assert!(
                    events.iter().all(|event| event.commit_ts == commit_ts),
                    "{name}: one commit per message"
                );
                let events = events
                    .into_iter()
                    .map(|event| (event.key, event.value, event.prev_value.zip(event.prev_commit_ts)))
                    .collect();
                delivered.push((commit_ts, events));
            }
            WatchMessage::Progress(at) => {
                assert!(at > progress, "{name}: progress went from {progress} to {at}");
                progress = at;
                if at >= until {
                    return delivered;
                }
            }
        }
    }
}

/// The history a watch of `[start, end)` after `from` must deliver, with each
/// version's previous one, from every committed transaction in commit order.
fn expected(history: &[Committed], start: &[u8], end: &[u8], from: Timestamp) -> Vec<Delivered> {
    let mut current: BTreeMap<Vec<u8>, (Vec<u8>, Timestamp)> = BTreeMap::new();
    let mut watched = Vec::new();
    for (commit_ts, writes) in history {
        let mut events = Vec::new();
        for (key, value) in writes {
            let previous = match value {
                Some(value) => current.insert(key.clone(), (value.clone(), *commit_ts)),
                None => current.remove(key),
            };
            let inside = key.as_slice() >= start && (end.is_empty() || key.as_slice() < end);
            if inside && *commit_ts > from {
                events.push((key.clone(), value.clone(), previous));
            }
        }
        if !events.is_empty() {
            watched.push((*commit_ts, events));
        }
    }
    watched
}

/// Fails naming the first transaction where what a watch delivered and the committed
/// history part.
fn assert_same_history(delivered: &[Delivered], wanted: &[Delivered], name: &str) {
    let show = |entry: Option<&Delivered>| match entry {
        None => "nothing".to_string(),
        Some((commit_ts, events)) => {
            let text =
                |bytes: &Option<Vec<u8>>| bytes.as_deref().map(|b| String::from_utf8_lossy(b).into_owned());
            let events: Vec<_> = events
                .iter()
                .map(|(key, value, previous)| {
                    let previous = previous.as_ref().map(|(value, at)| (text(&Some(value.clone())), *at));
                    format!("{} = {:?} (was {:?})", String::from_utf8_lossy(key), text(value), previous)
                })
                .collect();
            format!("{commit_ts}: {}", events.join(", "))
        }
    };
    let Some(first) =
        (0..delivered.len().max(wanted.len())).find(|&index| delivered.get(index) != wanted.get(index))
    else {
        return;
    };
    panic!(
        "{name}: the watch departs from the committed history at transaction {first} of {}: delivered {}, committed {}",
        wanted.len(),
        show(delivered.get(first)),
        show(wanted.get(first))
    );
}

/// Moves the leadership of the region holding `key` to another of its voters.
async fn move_leader(client: &Client, key: &[u8]) {
    let route = client.pd().region_by_key_async(key).await.expect("a route");
    let (region, leader) = (route.region.expect("a region"), route.leader.expect("a leader"));
    let other = region.peers.iter().find(|peer| peer.store_id != leader.store_id).expect("another voter");
    let _ = client.pd().transfer_leader_async(region.id, other.store_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_deliver_every_transaction_once_in_commit_order_through_splits_and_leader_moves() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, 1_000_000);
    let client = Arc::new(cluster.client());
    wait_for_leader(&client).await;
    split_at(&client, &[b"m", b"t"]).await;
    write(client.clone(), 9, Arc::new(AtomicBool::new(true))).await;
    let from = client.timestamp().await.expect("a timestamp");
    let mut everything = client.watch(options(b"", b"", from)).await.expect("a watch");
    let mut middle = client.watch(options(b"c", b"r", from)).await.expect("a watch");

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> =
        (0..WRITERS).map(|writer| tokio::spawn(write(client.clone(), writer, stop.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    split_at(&client, &[b"f"]).await;
    move_leader(&client, b"q").await;
    let during = client.timestamp().await.expect("a timestamp");
    let mut later = client.watch(options(b"g", b"", during)).await.expect("a watch");
    move_leader(&client, b"b").await;
    split_at(&client, &[b"p"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut history = Vec::new();
    for writer in writers {
        history.extend(writer.await.expect("the writer finishes"));
    }
    history.sort_by_key(|(commit_ts, _)| *commit_ts);
    let until = client.timestamp().await.expect("a timestamp");
    // Opened after every write: all of it comes from the catch-up.
    let mut afterwards = client.watch(options(b"", b"", from)).await.expect("a watch");

    let cases = [
        (&mut everything, (&b""[..], &b""[..]), from, "the whole key space"),
        (&mut middle, (b"c", b"r"), from, "[c, r)"),
        (&mut later, (b"g", b""), during, "[g, end) opened mid-way"),
        (&mut afterwards, (b"", b""), from, "the whole key space opened afterwards"),
    ];
    for (watch, (start, end), start_ts, name) in cases {
        let delivered = collect(watch, until, name).await;
        let wanted = expected(&history, start, end, start_ts);
        assert!(!wanted.is_empty(), "{name}: the case watches something");
        assert_same_history(&delivered, &wanted, &format!("{name}, after {start_ts}"));
    }

    // The same history through the binary and through a store's gRPC Watch.
    let transactions = expected(&history, b"", b"", from).len();
    let printed = ctl(
        &cluster.pd_address(),
        &[
            "--json",
            "watch",
            "",
            "",
            "--from",
            &from.as_u64().to_string(),
            "--count",
            &transactions.to_string(),
        ],
    );
    let commits: Vec<u64> = printed
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()?["commit_ts"].as_u64())
        .collect();
    let wanted: Vec<u64> = history.iter().map(|(commit_ts, _)| commit_ts.as_u64()).collect();
    assert_eq!(commits, wanted, "ctl watch printed every transaction in commit order");
    check_grpc_watch(&cluster, from, &history).await;
}

/// A store's `Watch` announces its start, then sends each transaction in order.
async fn check_grpc_watch(cluster: &Cluster, from: Timestamp, history: &[Committed]) {
    let address = &cluster.stores[0].as_ref().expect("a running store").address;
    let mut kv = KvClient::connect(format!("http://{address}")).await.expect("the store answers");
    let request =
        WatchRequest { start_ts: from.as_u64(), progress_interval_ms: 100, ..WatchRequest::default() };
    let mut stream = kv.watch(request).await.expect("the watch starts").into_inner();
    let first = stream.message().await.expect("a message").expect("the announcement");
    assert_eq!((first.events.len(), first.resolved_ts), (0, from.as_u64()), "the start is announced first");
    let mut commits = Vec::new();
    while commits.len() < history.len() {
        let response = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .expect("the gRPC watch delivers within a minute")
            .expect("the stream holds")
            .expect("the stream goes on");
        if let Some(event) = response.events.first() {
            assert!(
                response.events.iter().all(|other| other.commit_ts == event.commit_ts),
                "one commit per response"
            );
            commits.push(event.commit_ts);
        }
    }
    let wanted: Vec<u64> = history.iter().map(|(commit_ts, _)| commit_ts.as_u64()).collect();
    assert_eq!(commits, wanted, "the gRPC watch sent every transaction in commit order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_keeps_garbage_collection_below_it_until_released() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let pd_config = "[pd.transactions]\ngc_lifetime_ms = 500\ngc_interval_ms = 100\n";
    let cluster = Cluster::start_configured(3, 1_000_000, pd_config);
    let client = Arc::new(cluster.client());
    wait_for_leader(&client).await;
    let held = client.timestamp().await.expect("a timestamp");
    let (taken, _) =
        client.pd().hold_gc_async("test", held, Duration::from_secs(60)).await.expect("an answer");
    assert!(taken, "a hold at a fresh timestamp is taken");
    // Many garbage-collection intervals and lifetimes later, reads there still work.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!below_safe_point(&client, held).await, "garbage collection passed a hold at {held}");
    let (taken, floor) =
        client.pd().hold_gc_async("test", Timestamp::ZERO, Duration::ZERO).await.expect("released");
    assert!(!taken && floor < held.as_u64(), "the floor {floor} stayed below the hold at {held}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !below_safe_point(&client, held).await {
        assert!(Instant::now() < deadline, "the released hold still held after a minute");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (taken, floor) =
        client.pd().hold_gc_async("late", held, Duration::from_secs(60)).await.expect("an answer");
    assert!(!taken && floor >= held.as_u64(), "a hold below the floor {floor} is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_before_the_safe_point_is_refused_as_compacted() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let pd_config = "[pd.transactions]\ngc_lifetime_ms = 1000\ngc_interval_ms = 200\n";
    let cluster = Cluster::start_configured(3, 1_000_000, pd_config);
    let client = Arc::new(cluster.client());
    wait_for_leader(&client).await;
    let old = client.timestamp().await.expect("a timestamp");
    // Until the safe point passes `old`, reads there (and watches from there) work.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !below_safe_point(&client, old).await {
        assert!(Instant::now() < deadline, "the safe point did not pass {old} within a minute");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match client.watch(options(b"", b"", old)).await {
        Err(WatchError::Compacted { from, safe_point }) => {
            assert_eq!(from, old);
            assert!(safe_point >= old, "compacted by a safe point {safe_point} at or above {old}");
        }
        Err(other) => panic!("a watch from {old}, below the safe point, failed otherwise: {other}"),
        Ok(_) => panic!("a watch from {old}, below the safe point, must be refused as compacted"),
    }
    // From now it works, and sees a transaction committed after it.
    let mut watch =
        client.watch(WatchOptions { from: None, ..options(b"", b"", old) }).await.expect("a watch");
    let mut transaction = client.begin().await.expect("a transaction");
    transaction.put(b"k", b"v").expect("buffered");
    let commit_ts = transaction.commit().await.expect("commits");
    let delivered = collect(&mut watch, commit_ts, "a watch from now").await;
    let wanted = vec![(commit_ts, vec![(b"k".to_vec(), Some(b"v".to_vec()), None)])];
    assert_same_history(&delivered, &wanted, "a watch from now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_larger_than_a_message_is_watched_whole() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, 1_000_000);
    let client = Arc::new(cluster.client());
    wait_for_leader(&client).await;
    split_at(&client, &[b"m"]).await;
    let from = client.timestamp().await.expect("a timestamp");
    let mut live = client.watch(options(b"", b"", from)).await.expect("a watch");
    // 20 MiB over two regions: more than one gRPC message (16 MiB) carries.
    let value = |key: &str| key.repeat(5 << 19).into_bytes();
    let keys = ["a", "b", "c", "d", "w", "x", "y", "z"];
    let mut transaction = client.begin().await.expect("a transaction");
    for key in keys {
        transaction.put(key.as_bytes(), &value(key)).expect("buffered");
    }
    let commit_ts = transaction.commit().await.expect("commits");
    let wanted: Vec<Delivered> = vec![(
        commit_ts,
        keys.iter()
            .map(|key| (key.as_bytes().to_vec(), Some(value(key)[..5 << 19].to_vec()), None))
            .collect(),
    )];
    let delivered = collect(&mut live, commit_ts, "a live watch").await;
    assert_same_history(&delivered, &wanted, "a live watch");
    // From the catch-up, through a store's gRPC Watch: parts marked continued.
    let mut caught_up = client.watch(options(b"", b"", from)).await.expect("a watch");
    assert_same_history(&collect(&mut caught_up, commit_ts, "a catch-up").await, &wanted, "a catch-up");
    let address = &cluster.stores[1].as_ref().expect("a running store").address;
    let mut kv = KvClient::connect(format!("http://{address}"))
        .await
        .expect("the store answers")
        .max_decoding_message_size(32 << 20);
    let request = WatchRequest { start_ts: from.as_u64(), ..WatchRequest::default() };
    let mut stream = kv.watch(request).await.expect("the watch starts").into_inner();
    let mut keys_seen = Vec::new();
    loop {
        let response = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .expect("the gRPC watch delivers within a minute")
            .expect("the stream holds")
            .expect("the stream goes on");
        assert!(response.events.iter().all(|event| event.commit_ts == commit_ts.as_u64()));
        keys_seen
            .extend(response.events.iter().map(|event| String::from_utf8_lossy(&event.key).into_owned()));
        if !response.events.is_empty() && !response.continued {
            break;
        }
    }
    assert_eq!(keys_seen, keys, "the transaction came whole, in parts of one message each");
}

/// A watch of the one key `key`, from `from`, with progress every 100 ms.
fn watch_of_key(key: &[u8], from: Timestamp) -> WatchOptions {
    let mut end = key.to_vec();
    end.push(0);
    WatchOptions { end, ..options(key, b"", from) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watches_of_a_client_share_one_feed_of_a_region_and_idle_ones_still_progress() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, 1_000_000);
    let client = Arc::new(cluster.client());
    wait_for_leader(&client).await;
    let keys: Vec<Vec<u8>> = (0..20).map(|index| format!("shared-{index:02}").into_bytes()).collect();
    // Half of the keys are written before the watches open, from a timestamp before the
    // writes: their watches catch up on feeds of their own first.
    let from = client.timestamp().await.expect("a timestamp");
    let mut history = Vec::new();
    for key in keys.iter().step_by(4) {
        let mut transaction = client.begin().await.expect("a transaction");
        transaction.put(key, b"before").expect("buffered");
        history.push((transaction.commit().await.expect("committed"), key.clone(), b"before".to_vec()));
    }
    let mut watches = Vec::new();
    for key in &keys {
        watches.push(client.watch(watch_of_key(key, from)).await.expect("a watch"));
    }
    for key in keys.iter().skip(2).step_by(4) {
        let mut transaction = client.begin().await.expect("a transaction");
        transaction.put(key, b"after").expect("buffered");
        history.push((transaction.commit().await.expect("committed"), key.clone(), b"after".to_vec()));
    }
    let until = client.timestamp().await.expect("a timestamp");
    for (key, watch) in keys.iter().zip(&mut watches) {
        let name = String::from_utf8_lossy(key).into_owned();
        let delivered = collect(watch, until, &name).await;
        let wanted: Vec<Delivered> = history
            .iter()
            .filter(|(_, written, _)| written == key)
            .map(|(commit_ts, key, value)| (*commit_ts, vec![(key.clone(), Some(value.clone()), None)]))
            .collect();
        assert_same_history(&delivered, &wanted, &name);
    }
    // Every watch covers the one region: once the catch-ups are over, one feed serves
    // them all.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.watch_feeds() != 1 {
        assert!(Instant::now() < deadline, "{} feeds for one region after 30 s", client.watch_feeds());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A coordinator that died leaves locks that no reader may ever meet again, and a
/// region's resolved timestamp cannot pass a lock: the store leading the region's feed
/// resolves a lock that has held it back for `feed_stale_lock_after_ms`, so that its
/// watches go on. The secondary of a transaction committed at its primary is committed
/// and delivered; a transaction that never reached its commit point is rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_left_by_dead_coordinators_are_resolved_so_that_watches_go_on() {
    use tessera_engine::proto::command::{Commit, write};
    let _serial = ONE_AT_A_TIME.lock().await;
    let store_config = "[store]\nfeed_stale_lock_after_ms = 200\n";
    let cluster = Cluster::start_with_files(&["", "", ""], 1_000_000, "", Some(store_config));
    let client = Arc::new(cluster.client());
    wait_for_leader(&client).await;
    split_at(&client, &[b"m"]).await;
    let from = client.timestamp().await.expect("a timestamp");
    // Its primary (in the region below m) committed; its coordinator died before the
    // secondary.
    let start_ts = prewrite_and_die(&client, &[b"apple", b"zucchini"], 60_000).await;
    let commit_ts = client.timestamp().await.expect("a timestamp");
    let commit = Commit { start_ts, commit_ts: commit_ts.as_u64(), keys: vec![b"apple".to_vec()] };
    assert!(send_txn_command(&client, b"apple", write::Kind::Commit(commit)).await.errors.is_empty());
    // Died before its commit point: both keys locked until the time to live runs out.
    let dead_start_ts = prewrite_and_die(&client, &[b"banana", b"tomato"], 1_000).await;

    let mut watch = client.watch(options(b"m", b"", from)).await.expect("a watch");
    let until = client.timestamp().await.expect("a timestamp");
    let delivered = collect(&mut watch, until, "behind dead coordinators").await;
    let wanted = vec![(commit_ts, vec![(b"zucchini".to_vec(), Some(b"from-the-dead".to_vec()), None)])];
    assert_same_history(&delivered, &wanted, "behind dead coordinators");
    // The transaction that never committed was rolled back, not merely skipped: its
    // commit is refused now.
    let late = client.timestamp().await.expect("a timestamp").as_u64();
    let commit = Commit { start_ts: dead_start_ts, commit_ts: late, keys: vec![b"banana".to_vec()] };
    let refused = send_txn_command(&client, b"banana", write::Kind::Commit(commit)).await;
    assert_eq!(refused.errors.len(), 1, "the dead transaction was rolled back");
}
