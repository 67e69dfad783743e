//! What idle watches cost the nodes that serve them (`--idle-watchers N`): `N` watches,
//! each of a key range of its own that nothing writes, held open while the processes
//! named by `--measure-pid` are sampled from `/proc`: resident memory and CPU time
//! before the watches open (over as long as the measurement), then with them open.
//! The cost is the difference.
//!
//! The watches are the client library's (this process runs them; the nodes serve their
//! region feeds), or, with `--idle-watch-store ADDR`, gRPC `Watch` streams to that store
//! (the store runs them, through its own client).
//!
//! Linux only (it reads `/proc/PID/stat` and `/proc/PID/status`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_server::client::{Client, Watch, WatchOptions};
use tessera_server::proto::kv_client::KvClient;
use tessera_server::proto::{WatchRequest, WatchResponse};
use tessera_server::security::Dialer;
use tonic::Streaming;

/// One process's resident memory and CPU time at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    resident_bytes: u64,
    cpu_seconds: f64,
}

/// What one process cost, without and with the idle watches.
#[derive(Debug, Clone)]
pub struct ProcessCost {
    pub pid: u32,
    pub resident_before_mib: f64,
    pub resident_with_mib: f64,
    /// CPU time used per second of wall time, as a percentage of one core.
    pub cpu_before_percent: f64,
    pub cpu_with_percent: f64,
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct IdleFigures {
    pub watchers: usize,
    pub seconds: f64,
    pub processes: Vec<ProcessCost>,
}

/// The kernel's clock ticks per second for CPU times in `/proc` (`sysconf(_SC_CLK_TCK)`;
/// 100 on every Linux this runs on).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

fn sample(pid: u32) -> Result<Sample, String> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| format!("pid {pid}: {error}"))?;
    // The command name (field 2) may hold spaces; the fields after its ')' do not.
    let after_name =
        stat.rsplit_once(')').map(|(_, rest)| rest).ok_or(format!("pid {pid}: unreadable stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |index: usize| -> Result<f64, String> {
        let field = fields.get(index).ok_or(format!("pid {pid}: short stat"))?;
        field.parse::<f64>().map_err(|error| format!("pid {pid}: {error}"))
    };
    let cpu_seconds = (ticks(11)? + ticks(12)?) / CLOCK_TICKS_PER_SECOND;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| format!("pid {pid}: {error}"))?;
    let resident_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or(format!("pid {pid}: no VmRSS"))?;
    Ok(Sample { at, resident_bytes: resident_kib * 1024, cpu_seconds })
}

fn samples(pids: &[u32]) -> Result<Vec<Sample>, String> {
    pids.iter().map(|pid| sample(*pid)).collect()
}

/// CPU used between two samples, as a percentage of one core.
fn cpu_percent(from: Sample, to: Sample) -> f64 {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    if wall <= 0.0 { 0.0 } else { 100.0 * (to.cpu_seconds - from.cpu_seconds) / wall }
}

const MIB: f64 = 1024.0 * 1024.0;

/// gRPC Watch streams opened on one connection (below the 200 concurrent streams a
/// hyper server allows by default).
const STREAMS_PER_CONNECTION: usize = 100;

/// Where the idle watches run.
pub enum WatchedThrough {
    /// The client library, in this process.
    Client(Arc<Client>),
    /// gRPC `Watch` streams to the store at this address, dialed as the client dials
    /// (over TLS when it does).
    Store(String, Dialer),
}

/// The open watches.
enum Open {
    Client(Vec<Watch>),
    Store(Vec<Streaming<WatchResponse>>),
}

/// The key range of idle watch `index`: one key nothing writes.
fn idle_range(index: usize) -> (Vec<u8>, Vec<u8>) {
    let start = format!("idle-watch/{index:08}").into_bytes();
    let mut end = start.clone();
    end.push(0);
    (start, end)
}

