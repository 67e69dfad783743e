//! etcd's v3 API on real processes, through etcd's own Rust client (`etcd-client`): a
//! driver and three stores serving it, the key space in several regions so that
//! ranges cross them. Each test states what etcd's API guarantees page promises and
//! checks it: revisions increase with every write, create_revision / mod_revision /
//! version per key, ranges and prefixes with limits, counts and sorting, reads at a past
//! revision, prev_kv, and etcd's errors where clients match on them.

mod common;

use common::*;
use etcd_client::{
    Client as EtcdClient, Compare, CompareOp, DeleteOptions, EventType, GetOptions, LeaseGrantOptions,
    LeaseTimeToLiveOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
    WatchResponse, WatchStream,
};
use std::time::Duration;

/// A cluster whose stores serve etcd's API, split at the etcd keys `b` and `m` (so
/// that ranges of etcd keys cross regions), and a client of the first store's.
async fn started() -> (Cluster, EtcdClient) {
    // Progress notifications every half second, so that a test sees them (the setting
    // acting in a real process).
    let store_config = "[store]\netcd_listen = \"127.0.0.1:0\"\netcd_progress_notify_interval_ms = 500\n";
    let cluster = Cluster::start_with_files(&["", "", ""], 1_000_000, "", Some(store_config));
    let client = cluster.client();
    wait_for_leader(&client).await;
    split_at(&client, &[b"\xfeetcd/k/b", b"\xfeetcd/k/m"]).await;
    let endpoints: Vec<String> =
        cluster.stores.iter().flatten().filter_map(|store| store.etcd.clone()).collect();
    assert_eq!(endpoints.len(), 3, "every store serves etcd's API");
    let etcd = EtcdClient::connect([endpoints[0].clone()], None).await.expect("etcd's client connects");
    (cluster, etcd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_and_ranges_keep_etcd_s_revisions_and_versions() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, mut etcd) = started().await;
    let first = etcd.put("apple", "1", None).await.expect("put");
    let created = first.header().expect("a header").revision();
    let second = etcd.put("apple", "2", Some(PutOptions::new().with_prev_key())).await.expect("put");
    let updated = second.header().expect("a header").revision();
    assert!(updated > created, "a later write has a later revision ({updated} after {created})");
    let previous = second.prev_key().expect("the replaced version");
    assert_eq!((previous.value(), previous.mod_revision(), previous.version()), (&b"1"[..], created, 1));

    let now = etcd.get("apple", None).await.expect("get");
    let kv = &now.kvs()[0];
    assert_eq!(
        (kv.value(), kv.create_revision(), kv.mod_revision(), kv.version()),
        (&b"2"[..], created, updated, 2)
    );
    assert!(
        now.header().expect("a header").revision() >= updated,
        "a read is never behind a write it follows"
    );
    let then = etcd.get("apple", Some(GetOptions::new().with_revision(created))).await.expect("a past read");
    assert_eq!(then.kvs()[0].value(), b"1", "a read at a past revision sees that revision");

    // A range over three regions, with a limit, counts, sorting.
    for key in ["banana", "cherry", "melon", "zucchini"] {
        etcd.put(key, key, None).await.expect("put");
    }
    let all = etcd.get("\0", Some(GetOptions::new().with_from_key())).await.expect("every key");
    let keys: Vec<&[u8]> = all.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(keys, [&b"apple"[..], b"banana", b"cherry", b"melon", b"zucchini"]);
    let page = etcd.get("b", Some(GetOptions::new().with_range("n").with_limit(2))).await.expect("a page");
    assert_eq!(
        (page.kvs().len(), page.count(), page.more()),
        (2, 3, true),
        "count is the range's, not the page's"
    );
    let newest_first = GetOptions::new().with_from_key().with_sort(SortTarget::Mod, SortOrder::Descend);
    let sorted = etcd.get("a", Some(newest_first)).await.expect("sorted");
    assert_eq!(sorted.kvs()[0].key(), b"zucchini", "the newest write first");
    let counted =
        etcd.get("a", Some(GetOptions::new().with_from_key().with_count_only())).await.expect("a count");
    assert_eq!((counted.count(), counted.kvs().len()), (5, 0));
    let prefixed =
        etcd.get("ch", Some(GetOptions::new().with_prefix().with_keys_only())).await.expect("a prefix");
    assert_eq!((prefixed.kvs()[0].key(), prefixed.kvs()[0].value()), (&b"cherry"[..], &b""[..]));

    // Deletes: a range, with what it deleted; the key is then created anew.
    let deleted =
        etcd.delete("a", Some(DeleteOptions::new().with_range("c").with_prev_key())).await.expect("delete");
    assert_eq!(deleted.deleted(), 2);
    assert_eq!(deleted.prev_kvs().iter().map(|kv| kv.key()).collect::<Vec<_>>(), [&b"apple"[..], b"banana"]);
    let recreated =
        etcd.put("apple", "again", None).await.expect("put").header().expect("a header").revision();
    let kv = etcd.get("apple", None).await.expect("get").kvs()[0].clone();
    assert_eq!((kv.create_revision(), kv.version()), (recreated, 1), "a deleted key starts over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_serving_etcd_s_api_is_a_member() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (cluster, mut etcd) = started().await;
    let mut wanted: Vec<String> = cluster
        .stores
        .iter()
        .flatten()
        .filter_map(|store| store.etcd.as_ref().map(|endpoint| format!("http://{endpoint}")))
        .collect();
    wanted.sort();
    let members = etcd.member_list().await.expect("the members");
    let mut listed: Vec<String> =
        members.members().iter().flat_map(|member| member.client_urls().to_vec()).collect();
    listed.sort();
    assert_eq!(listed, wanted, "each store once, at the address it serves etcd's API on");
    let error = etcd.member_remove(members.members()[0].id()).await.expect_err("membership is the driver's");
    assert!(error.to_string().contains("not supported"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_etcd_s_errors() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, mut etcd) = started().await;
    let error = etcd.put("", "v", None).await.expect_err("an empty key is refused");
    assert!(error.to_string().contains("etcdserver: key is not provided"), "{error}");
    let error =
        etcd.put("k", "", Some(PutOptions::new().with_ignore_value())).await.expect_err("no key to keep");
    assert!(error.to_string().contains("etcdserver: key not found"), "{error}");
    let error = etcd
        .put("k", "v", Some(PutOptions::new().with_ignore_value()))
        .await
        .expect_err("a value it ignores");
    assert!(error.to_string().contains("etcdserver: value is provided"), "{error}");
    let future = etcd.put("k", "v", None).await.expect("put").header().expect("a header").revision()
        + 1_000_000_000_000;
    let error =
        etcd.get("k", Some(GetOptions::new().with_revision(future))).await.expect_err("a future revision");
    assert!(error.to_string().contains("required revision is a future revision"), "{error}");
    let status = etcd.status().await.expect("the endpoint's status");
    assert!(!status.version().is_empty() && status.header().is_some());
    assert!(etcd.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None).await.is_ok());
    let mut too_many = Txn::new();
    let puts: Vec<TxnOp> = (0..129).map(|index| TxnOp::put(format!("k{index}"), "v", None)).collect();
    too_many = too_many.and_then(puts);
    let error = etcd.txn(too_many).await.expect_err("more operations than etcd takes");
    assert!(error.to_string().contains("etcdserver: too many operations in txn request"), "{error}");
    let twice = Txn::new().and_then([TxnOp::put("k", "1", None), TxnOp::put("k", "2", None)]);
    let error = etcd.txn(twice).await.expect_err("a key written twice");
    assert!(error.to_string().contains("etcdserver: duplicate key given in txn request"), "{error}");
}

/// The revision of a response header.
fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.expect("a header").revision()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_s_compare_and_swap_patterns_hold() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, mut etcd) = started().await;
    let key = "/registry/pods/default/web";
    // Create: only if the key does not exist.
    let create = || {
        Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, "v1", None)])
            .or_else([TxnOp::get(key, None)])
    };
    let created = etcd.txn(create()).await.expect("create");
    assert!(created.succeeded());
    let created_at = revision_of(created.header());
    let again = etcd.txn(create()).await.expect("create again");
    assert!(!again.succeeded(), "the key exists now");
    let TxnOpResponse::Get(current) = &again.op_responses()[0] else { panic!("the else branch's get") };
    assert_eq!((current.kvs()[0].value(), current.kvs()[0].mod_revision()), (&b"v1"[..], created_at));

    // Update: only from the revision read; a stale one gets the current object.
    let update = |from: i64, value: &str| {
        Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, from)])
            .and_then([TxnOp::put(key, value, None), TxnOp::get(key, None)])
            .or_else([TxnOp::get(key, None)])
    };
    let updated = etcd.txn(update(created_at, "v2")).await.expect("update");
    assert!(updated.succeeded());
    let updated_at = revision_of(updated.header());
    assert!(updated_at > created_at);
    let TxnOpResponse::Get(own) = &updated.op_responses()[1] else { panic!("the get after the put") };
    let kv = &own.kvs()[0];
    assert_eq!(
        (kv.value(), kv.mod_revision(), kv.create_revision(), kv.version()),
        (&b"v2"[..], updated_at, created_at, 2),
        "a read after a write in one transaction sees it, at the transaction's revision"
    );
    let stale = etcd.txn(update(created_at, "v3")).await.expect("a stale update");
    assert!(!stale.succeeded());
    let TxnOpResponse::Get(current) = &stale.op_responses()[0] else { panic!("the else branch's get") };
    assert_eq!(current.kvs()[0].mod_revision(), updated_at);

    // Delete: only from the revision read.
    let delete = Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, updated_at)])
        .and_then([TxnOp::delete(key, None)])
        .or_else([TxnOp::get(key, None)]);
    assert!(etcd.txn(delete).await.expect("delete").succeeded());
    assert!(etcd.get(key, None).await.expect("get").kvs().is_empty());

    // A nested transaction decides on the state at the start.
    let nested = Txn::new().when([Compare::version("outer", CompareOp::Equal, 0)]).and_then([
        TxnOp::put("outer", "1", None),
        TxnOp::txn(
            Txn::new()
                .when([Compare::version("outer", CompareOp::Equal, 0)])
                .and_then([TxnOp::put("inner", "1", None)]),
        ),
    ]);
    let response = etcd.txn(nested).await.expect("a nested transaction");
    let TxnOpResponse::Txn(inner) = &response.op_responses()[1] else { panic!("the nested response") };
    assert!(response.succeeded() && inner.succeeded(), "its compare saw the start, not the put before it");
    assert_eq!(etcd.get("inner", None).await.expect("get").kvs().len(), 1);
}

