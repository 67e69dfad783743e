//! Named fail points: places in the code where a test injects a pause, a failure or a
//! known bug, so that an interleaving happens on every run instead of when sleeps
//! happen to line up.
//!
//! A fail point is a call to [`hit`] with a name from this module's constants. While no
//! point is armed anywhere in the process, [`hit`] costs one relaxed atomic load and
//! returns `false`: the product pays nothing for them. A test arms points in one of two
//! scopes:
//!
//! - **Process-wide**, through a [`Scenario`]: for points that other threads reach (a
//!   store's raft workers). A scenario holds a process-wide lock for its lifetime, so
//!   tests that arm process-wide points never overlap, and it disarms everything when
//!   dropped (also when the test panics). Other tests of the same process meet the
//!   point too while it is armed: arm only what they survive (a pause of moments, lost
//!   messages that Raft sends again) and keep the window short.
//! - **This thread only**, through [`arm_on_this_thread`]: for single-threaded code such
//!   as the deterministic simulator, whose runs execute in parallel test threads that
//!   must not see each other's switches.
//!
//! What a point does when hit is its [`Action`]: report `true` (the call site takes its
//! failure or bug branch), pause the hitting thread until the test releases it (the way
//! to hold one side of a race still while the other side runs), or panic.
//!
//! This module owns the mechanism only; what each point means is said where it is hit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

/// What an armed fail point does when a thread reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// [`hit`] returns `true`: the call site takes its failure or bug branch.
    Trigger,
    /// The thread waits at the point until it is released ([`Scenario::release`], the
    /// scenario's end, or [`release_by_name`]) or re-armed with another action, then
    /// [`hit`] returns `false`. Process-wide points only.
    Pause,
    /// The thread panics, naming the point.
    Panic,
}

impl Action {
    /// The action's name, as [`Action::from_name`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Action::Trigger => "trigger",
            Action::Pause => "pause",
            Action::Panic => "panic",
        }
    }

    /// The action named `name` (`trigger`, `pause` or `panic`).
    pub fn from_name(name: &str) -> Option<Action> {
        [Action::Trigger, Action::Pause, Action::Panic].into_iter().find(|action| action.name() == name)
    }
}

/// Points armed anywhere (process-wide or on any thread): the fast path's only read.
static ARMED: AtomicUsize = AtomicUsize::new(0);

static GLOBAL: LazyLock<Mutex<HashMap<&'static str, Armed>>> = LazyLock::new(Default::default);

/// Wakes threads paused at a point and the tests waiting for them to arrive.
static CHANGED: Condvar = Condvar::new();

/// Serialises the tests that arm process-wide points.
static SCENARIO: Mutex<()> = Mutex::new(());

thread_local! {
    static THREAD: RefCell<HashMap<&'static str, Action>> = RefCell::new(HashMap::new());
}

struct Armed {
    action: Action,
    /// Threads that reached the point since it was armed.
    hits: u64,
    /// Threads waiting at a paused point.
    paused: u64,
}

/// Whether the fail point `name` is armed to trigger here; pauses or panics first if
/// that is its action. Returns `false` at once when nothing is armed.
#[inline]
pub fn hit(name: &'static str) -> bool {
    if ARMED.load(Ordering::Relaxed) == 0 {
        return false;
    }
    hit_armed(name)
}

#[cold]
fn hit_armed(name: &'static str) -> bool {
    if let Some(action) = THREAD.with(|points| points.borrow().get(name).copied()) {
        return perform(name, action);
    }
    let mut points = GLOBAL.lock();
    let Some(point) = points.get_mut(name) else { return false };
    point.hits += 1;
    let action = point.action;
    if action != Action::Pause {
        drop(points);
        return perform(name, action);
    }
    point.paused += 1;
    CHANGED.notify_all();
    // Released when the point is re-armed with another action or disarmed.
    while points.get(name).is_some_and(|point| point.action == Action::Pause) {
        CHANGED.wait(&mut points);
    }
    if let Some(point) = points.get_mut(name) {
        point.paused -= 1;
    }
    false
}

fn perform(name: &'static str, action: Action) -> bool {
    match action {
        Action::Trigger => true,
        Action::Panic => panic!("fail point {name} armed to panic"),
        Action::Pause => panic!("fail point {name}: a pause can only be armed process-wide"),
    }
}

/// A test's process-wide fail points. Creating one waits until no other test holds
/// one; dropping it disarms its points and releases any thread paused at them.
pub struct Scenario {
    armed: Vec<&'static str>,
    _exclusive: MutexGuard<'static, ()>,
}

impl Scenario {
    pub fn begin() -> Scenario {
        Scenario { armed: Vec::new(), _exclusive: SCENARIO.lock() }
    }

    /// Arms `name` process-wide with `action` (replacing its previous action).
    pub fn arm(&mut self, name: &'static str, action: Action) {
        if arm_globally(name, action) {
            self.armed.push(name);
        }
    }

