//! Soak command for the deterministic Raft simulator.
//!
//! ```text
//! ops/dev.sh soak --seeds N [--start S] [--nodes 3|5] [--threads T] [--trace EVENTS]
//! ```
//!
//! (`ops/dev.sh` builds this example for the whole workspace and runs
//! `$CARGO_TARGET_DIR/release/examples/raft-sim`.) Runs seeds `S..S+N` (each a full
//! chaos-then-heal run) on `T` threads and prints every failure with its seed and the
//! last `EVENTS` events before it (80 by default). The last line is
//! `raft-sim: N seeds, 0 violations` when all pass; otherwise it gives the violation
//! count and the first failing seed, and the command exits non-zero.

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tessera_raft_simulation::{SeedFailure, SimConfig, Stats, run_seed};

struct Args {
    seeds: u64,
    start: u64,
    nodes: usize,
    threads: usize,
    trace_events: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seeds: 100,
        start: 0,
        nodes: 3,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        trace_events: SimConfig::new(3).trace_events,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let mut value = |name: &str| iter.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--seeds" => args.seeds = value("--seeds")?.parse().map_err(|e| format!("--seeds: {e}"))?,
            "--start" => args.start = value("--start")?.parse().map_err(|e| format!("--start: {e}"))?,
            "--nodes" => args.nodes = value("--nodes")?.parse().map_err(|e| format!("--nodes: {e}"))?,
            "--threads" => {
                args.threads = value("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?
            }
            "--trace" => {
                args.trace_events = value("--trace")?.parse().map_err(|e| format!("--trace: {e}"))?
            }
            "--help" | "-h" => {
                return Err(
                    "usage: raft-sim --seeds N [--start S] [--nodes 3|5] [--threads T] [--trace EVENTS]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if args.nodes != 3 && args.nodes != 5 {
        return Err(format!("--nodes must be 3 or 5, not {}", args.nodes));
    }
    if args.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("raft-sim: {message}");
            return ExitCode::from(2);
        }
    };
    let mut config = SimConfig::new(args.nodes);
    config.trace_events = args.trace_events;
    let next = AtomicU64::new(args.start);
    let end = args.start + args.seeds;
    let failures: Mutex<Vec<SeedFailure>> = Mutex::new(Vec::new());
    let totals: Mutex<Stats> = Mutex::new(Stats::default());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.threads {
            scope.spawn(|| {
                let mut stats = Stats::default();
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    match run_seed(seed, &config) {
                        Ok(run) => stats.add(&run),
                        Err(failure) => {
                            eprintln!("{failure}");
                            failures.lock().unwrap_or_else(|p| p.into_inner()).push(failure);
                        }
                    }
                }
                totals.lock().unwrap_or_else(|p| p.into_inner()).add(&stats);
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    let totals = totals.into_inner().unwrap_or_else(|p| p.into_inner());
    println!(
        "raft-sim: {} replicas, {:.1}s; elections {}, entries applied {}, writes acknowledged {}, reads checked {}, crashes {}, snapshots installed {}, membership changes applied {}, leader transfers {}, messages {}",
        args.nodes,
        started.elapsed().as_secs_f64(),
        totals.elections,
        totals.applied,
        totals.acknowledged,
        totals.reads,
        totals.crashes,
        totals.snapshots_installed,
        totals.conf_changes_applied,
        totals.transfers_started,
        totals.messages
    );
    match failures.iter().min_by_key(|f| f.seed) {
        None => {
            println!("raft-sim: {} seeds, 0 violations", args.seeds);
            ExitCode::SUCCESS
        }
        Some(first) => {
            println!(
                "raft-sim: {} seeds, {} violations, first failing seed {}",
                args.seeds,
                failures.len(),
                first.seed
            );
            ExitCode::FAILURE
        }
    }
}
