//! Drives a target: `concurrency` request tasks, each with one request in flight, until
//! the duration is over or the operation count is reached.
//!
//! Every task records into its own histograms (no shared lock on the request path); the
//! progress line and the final report merge them. Latencies are in microseconds, up to
//! a minute, three significant digits. With a rate limit, requests are due at fixed
//! times and a request's latency counts from when it was due. Requests during the
//! warm-up are sent but not recorded. A failed request is counted as an error of its
//! operation, with the first message kept for the report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::keys::{KeyChooser, key};
use crate::target::{Target, TargetError};
use crate::workload::{MAX_SCAN_LENGTH, Op, Workload};

const MAX_LATENCY_MICROS: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    // Bounds fixed at compile time and valid: creation cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
        .unwrap_or_else(|e| panic!("invariant: valid bounds: {e}"))
}

/// One operation's figures.
#[derive(Clone)]
pub struct OpStats {
    pub latency: Histogram<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Default for OpStats {
    fn default() -> OpStats {
        OpStats { latency: histogram(), errors: 0, first_error: None }
    }
}

impl OpStats {
    fn merge(&mut self, other: &OpStats) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// What a run measured.
pub struct RunResult {
    /// The measured period (after the warm-up).
    pub elapsed: Duration,
    pub ops: BTreeMap<Op, OpStats>,
}

#[derive(Default)]
struct Recorder {
    total: BTreeMap<Op, OpStats>,
    /// Since the last progress line, every operation together.
    interval: Option<Histogram<u64>>,
    interval_errors: u64,
}

/// What the request tasks do.
#[derive(Clone)]
pub enum Plan {
    /// Insert keys `0..keys` once each (the load phase).
    Load { keys: u64 },
    /// The workload's mix over the keys chosen by `chooser`.
    Mix { workload: Workload, chooser: Arc<KeyChooser> },
}

#[derive(Clone)]
pub struct RunConfig {
    pub plan: Plan,
    pub value_size: usize,
    pub concurrency: usize,
    /// Requests per second across all tasks; none: as fast as answers come.
    pub rate: Option<f64>,
    pub warmup: Duration,
    /// Stop after this long (warm-up excluded)...
    pub duration: Option<Duration>,
    /// ... or after this many requests.
    pub operations: Option<u64>,
    pub seed: u64,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

struct Shared {
    config: RunConfig,
    issued: AtomicU64,
    stop: AtomicBool,
    start: Instant,
    measure_from: Instant,
    recorders: Vec<Mutex<Recorder>>,
}

/// Runs `config` against `target` and returns what was measured.
pub async fn run(target: &Target, config: RunConfig) -> RunResult {
    let start = Instant::now();
    let concurrency = config.concurrency.max(1);
    let shared = Arc::new(Shared {
        measure_from: start + config.warmup,
        config,
        issued: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        start,
        recorders: (0..concurrency).map(|_| Mutex::new(Recorder::default())).collect(),
    });
    let tasks: Vec<_> = (0..concurrency)
        .map(|index| tokio::spawn(request_loop(shared.clone(), target.clone(), index)))
        .collect();
    let progress = shared.config.progress.then(|| tokio::spawn(progress_loop(shared.clone())));
    if let Some(duration) = shared.config.duration {
        let deadline = shared.measure_from + duration;
        let timer = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            timer.stop.store(true, Ordering::SeqCst);
        });
    }
    for task in tasks {
        // A task that panicked took its figures with it; the others still count.
        let _ = task.await;
    }
    let end = Instant::now();
    shared.stop.store(true, Ordering::SeqCst);
    if let Some(progress) = progress {
        progress.abort();
    }
    let mut ops: BTreeMap<Op, OpStats> = BTreeMap::new();
    for recorder in &shared.recorders {
        for (op, stats) in &recorder.lock().total {
            ops.entry(*op).or_default().merge(stats);
        }
    }
    RunResult { elapsed: end.saturating_duration_since(shared.measure_from), ops }
}

async fn request_loop(shared: Arc<Shared>, mut target: Target, index: usize) {
    let config = &shared.config;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(index as u64));
    let mut last_timestamp = 0u64;
    let mut value = vec![0u8; config.value_size];
    rng.fill(value.as_mut_slice());
    let limit = match &config.plan {
        Plan::Load { keys } => Some(config.operations.map_or(*keys, |ops| ops.min(*keys))),
        Plan::Mix { .. } => config.operations,
    };
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let ticket = shared.issued.fetch_add(1, Ordering::Relaxed);
        if limit.is_some_and(|limit| ticket >= limit) {
            return;
        }
        let due = config.rate.map(|rate| shared.start + Duration::from_secs_f64(ticket as f64 / rate));
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        let began = due.unwrap_or_else(Instant::now);
        // Each value differs from the last (a write of equal bytes could be cheaper).
        let stamp = 8.min(value.len());
        value[..stamp].copy_from_slice(&ticket.to_le_bytes()[..stamp]);
        let (op, result) = match &config.plan {
            Plan::Load { .. } => (Op::Insert, target.put(&key(ticket), &value).await),
            Plan::Mix { workload, chooser } => {
                let op = workload.next_op(&mut rng);
                (op, execute(&mut target, op, chooser, &mut rng, &value, &mut last_timestamp).await)
            }
        };
        if let Err(violation @ TargetError::TimestampWentBack { .. }) = &result {
            // A correctness failure of the system under test, not a slow request.
            eprintln!("tessera-bench: {violation}");
            std::process::exit(2);
        }
        let finished = Instant::now();
        if finished >= shared.measure_from {
            let micros = finished.saturating_duration_since(began).as_micros() as u64;
            record(&shared.recorders[index], op, micros.clamp(1, MAX_LATENCY_MICROS), result.err());
        }
    }
}

