//! The watcher of the etcd clients' keys, through etcd's Watch API, and its checker.
//!
//! The watcher opens before the clients start, from the revision a read then answered,
//! on every client key (`[e, f)`), with progress notifications; when its stream breaks
//! (a store killed, paused or cut off) it watches again through the next store from
//! just past what it has seen, as etcd's clients do. A watch refused as compacted (the
//! watcher was away longer than versions are kept) resumes at the compaction
//! revision, and the revisions in between are a gap it cannot speak for. After the
//! faults the round reads every client key (the final state, at a revision `until`)
//! and the watcher runs until a progress notification passes `until`.
//!
//! Then, per etcd's watch guarantees:
//! - **Ordered**: revisions rise strictly, all above the start (every client write is
//!   one key, so one event per revision).
//! - **Unique and valid**: every event is a put of a client key with a value some client
//!   asked to write to that key, never one refused; no value comes twice; nobody
//!   deletes, so no delete comes.
//! - **Reliable**: every write acknowledged with a revision the watcher covered (not in
//!   a gap, at most `until`) comes as an event at that revision, of that key and value.
//! - **Complete**: without gaps, the events applied in order to the empty start are the
//!   final state.
//!
//! Like the other checkers: no I/O, no panic on what a record says.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::{Acknowledged, EtcdEndpoints, KEYS, connect};
use crate::history::{Event, EventKind, Operation, Output};
use crate::workload::text;

/// How often the watcher asks for progress once it knows where the round ended.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// How long the watcher waits before watching again after its stream broke.
const REWATCH_PAUSE: Duration = Duration::from_millis(100);

/// One event the watcher was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedEvent {
    pub revision: i64,
    pub key: String,
    /// None: a delete.
    pub value: Option<String>,
}

/// What the watcher saw.
#[derive(Debug, Clone, Default)]
pub struct WatchRecord {
    /// The watch started just past this revision.
    pub from: i64,
    pub events: Vec<WatchedEvent>,
    /// Revisions it could not see (first, last), lost to compaction.
    pub gaps: Vec<(i64, i64)>,
    /// The highest revision a progress notification said everything up to was sent.
    pub notified_up_to: i64,
}

impl WatchRecord {
    /// The revision a new watch must start from: just past everything seen.
    fn next_revision(&self) -> i64 {
        let last_event = self.events.last().map_or(self.from, |event| event.revision);
        let last_gap = self.gaps.last().map_or(self.from, |gap| gap.1);
        last_event.max(last_gap).max(self.notified_up_to).max(self.from) + 1
    }

    fn covers(&self, revision: i64, until: i64) -> bool {
        revision > self.from
            && revision <= until
            && !self.gaps.iter().any(|(first, last)| (*first..=*last).contains(&revision))
    }
}

/// The client keys and their values, read through the first store that answers, and
/// the revision they were read at; tried for at most `deadline`.
pub async fn read_all(
    endpoints: &EtcdEndpoints,
    deadline: Duration,
) -> Result<(i64, BTreeMap<String, String>), String> {
    let give_up = tokio::time::Instant::now() + deadline;
    let mut last = String::from("no store to ask");
    for index in 0.. {
        if tokio::time::Instant::now() >= give_up {
            break;
        }
        let answer = match connect(endpoints, index, Duration::from_secs(3)).await {
            Ok(mut client) => client
                .get(KEYS.prefix, Some(GetOptions::new().with_range(KEYS.scan_end)))
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error),
        };
        match answer {
            Ok(answer) => {
                let revision = answer.header().map_or(0, |header| header.revision());
                let state = answer.kvs().iter().map(|kv| (text(kv.key()), text(kv.value()))).collect();
                return Ok((revision, state));
            }
            Err(error) => last = error,
        }
        tokio::time::sleep(REWATCH_PAUSE).await;
    }
    Err(format!("no store answered a read of the etcd keys: {last}"))
}

