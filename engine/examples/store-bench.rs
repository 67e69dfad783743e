//! Benchmark of the multi-raft store: three in-process stores over the local transport,
//! each with its own RocksDB (synced writes), under a write load spread over many
//! regions, and then the cost of many idle (hibernating) regions.
//!
//! ```text
//! cargo run --release -p tessera-engine --example store-bench -- [--regions 1,64,1024]
//!     [--writers 256] [--seconds 10] [--idle-regions 10000] [--json]
//! ```
//!
//! Per region count it reports writes/s, syncs/s and entries per sync on the leaders'
//! store, and p50/p99 commit latency (proposal to applied answer). The idle run reports
//! the CPU the three stores use over 10 s once every region hibernates, as a percentage
//! of one core per store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;
use tessera_engine::proto::{
    command::{Put, Write, WriteResult, write},
    metadata::{Peer, Region, RegionEpoch},
};
use tessera_engine::store::{LocalTransport, Store, StoreConfig, StoreError};

struct Args {
    regions: Vec<usize>,
    writers: usize,
    seconds: u64,
    idle_regions: usize,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args =
        Args { regions: vec![1, 64, 1024], writers: 256, seconds: 10, idle_regions: 10_000, json: false };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let mut value = |name: &str| iter.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--regions" => {
                args.regions = value("--regions")?
                    .split(',')
                    .map(|n| n.trim().parse().map_err(|e| format!("--regions: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--writers" => {
                args.writers = value("--writers")?.parse().map_err(|e| format!("--writers: {e}"))?
            }
            "--seconds" => {
                args.seconds = value("--seconds")?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--idle-regions" => {
                args.idle_regions =
                    value("--idle-regions")?.parse().map_err(|e| format!("--idle-regions: {e}"))?
            }
            "--json" => args.json = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.writers == 0 || args.regions.contains(&0) {
        return Err("--writers and every --regions count must be at least 1".into());
    }
    Ok(args)
}

struct Cluster {
    stores: Vec<Store>,
    _dirs: Vec<tempfile::TempDir>,
}

/// The pending answer to one write.
type Answer = Receiver<Result<Vec<WriteResult>, StoreError>>;

const EPOCH: RegionEpoch = RegionEpoch { conf_version: 1, version: 1 };

fn cluster(regions: usize) -> Result<Cluster, String> {
    let transport = LocalTransport::new();
    let mut stores = Vec::new();
    let mut dirs = Vec::new();
    for store_id in 1..=3 {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config = StoreConfig { tick_interval: Duration::from_millis(100), ..StoreConfig::new(store_id) };
        let store =
            Store::open(dir.path(), config, Arc::new(transport.clone())).map_err(|e| e.to_string())?;
        transport.register(store_id, store.sink());
        stores.push(store);
        dirs.push(dir);
    }
    for i in 0..regions {
        let id = i as u64 + 1;
        let region = Region {
            id,
            start_key: if i == 0 { Vec::new() } else { format!("r{i:06}").into_bytes() },
            end_key: if i + 1 == regions { Vec::new() } else { format!("r{:06}", i + 1).into_bytes() },
            epoch: Some(EPOCH),
            peers: (1..=3).map(|store| Peer { id: id * 10 + store, store_id: store, role: 0 }).collect(),
        };
        for store in &stores {
            store.bootstrap_region(&region).map_err(|e| e.to_string())?;
        }
        stores[0].campaign(id);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in 1..=regions as u64 {
        while !stores[0].status(id).is_some_and(|s| s.is_leader) {
            if Instant::now() > deadline {
                return Err(format!("region {id} elected no leader on store 1"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(Cluster { stores, _dirs: dirs })
}

fn key_of(region: usize, n: u64) -> Vec<u8> {
    format!("r{region:06}/{n}").into_bytes()
}

fn write_load(args: &Args, regions: usize) -> Result<String, String> {
    let cluster = cluster(regions)?;
    let leader = &cluster.stores[0];
    let before = leader.group_commit();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut in_flight: std::collections::VecDeque<(Instant, Answer)> = std::collections::VecDeque::new();
    let (mut done, mut errors, mut n) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let end = started + Duration::from_secs(args.seconds);
    // One closed loop of `writers` requests in flight, spread over the regions.
    while Instant::now() < end || !in_flight.is_empty() {
        while Instant::now() < end && in_flight.len() < args.writers {
            let region = (n % regions as u64) as usize;
            let put = Put { key: key_of(region, n), value: vec![b'v'; 64] };
            let write = Write { kind: Some(write::Kind::Put(put)) };
            in_flight.push_back((Instant::now(), leader.write(region as u64 + 1, EPOCH, vec![write])));
            n += 1;
        }
        let Some((sent, answer)) = in_flight.pop_front() else { break };
        match answer.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(_)) => {
                done += 1;
                let _ = histogram.record(sent.elapsed().as_micros().max(1) as u64);
            }
            _ => errors += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = leader.group_commit();
    let syncs = after.syncs - before.syncs;
    let entries = after.entries - before.entries;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(format!(
        "{{\"regions\":{regions},\"writers\":{},\"writes_per_sec\":{:.0},\"syncs_per_sec\":{:.0},\"entries_per_sync\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"errors\":{errors}}}",
        args.writers,
        done as f64 / elapsed,
        syncs as f64 / elapsed,
        entries as f64 / syncs.max(1) as f64,
        ms(0.5),
        ms(0.99),
    ))
}

/// CPU time (user + system) of this process so far.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    Duration::from_millis(ticks * 10)
}

fn idle_cost(regions: usize) -> Result<String, String> {
    let cluster = cluster(regions)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let sleeping = Arc::new(AtomicBool::new(false));
    while !sleeping.load(Ordering::Relaxed) {
        let all = (1..=regions as u64)
            .all(|id| cluster.stores.iter().all(|s| s.status(id).is_some_and(|p| p.hibernating)));
        if all {
            sleeping.store(true, Ordering::Relaxed);
        } else if Instant::now() > deadline {
            return Err("regions did not all hibernate within 300 s".into());
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let (cpu_before, wall_before) = (process_cpu(), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let cpu = process_cpu().saturating_sub(cpu_before).as_secs_f64();
    let wall = wall_before.elapsed().as_secs_f64();
    let per_store = 100.0 * cpu / wall / cluster.stores.len() as f64;
    Ok(format!("{{\"idle_regions\":{regions},\"idle_cpu_percent\":{per_store:.2}}}"))
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("store-bench: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut lines = Vec::new();
    for &regions in &args.regions {
        match write_load(&args, regions) {
            Ok(line) => lines.push(line),
            Err(error) => {
                eprintln!("store-bench: {regions} regions: {error}");
                return std::process::ExitCode::FAILURE;
            }
        }
        if !args.json {
            println!("{}", lines.last().map_or("", String::as_str));
        }
    }
    if args.idle_regions > 0 {
        match idle_cost(args.idle_regions) {
            Ok(line) => lines.push(line),
            Err(error) => {
                eprintln!("store-bench: idle regions: {error}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    if args.json {
        for line in &lines {
            println!("{line}");
        }
    } else if let Some(line) = lines.last().filter(|_| args.idle_regions > 0) {
        println!("{line}");
    }
    std::process::ExitCode::SUCCESS
}
