//! The etcd watch checker on records made by hand: one that is right passes, and each
//! kind of wrong one is named.

use std::collections::BTreeMap;

use super::{Expected, WatchRecord, WatchedEvent, check};
use crate::etcd::Acknowledged;
use crate::history::{Event, EventKind, Operation, Output};

fn put(revision: i64, key: &str, value: &str) -> WatchedEvent {
    WatchedEvent { revision, key: key.into(), value: Some(value.into()) }
}

fn event(process: u64, kind: EventKind) -> Event {
    Event { process, time_ns: 0, kind }
}

/// Three writes: two acknowledged (at revisions 10 and 20), one that failed.
fn history() -> Vec<Event> {
    let write = |key: &str, value: &str| EventKind::Invoke {
        op: Operation::Write { key: key.into(), value: value.into() },
    };
    vec![
        event(1, write("e0", "p1-1")),
        event(1, EventKind::Ok { output: Output::Written }),
        event(2, write("e1", "p2-1")),
        event(2, EventKind::Ok { output: Output::Written }),
        event(3, write("e0", "p3-1")),
        event(3, EventKind::Fail { error: "refused".into() }),
    ]
}

fn acknowledged() -> Vec<Acknowledged> {
    vec![
        Acknowledged { key: "e0".into(), value: "p1-1".into(), revision: 10 },
        Acknowledged { key: "e1".into(), value: "p2-1".into(), revision: 20 },
    ]
}

fn final_state() -> BTreeMap<String, String> {
    [("e0".to_string(), "p1-1".to_string()), ("e1".to_string(), "p2-1".to_string())].into()
}

fn judged(events: Vec<WatchedEvent>, gaps: Vec<(i64, i64)>) -> Vec<String> {
    let record = WatchRecord { from: 5, events, gaps, notified_up_to: 30 };
    let (history, acknowledged, final_state) = (history(), acknowledged(), final_state());
    let expected =
        Expected { history: &history, acknowledged: &acknowledged, final_state: &final_state, until: 30 };
    check(&record, &expected)
}

fn assert_named(problems: &[String], words: &str) {
    assert!(problems.iter().any(|problem| problem.contains(words)), "expected {words:?} in {problems:?}");
}

#[test]
fn a_watch_that_delivered_every_write_in_order_passes() {
    assert_eq!(judged(vec![put(10, "e0", "p1-1"), put(20, "e1", "p2-1")], Vec::new()), Vec::<String>::new());
}

#[test]
fn events_out_of_order_or_twice_are_named() {
    let problems = judged(vec![put(20, "e1", "p2-1"), put(10, "e0", "p1-1")], Vec::new());
    assert_named(&problems, "revision 10 came after 20");
    let problems =
        judged(vec![put(10, "e0", "p1-1"), put(20, "e1", "p2-1"), put(21, "e1", "p2-1")], Vec::new());
    assert_named(&problems, "delivered twice");
}

#[test]
fn a_value_never_written_or_refused_or_a_delete_is_named() {
    let problems =
        judged(vec![put(10, "e0", "p1-1"), put(15, "e0", "p9-9"), put(20, "e1", "p2-1")], Vec::new());
    assert_named(&problems, "was never written");
    let problems =
        judged(vec![put(10, "e0", "p1-1"), put(15, "e0", "p3-1"), put(20, "e1", "p2-1")], Vec::new());
    assert_named(&problems, "did not apply");
    let delete = WatchedEvent { revision: 25, key: "e0".into(), value: None };
    let problems = judged(vec![put(10, "e0", "p1-1"), put(20, "e1", "p2-1"), delete], Vec::new());
    assert_named(&problems, "a delete of e0");
}

#[test]
fn an_acknowledged_write_missing_or_at_another_revision_is_named() {
    let problems = judged(vec![put(10, "e0", "p1-1")], Vec::new());
    assert_named(&problems, "p2-1\" at 20 was not delivered");
    assert_named(&problems, "the final read");
    let problems = judged(vec![put(10, "e0", "p1-1"), put(21, "e1", "p2-1")], Vec::new());
    assert_named(&problems, "at 20 was not delivered");
}

#[test]
fn writes_in_a_gap_lost_to_compaction_are_not_asked_for() {
    assert_eq!(judged(vec![put(10, "e0", "p1-1")], vec![(11, 25)]), Vec::<String>::new());
    // Outside the gap they still are.
    assert_named(&judged(vec![put(20, "e1", "p2-1")], vec![(15, 25)]), "at 10 was not delivered");
}
