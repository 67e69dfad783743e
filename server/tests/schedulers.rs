//! The placement driver's schedulers acting on real processes, set up through the
//! configuration file as an operator would: location labels spread replicas over zones,
//! and hot-region scheduling moves leadership off a store serving two busy regions.
//! (Replica repair is shown in `cluster.rs` by a killed and a removed store, region and
//! leader balancing by stores added to a loaded cluster.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// `ctl ARGS --json`, parsed.
fn ctl_json(pd: &str, args: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let mut args = args.to_vec();
    args.push("--json");
    let text = try_ctl(pd, &args)?;
    let rows: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    rows.as_array().cloned().ok_or_else(|| format!("not an array: {text}"))
}

/// Waits up to `seconds` for `check`.
async fn wait_for(what: &str, seconds: u64, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        match check() {
            Ok(()) => return,
            Err(error) if Instant::now() >= deadline => {
                panic!("timed out after {seconds} s waiting for {what}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Operators of `kind` the driver logged as finished.
fn finished_operators(cluster: &Cluster, kind: &str) -> usize {
    let ended = cluster.logged("pd", "operator ended");
    ended.iter().filter(|event| event["kind"] == kind && event["outcome"] == "finished").count()
}

/// Six stores in three zones; the first region is founded on the first three stores
/// (two of them in zone a) and every split copies its placement. With
/// `location_labels = ["zone"]` the driver moves replicas until every region has one in
/// each zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_labels_spread_every_regions_replicas_over_the_zones() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let zones = ["a", "a", "b", "b", "c", "c"];
    let config = "[pd.schedule]\nlocation_labels = [\"zone\"]\n";
    let cluster = Cluster::start_in_zones(&zones, 40, config);
    let client = cluster.client();
    wait_for_leader(&client).await;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..300).map(|i| (key(i), value(i))).collect();
    for chunk in pairs.chunks(50) {
        client.batch_put(chunk.to_vec()).await.expect("batch put");
    }
    let pd = cluster.pd_address();
    let zone_of: BTreeMap<u64, String> = ctl_json(&pd, &["stores"])
        .expect("stores")
        .iter()
        .map(|s| (s["id"].as_u64().unwrap_or(0), s["labels"]["zone"].as_str().unwrap_or("").to_string()))
        .collect();
    wait_for("every region with one replica per zone", 180, || {
        let regions = ctl_json(&pd, &["regions"])?;
        if regions.len() < 5 {
            return Err(format!("{} regions so far", regions.len()));
        }
        for region in &regions {
            let stores: Vec<u64> =
                region["peers"].as_array().into_iter().flatten().filter_map(|s| s.as_u64()).collect();
            let used: BTreeSet<&str> =
                stores.iter().filter_map(|s| zone_of.get(s)).map(String::as_str).collect();
            if stores.len() != 3 || used.len() != 3 {
                return Err(format!("region {} on stores {stores:?} in zones {used:?}", region["id"]));
            }
        }
        Ok(())
    })
    .await;
    let location_moves = finished_operators(&cluster, "location");
    assert!(location_moves > 0, "the location scheduler moved replicas");
    for i in (0..300).step_by(37) {
        assert_eq!(client.get(&key(i)).await.expect("get"), Some(value(i)), "key {i}");
    }
}

/// The leader store of the region holding `key`, by `ctl regions`.
fn leader_of(pd: &str, key: &str) -> Result<(u64, u64), String> {
    let regions = ctl_json(pd, &["regions"])?;
    let holds = |region: &&serde_json::Value| {
        let (start, end) =
            (region["start_key"].as_str().unwrap_or(""), region["end_key"].as_str().unwrap_or(""));
        start <= key && (end.is_empty() || key < end)
    };
    let region = regions.iter().find(holds).ok_or(format!("no region holds {key}"))?;
    let leader = region["leader"].as_u64().ok_or(format!("region {} has no leader", region["id"]))?;
    Ok((region["id"].as_u64().unwrap_or(0), leader))
}

/// Two regions written to at about a megabyte per second each, both led by one store,
/// a third idle: the hot-region scheduler hands one of the busy leaderships to another
/// store. Balancing is off, so only the hot-region scheduler can move a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_region_scheduling_moves_a_busy_leader_off_the_hottest_store() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let config = "[pd.schedule]\nbalance_leader = false\nbalance_region = false\n\
                  hot_region_min_bytes_per_sec = 131072\n";
    let cluster = Cluster::start_configured(3, 1_000_000, config);
    let client = Arc::new(cluster.client());
    wait_for_leader(&client).await;
    let pd = cluster.pd_address();
    assert!(ctl(&pd, &["split", "h"]).contains("finished"));
    assert!(ctl(&pd, &["split", "p"]).contains("finished"));
    wait_for("three regions with leaders", 60, || leader_of(&pd, "q").map(|_| ())).await;
    let (first, hot_store) = leader_of(&pd, "a").expect("the first region's leader");
    let (second, _) = leader_of(&pd, "i").expect("the second region");
    let (third, _) = leader_of(&pd, "q").expect("the third region");
    let stores: Vec<u64> =
        ctl_json(&pd, &["stores"]).expect("stores").iter().filter_map(|s| s["id"].as_u64()).collect();
    let cool_store = stores.iter().copied().find(|&s| s != hot_store).expect("another store");
    ctl(&pd, &["transfer-leader", &second.to_string(), &hot_store.to_string()]);
    ctl(&pd, &["transfer-leader", &third.to_string(), &cool_store.to_string()]);
    assert_eq!(leader_of(&pd, "i").expect("the second region").1, hot_store);

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = ["a", "i"]
        .into_iter()
        .map(|prefix| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let value = vec![b'x'; 4096];
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("{prefix}{:06}", i % 2000).into_bytes();
                    // A write whose outcome is unknown is harmless here: the load is all
                    // this test needs.
                    let _ = client.put(&key, &value).await;
                    i += 1;
                }
                i
            })
        })
        .collect();
    wait_for("one of the busy leaderships moved off the hot store", 90, || {
        let (_, first_leader) = leader_of(&pd, "a")?;
        let (_, second_leader) = leader_of(&pd, "i")?;
        if first_leader != second_leader { Ok(()) } else { Err(format!("both led by store {first_leader}")) }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        let writes = writer.await.expect("a writer");
        assert!(writes > 100, "the load kept writing: {writes} puts");
    }
    let hot_moves = finished_operators(&cluster, "hot_region");
    assert!(hot_moves > 0, "the hot-region scheduler moved the leader (regions {first}, {second})");
}
