//! etcd's v3 API on real processes, through etcd's own Rust client (`etcd-client`): a
//! driver and three stores serving it, the key space in several regions so that
//! ranges cross them. Each test states what etcd's API guarantees page promises and
//! checks it: revisions increase with every write, create_revision / mod_revision /
//! version per key, ranges and prefixes with limits, counts and sorting, reads at a past
//! revision, prev_kv, and etcd's errors where clients match on them.

mod common;

use common::*;
use etcd_client::{Client as EtcdClient, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget};

/// A cluster whose stores serve etcd's API, split at the etcd keys `b` and `m` (so
/// that ranges of etcd keys cross regions), and a client of the first store's.
async fn started() -> (Cluster, EtcdClient) {
    let store_config = "[store]\netcd_listen = \"127.0.0.1:0\"\n";
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
async fn bad_requests_get_etcd_s_errors() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_cluster, mut etcd) = started().await;
    let error = etcd.put("", "v", None).await.expect_err("an empty key is refused");
    assert!(error.to_string().contains("etcdserver: key is not provided"), "{error}");
    let error =
        etcd.put("k", "v", Some(PutOptions::new().with_ignore_value())).await.expect_err("no key to keep");
    assert!(error.to_string().contains("etcdserver: key not found"), "{error}");
    let future = etcd.put("k", "v", None).await.expect("put").header().expect("a header").revision()
        + 1_000_000_000_000;
    let error =
        etcd.get("k", Some(GetOptions::new().with_revision(future))).await.expect_err("a future revision");
    assert!(error.to_string().contains("required revision is a future revision"), "{error}");
    let status = etcd.status().await.expect("the endpoint's status");
    assert!(!status.version().is_empty() && status.header().is_some());
    assert!(etcd.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None).await.is_ok());
    let error = etcd.compact(1, None).await.expect_err("not supported yet");
    assert!(error.to_string().contains("not supported by Tessera"), "{error}");
}
