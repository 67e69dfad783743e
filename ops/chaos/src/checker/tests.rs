//! Hand-written histories in the style of Jepsen's and Porcupine's examples, each with
//! the verdict a register must give. Times are in nanoseconds; intervals are
//! `(invoked, completed)`.

mod generated;

use super::model::{KeyOp, step};
use super::partition::partition;
use super::*;
use crate::history::{Call, Operation, Output};

fn call(process: u64, operation: Operation, invoked_ns: u64, done: Option<(u64, Output)>) -> Call {
    let (completed_ns, output) = match done {
        Some((completed, output)) => (Some(completed), Some(output)),
        None => (None, None),
    };
    Call { process, operation, invoked_ns, completed_ns, output }
}

fn write(process: u64, key: &str, value: &str, (from, to): (u64, u64)) -> Call {
    let operation = Operation::Write { key: key.into(), value: value.into() };
    call(process, operation, from, Some((to, Output::Written)))
}

fn write_unknown(process: u64, key: &str, value: &str, from: u64) -> Call {
    call(process, Operation::Write { key: key.into(), value: value.into() }, from, None)
}

fn read(process: u64, key: &str, value: Option<&str>, (from, to): (u64, u64)) -> Call {
    let output = Output::Read { value: value.map(String::from) };
    call(process, Operation::Read { key: key.into() }, from, Some((to, output)))
}

fn cas(
    process: u64,
    key: &str,
    (expected, new): (Option<&str>, &str),
    (from, to): (u64, u64),
    (swapped, previous): (bool, Option<&str>),
) -> Call {
    let operation = Operation::Cas { key: key.into(), expected: expected.map(String::from), new: new.into() };
    let output = Output::Cas { swapped, previous: previous.map(String::from) };
    call(process, operation, from, Some((to, output)))
}

fn scan(process: u64, (start, end): (&str, &str), pairs: &[(&str, &str)], (from, to): (u64, u64)) -> Call {
    let pairs = pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
    let operation = Operation::Scan { start: start.into(), end: end.into() };
    call(process, operation, from, Some((to, Output::Scan { pairs })))
}

fn run(calls: &[Call]) -> Report {
    check(calls, &CheckConfig::default())
}

fn render(report: &Report) -> String {
    let mut text: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
    text.extend(report.lost_writes.iter().map(ToString::to_string));
    text.extend(report.inconclusive.iter().map(|key| format!("{key}: inconclusive")));
    text.join("\n")
}

fn assert_linearizable(calls: &[Call]) {
    let report = run(calls);
    assert!(report.violations.is_empty() && report.inconclusive.is_empty(), "{}", render(&report));
}

/// Asserts exactly one key has no linearization, and answers its violation.
fn assert_violation(calls: &[Call], key: &str) -> Violation {
    let report = run(calls);
    assert_eq!(report.violations.len(), 1, "expected one violation on {key}:\n{}", render(&report));
    let violation = report.violations[0].clone();
    assert_eq!(violation.key, key, "{violation}");
    violation
}

/// The witness as a history of its own: relaxed calls lose their outcome.
fn witness_history(violation: &Violation) -> Vec<Call> {
    let open = |call: &Call| Call { completed_ns: None, output: None, ..call.clone() };
    violation
        .witness
        .iter()
        .map(|shown| if shown.relaxed { open(&shown.call) } else { shown.call.clone() })
        .collect()
}

#[test]
fn a_compare_and_set_is_deterministic() {
    let a = Some("a".to_string());
    let cas = |outcome| KeyOp::Cas { expected: a.clone(), new: "b".into(), outcome };
    assert_eq!(step(&a, &cas(Some((false, a.clone())))), None, "expected == state must swap");
    assert_eq!(step(&a, &cas(Some((true, a.clone())))), Some(Some("b".into())));
    assert_eq!(step(&a, &cas(None)), Some(Some("b".into())), "unknown outcome still swaps");
    assert_eq!(step(&None, &cas(None)), Some(None), "unknown outcome from another state changes nothing");
    assert_eq!(step(&None, &cas(Some((false, a.clone())))), None, "previous must be the state");
    assert_eq!(step(&None, &KeyOp::Read(None)), Some(None));
    assert_eq!(step(&a, &KeyOp::Read(None)), None);
}

#[test]
fn scans_become_reads_of_every_key_in_range() {
    let calls = [
        write(1, "k1", "a", (0, 10)),
        call(2, Operation::Read { key: "k2".into() }, 5, None),
        scan(3, ("k0", "k3"), &[("k1", "a")], (20, 30)),
        write(1, "k9", "z", (40, 50)),
        call(4, Operation::Scan { start: "k0".into(), end: "k9".into() }, 60, None),
    ];
    let split = partition(&calls);
    assert_eq!(split.unknown, 2);
    let keys: Vec<&str> = split.keys.iter().map(|history| history.key.as_str()).collect();
    assert_eq!(keys, ["k1", "k2", "k9"]);
    let view = |index: usize| -> Vec<(usize, KeyOp)> {
        split.keys[index].entries.iter().map(|entry| (entry.call, entry.op.clone())).collect()
    };
    assert_eq!(view(0), [(0, KeyOp::Write("a".into())), (2, KeyOp::Read(Some("a".into())))]);
    assert_eq!(view(1), [(2, KeyOp::Read(None))], "the unknown read is dropped, the scan saw k2 absent");
    assert_eq!(view(2), [(3, KeyOp::Write("z".into()))], "k9 is outside [k0, k3)");
}

