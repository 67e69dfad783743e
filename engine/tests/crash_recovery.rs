//! Crash recovery with a real process and a real RocksDB directory.
//!
//! The test runs this binary again as a child that writes to a one-replica store as
//! fast as it can and prints every acknowledged write; the parent kills it with SIGKILL
//! at a random moment, reopens the store itself and checks that every acknowledged write
//! is there and that the writes form one gapless sequence (each write moves a counter
//! from n to n + 1 by compare-and-swap and adds key n + 1, so a lost, duplicated or
//! reordered application would show). Several rounds run on the same directory.
//!
//! A second check runs a child whose raft worker panics while applying (a fail point
//! armed to panic, standing for a broken invariant): the whole process must stop, with
//! SIGABRT and a fail-stop line, instead of leaving that worker's regions frozen.
//!
//! `harness = false`: the binary is its own test runner, so that it can be its own child.

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_engine::proto::{
    command::{CompareAndSwap, Put, Write, write},
    metadata::{Peer, Region, RegionEpoch},
};
use tessera_engine::store::{LocalTransport, ReadRequest, ReadResponse, Store, StoreConfig, StoreError};

const CHILD_FLAG: &str = "--crash-child";
const PANIC_CHILD_FLAG: &str = "--panic-child";
const ROUNDS: usize = 5;
const EPOCH: RegionEpoch = RegionEpoch { conf_version: 1, version: 1 };

fn config() -> StoreConfig {
    StoreConfig { workers: 2, tick_interval: Duration::from_millis(10), ..StoreConfig::new(1) }
}

fn region() -> Region {
    Region {
        id: 1,
        start_key: Vec::new(),
        end_key: Vec::new(),
        epoch: Some(EPOCH),
        peers: vec![Peer { id: 11, store_id: 1, role: 0 }],
    }
}

fn open(dir: &std::path::Path) -> Store {
    let store =
        Store::open(dir, config(), Arc::new(LocalTransport::new())).unwrap_or_else(|e| panic!("open: {e}"));
    if store.status(1).is_none() {
        store.bootstrap_region(&region()).unwrap_or_else(|e| panic!("bootstrap: {e}"));
        store.campaign(1);
    }
    store
}

fn counter(store: &Store) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the reopened store never served a read");
        match store
            .read(1, EPOCH, ReadRequest::Get { key: b"count".to_vec() })
            .recv_timeout(Duration::from_secs(5))
        {
            Ok(Ok(ReadResponse::Value(value))) => return value.map_or(0, |v| decode(&v)),
            Ok(Err(StoreError::NotLeader { .. })) | Err(_) => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("reading the counter: {other:?}"),
        }
    }
}

fn decode(value: &[u8]) -> u64 {
    std::str::from_utf8(value).unwrap_or("x").parse().unwrap_or_else(|_| panic!("bad counter {value:?}"))
}

fn next_write(n: u64) -> Vec<Write> {
    let expected = (n > 0).then(|| n.to_string().into_bytes());
    vec![
        Write {
            kind: Some(write::Kind::CompareAndSwap(CompareAndSwap {
                key: b"count".to_vec(),
                expected,
                new_value: Some((n + 1).to_string().into_bytes()),
            })),
        },
        Write {
            kind: Some(write::Kind::Put(Put {
                key: format!("k{:08}", n + 1).into_bytes(),
                value: b"v".to_vec(),
            })),
        },
    ]
}

