//! `tessera playground`: a whole local cluster from one command. Every node is a child
//! process of this one (the same binary), with its data under `--dir` (a temporary
//! directory by default, removed on exit). Prints one line per node, then `ready`; on
//! Ctrl-C or SIGTERM stops the stores, then the driver, each with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::client::GrpcPdClient;
use crate::node;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Directory for the nodes' data; a temporary directory (removed on exit) if absent.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Number of stores.
    #[arg(long, default_value_t = 3)]
    stores: usize,
    /// Number of placement driver replicas (1, 3 or 5).
    #[arg(long, default_value_t = 1)]
    pd: usize,
    /// First port for the nodes' /metrics and /health: driver replicas take the first
    /// ones, stores the next (ops/prometheus/playground.yml scrapes these). A busy port
    /// is replaced by a free one; the printed lines say which.
    #[arg(long, default_value_t = DEFAULT_METRICS_PORT)]
    metrics_port: u16,
}

/// Where the first driver replica listens if the port is free (`tessera ctl`'s default).
const DEFAULT_PD_PORT: u16 = 2379;

/// Where the first node serves its metrics if the port is free.
const DEFAULT_METRICS_PORT: u16 = 9460;

/// How long a node may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

struct Node {
    name: String,
    child: Child,
}

/// An address on the loopback interface that must be known before its node starts (a
/// driver replica's, which its peers need; a metrics address, which scrape
/// configurations name): `preferred` when it is free, any free port otherwise.
fn free_address(preferred: u16) -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", preferred))
        .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .context("finding a free port")?;
    Ok(listener.local_addr()?.to_string())
}

/// Starts `tessera ARGS`, waits for its first line (the node's `... addr=...` line) and
/// prints it.
async fn start(name: String, args: Vec<String>) -> anyhow::Result<(Node, String)> {
    let exe = std::env::current_exe().context("finding the tessera binary")?;
    let mut command = Command::new(exe);
    command.args(&args).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
    // SAFETY: the closure only makes a system call that is safe between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // A node must not outlive a playground that was killed outright.
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            Ok(())
        });
    }
    let mut child = command.spawn().with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("the child's output")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
        .await
        .with_context(|| format!("{name} did not start within {START_TIMEOUT:?}"))??
        .with_context(|| format!("{name} exited before serving"))?;
    println!("{line}");
    // Keep reading so that the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let address = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .with_context(|| format!("{name} printed no address: {line}"))?
        .to_string();
    Ok((Node { name, child }, address))
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if args.stores == 0 || ![1, 3, 5].contains(&args.pd) {
        bail!("a playground needs at least one store and 1, 3 or 5 driver replicas");
    }
    let temporary = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a temporary directory")?),
    };
    let dir = match (&args.dir, &temporary) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temporary)) => temporary.path().to_path_buf(),
        (None, None) => bail!("no directory for the playground"),
    };
    let mut nodes = Vec::new();
    let result = launch(&args, &dir, &mut nodes).await;
    if result.is_ok() {
        println!("ready");
        tokio::select! {
            _ = node::stop_signal() => {}
            exited = first_exit(&mut nodes) => eprintln!("playground: {exited}; stopping the others"),
        }
    }
    // Stores first, so that they stop reporting before the driver goes.
    for node in nodes.iter_mut().rev() {
        stop(node).await;
    }
    drop(temporary);
    result
}

async fn launch(args: &Args, dir: &Path, nodes: &mut Vec<Node>) -> anyhow::Result<()> {
    let pd_addresses: Vec<String> =
        (0..args.pd).map(|i| free_address(DEFAULT_PD_PORT + i as u16)).collect::<anyhow::Result<_>>()?;
    let members: Vec<String> =
        pd_addresses.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
    let replicas = args.stores.min(3);
    // Port 0 (or running past the last port) means any free port for every node.
    let mut metrics_port = args.metrics_port;
    let mut metrics_address = || {
        let address = free_address(metrics_port);
        metrics_port = if metrics_port == 0 { 0 } else { metrics_port.checked_add(1).unwrap_or(0) };
        address
    };
    for (index, address) in pd_addresses.iter().enumerate() {
        let id = index + 1;
        let mut pd_args = vec![
            "pd".to_string(),
            "--data-dir".into(),
            path(dir, &format!("pd{id}")),
            "--listen".into(),
            address.clone(),
            "--id".into(),
            id.to_string(),
            "--replicas".into(),
            replicas.to_string(),
            "--metrics".into(),
            metrics_address()?,
        ];
        if args.pd > 1 {
            pd_args.push("--members".into());
            pd_args.push(members.join(","));
        }
        nodes.push(start(format!("pd {id}"), pd_args).await?.0);
    }
    for index in 1..=args.stores {
        let store_args = vec![
            "store".to_string(),
            "--pd".into(),
            pd_addresses.join(","),
            "--data-dir".into(),
            path(dir, &format!("store{index}")),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics".into(),
            metrics_address()?,
        ];
        nodes.push(start(format!("store {index}"), store_args).await?.0);
    }
    // Ready once the first region has a leader.
    let pd = GrpcPdClient::new(tokio::runtime::Handle::current(), pd_addresses, START_TIMEOUT);
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(route) = pd.region_by_key_async(b"").await
            && route.leader.is_some()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the cluster did not elect its first leader within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resolves when any node exits, naming it.
async fn first_exit(nodes: &mut [Node]) -> String {
    loop {
        for node in nodes.iter_mut() {
            if let Ok(Some(status)) = node.child.try_wait() {
                return format!("{} exited ({status})", node.name);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stop(node: &mut Node) {
    if let Ok(Some(_)) = node.child.try_wait() {
        return;
    }
    if let Some(pid) = node.child.id().and_then(|pid| rustix::process::Pid::from_raw(pid as i32)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(STOP_TIMEOUT, node.child.wait()).await.is_err() {
        eprintln!("playground: {} did not stop within {STOP_TIMEOUT:?}; killing it", node.name);
        let _ = node.child.kill().await;
    }
}
