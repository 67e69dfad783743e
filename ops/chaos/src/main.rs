//! `tessera-chaos`: runs fault-injection rounds against real clusters, or checks a
//! history kept from one. See ops/chaos/README.md.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tessera_chaos::availability::{self, Outage};
use tessera_chaos::checker::{self, CheckConfig};
use tessera_chaos::history;
use tessera_chaos::nemesis::FAULT_KINDS;
use tessera_chaos::round::{self, RoundConfig};

#[derive(Parser)]
#[command(name = "tessera-chaos", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run rounds: each starts a fresh cluster, injects faults while clients work, and
    /// checks the history. Needs root (network namespaces, iptables).
    Run(RunArgs),
    /// Check a history file kept from a round.
    Check { history: PathBuf },
    /// Summarise how long the cluster took to serve again after each kind of fault,
    /// from the `availability.jsonl` files of one or more runs.
    Availability {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, default_value_t = 1)]
    rounds: u64,
    /// Seconds of faults per round.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seed of the first round (round i uses seed + i) [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes, each a network namespace running a store.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Nodes that also run a placement driver replica.
    #[arg(long, default_value_t = 3)]
    pd: usize,
    /// Client processes.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// How many of the clients run inside a node's network namespace, cut off with it
    /// by partitions (the others run on the host and reach every node).
    #[arg(long, default_value_t = 3)]
    node_clients: usize,
    /// Keys the clients work on (at most 10).
    #[arg(long, default_value_t = 5)]
    keys: usize,
    /// Transactional clients (bank transfers and audits, list-append transactions),
    /// beside the register clients, on the host.
    #[arg(long, default_value_t = 2)]
    txn_clients: usize,
    /// Register clients of the etcd API (through etcd's Rust client, on keys of their
    /// own), beside the others, on the host; with any, a watcher of their keys.
    #[arg(long, default_value_t = 2)]
    etcd_clients: usize,
    /// Longest pause, in milliseconds, between one client's operations.
    #[arg(long, default_value_t = 20)]
    think_ms: u64,
    /// Faults to draw from, comma-separated [default: all of them].
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// The tessera binary [default: beside this one].
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Where rounds keep their evidence.
    #[arg(long, default_value = "chaos-runs")]
    out: PathBuf,
    /// Keep every round's directory, not only the failed ones'.
    #[arg(long)]
    keep: bool,
    /// Mutual TLS on every link: the nodes, the Tessera clients (with an admin
    /// certificate) and the etcd clients (with a client certificate).
    #[arg(long)]
    tls: bool,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tessera-chaos: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Check { history: path } => check(&path),
        Command::Availability { files } => summarise_availability(&files),
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(run(args))
        }
    }
}

fn check(path: &PathBuf) -> anyhow::Result<ExitCode> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let events = history::read(BufReader::new(file))?;
    let calls = history::calls(&events)?;
    let report = checker::check(&calls, &CheckConfig::default());
    for violation in &report.violations {
        println!("{violation}");
    }
    for lost in &report.lost_writes {
        println!("{lost}");
    }
    for key in &report.inconclusive {
        println!("key {key}: the search hit its step limit");
    }
    println!(
        "{} calls on {} keys ({} unknown): {} violations, {} lost writes, {} inconclusive",
        report.calls,
        report.keys,
        report.unknown,
        report.violations.len(),
        report.lost_writes.len(),
        report.inconclusive.len()
    );
    Ok(if report.is_valid() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn summarise_availability(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut outages = Vec::new();
    for path in files {
        outages.extend(read_outages(path)?);
    }
    print!("{}", availability::table(&availability::summarise(&outages)));
    Ok(ExitCode::SUCCESS)
}

fn read_outages(path: &Path) -> anyhow::Result<Vec<Outage>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut outages = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        let outage = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not an episode", path.display(), index + 1))?;
        outages.push(outage);
    }
    Ok(outages)
}

/// Appends a round's outages to the run's `availability.jsonl`.
fn keep_outages(path: &Path, outages: &[Outage]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for outage in outages {
        writeln!(file, "{}", serde_json::to_string(outage)?)?;
    }
    Ok(())
}

/// The faults to draw from and the canonical path of the tessera binary, once the
/// arguments are checked.
fn check_run_args(args: &RunArgs) -> anyhow::Result<(Vec<String>, std::path::PathBuf)> {
    if args.nodes < 3 || args.keys == 0 || args.keys > 10 || args.clients == 0 {
        anyhow::bail!("a run needs at least 3 nodes, 1 to 10 keys and a client");
    }
    if args.node_clients > args.clients {
        anyhow::bail!("{} clients in nodes, but only {} clients", args.node_clients, args.clients);
    }
    let faults: Vec<String> = if args.faults.is_empty() {
        FAULT_KINDS.iter().map(|s| s.to_string()).collect()
    } else {
        args.faults.clone()
    };
    if let Some(unknown) = faults.iter().find(|f| !FAULT_KINDS.contains(&f.as_str())) {
        anyhow::bail!("unknown fault {unknown}; the faults are {}", FAULT_KINDS.join(", "));
    }
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => std::env::current_exe()?.with_file_name("tessera"),
    };
    if !binary.is_file() {
        anyhow::bail!("no tessera binary at {} (build the workspace, or pass --binary)", binary.display());
    }
    let binary = binary.canonicalize()?;
    Ok((faults, binary))
}