/// Follows the client keys from just past `record.from` until a progress notification
/// passes the revision `until` is set to; fails if that does not happen within
/// `deadline` of it being set (whether the stream keeps breaking or stays open with
/// progress that never gets there).
pub async fn follow(
    endpoints: EtcdEndpoints,
    record: Arc<Mutex<WatchRecord>>,
    mut until: watch::Receiver<Option<i64>>,
    deadline: Duration,
) -> Result<(), String> {
    let mut give_up = GiveUp { at: None, after: deadline };
    for index in 0.. {
        let next = record.lock().next_revision();
        if let Ok(client) = connect(&endpoints, index, deadline).await {
            let done = watch_through(client, next, &record, &mut until, &mut give_up).await;
            if done {
                return Ok(());
            }
        }
        if give_up.is_due(&until) {
            let notified = record.lock().notified_up_to;
            let until = until.borrow().unwrap_or_default();
            return Err(format!(
                "the etcd watcher was not notified past the end of the round ({until}) within {deadline:?} \
                 (last notified: {notified})"
            ));
        }
        tokio::time::sleep(REWATCH_PAUSE).await;
    }
    Err("no store to watch through".into())
}

/// When the watcher stops waiting: `after` the end of the round is known.
struct GiveUp {
    at: Option<tokio::time::Instant>,
    after: Duration,
}

impl GiveUp {
    /// Whether the time is up; the clock starts when `until` is first seen set.
    fn is_due(&mut self, until: &watch::Receiver<Option<i64>>) -> bool {
        if until.borrow().is_none() {
            return false;
        }
        let now = tokio::time::Instant::now();
        let at = *self.at.get_or_insert(now + self.after);
        now >= at
    }
}

/// Watches through one store from revision `next` until the stream breaks or the time
/// is up (false), or a progress notification passes the end of the round (true).
async fn watch_through(
    mut client: Client,
    next: i64,
    record: &Mutex<WatchRecord>,
    until: &mut watch::Receiver<Option<i64>>,
    give_up: &mut GiveUp,
) -> bool {
    let options =
        WatchOptions::new().with_range(KEYS.scan_end).with_start_revision(next).with_progress_notify();
    // A store that takes the watch and never answers must not hold the round either.
    let opened = tokio::time::timeout(give_up.after, client.watch(KEYS.prefix, Some(options))).await;
    let Ok(Ok(mut stream)) = opened else { return false };
    let mut ask_progress = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        let response = tokio::select! {
            response = stream.message() => response,
            _ = ask_progress.tick() => {
                if give_up.is_due(until) {
                    return false;
                }
                if until.borrow().is_some() && stream.request_progress().await.is_err() {
                    return false;
                }
                continue;
            }
        };
        let Ok(Some(response)) = response else { return false };
        if response.canceled() {
            let compacted_at = response.compact_revision();
            if compacted_at > 0 {
                record.lock().gaps.push((next, compacted_at - 1));
            }
            return false;
        }
        let notified = note(record, &response);
        if until.borrow().is_some_and(|until| notified.is_some_and(|notified| notified >= until)) {
            return true;
        }
    }
}

/// Records one response; answers the revision a progress notification (no events,
/// not the creation) says everything up to was sent.
fn note(record: &Mutex<WatchRecord>, response: &etcd_client::WatchResponse) -> Option<i64> {
    let mut record = record.lock();
    for event in response.events() {
        let Some(kv) = event.kv() else { continue };
        let value = (event.event_type() == EventType::Put).then(|| text(kv.value()));
        record.events.push(WatchedEvent { revision: kv.mod_revision(), key: text(kv.key()), value });
    }
    if !response.events().is_empty() || response.created() {
        return None;
    }
    let revision = response.header().map_or(0, |header| header.revision());
    record.notified_up_to = record.notified_up_to.max(revision);
    Some(revision)
}

/// What the checker needs besides the watcher's record.
pub struct Expected<'a> {
    /// The round's history (the etcd clients' operations among them).
    pub history: &'a [Event],
    pub acknowledged: &'a [Acknowledged],
    /// The client keys at the end of the round, read at revision `until`.
    pub final_state: &'a BTreeMap<String, String>,
    pub until: i64,
}

