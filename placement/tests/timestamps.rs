//! The timestamp oracle across changes of the driver's leader, in one process: three
//! driver replicas over the engine's in-process transport, callers that ask every
//! replica (a deposed leader included), and a check of every answer against real time.
//!
//! The property: a timestamp handed out after another was handed out (the second
//! request began after the first was answered) is larger. Uniqueness alone would let a
//! deposed leader that still answers hand out timestamps below its successor's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tessera_engine::clock::ControlledClock;
use tessera_engine::store::LocalTransport;
use tessera_placement::driver::TimestampBatch;
use tessera_placement::{DriverConfig, PdError, PlacementDriver};

const WAIT: Duration = Duration::from_secs(60);

struct Drivers {
    transport: LocalTransport,
    replicas: Mutex<BTreeMap<u64, Arc<PlacementDriver>>>,
    /// Each replica's clock: stopping one models a paused process.
    clocks: BTreeMap<u64, Arc<ControlledClock>>,
    /// Replicas not asked (their process is paused: it answers nothing).
    paused: Mutex<BTreeSet<u64>>,
    _dirs: Vec<tempfile::TempDir>,
}

fn driver_config(member_id: u64, members: Vec<u64>, window: Duration) -> DriverConfig {
    DriverConfig {
        member_addresses: members.iter().map(|&id| (id, format!("pd-{id}"))).collect(),
        tick_interval: Duration::from_millis(20),
        raft_tick_interval: Duration::from_millis(10),
        raft_election_ticks: 20,
        timestamp_window: window,
        ..DriverConfig::new(member_id, members)
    }
}

impl Drivers {
    fn start(count: u64, window: Duration) -> Drivers {
        let members: Vec<u64> = (1..=count).collect();
        let transport = LocalTransport::new();
        let mut replicas = BTreeMap::new();
        let mut clocks = BTreeMap::new();
        let mut dirs = Vec::new();
        for &member in &members {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let clock = ControlledClock::new();
            let config =
                DriverConfig { clock: clock.clone(), ..driver_config(member, members.clone(), window) };
            let driver = PlacementDriver::open(dir.path(), config, Arc::new(transport.clone()))
                .expect("a driver opens");
            transport.register(member, driver.sink());
            replicas.insert(member, Arc::new(driver));
            clocks.insert(member, clock);
            dirs.push(dir);
        }
        Drivers { transport, replicas: Mutex::new(replicas), clocks, paused: Mutex::default(), _dirs: dirs }
    }

    /// The live replicas that are not paused.
    fn askable(&self) -> Vec<(u64, Arc<PlacementDriver>)> {
        let paused = self.paused.lock().clone();
        let replicas = self.replicas.lock();
        replicas
            .iter()
            .filter(|(id, _)| !paused.contains(id))
            .map(|(id, driver)| (*id, driver.clone()))
            .collect()
    }

    /// Asks the replicas in turn until one answers.
    fn ask(&self, count: u32) -> Option<(u64, TimestampBatch)> {
        let replicas = self.askable();
        replicas.iter().find_map(|(id, driver)| driver.timestamps(count).ok().map(|batch| (*id, batch)))
    }