/// The child: write forever, printing each acknowledged counter value.
fn child(dir: &str) -> ExitCode {
    let store = open(std::path::Path::new(dir));
    let mut n = counter(&store);
    let mut out = std::io::stdout();
    loop {
        match store.write(1, EPOCH, next_write(n)).recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(answers)) if answers.first().is_some_and(|a| a.succeeded) => {
                n += 1;
                let _ = writeln!(out, "ack {n}");
                let _ = out.flush();
            }
            Ok(Ok(answers)) => panic!("compare-and-swap from {n} failed: {answers:?}"),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The child whose worker panics: it arms the fail point, writes once, and reports if
/// the process is still alive afterwards.
fn panic_child(dir: &str) -> ExitCode {
    let store = open(std::path::Path::new(dir));
    counter(&store);
    let mut scenario = tessera_engine::failpoint::Scenario::begin();
    scenario.arm(tessera_engine::failpoint::points::STORE_APPLY, tessera_engine::failpoint::Action::Panic);
    let answer = store.write(1, EPOCH, next_write(0)).recv_timeout(Duration::from_secs(5));
    println!("survived a panic on a raft worker; the write answered {answer:?}");
    ExitCode::SUCCESS
}

/// Runs the panicking child; an error says how the process failed to stop.
fn check_fail_stop_on_panic(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::process::ExitStatusExt as _;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = Command::new(exe)
        .arg(PANIC_CHILD_FLAG)
        .arg(dir)
        .output()
        .map_err(|e| format!("running the panicking child: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    const SIGABRT: i32 = 6;
    if output.status.signal() != Some(SIGABRT)
        || !stderr.contains("fail-stop: the store's raft worker thread")
    {
        return Err(format!(
            "a panic on a raft worker must abort the process with a fail-stop line; it ended with {} \
             (stdout: {stdout:?}, stderr: {stderr:?})",
            output.status
        ));
    }
    Ok(())
}

fn run_round(dir: &std::path::Path, round: usize, seed: &mut u64) -> Result<(u64, u64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg(CHILD_FLAG)
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawning the child: {e}"))?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let reader = std::thread::spawn(move || {
        let mut acknowledged = 0;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ack ").and_then(|n| n.parse::<u64>().ok()) {
                acknowledged = n;
            }
        }
        acknowledged
    });
    // A random moment in the middle of the write load.
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let delay = Duration::from_millis(400 + (*seed >> 33) % 900);
    std::thread::sleep(delay);
    child.kill().map_err(|e| format!("killing the child: {e}"))?;
    let _ = child.wait();
    let acknowledged = reader.join().map_err(|_| "the reader thread panicked")?;

    let store = open(dir);
    let count = counter(&store);
    if count < acknowledged {
        return Err(format!(
            "round {round}: {acknowledged} writes were acknowledged but only {count} survived"
        ));
    }
    for n in 1..=count {
        let key = format!("k{n:08}").into_bytes();
        let answer = store.read(1, EPOCH, ReadRequest::Get { key }).recv_timeout(Duration::from_secs(10));
        if !matches!(answer, Ok(Ok(ReadResponse::Value(Some(_))))) {
            return Err(format!("round {round}: counter is {count} but key {n} is missing ({answer:?})"));
        }
    }
    let beyond = store.read(1, EPOCH, ReadRequest::Get { key: format!("k{:08}", count + 1).into_bytes() });
    if !matches!(beyond.recv_timeout(Duration::from_secs(10)), Ok(Ok(ReadResponse::Value(None)))) {
        return Err(format!("round {round}: a key beyond the counter {count} exists"));
    }
    store.shutdown();
    Ok((acknowledged, count))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, dir] = args.as_slice() {
        match flag.as_str() {
            CHILD_FLAG => return child(dir),
            PANIC_CHILD_FLAG => return panic_child(dir),
            _ => {}
        }
    }
    // Under `cargo test`, the harness passes its own flags; a filter that excludes this
    // test is honoured.
    if args.iter().skip(1).any(|a| !a.starts_with('-') && !"crash_recovery".contains(a.as_str())) {
        println!("crash_recovery: filtered out\n0 passed; 0 failed");
        return ExitCode::SUCCESS;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let mut seed = std::process::id() as u64;
    println!("running crash_recovery: {ROUNDS} rounds of SIGKILL under write load (seed {seed})");
    for round in 1..=ROUNDS {
        match run_round(dir.path(), round, &mut seed) {
            Ok((acknowledged, count)) => {
                println!("round {round}: {acknowledged} acknowledged, {count} recovered, sequence gapless")
            }
            Err(failure) => {
                println!("test crash_recovery ... FAILED: {failure}\n0 passed; 1 failed");
                return ExitCode::FAILURE;
            }
        }
    }
    let panic_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    if let Err(failure) = check_fail_stop_on_panic(panic_dir.path()) {
        println!("test crash_recovery ... FAILED: {failure}\n0 passed; 1 failed");
        return ExitCode::FAILURE;
    }
    println!("a panic on a raft worker stopped the process (SIGABRT, fail-stop line)");
    println!("test crash_recovery ... ok\n1 passed; 0 failed");
    ExitCode::SUCCESS
}
