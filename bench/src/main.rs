//! `tessera-bench`: see the crate docs and bench/README.md.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tessera_bench::idle_watch;
use tessera_bench::keys::{Distribution, KeyChooser};
use tessera_bench::report::{RunLabel, json_lines, table};
use tessera_bench::runner::{self, Plan, RunConfig};
use tessera_bench::target::{Target, TargetUrl};
use tessera_bench::watch_lag::LagWatchers;
use tessera_bench::workload::Workload;

/// Load generator for Tessera and etcd: YCSB workloads, latency percentiles.
#[derive(Parser)]
#[command(name = "tessera-bench", version)]
struct Args {
    /// tessera://PD_ADDR[,PD_ADDR...] or etcd://ADDR[,ADDR...].
    #[arg(long)]
    target: TargetUrl,
    /// put, get, scan, or ycsb-a to ycsb-f.
    #[arg(long, default_value = "put")]
    workload: Workload,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to measure, after the warm-up (e.g. 20s, 2m).
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    duration: Duration,
    /// Stop after this many requests (warm-up ones included) instead of after --duration.
    #[arg(long)]
    operations: Option<u64>,
    /// Requests sent but not measured first (e.g. 5s).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Keys in the key space (the load phase writes them all).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// uniform, zipfian or latest [default: the workload's, as YCSB].
    #[arg(long)]
    distribution: Option<Distribution>,
    /// Fill the key space first (measured and reported as its own phase).
    #[arg(long)]
    load: bool,
    /// At most this many requests per second in total.
    #[arg(long)]
    rate: Option<f64>,
    /// Seed of the request tasks' random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give up on a request after this many seconds (it counts as an error).
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Print one JSON object per operation instead of the table.
    #[arg(long)]
    json: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Watches of the whole key space that measure commit-to-delivery lag while the
    /// workload runs (Tessera's transactional workloads only).
    #[arg(long, default_value_t = 0)]
    watchers: usize,
    /// Instead of a workload: open this many idle watches (each of a key range nothing
    /// writes) and report what they cost the processes named by --measure-pid, over
    /// --duration without them and then with them.
    #[arg(long)]
    idle_watchers: Option<usize>,
    /// A process whose memory and CPU --idle-watchers measures (repeat for several).
    #[arg(long)]
    measure_pid: Vec<u32>,
    /// Open the idle watches as gRPC Watch streams to the store at this address (it
    /// runs them) instead of through the client library in this process.
    #[arg(long)]
    idle_watch_store: Option<String>,
    /// The CA certificate (PEM) of a cluster that runs mutual TLS; with --tls-cert and
    /// --tls-key.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<std::path::PathBuf>,
    /// The certificate (PEM) to show the cluster.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<std::path::PathBuf>,
}

impl Args {
    fn tls(&self) -> Option<tessera_server::security::TlsFiles> {
        Some(tessera_server::security::TlsFiles {
            ca_file: self.tls_ca.clone()?,
            cert_file: self.tls_cert.clone()?,
            key_file: self.tls_key.clone()?,
        })
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 =
        number.parse().map_err(|_| format!("a duration is a number and a unit, not {text:?}"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" | "" => number,
        "m" => number * 60.0,
        other => return Err(format!("unknown duration unit {other:?}: ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

fn print(args: &Args, workload: &str, result: &runner::RunResult) {
    let label = RunLabel { target: args.target.kind(), workload, concurrency: args.concurrency };
    if args.json {
        for line in json_lines(&label, result) {
            println!("{line}");
        }
    } else {
        println!("{}", table(&label, result));
    }
}

async fn measure_idle_watchers(args: &Args, target: &Target, count: usize) -> anyhow::Result<()> {
    let Target::Tessera(client) = target else {
        anyhow::bail!("--idle-watchers measures Tessera's watches only")
    };
    if args.measure_pid.is_empty() {
        anyhow::bail!("--idle-watchers needs at least one --measure-pid");
    }
    let through = match &args.idle_watch_store {
        Some(address) => idle_watch::WatchedThrough::Store(address.clone(), client.dialer().clone()),
        None => idle_watch::WatchedThrough::Client(client.clone()),
    };
    let figures = idle_watch::measure(&through, count, &args.measure_pid, args.warmup, args.duration)
        .await
        .map_err(anyhow::Error::msg)
        .context("the idle watchers")?;
    println!("{}", if args.json { figures.json() } else { figures.table() });
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 || args.rate.is_some_and(|rate| rate <= 0.0) {
        anyhow::bail!("--concurrency and --rate must be above 0");
    }
    let target = Target::connect(&args.target, Duration::from_secs(args.timeout), args.tls())
        .await
        .with_context(|| format!("connecting to {:?}", args.target))?;
    if let Some(count) = args.idle_watchers {
        return measure_idle_watchers(&args, &target, count).await;
    }
    let base = RunConfig {
        plan: Plan::Load { keys: args.keys },
        value_size: args.value_size,
        concurrency: args.concurrency,
        rate: args.rate,
        warmup: Duration::ZERO,
        duration: None,
        operations: None,
        seed: args.seed,
        progress: !args.quiet,
    };
    if args.load {
        let result = runner::run(&target, base.clone()).await;
        print(&args, "load", &result);
    }
    let distribution = args.distribution.unwrap_or(args.workload.default_distribution());
    let chooser = KeyChooser::new(distribution, args.keys)?;
    let config = RunConfig {
        plan: Plan::Mix { workload: args.workload, chooser: std::sync::Arc::new(chooser) },
        warmup: args.warmup,
        duration: args.operations.is_none().then_some(args.duration),
        operations: args.operations,
        ..base
    };
    let watchers = match (&target, args.watchers) {
        (_, 0) => None,
        (Target::Tessera(client), count) => Some(
            LagWatchers::start(client, count, args.warmup)
                .await
                .map_err(anyhow::Error::msg)
                .context("the watchers")?,
        ),
        (Target::Etcd(_), _) => anyhow::bail!("--watchers measures Tessera's watches only"),
    };
    let result = runner::run(&target, config).await;
    print(&args, &args.workload.to_string(), &result);
    if let Some(watchers) = watchers {
        let figures = watchers.finish().await.map_err(anyhow::Error::msg).context("the watchers")?;
        println!("{}", if args.json { figures.json() } else { figures.table() });
    }
    let errors: u64 = result.ops.values().map(|stats| stats.errors).sum();
    if errors > 0 {
        eprintln!("tessera-bench: {errors} requests failed (see the errors column)");
    }
    Ok(())
}