/// Everything wrong with what the watcher saw, one line each.
pub fn check(record: &WatchRecord, expected: &Expected<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    check_order_and_values(record, &written_values(expected.history), &mut problems);
    check_acknowledged(record, expected, &mut problems);
    if record.gaps.is_empty() {
        let mut state = BTreeMap::new();
        for event in &record.events {
            match &event.value {
                Some(value) => state.insert(event.key.clone(), value.clone()),
                None => state.remove(&event.key),
            };
        }
        if &state != expected.final_state {
            problems.push(format!(
                "etcd watch: the events applied in order give {state:?}, the final read {:?}",
                expected.final_state
            ));
        }
    }
    problems
}

/// Every value a client asked to write to a key, by key and value: whether the write
/// is known not to have applied (it failed, or a compare-and-swap did not swap).
fn written_values(history: &[Event]) -> HashMap<(String, String), bool> {
    let mut written = HashMap::new();
    let mut last_write: HashMap<u64, (String, String)> = HashMap::new();
    for event in history {
        match &event.kind {
            EventKind::Invoke {
                op: Operation::Write { key, value } | Operation::Cas { key, new: value, .. },
            } => {
                written.insert((key.clone(), value.clone()), false);
                last_write.insert(event.process, (key.clone(), value.clone()));
            }
            EventKind::Invoke { .. } => {
                last_write.remove(&event.process);
            }
            EventKind::Fail { .. } | EventKind::Ok { output: Output::Cas { swapped: false, .. } } => {
                if let Some(refused) = last_write.remove(&event.process) {
                    written.insert(refused, true);
                }
            }
            EventKind::Ok { .. } | EventKind::Unknown { .. } => {
                last_write.remove(&event.process);
            }
        }
    }
    written
}

/// Ordered, unique, and every value one a client asked to write to its key.
fn check_order_and_values(
    record: &WatchRecord,
    written: &HashMap<(String, String), bool>,
    problems: &mut Vec<String>,
) {
    let mut previous = record.from;
    let mut delivered = HashMap::new();
    for event in &record.events {
        if event.revision <= previous {
            problems.push(format!("etcd watch: revision {} came after {previous}", event.revision));
        }
        previous = previous.max(event.revision);
        let Some(value) = &event.value else {
            problems.push(format!(
                "etcd watch: a delete of {} at {} nobody asked for",
                event.key, event.revision
            ));
            continue;
        };
        match written.get(&(event.key.clone(), value.clone())) {
            None => problems.push(format!(
                "etcd watch: {} = {value:?} at {} was never written",
                event.key, event.revision
            )),
            Some(true) => problems.push(format!(
                "etcd watch: {} = {value:?} at {} comes from a write that did not apply",
                event.key, event.revision
            )),
            Some(false) => {}
        }
        if let Some(first) = delivered.insert((event.key.as_str(), value.as_str()), event.revision) {
            problems.push(format!(
                "etcd watch: {} = {value:?} delivered twice (at {first} and {})",
                event.key, event.revision
            ));
        }
    }
}

/// Every acknowledged write the watcher covered came, at its revision.
fn check_acknowledged(record: &WatchRecord, expected: &Expected<'_>, problems: &mut Vec<String>) {
    let by_revision: HashMap<i64, &WatchedEvent> =
        record.events.iter().map(|event| (event.revision, event)).collect();
    for write in expected.acknowledged.iter().filter(|write| record.covers(write.revision, expected.until)) {
        let matches = by_revision.get(&write.revision).is_some_and(|event| {
            event.key == write.key && event.value.as_deref() == Some(write.value.as_str())
        });
        if !matches {
            problems.push(format!(
                "etcd watch: the acknowledged write {} = {:?} at {} was not delivered (at that revision: {:?})",
                write.key,
                write.value,
                write.revision,
                by_revision.get(&write.revision)
            ));
        }
    }
}

#[cfg(test)]
mod tests;
