//! tessera-bench end to end: a playground (real processes on ports they pick), a load
//! phase and a YCSB-A run through the binary, its JSON lines checked.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const BENCH: &str = env!("CARGO_BIN_EXE_tessera-bench");

/// The `tessera` binary, built beside this one by the same workspace build.
fn tessera() -> PathBuf {
    PathBuf::from(BENCH).with_file_name("tessera")
}

/// Stopped when dropped as Ctrl-C would (it stops its nodes and waits for them), and
/// killed if it does not stop.
struct Playground(Child);

impl Drop for Playground {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_load_and_a_ycsb_run_report_every_operation_without_errors() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut child = Command::new(tessera())
        .args(["playground", "--metrics-port", "0", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the playground starts");
    let stdout = child.stdout.take().expect("piped output");
    let _playground = Playground(child);
    let mut pd = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        if line == "ready" {
            break;
        }
        if line.starts_with("pd ") {
            pd = line.split_whitespace().find_map(|f| f.strip_prefix("addr=")).map(str::to_string);
        }
    }
    let pd = pd.expect("the playground printed its driver");
    let output = Command::new(BENCH)
        .args(["--target", &format!("tessera://{pd}"), "--workload", "ycsb-a", "--load", "--keys", "500"])
        .args(["--operations", "2000", "--warmup", "0s", "--concurrency", "16", "--json", "--quiet"])
        .output()
        .expect("tessera-bench runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let row = |workload: &str, op: &str| {
        rows.iter()
            .find(|r| r["workload"] == workload && r["op"] == op)
            .unwrap_or_else(|| panic!("no {workload}/{op} row in {rows:?}"))
    };
    let load = row("load", "insert");
    assert_eq!(load["count"], 500, "the load writes every key once");
    let (read, update) = (row("ycsb-a", "read"), row("ycsb-a", "update"));
    let count = |r: &serde_json::Value| r["count"].as_u64().expect("a count");
    assert_eq!(count(read) + count(update), 2000, "every operation is reported");
    for r in [load, read, update] {
        assert_eq!(r["target"], "tessera");
        assert_eq!(r["errors"], 0, "{r}");
        assert!(r["ops_per_sec"].as_f64().is_some_and(|v| v > 0.0), "{r}");
        assert!(r["p50_ms"].as_f64() <= r["p99_ms"].as_f64(), "{r}");
    }
}
