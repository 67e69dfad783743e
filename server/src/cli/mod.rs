//! The `tessera` command line: one binary for every role.

mod cert;
mod config;
mod ctl;
mod playground;
mod settings;
mod tls;
mod txn;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use tessera_engine::store::StoreConfig;
use tessera_placement::DriverConfig;

use crate::logging::{self, LogFormat, LogSection, LogSettings};
use crate::node;
use crate::security::TlsFiles;
use config::FileConfig;

#[derive(Parser)]
#[command(name = "tessera", version, about = "Tessera: a sharded, strongly consistent key-value database")]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogFlags,
}

/// Logging flags, accepted before or after the subcommand; they win over the
/// configuration file's `[log]` section.
#[derive(clap::Args)]
struct LogFlags {
    /// A level (error, warn, info, debug, trace) or RUST_LOG-style directives such as
    /// `info,tessera_engine::store=debug` [default: RUST_LOG, else info; warn for ctl].
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// A file to append log lines to [default: standard error].
    #[arg(long, global = true)]
    log_file: Option<PathBuf>,
    /// How log lines are written [default: text].
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
}

impl LogFlags {
    fn section(&self) -> LogSection {
        LogSection { level: self.log_level.clone(), format: self.log_format, file: self.log_file.clone() }
    }
}

impl Command {
    /// The configuration file the command names, if any.
    fn config_file(&self) -> Option<&std::path::Path> {
        match self {
            Command::Store(StoreArgs { config, .. }) | Command::Pd(PdArgs { config, .. }) => {
                config.as_deref()
            }
            Command::Playground(_) | Command::Ctl(_) | Command::Cert(_) => None,
        }
    }

    /// A command line tool logs only what went wrong; nodes log their events.
    fn default_log_level(&self) -> &'static str {
        match self {
            Command::Ctl(_) | Command::Cert(_) => "warn",
            Command::Store(_) | Command::Pd(_) | Command::Playground(_) => "info",
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a storage node.
    Store(StoreArgs),
    /// Run a placement driver replica.
    Pd(PdArgs),
    /// Start a local cluster (placement driver and stores as child processes) and keep
    /// it running until Ctrl-C or SIGTERM.
    Playground(playground::Args),
    /// Talk to a running cluster.
    Ctl(ctl::Args),
    /// Make a development CA and node, admin and client certificates for mutual TLS.
    Cert(cert::Args),
}

#[derive(clap::Args)]
struct StoreArgs {
    /// A TOML configuration file (see ops/tessera.example.toml); flags win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Addresses of the placement driver's replicas, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pd: Vec<String>,
    /// Where the store keeps its data (created if missing).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to serve on [default: 127.0.0.1:20160]; port 0 picks a free port
    /// (printed once serving).
    #[arg(long)]
    listen: Option<String>,
    /// The address others reach this store at, HOST:PORT or HOST [default: the
    /// address it listens on; required when that is 0.0.0.0 or [::]].
    #[arg(long)]
    advertise: Option<String>,
    /// Location labels, such as zone=eu-1a (repeatable; added to the file's).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// A region with more keys than this is split at its middle [default: 1000000].
    #[arg(long)]
    split_max_keys: Option<u64>,
    /// A region with more bytes of keys and values than this is split [default: 96 MiB].
    #[arg(long)]
    split_max_bytes: Option<u64>,
    /// Address to serve /metrics (Prometheus) and /health on; port 0 picks a free
    /// port (printed once serving). No metrics without it.
    #[arg(long)]
    metrics: Option<String>,
    /// Address to serve etcd's v3 API on; port 0 picks a free port (printed once
    /// serving). No etcd API without it.
    #[arg(long)]
    etcd_listen: Option<String>,
    #[command(flatten)]
    tls: tls::TlsFlags,
}

#[derive(clap::Args)]
struct PdArgs {
    /// A TOML configuration file (see ops/tessera.example.toml); flags win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the replica keeps its data (created if missing).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to serve on [default: 127.0.0.1:2379]; port 0 picks a free port
    /// (printed once serving).
    #[arg(long)]
    listen: Option<String>,
    /// The address the other replicas reach this one at, HOST:PORT or HOST [default:
    /// the address it listens on].
    #[arg(long)]
    advertise: Option<String>,
    /// This replica's member id [default: 1].
    #[arg(long)]
    id: Option<u64>,
    /// Every founding replica of the driver as ID=ADDRESS, comma-separated (this one
    /// included); omit for a single replica.
    #[arg(long, value_delimiter = ',')]
    members: Vec<String>,
    /// Join a running driver through these replicas' addresses (comma-separated)
    /// instead of founding one; needs a fixed port in --listen.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["members", "id"])]
    join: Vec<String>,
    /// Voters every region should have [default: 3].
    #[arg(long)]
    replicas: Option<usize>,
    /// Address to serve /metrics (Prometheus) and /health on; port 0 picks a free
    /// port (printed once serving). No metrics without it.
    #[arg(long)]
    metrics: Option<String>,
    #[command(flatten)]
    tls: tls::TlsFlags,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or(format!("a label is KEY=VALUE, not {text:?}"))?;
    if key.is_empty() {
        return Err(format!("a label needs a key: {text:?}"));
    }
    Ok((key.to_string(), value.to_string()))
}

fn parse_member(text: &str) -> Result<(u64, String), String> {
    let (id, address) = text.split_once('=').ok_or(format!("a member is ID=ADDRESS, not {text:?}"))?;
    let id = id.parse::<u64>().map_err(|_| format!("a member id is a number: {text:?}"))?;
    if id == 0 || address.is_empty() {
        return Err(format!("a member needs an id above 0 and an address: {text:?}"));
    }
    Ok((id, address.to_string()))
}

/// Runs the command line; the binary's `main` only reports the error.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = FileConfig::load(cli.command.config_file())?;
    let environment = std::env::var("RUST_LOG").ok();
    let log =
        LogSettings::resolve(&cli.log.section(), &file.log, environment, cli.command.default_log_level());
    let _flush_log_on_exit = logging::install(&log)?;
    stop_the_process_on_panic();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let outcome = runtime.block_on(run(cli.command, file));
    // Standard error shows the error already (the binary prints it); a file must too.
    if let Err(error) = &outcome
        && log.file.is_some()
    {
        tracing::error!("stopped: {error:#}");
    }
    outcome
}

