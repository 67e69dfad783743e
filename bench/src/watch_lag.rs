//! Commit-to-delivery lag of watches (`--watchers N`): while the workload writes,
//! `N` watches of the whole transactional key space receive every transaction, and
//! each delivery's lag is the time from its commit timestamp (the oracle's physical
//! milliseconds, taken before the commit is acknowledged: the figure is a little above
//! the lag from the acknowledgement) to its arrival at the watcher.
//!
//! Only transactions committed after the warm-up count. The oracle and this process
//! must share a clock (the same machine, or synchronised ones): the lag is a
//! difference of wall-clock times.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tessera_server::client::{Client, WatchMessage, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The watches of one run and what they measure.
pub struct LagWatchers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<Histogram<u64>, String>>>,
}

/// What the watches measured.
pub struct LagFigures {
    pub watchers: usize,
    pub deliveries: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

impl LagWatchers {
    /// Starts `count` watches from now; deliveries of transactions committed from
    /// `measure_after` on are measured.
    pub async fn start(
        client: &Arc<Client>,
        count: usize,
        measure_after: Duration,
    ) -> Result<LagWatchers, String> {
        let (stop, stopped) = watch::channel(false);
        let measured_from_ms = unix_millis(SystemTime::now() + measure_after);
        let mut tasks = Vec::with_capacity(count);
        for _ in 0..count {
            // Every key the workloads write, which stop below the keys Tessera reserves
            // for its own layers (a client's certificate may not watch those).
            let options = WatchOptions {
                start: Vec::new(),
                end: tessera_server::service::reserved::RESERVED_START.to_vec(),
                from: None,
                prev_values: false,
                progress_interval: None,
            };
            let watch = client.watch(options).await.map_err(|error| format!("starting a watch: {error}"))?;
            tasks.push(tokio::spawn(measure(watch, measured_from_ms, stopped.clone())));
        }
        Ok(LagWatchers { stop, tasks })
    }

    /// Stops the watches; answers what they measured together.
    pub async fn finish(self) -> Result<LagFigures, String> {
        let _ = self.stop.send(true);
        let mut merged = Histogram::<u64>::new(3).map_err(|error| error.to_string())?;
        let watchers = self.tasks.len();
        for task in self.tasks {
            let histogram = task.await.map_err(|error| format!("a watch task failed: {error}"))??;
            merged.add(&histogram).map_err(|error| error.to_string())?;
        }
        let millis = |micros: u64| micros as f64 / 1000.0;
        Ok(LagFigures {
            watchers,
            deliveries: merged.len(),
            p50_ms: millis(merged.value_at_quantile(0.50)),
            p99_ms: millis(merged.value_at_quantile(0.99)),
            max_ms: millis(merged.max()),
        })
    }
}

/// Records each measured delivery's lag, in microseconds, until told to stop.
async fn measure(
    mut watch: tessera_server::client::Watch,
    measured_from_ms: u64,
    mut stop: watch::Receiver<bool>,
) -> Result<Histogram<u64>, String> {
    let mut lags = Histogram::<u64>::new(3).map_err(|error| error.to_string())?;
    loop {
        let message = tokio::select! {
            message = watch.next() => message,
            _ = stop.wait_for(|stopped| *stopped) => return Ok(lags),
        };
        match message {
            Some(Ok(WatchMessage::Transaction { commit_ts, .. })) => {
                let committed_ms = commit_ts.physical_milliseconds();
                if committed_ms >= measured_from_ms {
                    let now_micros = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |since| since.as_micros() as u64);
                    lags.record(now_micros.saturating_sub(committed_ms * 1000))
                        .map_err(|error| error.to_string())?;
                }
            }
            Some(Ok(WatchMessage::Progress(_))) => {}
            Some(Err(error)) => return Err(format!("a watch ended: {error}")),
            None => return Err("a watch ended".to_string()),
        }
    }
}

impl LagFigures {
    pub fn json(&self) -> String {
        serde_json::json!({
            "measure": "watch-lag",
            "watchers": self.watchers,
            "deliveries": self.deliveries,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        })
        .to_string()
    }

    pub fn table(&self) -> String {
        format!(
            "watch lag ({} watchers, {} deliveries): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.watchers, self.deliveries, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}
