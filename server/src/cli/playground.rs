//! `tessera playground`: a whole local cluster from one command. Every node is a child
//! process of this one (the same binary), with its data under `--dir` (a temporary
//! directory by default, removed on exit), and its log in `NODE.log` there. Prints one
//! line per node, then `ready`; on Ctrl-C or SIGTERM stops the stores, then the driver,
//! each with SIGTERM.
//!
//! A node that exits (killed to watch a failover, or crashed) does not stop the others:
//! the playground says so and keeps the cluster running, and SIGHUP restarts every node
//! that exited, with its data, at its address (printing its line again).
//!
//! With `--tls`, every link is mutual TLS with certificates made for the playground.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::client::GrpcPdClient;
use crate::node;
use crate::security::issue::CertificateRequest;
use crate::security::{Credentials, Dialer, Role, TlsFiles};

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
    /// A configuration file every node reads (see ops/tessera.example.toml); the
    /// playground's own flags (addresses, directories, logs) win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Mutual TLS on every link: a development CA and certificates are made in the
    /// playground's directory (`tls/`, kept if there already), and the lines to reach
    /// the cluster with them are printed.
    #[arg(long)]
    tls: bool,
}

/// Where the first driver replica listens if the port is free (`tessera ctl`'s default).
const DEFAULT_PD_PORT: u16 = 2379;

/// Where the first store serves etcd's API if the port is free (the next stores take
/// the ports after it; etcd's own 2379 is the driver's).
const DEFAULT_ETCD_PORT: u16 = 2381;

/// Where the first node serves its metrics if the port is free.
const DEFAULT_METRICS_PORT: u16 = 9460;

/// How long a node may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A node of the playground: how to start it again, and its process while it runs.
struct Node {
    name: String,
    args: Vec<String>,
    child: Option<Child>,
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
/// prints it; the process and the address it serves on.
async fn start(name: &str, args: &[String]) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe().context("finding the tessera binary")?;
    let mut command = Command::new(exe);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
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
    Ok((child, address))
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
        eprintln!("playground: each node logs to {}", dir.join("NODE.log").display());
        println!("ready");
        supervise(&mut nodes).await;
    }
    // Stores first, so that they stop reporting before the driver goes.
    for node in nodes.iter_mut().rev() {
        stop(node).await;
    }
    drop(temporary);
    result
}

/// The flags that hand every node the playground's configuration file, if it has one
/// (absolute: the nodes may resolve paths elsewhere).
fn config_args(args: &Args) -> anyhow::Result<Vec<String>> {
    let Some(config) = &args.config else { return Ok(Vec::new()) };
    let absolute = std::path::absolute(config)
        .with_context(|| format!("the configuration file {}", config.display()))?;
    if !absolute.is_file() {
        bail!("the configuration file {} does not exist", absolute.display());
    }
    Ok(vec!["--config".to_string(), absolute.display().to_string()])
}

/// The playground's certificates (`DIR/tls`): made on its first start, kept after.
/// The flags its nodes are given, and how it dials them itself.
fn tls_setup(dir: &Path) -> anyhow::Result<(Vec<String>, Dialer)> {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).with_context(|| format!("cannot create {}", tls.display()))?;
    let ca = super::cert::ca_files(&tls);
    if !ca.certificate.exists() {
        super::cert::make_authority(&tls, "Tessera playground CA")?;
        let authority = super::cert::load_authority(&tls)?;
        let mut node = CertificateRequest::new(Role::Node, "node");
        node.hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        super::cert::write_certificate(&authority, &tls, &node)?;
        super::cert::write_certificate(&authority, &tls, &CertificateRequest::new(Role::Admin, "admin"))?;
        super::cert::write_certificate(&authority, &tls, &CertificateRequest::new(Role::Client, "root"))?;
    }
    let node = super::cert::certificate_files(&tls, "node");
    let admin = super::cert::certificate_files(&tls, "admin");
    let client = super::cert::certificate_files(&tls, "root");
    let show = |path: &Path| path.display().to_string();
    eprintln!(
        "playground: mutual TLS on every link; tessera ctl takes --tls-ca {} --tls-cert {} --tls-key {}",
        show(&ca.certificate),
        show(&admin.certificate),
        show(&admin.key)
    );
    eprintln!(
        "playground: etcdctl takes --cacert {} --cert {} --key {}",
        show(&ca.certificate),
        show(&client.certificate),
        show(&client.key)
    );
    let files = TlsFiles {
        ca_file: ca.certificate.clone(),
        cert_file: node.certificate.clone(),
        key_file: node.key.clone(),
    };
    let dialer = Dialer::tls(Credentials::load(files)?);
    let flags = [
        "--tls-ca",
        &show(&ca.certificate),
        "--tls-cert",
        &show(&node.certificate),
        "--tls-key",
        &show(&node.key),
    ]
    .map(str::to_string)
    .to_vec();
    Ok((flags, dialer))
}