async fn open(through: &WatchedThrough, count: usize) -> Result<Open, String> {
    match through {
        WatchedThrough::Client(client) => {
            let mut watches = Vec::with_capacity(count);
            for index in 0..count {
                let (start, end) = idle_range(index);
                let options =
                    WatchOptions { start, end, from: None, prev_values: false, progress_interval: None };
                let watch =
                    client.watch(options).await.map_err(|error| format!("opening watch {index}: {error}"))?;
                watches.push(watch);
            }
            Ok(Open::Client(watches))
        }
        WatchedThrough::Store(address, dialer) => {
            let mut streams = Vec::with_capacity(count);
            let mut kv = None;
            for index in 0..count {
                // A connection per STREAMS_PER_CONNECTION: servers cap the streams of one.
                if index % STREAMS_PER_CONNECTION == 0 {
                    let endpoint = dialer.endpoint(address).map_err(|error| format!("{address}: {error}"))?;
                    let channel = dialer
                        .connect(&endpoint)
                        .await
                        .map_err(|error| format!("connecting to {address}: {error}"))?;
                    kv = Some(KvClient::new(channel));
                }
                let Some(kv) = &mut kv else { unreachable!("connected at index 0") };
                let (start_key, end_key) = idle_range(index);
                let request = WatchRequest { start_key, end_key, ..WatchRequest::default() };
                let mut stream = kv
                    .watch(request)
                    .await
                    .map_err(|error| format!("opening watch {index}: {error}"))?
                    .into_inner();
                // The announcement of its start: the watch runs.
                stream.message().await.map_err(|error| format!("watch {index}: {error}"))?;
                streams.push(stream);
            }
            Ok(Open::Store(streams))
        }
    }
}

/// Whether every watch is still open (a watch that ended would cost nothing).
async fn check_open(open: &mut Open) -> Result<(), String> {
    match open {
        Open::Client(watches) => match watches.iter().position(Watch::has_ended) {
            Some(index) => Err(format!("idle watch {index} ended during the measurement")),
            None => Ok(()),
        },
        Open::Store(streams) => {
            for (index, stream) in streams.iter_mut().enumerate() {
                // An idle watch without progress notifications sends nothing: anything
                // ready now is an end or an error.
                if let Ok(message) = tokio::time::timeout(Duration::from_micros(1), stream.message()).await {
                    return Err(format!("idle watch {index} sent {message:?}"));
                }
            }
            Ok(())
        }
    }
}

/// Measures the processes `pids` for `duration` without watches, opens `count` idle
/// watches `through` the client or a store, lets them settle for `settle`, and
/// measures again for `duration`.
pub async fn measure(
    through: &WatchedThrough,
    count: usize,
    pids: &[u32],
    settle: Duration,
    duration: Duration,
) -> Result<IdleFigures, String> {
    let before_start = samples(pids)?;
    tokio::time::sleep(duration).await;
    let before_end = samples(pids)?;
    let mut watches = open(through, count).await?;
    tokio::time::sleep(settle).await;
    let with_start = samples(pids)?;
    tokio::time::sleep(duration).await;
    let with_end = samples(pids)?;
    check_open(&mut watches).await?;
    let processes = pids
        .iter()
        .enumerate()
        .map(|(index, pid)| ProcessCost {
            pid: *pid,
            resident_before_mib: before_end[index].resident_bytes as f64 / MIB,
            resident_with_mib: with_end[index].resident_bytes as f64 / MIB,
            cpu_before_percent: cpu_percent(before_start[index], before_end[index]),
            cpu_with_percent: cpu_percent(with_start[index], with_end[index]),
        })
        .collect();
    drop(watches);
    Ok(IdleFigures { watchers: count, seconds: duration.as_secs_f64(), processes })
}

impl IdleFigures {
    pub fn json(&self) -> String {
        let processes: Vec<_> = self
            .processes
            .iter()
            .map(|process| {
                serde_json::json!({
                    "pid": process.pid,
                    "resident_before_mib": process.resident_before_mib,
                    "resident_with_mib": process.resident_with_mib,
                    "cpu_before_percent": process.cpu_before_percent,
                    "cpu_with_percent": process.cpu_with_percent,
                })
            })
            .collect();
        serde_json::json!({
            "measure": "idle-watchers",
            "watchers": self.watchers,
            "seconds": self.seconds,
            "processes": processes,
        })
        .to_string()
    }

    pub fn table(&self) -> String {
        let mut lines = vec![format!("idle watchers: {} for {:.0} s", self.watchers, self.seconds)];
        for process in &self.processes {
            lines.push(format!(
                "  pid {}: resident {:.1} -> {:.1} MiB (+{:.1}), CPU {:.2}% -> {:.2}% of a core (+{:.2})",
                process.pid,
                process.resident_before_mib,
                process.resident_with_mib,
                process.resident_with_mib - process.resident_before_mib,
                process.cpu_before_percent,
                process.cpu_with_percent,
                process.cpu_with_percent - process.cpu_before_percent,
            ));
        }
        lines.join("\n")
    }
}
