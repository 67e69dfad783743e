//! The `tessera` command line: one binary for every role.

mod ctl;
mod playground;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::node;

#[derive(Parser)]
#[command(name = "tessera", version, about = "Tessera: a sharded, strongly consistent key-value database")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a storage node.
    Store {
        /// Addresses of the placement driver's replicas, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        pd: Vec<String>,
        /// Where the store keeps its data (created if missing).
        #[arg(long)]
        data_dir: PathBuf,
        /// Address to serve on; port 0 picks a free port (printed once serving).
        #[arg(long, default_value = "127.0.0.1:20160")]
        listen: String,
        /// Location labels, such as zone=eu-1a (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// A region with more keys than this is split at its middle key.
        #[arg(long, default_value_t = 1_000_000)]
        split_max_keys: u64,
        /// A region with more bytes of keys and values than this is split.
        #[arg(long, default_value_t = 96 * 1024 * 1024)]
        split_max_bytes: u64,
    },
    /// Run a placement driver replica.
    Pd {
        /// Where the replica keeps its data (created if missing).
        #[arg(long)]
        data_dir: PathBuf,
        /// Address to serve on; port 0 picks a free port (printed once serving).
        #[arg(long, default_value = "127.0.0.1:2379")]
        listen: String,
        /// This replica's member id.
        #[arg(long, default_value_t = 1)]
        id: u64,
        /// Every replica of the driver as ID=ADDRESS, comma-separated (this one
        /// included); omit for a single replica.
        #[arg(long, value_delimiter = ',', value_parser = parse_member)]
        members: Vec<(u64, String)>,
        /// Voters every region should have.
        #[arg(long, default_value_t = 3)]
        replicas: usize,
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
        Command::Store { pd, data_dir, listen, labels, split_max_keys, split_max_bytes } => {
            let config = node::store::StoreNodeConfig {
                data_dir,
                listen,
                pd,
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
                request_timeout: Duration::from_secs(10),
                split_max_keys,
                split_max_bytes,
            };
            let ready = |id, address| println!("store id={id} pid={} addr={address}", std::process::id());
            node::store::run(config, ready, node::stop_signal()).await
        }
        Command::Pd { data_dir, listen, id, members, replicas } => {
            if replicas == 0 {
                bail!("--replicas must be at least 1");
            }
            let config = node::pd::PdNodeConfig { data_dir, listen, member_id: id, members, replicas };
            let ready = |address| println!("pd id={id} pid={} addr={address}", std::process::id());
            node::pd::run(config, ready, node::stop_signal()).await
        }
        Command::Playground(args) => playground::run(args).await,
        Command::Ctl(args) => ctl::run(args).await,
    }
}
