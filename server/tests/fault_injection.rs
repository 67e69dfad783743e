//! Faults injected into running `tessera` processes: fail points armed through the
//! status address, as the chaos suite arms them (refused unless the store's
//! configuration enables them, acting in the engine when it does), and a leader paused
//! under a client's feet.

mod common;

use std::time::{Duration, Instant};

use common::*;

const DROP_CREATING_MESSAGES: &str = "store/drop-creating-messages";

/// The id of the store registered at `address`, from the driver.
async fn store_id_at(cluster: &Cluster, address: &str) -> u64 {
    let stores = cluster.client().pd().stores_async().await.expect("the driver lists its stores");
    stores
        .into_iter()
        .filter_map(|view| view.store)
        .find(|store| store.address == address)
        .map(|store| store.id)
        .unwrap_or_else(|| panic!("no store registered at {address}"))
}

/// The hits of `point` as `GET /fail` lists them (`NAME ACTION HITS`), if armed.
fn hits(status_address: &str, point: &str) -> Option<u64> {
    let (code, body) = http(status_address, "GET", "/fail", "");
    assert_eq!(code, 200, "{body}");
    body.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next() == Some(point)).then(|| fields.nth(1)?.parse().ok())?
    })
}

/// A store without `enable_fail_points` refuses every `/fail` request and says how to
/// enable them; one with it arms, lists and releases points, refusing unknown names and
/// actions. Armed on a real process, `store/drop-creating-messages` holds back a new
/// replica (the leader's first messages to it are dropped, as the point's hits show);
/// released, the replica appears and the move finishes: the leader probed it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_points_armed_through_the_status_address_act_in_a_running_store() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // Balancing off: only the move asked here may add a replica to the fourth store.
    let schedule = "[pd.schedule]\nbalance_region = false\nbalance_leader = false\n";
    let mut cluster = Cluster::start_configured(3, 1_000_000, schedule);
    let client = cluster.client();
    wait_for_leader(&client).await;
    client.put(b"before", b"the move").await.expect("a write");

    let plain = cluster.start_store_with(3, "127.0.0.1:0", &["--metrics".into(), "127.0.0.1:0".into()]);
    let plain_status = plain.metrics.clone().expect("a metrics address");
    let (code, body) = http(&plain_status, "PUT", &format!("/fail/{DROP_CREATING_MESSAGES}"), "trigger");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("enable_fail_points"), "the refusal says how to enable them: {body}");
    drop(plain);

    let config = cluster.path("store4.toml");
    std::fs::write(&config, "[store]\nenable_fail_points = true\n").expect("the store's configuration file");
    let extra = ["--config".into(), config, "--metrics".into(), "127.0.0.1:0".into()];
    let target = cluster.start_store_with(4, "127.0.0.1:0", &extra);
    let status = target.metrics.clone().expect("a metrics address");
    assert_eq!(http(&status, "GET", "/fail", ""), (200, String::new()), "nothing armed at start");
    assert_eq!(http(&status, "PUT", "/fail/store/no-such-point", "trigger").0, 404);
    assert_eq!(http(&status, "PUT", &format!("/fail/{DROP_CREATING_MESSAGES}"), "sometimes").0, 400);
    let (code, body) = http(&status, "PUT", &format!("/fail/{DROP_CREATING_MESSAGES}"), "trigger");
    assert_eq!(code, 200, "{body}");
    assert_eq!(hits(&status, DROP_CREATING_MESSAGES), Some(0));

    let target_id = store_id_at(&cluster, &target.address).await;
    let route = client.pd().region_by_key_async(b"").await.expect("the first region's route");
    let region = route.region.expect("a region");
    let from = region.peers.first().expect("a replica").store_id;
    let pd = cluster.pd_address();
    let asked = [region.id.to_string(), from.to_string(), target_id.to_string()];
    let started = ctl(&pd, &["move-peer", &asked[0], &asked[1], &asked[2], "--no-wait"]);
    let operator: u64 = started
        .split_whitespace()
        .nth(2)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("an operator id in {started:?}"));

    // The leader's messages to the new replica arrive and are dropped: the replica is
    // never created, so the learner cannot catch up and the move cannot finish. Two hits
    // at least: the leader sent again after its first message went unanswered.
    wait_until("the new replica's messages to be dropped", || match hits(&status, DROP_CREATING_MESSAGES) {
        Some(hits) if hits >= 2 => Ok(()),
        other => Err(format!("hits: {other:?}")),
    })
    .await;
    assert!(
        !move_finished(&cluster, operator).await,
        "the move finished although its learner was never created"
    );

    let (code, body) = http(&status, "DELETE", &format!("/fail/{DROP_CREATING_MESSAGES}"), "");
    assert_eq!((code, body.trim()), (200, format!("{DROP_CREATING_MESSAGES}: released").as_str()));
    assert_eq!(hits(&status, DROP_CREATING_MESSAGES), None);
    let released = Instant::now();
    while !holds_replica(&cluster, region.id, target_id).await || !move_finished(&cluster, operator).await {
        assert!(released.elapsed() < Duration::from_secs(30), "the move did not finish once messages flowed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(client.get(b"before").await.expect("a read"), Some(b"the move".to_vec()));
    cluster.stores.push(Some(target));
}

/// Whether the driver shows `store_id` holding a replica of `region_id`.
async fn holds_replica(cluster: &Cluster, region_id: u64, store_id: u64) -> bool {
    let Ok(route) = cluster.client().pd().region_by_key_async(b"").await else { return false };
    route.region.is_some_and(|region| {
        region.id == region_id && region.peers.iter().any(|peer| peer.store_id == store_id)
    })
}

/// Whether the driver shows the operator `id` finished.
async fn move_finished(cluster: &Cluster, id: u64) -> bool {
    let operators = cluster.client().pd().operators_async().await.unwrap_or_default();
    operators.iter().any(|operator| operator.id == id && operator.outcome == "finished")
}

/// A leader paused (SIGSTOP: its connections stay open, nothing answers) while a client
/// holds a connection to it: the client notices the silent connection within seconds
/// and finds the new leader, instead of waiting out one try's timeout (12 s) or the
/// operation's deadline (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_sent_to_a_paused_leader_is_answered_by_the_next_one_within_seconds() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(3, 1_000_000);
    let client = cluster.client();
    wait_for_leader(&client).await;
    client.put(b"k", b"before the pause").await.expect("a write");
    assert_eq!(client.get(b"k").await.expect("a read"), Some(b"before the pause".to_vec()));

    let route = client.pd().region_by_key_async(b"k").await.expect("the route");
    let leader_id = route.leader.expect("a leader").store_id;
    let mut leader_process = None;
    for store in cluster.stores.iter().flatten() {
        if store_id_at(&cluster, &store.address).await == leader_id {
            leader_process = Some(store);
        }
    }
    let leader_process = leader_process.expect("the leader's process");
    leader_process.signal(rustix::process::Signal::STOP);
    let paused = Instant::now();
    let answer = client.get(b"k").await;
    let waited = paused.elapsed();
    leader_process.signal(rustix::process::Signal::CONT);
    assert_eq!(answer.expect("a read while the leader is paused"), Some(b"before the pause".to_vec()));
    assert!(waited < Duration::from_secs(9), "the read waited {waited:?} on a paused leader");
    client.put(b"k", b"after the pause").await.expect("a write once the leader resumed");
}