/// One line per round, then what failed and where the evidence is when it did not pass.
fn print_round(label: &str, outcome: &round::RoundOutcome, config: &RoundConfig) {
    let verdict = if outcome.passed() { "ok" } else { "FAILED" };
    println!(
        "{label}: {verdict}: {} operations ({} ok, {} failed, {} unknown), {} faults, \
         {} operators, {} violations, {} lost writes; transactions {} committed, {} aborted, \
         {} unknown, {} audits, {} watchers ({} transactions delivered), {} anomalies; etcd watch: \
         {} events for {} acknowledged writes ({} gaps), {} problems; started in {:.1}s, \
         recovered in {:.1}s, settled in {:.1}s, checked in {:.2}s",
        outcome.invocations,
        outcome.ok,
        outcome.failed,
        outcome.unknown,
        outcome.faults.iter().filter(|line| line.contains(" fault: ")).count(),
        outcome.faults.iter().filter(|line| line.contains(" operator: ")).count(),
        outcome.report.violations.len(),
        outcome.report.lost_writes.len(),
        outcome.transactions.committed,
        outcome.transactions.aborted,
        outcome.transactions.unknown,
        outcome.transactions.audits,
        outcome.transactions.watchers,
        outcome.transactions.watched,
        outcome.transactions.anomalies.len(),
        outcome.etcd.watched,
        outcome.etcd.acknowledged,
        outcome.etcd.gaps,
        outcome.etcd.problems.len(),
        outcome.start_time.as_secs_f64(),
        outcome.recovery_time.as_secs_f64(),
        outcome.settle_time.as_secs_f64(),
        outcome.check_time.as_secs_f64()
    );
    if outcome.passed() {
        return;
    }
    for problem in &outcome.problems {
        println!("  {problem}");
    }
    for violation in &outcome.report.violations {
        println!("{violation}");
    }
    for write in &outcome.report.lost_writes {
        println!("  {write}");
    }
    for anomaly in &outcome.transactions.anomalies {
        println!("  {anomaly}");
    }
    for problem in &outcome.etcd.problems {
        println!("  {problem}");
    }
    println!("  evidence: {}", config.dir.display());
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (faults, binary) = check_run_args(&args)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    let run_dir = std::path::absolute(args.out.join(format!("seed-{seed}")))?;
    let (mut violations, mut lost, mut failed_rounds) = (0usize, 0usize, Vec::new());
    let (mut anomalies, mut committed) = (0usize, 0usize);
    let mut outages = Vec::new();
    let outages_path = run_dir.join("availability.jsonl");
    // A seed run again starts its file again: a summary must not count a round twice.
    if outages_path.exists() {
        std::fs::remove_file(&outages_path)
            .with_context(|| format!("removing {}", outages_path.display()))?;
    }
    for round in 0..args.rounds {
        let round_seed = seed + round;
        let config = RoundConfig {
            seed: round_seed,
            duration: Duration::from_secs(args.seconds),
            nodes: args.nodes,
            pd_replicas: args.pd,
            clients: args.clients,
            node_clients: args.node_clients,
            keys: args.keys,
            txn_clients: args.txn_clients,
            etcd_clients: args.etcd_clients,
            think: Duration::from_millis(args.think_ms),
            faults: faults.clone(),
            binary: binary.clone(),
            dir: run_dir.join(format!("round-{round_seed}")),
            keep: args.keep,
            tls: args.tls,
        };
        let label = format!("round {}/{} (seed {round_seed})", round + 1, args.rounds);
        match round::run(&config).await {
            Ok(outcome) => {
                violations += outcome.report.violations.len();
                lost += outcome.report.lost_writes.len();
                anomalies += outcome.transactions.anomalies.len() + outcome.etcd.problems.len();
                committed += outcome.transactions.committed;
                print_round(&label, &outcome, &config);
                keep_outages(&outages_path, &outcome.outages)?;
                outages.extend_from_slice(&outcome.outages);
                if !outcome.passed() {
                    failed_rounds.push(round_seed);
                }
            }
            Err(error) => {
                println!("{label}: FAILED to run: {error:#}\n  evidence: {}", config.dir.display());
                failed_rounds.push(round_seed);
            }
        }
    }
    print!("{}", availability::table(&availability::summarise(&outages)));
    let mut summary = format!(
        "chaos: {} rounds, {violations} violations, {lost} lost writes, {anomalies} transaction and etcd watch anomalies \
         ({committed} transactions committed)",
        args.rounds
    );
    if failed_rounds.is_empty() {
        println!("{summary}");
        return Ok(ExitCode::SUCCESS);
    }
    summary.push_str(&format!(
        "; failed rounds (seeds) {failed_rounds:?}; evidence in {}; rerun one with --rounds 1 --seed SEED{}",
        run_dir.display(),
        if args.tls { " --tls" } else { "" }
    ));
    println!("{summary}");
    Ok(ExitCode::FAILURE)
}
