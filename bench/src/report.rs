//! The results of a run: a table for people, one JSON object per line for scripts.

use serde_json::json;

use crate::runner::{OpStats, RunResult};

/// What the figures are of, repeated on every JSON line.
pub struct RunLabel<'a> {
    pub target: &'a str,
    pub workload: &'a str,
    pub concurrency: usize,
}

fn millis(stats: &OpStats, quantile: f64) -> f64 {
    stats.latency.value_at_quantile(quantile) as f64 / 1000.0
}

fn ops_per_sec(stats: &OpStats, result: &RunResult) -> f64 {
    let seconds = result.elapsed.as_secs_f64();
    if seconds > 0.0 { stats.latency.len() as f64 / seconds } else { 0.0 }
}

/// One JSON object per operation.
pub fn json_lines(label: &RunLabel<'_>, result: &RunResult) -> Vec<String> {
    result
        .ops
        .iter()
        .map(|(op, stats)| {
            json!({
                "target": label.target,
                "workload": label.workload,
                "concurrency": label.concurrency,
                "op": op.name(),
                "count": stats.latency.len(),
                "seconds": result.elapsed.as_secs_f64(),
                "ops_per_sec": ops_per_sec(stats, result),
                "p50_ms": millis(stats, 0.50),
                "p95_ms": millis(stats, 0.95),
                "p99_ms": millis(stats, 0.99),
                "p999_ms": millis(stats, 0.999),
                "max_ms": stats.latency.max() as f64 / 1000.0,
                "errors": stats.errors,
                "first_error": stats.first_error,
            })
            .to_string()
        })
        .collect()
}

/// The table: one row per operation, then the first error of each that had any.
pub fn table(label: &RunLabel<'_>, result: &RunResult) -> String {
    let mut out = format!(
        "{} {} with {} in flight, {:.1} s measured\n{:<18} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}\n",
        label.target,
        label.workload,
        label.concurrency,
        result.elapsed.as_secs_f64(),
        "op",
        "count",
        "ops/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "errors"
    );
    for (op, stats) in &result.ops {
        out.push_str(&format!(
            "{:<18} {:>10} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7}\n",
            op.name(),
            stats.latency.len(),
            ops_per_sec(stats, result),
            millis(stats, 0.50),
            millis(stats, 0.95),
            millis(stats, 0.99),
            millis(stats, 0.999),
            stats.latency.max() as f64 / 1000.0,
            stats.errors
        ));
    }
    for (op, stats) in &result.ops {
        if let Some(error) = &stats.first_error {
            out.push_str(&format!("{} errors: {} (the first: {error})\n", op.name(), stats.errors));
        }
    }
    out
}