    /// Waits until a thread is paused at `name`, for at most `timeout`; whether one is.
    pub fn wait_until_paused(&self, name: &'static str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut points = GLOBAL.lock();
        loop {
            if points.get(name).is_some_and(|point| point.paused > 0) {
                return true;
            }
            if CHANGED.wait_until(&mut points, deadline).timed_out() {
                return points.get(name).is_some_and(|point| point.paused > 0);
            }
        }
    }

    /// How many times `name` was reached since it was armed.
    pub fn hits(&self, name: &'static str) -> u64 {
        GLOBAL.lock().get(name).map_or(0, |point| point.hits)
    }

    /// Disarms `name`, letting every thread paused there go on.
    pub fn release(&mut self, name: &'static str) {
        if release_globally(name) {
            self.armed.retain(|armed| *armed != name);
        }
    }
}

/// Arms `name` process-wide; whether it was not armed before (a re-armed point keeps
/// the threads paused at it, which a new action other than a pause lets go).
fn arm_globally(name: &'static str, action: Action) -> bool {
    let mut points = GLOBAL.lock();
    let previous = points.insert(name, Armed { action, hits: 0, paused: 0 });
    let newly_armed = match previous {
        Some(previous) => {
            let point = points.get_mut(name).expect("invariant: inserted just above");
            point.paused = previous.paused;
            false
        }
        None => {
            ARMED.fetch_add(1, Ordering::SeqCst);
            true
        }
    };
    CHANGED.notify_all();
    newly_armed
}

/// Disarms `name` process-wide; whether it was armed.
fn release_globally(name: &'static str) -> bool {
    let released = GLOBAL.lock().remove(name).is_some();
    if released {
        ARMED.fetch_sub(1, Ordering::SeqCst);
    }
    CHANGED.notify_all();
    released
}

/// A fail point named from outside the code (an operator's request), unknown here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no fail point is named {name:?}; the points are {}", points::ALL.join(", "))]
pub struct UnknownFailPoint {
    pub name: String,
}

/// The point of [`points::ALL`] named `name`.
fn known(name: &str) -> Result<&'static str, UnknownFailPoint> {
    points::ALL
        .iter()
        .copied()
        .find(|known| *known == name)
        .ok_or_else(|| UnknownFailPoint { name: name.to_string() })
}

/// Arms the point named `name` process-wide with `action`, outside any [`Scenario`]: for
/// someone testing a running process from outside it (a store's status server, when its
/// configuration enables fail points). Tests arm through a scenario instead, which
/// keeps them from overlapping. Answers the point's name.
pub fn arm_by_name(name: &str, action: Action) -> Result<&'static str, UnknownFailPoint> {
    let name = known(name)?;
    arm_globally(name, action);
    Ok(name)
}

/// Disarms the point named `name` (see [`arm_by_name`]); whether it was armed.
pub fn release_by_name(name: &str) -> Result<bool, UnknownFailPoint> {
    Ok(release_globally(known(name)?))
}

/// The points armed process-wide: name, action, and hits since armed, by name.
pub fn armed_globally() -> Vec<(&'static str, Action, u64)> {
    let mut armed: Vec<_> =
        GLOBAL.lock().iter().map(|(name, point)| (*name, point.action, point.hits)).collect();
    armed.sort_by_key(|(name, _, _)| *name);
    armed
}

impl Drop for Scenario {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.armed) {
            self.release(name);
        }
    }
}

/// Arms `name` on the calling thread only, until the returned guard is dropped. The
/// action must not be [`Action::Pause`]: nobody else could release this thread.
#[must_use = "the point is disarmed when the guard is dropped"]
pub fn arm_on_this_thread(name: &'static str, action: Action) -> ThreadPoint {
    assert_ne!(action, Action::Pause, "a fail point armed on one thread cannot pause it");
    let newly_armed = THREAD.with(|points| points.borrow_mut().insert(name, action).is_none());
    if newly_armed {
        ARMED.fetch_add(1, Ordering::SeqCst);
    }
    ThreadPoint { name, _not_send: std::marker::PhantomData }
}