async fn execute(
    target: &mut Target,
    op: Op,
    chooser: &KeyChooser,
    rng: &mut ChaCha8Rng,
    value: &[u8],
    last_timestamp: &mut u64,
) -> Result<(), TargetError> {
    match op {
        Op::Timestamp => {
            // One task's timestamps come one after another: each must be above the last.
            let now = target.timestamp().await?;
            let before = std::mem::replace(last_timestamp, now.max(*last_timestamp));
            if now <= before {
                return Err(TargetError::TimestampWentBack { before, now });
            }
            Ok(())
        }
        Op::Read => target.get(&key(chooser.existing(rng))).await.map(drop),
        Op::Update => target.put(&key(chooser.existing(rng)), value).await,
        Op::Insert => target.put(&key(chooser.next_insert()), value).await,
        Op::Scan => {
            let length = rng.random_range(1..=MAX_SCAN_LENGTH);
            target.scan(&key(chooser.existing(rng)), length).await.map(drop)
        }
        Op::ReadModifyWrite => {
            let key = key(chooser.existing(rng));
            target.get(&key).await?;
            target.put(&key, value).await
        }
        Op::TxnRead => target.txn_get(&key(chooser.existing(rng))).await,
        Op::TxnUpdate => target.txn_put(&[(&key(chooser.existing(rng)), value)]).await,
        Op::TxnTwoKeys => {
            let first = chooser.existing(rng);
            let (one, other) = (key(first), key(chooser.far_from(first)));
            target.txn_put(&[(&one, value), (&other, value)]).await
        }
        Op::TxnReadModifyWrite => target.txn_read_modify_write(&key(chooser.existing(rng)), value).await,
        Op::TxnTransfer => {
            let (from, to) = (chooser.existing(rng), chooser.existing(rng));
            if from == to {
                return Ok(());
            }
            target.txn_transfer(&key(from), &key(to)).await
        }
    }
}

fn record(recorder: &Mutex<Recorder>, op: Op, micros: u64, error: Option<TargetError>) {
    let mut recorder = recorder.lock();
    let Recorder { total, interval, interval_errors } = &mut *recorder;
    let stats = total.entry(op).or_default();
    match error {
        None => {
            stats.latency.saturating_record(micros);
            interval.get_or_insert_with(histogram).saturating_record(micros);
        }
        Some(error) => {
            stats.errors += 1;
            *interval_errors += 1;
            if stats.first_error.is_none() {
                stats.first_error = Some(error.to_string());
            }
        }
    }
}

/// One line a second on stderr: requests per second, p99 and errors in that second.
async fn progress_loop(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let mut merged = histogram();
        let mut errors = 0;
        for recorder in &shared.recorders {
            let mut recorder = recorder.lock();
            if let Some(interval) = recorder.interval.take() {
                let _ = merged.add(&interval);
            }
            errors += std::mem::take(&mut recorder.interval_errors);
        }
        let elapsed = shared.start.elapsed().as_secs();
        let phase = if Instant::now() < shared.measure_from { " (warm-up)" } else { "" };
        eprintln!(
            "[{elapsed:>4}s] {:>9} ops/s  p99 {:>8.2} ms  errors {errors}{phase}",
            merged.len(),
            merged.value_at_quantile(0.99) as f64 / 1000.0
        );
    }
}