async fn launch(args: &Args, dir: &Path, nodes: &mut Vec<Node>) -> anyhow::Result<()> {
    let (tls_flags, dialer) = if args.tls { tls_setup(dir)? } else { (Vec::new(), Dialer::plain()) };
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
            "--log-file".into(),
            path(dir, &format!("pd{id}.log")),
        ];
        if args.pd > 1 {
            pd_args.push("--members".into());
            pd_args.push(members.join(","));
        }
        pd_args.extend(config_args(args)?);
        pd_args.extend(tls_flags.iter().cloned());
        start_node(nodes, format!("pd {id}"), pd_args).await?;
    }
    let config = config_args(args)?;
    for index in 1..=args.stores {
        let metrics = metrics_address()?;
        let etcd_port =
            u16::try_from(index - 1).ok().and_then(|offset| DEFAULT_ETCD_PORT.checked_add(offset));
        let etcd = free_address(etcd_port.unwrap_or(0))?;
        let store_args = |listen: &str| -> Vec<String> {
            let mut store_args = vec![
                "store".to_string(),
                "--pd".into(),
                pd_addresses.join(","),
                "--data-dir".into(),
                path(dir, &format!("store{index}")),
                "--listen".into(),
                listen.into(),
                "--metrics".into(),
                metrics.clone(),
                "--etcd-listen".into(),
                etcd.clone(),
                "--log-file".into(),
                path(dir, &format!("store{index}.log")),
            ];
            store_args.extend(config.iter().cloned());
            store_args.extend(tls_flags.iter().cloned());
            store_args
        };
        let listen = start_node(nodes, format!("store {index}"), store_args("127.0.0.1:0")).await?;
        // Restarted at the address it took, which the driver and the others know.
        nodes.last_mut().context("the store just started")?.args = store_args(&listen);
    }
    wait_for_first_leader(GrpcPdClient::new(
        tokio::runtime::Handle::current(),
        pd_addresses,
        START_TIMEOUT,
        dialer,
    ))
    .await
}

/// Ready once the first region has a leader.
async fn wait_for_first_leader(pd: GrpcPdClient) -> anyhow::Result<()> {
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

/// Starts a node and keeps it in `nodes`; the address it serves on.
async fn start_node(nodes: &mut Vec<Node>, name: String, args: Vec<String>) -> anyhow::Result<String> {
    let (child, address) = start(&name, &args).await?;
    nodes.push(Node { name, args, child: Some(child) });
    Ok(address)
}

/// Keeps the cluster running until Ctrl-C or SIGTERM: a node that exits is reported
/// (the others keep running), and SIGHUP restarts every node that exited.
async fn supervise(nodes: &mut [Node]) {
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    // One stop listener for the whole run: one made afresh on every pass would miss a
    // signal arriving between two passes, or while a restart runs.
    let stop = node::stop_signal();
    tokio::pin!(stop);
    let Ok(mut hangup) = hangup else {
        eprintln!("playground: cannot listen for SIGHUP; a node that exits will not be restarted");
        stop.await;
        return;
    };
    let pid = std::process::id();
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = hangup.recv() => {
                tokio::select! {
                    () = &mut stop => return,
                    () = restart_exited(nodes) => {}
                }
            }
            _ = poll.tick() => {
                for (name, status) in reap_exited(nodes) {
                    eprintln!(
                        "playground: {name} exited ({status}); the others keep running. \
                         `kill -HUP {pid}` restarts it"
                    );
                }
            }
        }
    }
}

/// The nodes that exited since the last call, with how they ended.
fn reap_exited(nodes: &mut [Node]) -> Vec<(String, std::process::ExitStatus)> {
    let mut exited = Vec::new();
    for node in nodes.iter_mut() {
        let Some(child) = node.child.as_mut() else { continue };
        if let Ok(Some(status)) = child.try_wait() {
            node.child = None;
            exited.push((node.name.clone(), status));
        }
    }
    exited
}

/// Starts again, with their data and at their addresses, the nodes that exited.
async fn restart_exited(nodes: &mut [Node]) {
    for (name, status) in reap_exited(nodes) {
        eprintln!("playground: {name} exited ({status})");
    }
    for node in nodes.iter_mut().filter(|node| node.child.is_none()) {
        eprintln!("playground: restarting {}", node.name);
        match start(&node.name, &node.args).await {
            Ok((child, _)) => node.child = Some(child),
            Err(error) => eprintln!("playground: {} did not restart: {error:#}", node.name),
        }
    }
}

async fn stop(node: &mut Node) {
    let Some(child) = node.child.as_mut() else { return };
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = child.id().and_then(|pid| rustix::process::Pid::from_raw(pid as i32)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(STOP_TIMEOUT, child.wait()).await.is_err() {
        eprintln!("playground: {} did not stop within {STOP_TIMEOUT:?}; killing it", node.name);
        let _ = child.kill().await;
    }
}