/// Lists `prefix` at one revision in pages of `limit`, as kube-apiserver's paginated
/// lists do (the first page names the revision, the later ones read at it from just
/// past the last key); answers the keys and the revision.
async fn list_in_pages(etcd: &mut EtcdClient, prefix: &str, limit: i64) -> (Vec<Vec<u8>>, i64) {
    let prefix_end =
        format!("{}{}", &prefix[..prefix.len() - 1], (prefix.as_bytes()[prefix.len() - 1] + 1) as char);
    let first =
        etcd.get(prefix, Some(GetOptions::new().with_prefix().with_limit(limit))).await.expect("a page");
    let at = revision_of(first.header());
    let mut keys: Vec<Vec<u8>> = first.kvs().iter().map(|kv| kv.key().to_vec()).collect();
    let mut more = first.more();
    while more {
        let mut from = keys.last().expect("a page before").clone();
        from.push(0);
        let options = GetOptions::new().with_range(prefix_end.clone()).with_revision(at).with_limit(limit);
        let page = etcd.get(from, Some(options)).await.expect("a page at the list's revision");
        assert_eq!(revision_of(page.header()), at, "a page read at a revision answers that revision");
        keys.extend(page.kvs().iter().map(|kv| kv.key().to_vec()));
        more = page.more();
    }
    (keys, at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_s_list_then_watch_and_shared_lease_patterns_hold() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, mut etcd) = started().await;
    // Events share one lease, written concurrently (each attaches to one of its guards).
    let lease = etcd.lease_grant(3_600, None).await.expect("a grant").id();
    let writes = (0..40).map(|index| {
        let mut etcd = etcd.clone();
        async move {
            let key = format!("/registry/events/default/e{index:02}");
            etcd.put(key, "event", Some(PutOptions::new().with_lease(lease))).await.expect("a leased put");
        }
    });
    futures::future::join_all(writes).await;
    let (listed, at) = list_in_pages(&mut etcd, "/registry/events/", 7).await;
    let wanted: Vec<Vec<u8>> =
        (0..40).map(|index| format!("/registry/events/default/e{index:02}").into_bytes()).collect();
    assert_eq!(listed, wanted, "every key once, in order, across pages and regions");

    // A write after the list: a page at the list's revision does not see it.
    etcd.put("/registry/events/default/e99", "late", None).await.expect("put");
    let (again, _) = list_in_pages(&mut etcd, "/registry/events/", 7).await;
    assert_eq!(again.len(), 41);
    let page = GetOptions::new().with_prefix().with_revision(at);
    assert_eq!(etcd.get("/registry/events/", Some(page)).await.expect("a read at the list").kvs().len(), 40);

    // The watch from the list's revision + 1 sees what came after, with previous values.
    let options =
        WatchOptions::new().with_prefix().with_start_revision(at + 1).with_prev_key().with_progress_notify();
    let mut stream = etcd.watch("/registry/events/", Some(options)).await.expect("a watch");
    let revoked = revision_of(etcd.lease_revoke(lease).await.expect("revoke").header());
    let mut puts = 0;
    let mut deletes = Vec::new();
    while deletes.len() < 40 {
        for event in next_response(&mut stream).await.events() {
            match event.event_type() {
                EventType::Put => puts += 1,
                EventType::Delete => {
                    let previous = event.prev_kv().expect("a delete with the previous value");
                    assert_eq!((previous.value(), previous.lease()), (&b"event"[..], lease));
                    deletes.push(event.kv().expect("a key-value").mod_revision());
                }
            }
        }
    }
    assert_eq!(puts, 1, "only the write after the list");
    assert!(deletes.iter().all(|&at| at == revoked), "the lease's keys go at one revision");
    // A progress notification (the store is configured for one every 500 ms): no
    // events, the watch's own id, a revision at or past what it delivered.
    let started = std::time::Instant::now();
    let progress = loop {
        let response = next_response(&mut stream).await;
        if response.events().is_empty() && !response.created() && response.watch_id() != -1 {
            break response;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no progress notification within 5 s");
    };
    assert!(revision_of(progress.header()) >= revoked);
    let left = etcd.get("/registry/events/", Some(GetOptions::new().with_prefix())).await.expect("a prefix");
    assert_eq!(left.kvs().len(), 1, "the key without the lease stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_transactions_are_serializable() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (cluster, _etcd) = started().await;
    let endpoint = cluster.stores.iter().flatten().find_map(|store| store.etcd.clone()).expect("an endpoint");
    // Write skew: each transaction writes one key if the other is still zero. Run
    // serializably, at most one of each pair succeeds.
    for round in 0..20 {
        let (x, y) = (format!("skew/{round}/x"), format!("skew/{round}/y"));
        let mut setup = EtcdClient::connect([endpoint.clone()], None).await.expect("connects");
        setup.put(x.clone(), "0", None).await.expect("put");
        setup.put(y.clone(), "0", None).await.expect("put");
        let attempt = |read: String, write: String| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let mut etcd = EtcdClient::connect([endpoint], None).await.expect("connects");
                let txn = Txn::new()
                    .when([Compare::value(read, CompareOp::Equal, "0")])
                    .and_then([TxnOp::put(write, "1", None)]);
                etcd.txn(txn).await.map(|response| response.succeeded())
            })
        };
        let (first, second) = tokio::join!(attempt(x.clone(), y.clone()), attempt(y.clone(), x.clone()));
        let outcomes = [first.expect("runs"), second.expect("runs")];
        let succeeded = outcomes.iter().filter(|outcome| matches!(outcome, Ok(true))).count();
        assert!(succeeded <= 1, "round {round}: write skew, both saw the other at zero ({outcomes:?})");
    }
    // Lost updates: increments by compare-and-swap on one counter from many clients.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut etcd = EtcdClient::connect([endpoint], None).await.expect("connects");
            let mut done = 0;
            while done < 10 {
                let read = etcd.get("counter", None).await.expect("get");
                let (value, revision) = read.kvs().first().map_or((0, 0), |kv| {
                    (kv.value_str().expect("text").parse::<u64>().expect("a number"), kv.mod_revision())
                });
                let txn = Txn::new()
                    .when([Compare::mod_revision("counter", CompareOp::Equal, revision)])
                    .and_then([TxnOp::put("counter", (value + 1).to_string(), None)]);
                if etcd.txn(txn).await.is_ok_and(|response| response.succeeded()) {
                    done += 1;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("an incrementer");
    }
    let mut etcd = EtcdClient::connect([endpoint], None).await.expect("connects");
    let counter = etcd.get("counter", None).await.expect("get");
    assert_eq!(counter.kvs()[0].value(), b"40", "every successful increment counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_refuses_older_revisions_as_etcd_does() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, mut etcd) = started().await;
    let first = revision_of(etcd.put("k", "1", None).await.expect("put").header());
    let second = revision_of(etcd.put("k", "2", None).await.expect("put").header());
    etcd.compact(second, None).await.expect("compact");
    let error = etcd.get("k", Some(GetOptions::new().with_revision(first))).await.expect_err("compacted");
    assert!(error.to_string().contains("required revision has been compacted"), "{error}");
    let at = etcd.get("k", Some(GetOptions::new().with_revision(second))).await.expect("at the compaction");
    assert_eq!(at.kvs()[0].value(), b"2");
    let error = etcd.compact(first, None).await.expect_err("compacted already");
    assert!(error.to_string().contains("required revision has been compacted"), "{error}");
    let error = etcd.compact(second + 1_000_000_000_000, None).await.expect_err("a future revision");
    assert!(error.to_string().contains("required revision is a future revision"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_from_a_revision_delivers_every_change_in_order_with_previous_values() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, mut etcd) = started().await;
    let created = revision_of(etcd.put("/pods/a", "1", None).await.expect("put").header());
    let updated = revision_of(etcd.put("/pods/a", "2", None).await.expect("put").header());
    etcd.put("/other", "x", None).await.expect("a key outside the prefix");
    let deleted = revision_of(etcd.delete("/pods/a", None).await.expect("delete").header());
    let options = WatchOptions::new().with_prefix().with_start_revision(created).with_prev_key();
    let mut stream = etcd.watch("/pods/", Some(options)).await.expect("a watch");
    let mut seen = Vec::new();
    let mut watch_id = None;
    while seen.len() < 3 {
        let response = next_response(&mut stream).await;
        watch_id = Some(response.watch_id());
        for event in response.events() {
            let kv = event.kv().expect("a key-value");
            let previous = event.prev_kv().map(|kv| (kv.value().to_vec(), kv.mod_revision()));
            seen.push((event.event_type(), kv.value().to_vec(), kv.mod_revision(), previous));
        }
    }
    assert_eq!(
        seen,
        [
            (EventType::Put, b"1".to_vec(), created, None),
            (EventType::Put, b"2".to_vec(), updated, Some((b"1".to_vec(), created))),
            (EventType::Delete, Vec::new(), deleted, Some((b"2".to_vec(), updated))),
        ],
        "every change under the prefix since the revision, in order, each once"
    );
    stream.request_progress().await.expect("a progress request");
    let (progress, _) = progress_answer(&mut stream).await;
    assert!(
        progress.events().is_empty() && revision_of(progress.header()) >= deleted,
        "progress is at the delete"
    );
    // A write elsewhere moves the revision on: a progress request answers at least the
    // revision current when it was made, though this watch has nothing new to deliver
    // (what a client compares with a quorum read's revision to know it is fresh).
    let elsewhere = revision_of(etcd.put("/other", "y", None).await.expect("put").header());
    stream.request_progress().await.expect("a progress request");
    let (progress, before) = progress_answer(&mut stream).await;
    assert!(before.is_empty() && progress.events().is_empty(), "nothing new under the prefix: {before:?}");
    let answered = revision_of(progress.header());
    assert!(answered >= elsewhere, "progress at {answered}, below the revision {elsewhere} when asked");
    stream.cancel(watch_id.expect("the watch's id")).await.expect("cancel");
    assert!(next_response(&mut stream).await.canceled(), "a canceled watch says so");
    etcd.compact(deleted, None).await.expect("compact");
    let options = WatchOptions::new().with_start_revision(created);
    let mut stream = etcd.watch("/pods/a", Some(options)).await.expect("a watch");
    let canceled = loop {
        let response = next_response(&mut stream).await;
        if response.canceled() {
            break response;
        }
    };
    assert_eq!(canceled.compact_revision(), deleted, "a start below the compaction is refused with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_lease_deletes_its_keys_at_one_revision_and_a_lease_not_kept_alive_expires() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, mut etcd) = started().await;
    let granted = etcd.lease_grant(60, None).await.expect("a grant");
    let (lease, ttl) = (granted.id(), granted.ttl());
    assert!(lease > 0 && ttl == 60, "lease {lease}, TTL {ttl}");
    let again = etcd.lease_grant(60, Some(LeaseGrantOptions::new().with_id(lease))).await;
    let error = again.expect_err("an id granted twice");
    assert!(error.to_string().contains("lease already exists"), "{error}");
    let error =
        etcd.put("a", "1", Some(PutOptions::new().with_lease(lease + 1))).await.expect_err("no lease");
    assert!(error.to_string().contains("requested lease not found"), "{error}");

    // Two keys on the lease across regions, one moved off it, one never on it.
    let on_lease = || Some(PutOptions::new().with_lease(lease));
    let first = revision_of(etcd.put("/leased/a", "1", on_lease()).await.expect("put").header());
    etcd.put("/leased/z", "1", on_lease()).await.expect("put");
    etcd.put("/leased/moved", "1", on_lease()).await.expect("put");
    etcd.put("/leased/moved", "2", None).await.expect("a put without the lease takes the key off it");
    etcd.put("/leased/free", "1", None).await.expect("put");
    let alive = etcd.lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys())).await;
    let alive = alive.expect("time to live");
    assert_eq!(
        (alive.granted_ttl(), alive.keys()),
        (60, &[b"/leased/a".to_vec(), b"/leased/z".to_vec()][..])
    );
    assert!(alive.ttl() > 50 && alive.ttl() <= 60, "{} s left", alive.ttl());
    let leases = etcd.leases().await.expect("the leases");
    assert!(leases.leases().iter().any(|status| status.id() == lease));

    let options = WatchOptions::new().with_prefix().with_start_revision(first + 1);
    let mut stream = etcd.watch("/leased/", Some(options)).await.expect("a watch");
    let revoked = revision_of(etcd.lease_revoke(lease).await.expect("revoke").header());
    let mut deleted = Vec::new();
    while deleted.len() < 2 {
        for event in next_response(&mut stream).await.events() {
            let kv = event.kv().expect("a key-value");
            if event.event_type() == EventType::Delete {
                deleted.push((kv.key().to_vec(), kv.mod_revision()));
            }
        }
    }
    assert_eq!(deleted, [(b"/leased/a".to_vec(), revoked), (b"/leased/z".to_vec(), revoked)]);
    let left = etcd.get("/leased/", Some(GetOptions::new().with_prefix())).await.expect("a prefix");
    let left: Vec<&[u8]> = left.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(left, [&b"/leased/free"[..], b"/leased/moved"], "only the keys off the lease are left");
    let gone = etcd.lease_time_to_live(lease, None).await.expect("time to live");
    assert_eq!(gone.ttl(), -1, "a revoked lease is gone");
    // The server answers TTL 0, which etcd's client reads as the lease's end.
    let error = etcd.lease_keep_alive(lease).await.expect_err("a keep-alive of a revoked lease");
    assert!(error.to_string().contains("lease not found"), "{error}");
    let error = etcd.lease_revoke(lease).await.expect_err("revoked already");
    assert!(error.to_string().contains("requested lease not found"), "{error}");

    // Kept alive past its TTL, the lease lives; left alone, it expires with its key.
    let short = etcd.lease_grant(2, None).await.expect("a grant").id();
    etcd.put("/session", "me", Some(PutOptions::new().with_lease(short))).await.expect("put");
    let (mut keeper, mut renewals) = etcd.lease_keep_alive(short).await.expect("a keep-alive stream");
    for _ in 0..8 {
        keeper.keep_alive().await.expect("a renewal");
        let renewed = renewals.message().await.expect("the stream goes on").expect("an answer");
        assert_eq!(renewed.ttl(), 2, "renewed to the granted TTL");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(etcd.get("/session", None).await.expect("get").kvs().len(), 1, "kept alive for 4 s");
    drop((keeper, renewals));
    let expired_within = Duration::from_secs(10);
    let started = std::time::Instant::now();
    while !etcd.get("/session", None).await.expect("get").kvs().is_empty() {
        assert!(started.elapsed() < expired_within, "the key outlived its lease by {expired_within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(etcd.lease_time_to_live(short, None).await.expect("time to live").ttl(), -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_answer_follows_every_event_at_or_below_its_revision() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, mut etcd) = started().await;
    // Keys on both sides of the split at `b`, so that the watch follows two regions.
    let keys: Vec<String> =
        (0..24).map(|i| format!("{}burst/{i:02}", if i % 2 == 0 { "a" } else { "b" })).collect();
    let mut stream = etcd.watch("a", Some(WatchOptions::new().with_range("c"))).await.expect("a watch");
    // The watch starts from the revision current when the server creates it: the
    // writes go after that, or the first could precede it.
    assert!(next_response(&mut stream).await.created(), "the watch is created first");
    let mut written = Vec::new();
    for key in &keys {
        written.push(revision_of(etcd.put(key.as_str(), "v", None).await.expect("put").header()));
    }
    let last = *written.last().expect("writes");
    // Asked at once: the watch has most likely not delivered the writes yet, and the
    // answer may only come once it has (etcd's promise: every event at or below the
    // progress revision was sent before it).
    stream.request_progress().await.expect("a progress request");
    let (answer, delivered) = progress_answer(&mut stream).await;
    assert!(answer.events().is_empty(), "a progress answer carries no events");
    let progress = revision_of(answer.header());
    let missing: Vec<i64> = written
        .iter()
        .copied()
        .filter(|revision| *revision <= progress && !delivered.contains(revision))
        .collect();
    assert!(missing.is_empty(), "progress at {progress} came before the events at {missing:?}");
    // Tessera's own promise besides (within its wait of a few seconds): the answer is
    // at least the revision current when asked.
    assert!(progress >= last, "progress at {progress}, below the last write {last} before the request");
}

/// Reads a watch stream up to the answer to a progress request (the stream-wide watch
/// id, not a refused create); answers it, and the revisions of the events before it.
async fn progress_answer(stream: &mut WatchStream) -> (WatchResponse, Vec<i64>) {
    let mut before = Vec::new();
    loop {
        let response = next_response(stream).await;
        if response.watch_id() == -1 && !response.created() {
            return (response, before);
        }
        before.extend(response.events().iter().filter_map(|event| event.kv()).map(|kv| kv.mod_revision()));
    }
}

/// The next response of a watch stream, within 20 s.
async fn next_response(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a response within 20 s")
        .expect("the stream goes on")
        .expect("a response")
}