/// A panic anywhere in the process is a broken invariant: after the usual report on
/// standard error, it is logged and the process aborts (fail-stop). Were only the
/// panicking thread or task to end, a node could go on half alive: a store with some
/// regions frozen whose leaders never fail over, a driver that stopped scheduling.
fn stop_the_process_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |panic| {
        report(panic);
        tracing::error!("fail-stop: {panic}");
        std::process::abort();
    }));
}

async fn run(command: Command, file: FileConfig) -> anyhow::Result<()> {
    match command {
        Command::Store(args) => {
            let config = store_node_config(args, file.store, file.tls)?;
            node::store::run(config, |ready| println!("{ready}"), node::stop_signal()).await
        }
        Command::Pd(args) => {
            let config = pd_node_config(args, file.pd, file.tls)?;
            node::pd::run(config, |ready| println!("{ready}"), node::stop_signal()).await
        }
        Command::Playground(args) => playground::run(args).await,
        Command::Ctl(args) => ctl::run(args).await,
        Command::Cert(args) => cert::run(&args),
    }
}

/// A store's settings: flags over the file over the defaults.
fn store_node_config(
    args: StoreArgs,
    file: config::StoreSection,
    tls: Option<TlsFiles>,
) -> anyhow::Result<node::store::StoreNodeConfig> {
    let tls = args.tls.credentials(tls)?;
    let mut all_labels = file.labels;
    all_labels.extend(args.labels);
    let mut engine = StoreConfig::new(0);
    engine.split_max_keys =
        args.split_max_keys.or(file.split_max_keys).unwrap_or(config::DEFAULT_SPLIT_MAX_KEYS);
    engine.split_max_bytes =
        args.split_max_bytes.or(file.split_max_bytes).unwrap_or(config::DEFAULT_SPLIT_MAX_BYTES);
    if let Some(interval_ms) = file.gc_compaction_interval_ms {
        engine.gc_compaction_interval = Duration::from_millis(interval_ms);
    }
    if let Some(interval_ms) = file.feed_resolve_interval_ms {
        engine.feed_resolve_interval = Duration::from_millis(interval_ms);
    }
    if let Some(after_ms) = file.feed_stale_lock_after_ms {
        engine.feed_stale_lock_after = Duration::from_millis(after_ms);
    }
    if let Some(mebibytes) = file.block_cache_mib {
        engine.block_cache_bytes = mebibytes.checked_mul(1 << 20).context("block_cache_mib is too large")?;
    }
    file.raft.apply(&mut engine)?;
    let slow_request_threshold_ms =
        file.slow_request_threshold_ms.unwrap_or(config::DEFAULT_SLOW_REQUEST_THRESHOLD_MS);
    let metrics = args.metrics.or(file.metrics);
    let enable_fail_points = file.enable_fail_points.unwrap_or(false);
    if enable_fail_points && metrics.is_none() {
        bail!("enable_fail_points serves /fail on the metrics address: set metrics (or --metrics) too");
    }
    Ok(node::store::StoreNodeConfig {
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .context("a store needs --data-dir (or data_dir in its file)")?,
        listen: args.listen.or(file.listen).unwrap_or_else(|| config::DEFAULT_STORE_LISTEN.to_string()),
        advertise: args.advertise.or(file.advertise),
        pd: if args.pd.is_empty() { file.pd } else { args.pd },
        labels: all_labels,
        request_timeout: Duration::from_secs(10),
        engine,
        metrics,
        etcd_listen: args.etcd_listen.or(file.etcd_listen),
        etcd: etcd_settings(file.etcd_progress_notify_interval_ms, file.etcd_auth_token_ttl_seconds)?,
        enable_fail_points,
        slow_request_threshold: Duration::from_millis(slow_request_threshold_ms),
        tls,
    })
}