#[test]
fn overlapping_writes_and_reads_linearize() {
    let calls = [
        write(1, "k", "a", (0, 10)),
        read(2, "k", Some("a"), (2, 5)),
        read(3, "k", None, (3, 8)),
        write(1, "k", "b", (12, 20)),
        read(2, "k", Some("b"), (14, 18)),
        read(3, "k", Some("a"), (11, 13)),
    ];
    assert!(run(&calls).is_valid(), "{}", render(&run(&calls)));
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_a_violation() {
    let calls =
        [write(1, "k", "a", (0, 10)), write(2, "k", "b", (20, 30)), read(3, "k", Some("a"), (40, 50))];
    let violation = assert_violation(&calls, "k");
    assert_eq!(violation.witness.len(), 3, "{violation}");
    assert!(violation.witness.iter().all(|shown| !shown.relaxed), "{violation}");
}

#[test]
fn a_read_of_a_value_never_written_is_a_violation() {
    let calls = [write(1, "k", "a", (0, 10)), read(2, "k", Some("ghost"), (20, 30))];
    let violation = assert_violation(&calls, "k");
    assert_eq!(witness_history(&violation), [calls[1].clone()], "the read alone fails:\n{violation}");
}

#[test]
fn a_value_cannot_come_back() {
    let mut calls = vec![
        write(1, "k", "a", (0, 10)),
        write(2, "k", "b", (5, 100)),
        read(3, "k", Some("a"), (20, 30)),
        read(3, "k", Some("b"), (40, 50)),
    ];
    assert_linearizable(&calls);
    calls.push(read(3, "k", Some("a"), (60, 70)));
    assert_violation(&calls, "k");
}

#[test]
fn compare_and_set_must_find_the_state_it_claims() {
    let prelude = [write(1, "k", "a", (0, 10)), write(2, "k", "b", (20, 30))];
    let from_b = cas(3, "k", (Some("b"), "c"), (40, 50), (true, Some("b")));
    assert_linearizable(&[prelude.as_slice(), &[from_b]].concat());
    let from_a = cas(3, "k", (Some("a"), "c"), (40, 50), (true, Some("a")));
    assert_violation(&[prelude.as_slice(), &[from_a]].concat(), "k");
    // Finding the expected value and not swapping is as wrong as swapping without it.
    let refused = cas(3, "k", (Some("b"), "c"), (40, 50), (false, Some("b")));
    assert_violation(&[prelude.as_slice(), &[refused]].concat(), "k");
}

#[test]
fn an_unknown_write_may_take_effect_late() {
    let calls = [
        write(1, "k", "a", (0, 10)),
        write_unknown(2, "k", "b", 15),
        read(3, "k", Some("a"), (20, 30)),
        read(3, "k", Some("b"), (40, 50)),
    ];
    assert!(run(&calls).is_valid(), "{}", render(&run(&calls)));
    assert_eq!(run(&calls).unknown, 1);
    // But not before it was invoked.
    let early =
        [write(1, "k", "a", (0, 10)), read(3, "k", Some("b"), (11, 14)), write_unknown(2, "k", "b", 15)];
    assert_violation(&early, "k");
}

#[test]
fn an_unknown_write_may_never_take_effect() {
    let calls = [
        write(1, "k", "a", (0, 10)),
        write_unknown(2, "k", "b", 15),
        read(3, "k", Some("a"), (20, 30)),
        read(3, "k", Some("a"), (100, 110)),
    ];
    assert!(run(&calls).is_valid(), "{}", render(&run(&calls)));
}

#[test]
fn scans_are_checked_key_by_key() {
    let prelude = [write(1, "k1", "a", (0, 10)), write(1, "k1", "b", (20, 30)), write(2, "k2", "x", (0, 10))];
    let with = |last: Call| [prelude.as_slice(), &[last]].concat();
    assert!(run(&with(scan(3, ("k0", "k9"), &[("k1", "b"), ("k2", "x")], (40, 50)))).is_valid());
    assert_violation(&with(scan(3, ("k0", "k9"), &[("k1", "a"), ("k2", "x")], (40, 50))), "k1");
    // A written key the scan's range covers but the scan did not return was seen absent.
    assert_violation(&with(scan(3, ("k0", "k9"), &[("k1", "b")], (40, 50))), "k2");
    // A key outside the range says nothing.
    assert!(run(&with(scan(3, ("k0", "k2"), &[("k1", "b")], (40, 50)))).is_valid());
}

#[test]
fn operations_touching_at_one_nanosecond_are_concurrent() {
    assert_linearizable(&[write(1, "k", "a", (0, 10)), read(2, "k", None, (10, 20))]);
    assert_violation(&[write(1, "k", "a", (0, 10)), read(2, "k", None, (11, 20))], "k");
}

#[test]
fn a_lost_write_is_named() {
    let calls =
        [write(1, "k", "a", (0, 10)), write(2, "k", "b", (20, 30)), read(3, "k", Some("a"), (40, 50))];
    let report = run(&calls);
    let expected =
        LostWrite { key: "k".into(), value: "b".into(), acknowledged_ns: 30, final_value: Some("a".into()) };
    assert_eq!(report.lost_writes, [expected]);
    assert_eq!(
        report.lost_writes[0].to_string(),
        "k: write \"b\" acknowledged at 0.000000s is lost: the final read saw \"a\""
    );
    let absent = [write(1, "k", "a", (0, 10)), read(3, "k", None, (40, 50))];
    assert_eq!(run(&absent).lost_writes.len(), 1);
}

#[test]
fn a_write_overwritten_by_a_concurrent_write_is_not_lost() {
    let later = [write(1, "k", "a", (0, 10)), write(2, "k", "b", (5, 15)), read(3, "k", Some("b"), (20, 25))];
    assert!(run(&later).is_valid(), "{}", render(&run(&later)));
    // Either order is possible, so the final read may show either.
    let earlier =
        [write(1, "k", "a", (0, 10)), write(2, "k", "b", (5, 15)), read(3, "k", Some("a"), (20, 25))];
    assert!(run(&earlier).is_valid(), "{}", render(&run(&earlier)));
}

#[test]
fn the_witness_is_smaller_still_fails_and_keeps_the_writes_that_matter() {
    let calls = [
        write(1, "k", "z", (0, 1)),
        read(2, "k", Some("a"), (2, 14)),
        write(1, "k", "a", (3, 10)),
        read(3, "k", Some("a"), (11, 12)),
        write(1, "k", "b", (20, 30)),
        read(2, "k", Some("b"), (31, 33)),
        read(3, "k", Some("b"), (34, 36)),
        read(2, "k", Some("a"), (60, 70)),
    ];
    let violation = assert_violation(&calls, "k");
    let shown: Vec<(Call, bool)> =
        violation.witness.iter().map(|shown| (shown.call.clone(), shown.relaxed)).collect();
    // The read at 11 pins the only write of "a" before 12, the read at 60 after "b": no
    // order has both. The same goes for the read at 2, but one is enough; the write of "a"
    // may be relaxed, but not dropped. "z" is never read, so its write cannot matter.
    let expected = [
        (calls[2].clone(), true),
        (calls[3].clone(), false),
        (calls[4].clone(), false),
        (calls[7].clone(), false),
    ];
    assert_eq!(shown, expected, "{violation}");
    let again = run(&witness_history(&violation));
    assert_eq!(again.violations.len(), 1, "the witness must fail on its own:\n{violation}");
    assert!(violation.witness.len() < calls.len());
    let text = violation.to_string();
    assert!(text.contains("p1 write k = \"a\" -> ok (relaxed: outcome treated as unknown)"), "{text}");
}

#[test]
fn a_violation_reads_one_call_per_line() {
    let calls = [
        write(3, "k2", "p3-17", (1_234_567_000, 1_300_000_000)),
        write_unknown(4, "k2", "p4-1", 1_400_000_000),
        read(1, "k2", Some("ghost"), (2_000_000_000, 2_000_000_500)),
        cas(2, "k2", (None, "p2-9"), (2_100_000_000, 2_200_000_000), (false, Some("p3-17"))),
    ];
    let violation = Violation {
        key: "k2".into(),
        witness: calls.iter().map(|call| WitnessCall { call: call.clone(), relaxed: false }).collect(),
    };
    let expected = [
        "k2: no linearization explains these 4 calls:",
        "  [  1.234567s ..   1.300000s] p3 write k2 = \"p3-17\" -> ok",
        "  [  1.400000s ..        open] p4 write k2 = \"p4-1\" -> unknown",
        "  [  2.000000s ..   2.000000s] p1 read k2 -> \"ghost\"",
        "  [  2.100000s ..   2.200000s] p2 cas k2 absent -> \"p2-9\": not swapped (previous \"p3-17\")",
    ];
    assert_eq!(violation.to_string(), expected.join("\n"));
}

#[test]
fn a_step_limit_of_one_leaves_a_concurrent_history_inconclusive() {
    let calls = [
        write(1, "k", "a", (0, 100)),
        write(2, "k", "b", (0, 100)),
        write(3, "k", "c", (0, 100)),
        read(4, "k", Some("b"), (50, 150)),
    ];
    let report = check(&calls, &CheckConfig { max_steps_per_key: 1 });
    assert_eq!(report.inconclusive, ["k"]);
    assert!(report.violations.is_empty() && !report.is_valid());
    assert!(run(&calls).is_valid(), "{}", render(&run(&calls)));
}
