//! The `tessera` command line: one binary for every role.

mod config;
mod ctl;
mod playground;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::node;
use config::FileConfig;

#[derive(Parser)]
#[command(name = "tessera", version, about = "Tessera: a sharded, strongly consistent key-value database")]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a storage node.
    Store {
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
    },
    /// Run a placement driver replica.
    Pd {
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
    },
    /// Start a local cluster (placement driver and stores as child processes) and keep
    /// it running until Ctrl-C or SIGTERM.
    Playground(playground::Args),
    /// Talk to a running cluster.
    Ctl(ctl::Args),
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
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Store { config, pd, data_dir, listen, labels, split_max_keys, split_max_bytes, metrics } => {
            let file = FileConfig::load(config.as_deref())?.store;
            let mut all_labels = file.labels;
            all_labels.extend(labels);
            let config = node::store::StoreNodeConfig {
                data_dir: data_dir
                    .or(file.data_dir)
                    .context("a store needs --data-dir (or data_dir in its file)")?,
                listen: listen.or(file.listen).unwrap_or_else(|| config::DEFAULT_STORE_LISTEN.to_string()),
                pd: if pd.is_empty() { file.pd } else { pd },
                labels: all_labels,
                request_timeout: Duration::from_secs(10),
                split_max_keys: split_max_keys
                    .or(file.split_max_keys)
                    .unwrap_or(config::DEFAULT_SPLIT_MAX_KEYS),
                split_max_bytes: split_max_bytes
                    .or(file.split_max_bytes)
                    .unwrap_or(config::DEFAULT_SPLIT_MAX_BYTES),
                metrics: metrics.or(file.metrics),
            };
            node::store::run(config, |ready| println!("{ready}"), node::stop_signal()).await
        }
        Command::Pd { config, data_dir, listen, id, members, join, replicas, metrics } => {
            let file = FileConfig::load(config.as_deref())?.pd;
            let replicas = replicas.or(file.replicas).unwrap_or(config::DEFAULT_REPLICAS);
            if replicas == 0 {
                bail!("replicas must be at least 1");
            }
            let members = if members.is_empty() { file.members } else { members };
            let members = members
                .iter()
                .map(|m| parse_member(m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let id = id.or(file.id).unwrap_or(1);
            let config = node::pd::PdNodeConfig {
                data_dir: data_dir
                    .or(file.data_dir)
                    .context("a driver replica needs --data-dir (or data_dir in its file)")?,
                listen: listen.or(file.listen).unwrap_or_else(|| config::DEFAULT_PD_LISTEN.to_string()),
                member_id: id,
                members,
                join: if join.is_empty() { file.join } else { join },
                replicas,
                metrics: metrics.or(file.metrics),
            };
            node::pd::run(config, |ready| println!("{ready}"), node::stop_signal()).await
        }
        Command::Playground(args) => playground::run(args).await,
        Command::Ctl(args) => ctl::run(args).await,
    }
}