/// The etcd API's settings from the file, over the defaults.
fn etcd_settings(
    progress_notify_interval_ms: Option<u64>,
    auth_token_ttl_seconds: Option<u64>,
) -> anyhow::Result<crate::etcd::EtcdSettings> {
    let mut settings = crate::etcd::EtcdSettings::default();
    if let Some(interval_ms) = progress_notify_interval_ms {
        if interval_ms == 0 {
            bail!("etcd_progress_notify_interval_ms must be above 0");
        }
        settings.progress_notify_interval = Duration::from_millis(interval_ms);
    }
    if let Some(ttl_seconds) = auth_token_ttl_seconds {
        if !(1..=86_400 * 366).contains(&ttl_seconds) {
            bail!("etcd_auth_token_ttl_seconds must be from 1 to a year's seconds");
        }
        settings.auth_token_ttl = Duration::from_secs(ttl_seconds);
    }
    Ok(settings)
}

/// A driver replica's settings: flags over the file over the defaults.
fn pd_node_config(
    args: PdArgs,
    file: config::PdSection,
    tls: Option<TlsFiles>,
) -> anyhow::Result<node::pd::PdNodeConfig> {
    let tls = args.tls.credentials(tls)?;
    let replicas = args.replicas.or(file.replicas).unwrap_or(config::DEFAULT_REPLICAS);
    if replicas == 0 {
        bail!("replicas must be at least 1");
    }
    let members = if args.members.is_empty() { file.members } else { args.members };
    let members =
        members.iter().map(|m| parse_member(m)).collect::<Result<Vec<_>, _>>().map_err(anyhow::Error::msg)?;
    let member_id = args.id.or(file.id).unwrap_or(1);
    if member_id == 0 {
        bail!("the member id (--id, or id in the file) must be above 0: 0 names no member");
    }
    let mut driver = DriverConfig::new(0, Vec::new());
    driver.schedulers.replicas = replicas;
    file.schedule.apply(&mut driver)?;
    file.transactions.apply(&mut driver)?;
    Ok(node::pd::PdNodeConfig {
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .context("a driver replica needs --data-dir (or data_dir in its file)")?,
        listen: args.listen.or(file.listen).unwrap_or_else(|| config::DEFAULT_PD_LISTEN.to_string()),
        advertise: args.advertise.or(file.advertise),
        member_id,
        members,
        join: if args.join.is_empty() { file.join } else { args.join },
        metrics: args.metrics.or(file.metrics),
        driver,
        tls,
    })
}