    /// Callers that ask without pause until `stop`, recording into `history`.
    fn callers(
        self: &Arc<Self>,
        history: &Arc<Mutex<Vec<Answered>>>,
        stop: &Arc<AtomicBool>,
    ) -> Vec<JoinHandle<()>> {
        (0..3u32)
            .map(|caller| {
                let (drivers, history, stop) = (self.clone(), history.clone(), stop.clone());
                std::thread::spawn(move || {
                    let count = 1 + caller * 7;
                    while !stop.load(Ordering::SeqCst) {
                        // Every replica, every time: a deposed leader that still
                        // believes it leads is asked as often as its successor.
                        let mut served = false;
                        for (member, driver) in drivers.askable() {
                            let began = Instant::now();
                            let Ok(batch) = driver.timestamps(count) else { continue };
                            let ended = Instant::now();
                            let first = batch.first.as_u64();
                            let last = first + u64::from(count) - 1;
                            history.lock().push(answered(began, ended, member, first, last));
                            served = true;
                        }
                        if !served {
                            // No oracle serves (an election): no need to spin.
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                })
            })
            .collect()
    }

    fn wait_for_oracle(&self, not: Option<u64>) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((member, _)) = self.ask(1).filter(|(member, _)| Some(*member) != not) {
                return member;
            }
            assert!(Instant::now() < deadline, "no oracle served within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One answered request: when it began and ended, and what it was given.
#[derive(Debug, Clone, Copy)]
struct Answered {
    began: Instant,
    ended: Instant,
    member: u64,
    first: u64,
    last: u64,
}

/// The first pair of answers out of real-time order: `earlier` ended before `later`
/// began, yet `later` holds a timestamp not above every one of `earlier`'s.
fn real_time_violation(history: &[Answered]) -> Option<(Answered, Answered)> {
    let mut by_end: Vec<&Answered> = history.iter().collect();
    by_end.sort_by_key(|answer| answer.ended);
    let mut by_start: Vec<&Answered> = history.iter().collect();
    by_start.sort_by_key(|answer| answer.began);
    // Walks the requests by start time, keeping the answer with the highest timestamp
    // among those that ended before the current one began.
    let mut highest: Option<&Answered> = None;
    let mut ended = by_end.iter().peekable();
    for later in by_start {
        while let Some(earlier) = ended.next_if(|earlier| earlier.ended < later.began) {
            if highest.is_none_or(|highest| earlier.last > highest.last) {
                highest = Some(earlier);
            }
        }
        if let Some(earlier) = highest.filter(|earlier| later.first <= earlier.last) {
            return Some((*earlier, *later));
        }
    }
    None
}

fn answered(began: Instant, ended: Instant, member: u64, first: u64, last: u64) -> Answered {
    Answered { began, ended, member, first, last }
}

#[test]
fn the_real_time_check_rejects_a_smaller_timestamp_after_a_larger_was_answered() {
    let origin = Instant::now();
    let at = |milliseconds: u64| origin + Duration::from_millis(milliseconds);
    let ordered = [answered(at(0), at(1), 1, 10, 19), answered(at(2), at(3), 2, 20, 20)];
    assert!(real_time_violation(&ordered).is_none());
    // Overlapping requests may be answered in either order.
    let overlapping = [answered(at(0), at(5), 1, 30, 30), answered(at(1), at(2), 2, 20, 20)];
    assert!(real_time_violation(&overlapping).is_none());
    let went_back = [answered(at(0), at(1), 1, 30, 39), answered(at(2), at(3), 2, 25, 25)];
    let (earlier, later) =
        real_time_violation(&went_back).expect("a deposed leader's answer after its successor's");
    assert_eq!((earlier.first, later.first), (30, 25));
    let repeated = [answered(at(0), at(1), 1, 30, 39), answered(at(2), at(3), 1, 39, 40)];
    assert!(real_time_violation(&repeated).is_some(), "a timestamp handed out twice");
}

/// Checks a history: every answer in real-time order, no timestamp twice.
fn check(history: &[Answered]) {
    if let Some((earlier, later)) = real_time_violation(history) {
        panic!("out of real-time order: {earlier:?} answered before {later:?} began");
    }
    let mut all: Vec<(u64, u64)> = history.iter().map(|answer| (answer.first, answer.last)).collect();
    all.sort_unstable();
    assert!(all.windows(2).all(|pair| pair[0].1 < pair[1].0), "a timestamp handed out twice");
}

/// Callers ask every replica without pause while the leader is cut off from the other
/// two replicas (it keeps running and is asked too) and later killed.
#[test]
fn timestamps_increase_in_real_time_across_a_partitioned_then_killed_leader() {
    let drivers = Arc::new(Drivers::start(3, Duration::from_millis(500)));
    let first_leader = drivers.wait_for_oracle(None);
    let (history, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
    let callers = drivers.callers(&history, &stop);
    std::thread::sleep(Duration::from_millis(300));
    for other in (1..=3).filter(|&member| member != first_leader) {
        drivers.transport.partition(first_leader, other);
    }
    let second_leader = drivers.wait_for_oracle(Some(first_leader));
    std::thread::sleep(Duration::from_millis(300));
    drivers.transport.heal();
    std::thread::sleep(Duration::from_millis(300));
    drivers.transport.unregister(second_leader);
    drivers.replicas.lock().remove(&second_leader);
    let third_leader = drivers.wait_for_oracle(Some(second_leader));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    callers.into_iter().for_each(|caller| caller.join().expect("a caller thread ends"));
    let history = history.lock();
    let served_by = |member| history.iter().filter(|answer| answer.member == member).count();
    let counts = [first_leader, second_leader, third_leader].map(served_by);
    assert!(counts.iter().all(|&count| count > 0), "each leader served: {counts:?}");
    check(&history);
}

/// The leader's process is paused (its clock stops, it goes silent, nobody asks it)
/// long enough for the others to elect a leader that serves. On resuming it still
/// believes it leads, and its window (a minute here) is not used up; it is asked at
/// once, before it hears from anyone. Its lease ended during the pause by its own
/// clock, so it must answer nothing: what it would hand out is below its successor's.
#[test]
fn a_leader_paused_past_its_lease_hands_out_nothing_when_it_resumes() {
    let drivers = Arc::new(Drivers::start(3, Duration::from_secs(60)));
    let paused_leader = drivers.wait_for_oracle(None);
    let (history, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
    let callers = drivers.callers(&history, &stop);
    std::thread::sleep(Duration::from_millis(200));
    drivers.paused.lock().insert(paused_leader);
    drivers.clocks[&paused_leader].stop();
    for other in (1..=3).filter(|&member| member != paused_leader) {
        drivers.transport.partition(paused_leader, other);
    }
    let successor = drivers.wait_for_oracle(Some(paused_leader));
    std::thread::sleep(Duration::from_millis(200));
    let resumed_at = Instant::now();
    drivers.clocks[&paused_leader].resume_after(Duration::from_secs(10));
    let resumed = drivers.replicas.lock()[&paused_leader].clone();
    let answer = resumed.timestamps(1);
    assert!(answer.is_err(), "the resumed leader answered at once from an ended lease: {answer:?}");
    drivers.paused.lock().clear();
    std::thread::sleep(Duration::from_millis(200));
    drivers.transport.heal();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    callers.into_iter().for_each(|caller| caller.join().expect("a caller thread ends"));
    let history = history.lock();
    let after_resume: Vec<&Answered> = history
        .iter()
        .filter(|answer| answer.member == paused_leader && answer.began >= resumed_at)
        .collect();
    assert!(
        after_resume.is_empty(),
        "the resumed leader answered from an ended lease: {:?}",
        after_resume.first()
    );
    assert!(history.iter().any(|answer| answer.member == successor), "the successor served");
    check(&history);
}

#[test]
fn a_request_for_no_timestamps_or_too_many_is_refused_for_good() {
    let drivers = Drivers::start(1, Duration::from_millis(500));
    drivers.wait_for_oracle(None);
    let driver = drivers.replicas.lock()[&1].clone();
    for count in [0, tessera_placement::driver::MAX_TIMESTAMPS_PER_REQUEST + 1] {
        let error = driver.timestamps(count).expect_err("refused");
        assert!(matches!(error, PdError::InvalidArgument(_)), "{error}");
        assert!(!error.is_retryable());
    }
    let batch =
        driver.timestamps(tessera_placement::driver::MAX_TIMESTAMPS_PER_REQUEST).expect("the most allowed");
    assert_eq!(batch.count, tessera_placement::driver::MAX_TIMESTAMPS_PER_REQUEST);
}
