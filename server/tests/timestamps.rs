//! The timestamp oracle on real processes: three driver replicas, callers through the
//! client library (one batched stream per client), and the leader killed outright while
//! they ask. Every timestamp handed out is recorded and checked: strictly increasing
//! for each caller, none twice, and in real-time order across callers.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;
use tessera_server::client::Client;

/// One answered call: when it began and ended, and the timestamp.
#[derive(Debug, Clone, Copy)]
struct Answered {
    began: Instant,
    ended: Instant,
    timestamp: u64,
}

/// The first pair out of real-time order: `earlier` ended before `later` began, yet
/// `later`'s timestamp is not above it.
fn real_time_violation(history: &[Answered]) -> Option<(Answered, Answered)> {
    let mut by_end = history.to_vec();
    by_end.sort_by_key(|answer| answer.ended);
    let mut by_start = history.to_vec();
    by_start.sort_by_key(|answer| answer.began);
    let mut highest: Option<Answered> = None;
    let mut ended = by_end.into_iter().peekable();
    for later in by_start {
        while let Some(earlier) = ended.next_if(|earlier| earlier.ended < later.began) {
            if highest.is_none_or(|highest| earlier.timestamp > highest.timestamp) {
                highest = Some(earlier);
            }
        }
        if let Some(earlier) = highest.filter(|earlier| later.timestamp <= earlier.timestamp) {
            return Some((earlier, later));
        }
    }
    None
}

#[test]
fn the_real_time_check_rejects_a_timestamp_below_one_answered_before() {
    let origin = Instant::now();
    let at = |milliseconds: u64| origin + Duration::from_millis(milliseconds);
    let answered = |began, ended, timestamp| Answered { began: at(began), ended: at(ended), timestamp };
    assert!(real_time_violation(&[answered(0, 1, 5), answered(2, 3, 6)]).is_none());
    assert!(real_time_violation(&[answered(0, 5, 9), answered(1, 2, 6)]).is_none(), "overlapping");
    assert!(real_time_violation(&[answered(0, 1, 9), answered(2, 3, 6)]).is_some(), "went back");
    assert!(real_time_violation(&[answered(0, 1, 9), answered(2, 3, 9)]).is_some(), "repeated");
}

/// Whether the driver replica serving metrics at `metrics` leads.
fn leads(metrics: &str) -> bool {
    let (_, body) = http(metrics, "GET", "/metrics", "");
    body.lines().any(|line| line.starts_with("tessera_pd_is_leader") && line.ends_with(" 1"))
}

/// Three driver replicas on ports picked beforehand (each must know the others'
/// addresses); a port taken by another process between the pick and the start is
/// picked again, a few times.
fn start_three_replicas(dir: &std::path::Path) -> (Vec<String>, Vec<Option<Process>>) {
    let mut last_error = String::new();
    for attempt in 0..5 {
        let addresses: Vec<String> = (0..3).map(|_| free_address()).collect();
        let members: Vec<String> =
            addresses.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let started: Result<Vec<Process>, String> = (0..3)
            .map(|i| {
                let data_dir = dir.join(format!("attempt{attempt}-pd{}", i + 1)).display().to_string();
                let mut args = vec!["pd", "--data-dir", &data_dir, "--listen", &addresses[i]];
                let id = (i + 1).to_string();
                args.extend(["--id", &id, "--metrics", "127.0.0.1:0"]);
                let mut args: Vec<String> = args.into_iter().map(String::from).collect();
                args.extend(members.iter().flat_map(|member| ["--members".to_string(), member.clone()]));
                Process::try_start(&args)
            })
            .collect();
        match started {
            Ok(replicas) => return (addresses, replicas.into_iter().map(Some).collect()),
            Err(error) => last_error = error,
        }
    }
    panic!("three driver replicas did not start in five attempts; last: {last_error}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_increase_across_a_killed_driver_leader() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (addresses, mut replicas) = start_three_replicas(dir.path());
    let said = ctl(&addresses.join(","), &["timestamp", "--json"]);
    let first: serde_json::Value = serde_json::from_str(&said).expect("ctl timestamp --json answers JSON");
    assert!(first["timestamp"].as_u64().is_some_and(|ts| ts > 0), "{said}");

    let history = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..2)
        .flat_map(|_| {
            let client = Arc::new(Client::new(addresses.clone(), Duration::from_secs(30)));
            (0..8)
                .map(|_| {
                    let (client, history, stop) = (client.clone(), history.clone(), stop.clone());
                    tokio::spawn(async move {
                        let mut last = 0;
                        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                            let began = Instant::now();
                            let timestamp =
                                client.timestamp().await.expect("a timestamp within 30 s").as_u64();
                            let ended = Instant::now();
                            assert!(
                                timestamp > last,
                                "one caller's timestamps went back: {last} then {timestamp}"
                            );
                            last = timestamp;
                            history.lock().push(Answered { began, ended, timestamp });
                        }
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = replicas
        .iter()
        .position(|replica| replica.as_ref().and_then(|p| p.metrics.as_deref()).is_some_and(leads))
        .expect("one replica leads");
    let killed_at = Instant::now();
    drop(replicas[leader].take());
    wait_until("timestamps from the new leader", || {
        let after = history.lock().iter().filter(|answer| answer.began > killed_at).count();
        if after > 1000 { Ok(()) } else { Err(format!("{after} since the kill")) }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for caller in callers {
        caller.await.expect("a caller ends without failing");
    }
    let history = history.lock();
    let before = history.iter().filter(|answer| answer.ended < killed_at).count();
    assert!(before > 1000, "only {before} timestamps before the kill");
    if let Some((earlier, later)) = real_time_violation(&history) {
        panic!("out of real-time order: {earlier:?} answered before {later:?} began");
    }
    let mut all: Vec<u64> = history.iter().map(|answer| answer.timestamp).collect();
    all.sort_unstable();
    assert!(all.windows(2).all(|pair| pair[0] < pair[1]), "a timestamp handed out twice");
}