/// A fail point armed on one thread; disarmed when dropped.
pub struct ThreadPoint {
    name: &'static str,
    /// Dropped on the thread that armed it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for ThreadPoint {
    fn drop(&mut self) {
        if THREAD.with(|points| points.borrow_mut().remove(self.name).is_some()) {
            ARMED.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Every fail point of the engine, by name. Each is documented where it is hit.
pub mod points {
    /// Raft: commit an entry of an earlier term by counting replicas (Figure 8 of the
    /// paper). A known bug, armed to prove the simulator catches it.
    pub const RAFT_COMMIT_PREVIOUS_TERM_ENTRIES: &str = "raft/commit-previous-term-entries";
    /// Raft: a follower keeps a conflicting suffix instead of truncating it. Known bug.
    pub const RAFT_KEEP_CONFLICTING_SUFFIX: &str = "raft/keep-conflicting-suffix";
    /// Raft: answer ReadIndex without confirming leadership. Known bug.
    pub const RAFT_READ_INDEX_WITHOUT_QUORUM: &str = "raft/read-index-without-quorum";
    /// Raft: grant every vote request, even a second one in the same term. Known bug.
    pub const RAFT_GRANT_EVERY_VOTE: &str = "raft/grant-every-vote";
    /// Store: Raft appends leaving this process are dropped (heartbeats still flow, so
    /// leaders keep their leadership); entries proposed meanwhile stay uncommitted.
    pub(crate) const STORE_DROP_OUTGOING_APPENDS: &str = "store/drop-outgoing-appends";
    /// Store: a message that would create a replica here (a new member's first append or
    /// snapshot) is dropped, as if lost on the way.
    pub(crate) const STORE_DROP_CREATING_MESSAGES: &str = "store/drop-creating-messages";
    /// Store: reached before a worker installs a snapshot Raft accepted (paused, it holds
    /// the install while other messages are handled).
    pub(crate) const STORE_INSTALL_SNAPSHOT: &str = "store/install-snapshot";
    /// Store: the destruction a replica's applied removal asks for is skipped, as if the
    /// store stopped between applying the removal and destroying the replica.
    pub(crate) const STORE_SKIP_DESTROY_AFTER_REMOVAL: &str = "store/skip-destroy-after-removal";
    /// Store: reached by a store's log writer before it writes and syncs the batches the
    /// raft workers handed it. Paused, nothing new in any log becomes durable, and the
    /// workers waiting for their batches wait with it.
    pub(crate) const STORE_LOG_WRITE: &str = "store/log-write";
    /// Store: reached before a raft worker applies a round's committed entries. Armed to
    /// panic, it stands for a broken invariant met on a worker, which must stop the
    /// whole process (the crash-recovery test checks that it does).
    pub const STORE_APPLY: &str = "store/apply";

    /// Every point above: the names that can be armed from outside the code.
    pub const ALL: &[&str] = &[
        RAFT_COMMIT_PREVIOUS_TERM_ENTRIES,
        RAFT_KEEP_CONFLICTING_SUFFIX,
        RAFT_READ_INDEX_WITHOUT_QUORUM,
        RAFT_GRANT_EVERY_VOTE,
        STORE_DROP_OUTGOING_APPENDS,
        STORE_DROP_CREATING_MESSAGES,
        STORE_INSTALL_SNAPSHOT,
        STORE_SKIP_DESTROY_AFTER_REMOVAL,
        STORE_LOG_WRITE,
        STORE_APPLY,
    ];
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    // One name per test: tests run in parallel threads of one process.
    const THREAD_POINT: &str = "failpoint/test-thread";
    const PAUSE_POINT: &str = "failpoint/test-pause";
    const RELEASE_POINT: &str = "failpoint/test-release";

    #[test]
    fn an_unarmed_point_is_not_hit_and_a_thread_point_stays_on_its_thread() {
        assert!(!hit(THREAD_POINT));
        let guard = arm_on_this_thread(THREAD_POINT, Action::Trigger);
        assert!(hit(THREAD_POINT));
        let elsewhere = std::thread::spawn(|| hit(THREAD_POINT)).join().expect("the other thread");
        assert!(!elsewhere, "another thread must not see this thread's point");
        drop(guard);
        assert!(!hit(THREAD_POINT));
    }

    #[test]
    fn a_paused_thread_waits_until_released() {
        let mut scenario = Scenario::begin();
        scenario.arm(PAUSE_POINT, Action::Pause);
        let passed = Arc::new(AtomicUsize::new(0));
        let worker = {
            let passed = passed.clone();
            std::thread::spawn(move || {
                hit(PAUSE_POINT);
                passed.fetch_add(1, Ordering::SeqCst);
            })
        };
        assert!(scenario.wait_until_paused(PAUSE_POINT, Duration::from_secs(10)));
        assert_eq!(passed.load(Ordering::SeqCst), 0, "the thread must wait at the point");
        assert_eq!(scenario.hits(PAUSE_POINT), 1);
        scenario.release(PAUSE_POINT);
        worker.join().expect("the paused thread");
        assert_eq!(passed.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn ending_a_scenario_releases_paused_threads() {
        let mut scenario = Scenario::begin();
        scenario.arm(RELEASE_POINT, Action::Pause);
        let worker = std::thread::spawn(|| hit(RELEASE_POINT));
        assert!(scenario.wait_until_paused(RELEASE_POINT, Duration::from_secs(10)));
        drop(scenario);
        assert!(!worker.join().expect("the released thread"));
        assert!(!hit(RELEASE_POINT));
    }

    #[test]
    fn a_point_named_from_outside_must_exist() {
        let error = arm_by_name("store/no-such-point", Action::Trigger).expect_err("an unknown point");
        assert_eq!(error.name, "store/no-such-point");
        assert!(error.to_string().contains(points::STORE_APPLY), "the error lists the points: {error}");
        assert!(release_by_name("raft/nothing").is_err());
        assert!(armed_globally().iter().all(|(name, _, _)| *name != "store/no-such-point"));
    }

    #[test]
    fn actions_are_named_both_ways() {
        for action in [Action::Trigger, Action::Pause, Action::Panic] {
            assert_eq!(Action::from_name(action.name()), Some(action));
        }
        assert_eq!(Action::from_name("sometimes"), None);
    }
}
