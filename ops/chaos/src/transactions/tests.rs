//! Each checker against histories with a known anomaly, which it must report, and
//! histories without one, which it must pass.

use std::collections::BTreeMap;

use super::bank::{self, BankAnomaly, Snapshot};
use super::list_append::{Anomaly, Isolation, MicroOp, Outcome, Transaction, check};

fn append(key: u64, value: u64) -> MicroOp {
    MicroOp::Append { key, value }
}

fn read(key: u64, values: &[u64]) -> MicroOp {
    MicroOp::Read { key, values: Some(values.to_vec()) }
}

fn committed(id: usize, ops: Vec<MicroOp>) -> Transaction {
    Transaction { id, ops, outcome: Outcome::Committed }
}

fn names(anomalies: &[Anomaly]) -> Vec<&'static str> {
    anomalies
        .iter()
        .map(|anomaly| match anomaly {
            Anomaly::G0(_) => "G0",
            Anomaly::G1a { .. } => "G1a",
            Anomaly::G1b { .. } => "G1b",
            Anomaly::G1c(_) => "G1c",
            Anomaly::GSingle(_) => "G-single",
            Anomaly::G2(_) => "G2",
            Anomaly::IncompatibleOrder { .. } => "incompatible-order",
            Anomaly::GarbageRead { .. } => "garbage",
            Anomaly::DuplicateValue { .. } => "duplicate",
            Anomaly::LostAppend { .. } => "lost",
        })
        .collect()
}

fn found(history: &[Transaction], isolation: Isolation) -> Vec<&'static str> {
    names(&check(history, isolation))
}

#[test]
fn a_serial_history_has_no_anomaly() {
    let history = vec![
        committed(1, vec![append(1, 1), append(2, 1)]),
        committed(2, vec![read(1, &[1]), append(1, 2), read(2, &[1])]),
        committed(3, vec![read(1, &[1, 2]), read(2, &[1]), append(2, 3)]),
        committed(4, vec![read(2, &[1, 3])]),
        // Unknown, and seen: it committed.
        Transaction { id: 5, ops: vec![append(3, 1)], outcome: Outcome::Unknown },
        committed(6, vec![read(3, &[1])]),
        // Aborted, and never seen.
        Transaction { id: 7, ops: vec![append(1, 9)], outcome: Outcome::Aborted },
    ];
    assert!(
        found(&history, Isolation::Serializable).is_empty(),
        "{:?}",
        check(&history, Isolation::Serializable)
    );
}

#[test]
fn crossed_write_orders_are_g0() {
    let history = vec![
        committed(1, vec![append(1, 1), append(2, 1)]),
        committed(2, vec![append(1, 2), append(2, 2)]),
        committed(3, vec![read(1, &[1, 2]), read(2, &[2, 1])]),
    ];
    let anomalies = found(&history, Isolation::SnapshotIsolation);
    assert!(anomalies.contains(&"G0"), "{anomalies:?}");
}

#[test]
fn reading_an_aborted_append_is_g1a() {
    let history = vec![
        Transaction { id: 1, ops: vec![append(1, 5)], outcome: Outcome::Aborted },
        committed(2, vec![read(1, &[5])]),
    ];
    assert_eq!(found(&history, Isolation::SnapshotIsolation), vec!["G1a"]);
}

#[test]
fn reading_an_intermediate_append_is_g1b() {
    let history = vec![committed(1, vec![append(1, 1), append(1, 2)]), committed(2, vec![read(1, &[1])])];
    assert_eq!(found(&history, Isolation::SnapshotIsolation), vec!["G1b"]);
}

#[test]
fn each_transaction_reading_the_others_write_is_g1c() {
    let history = vec![
        committed(1, vec![append(1, 1), read(2, &[2])]),
        committed(2, vec![append(2, 2), read(1, &[1])]),
    ];
    assert_eq!(found(&history, Isolation::SnapshotIsolation), vec!["G1c"]);
}

#[test]
fn a_read_skew_is_g_single() {
    // T2 saw T1's write to key 2 but not its write to key 1.
    let history = vec![
        committed(1, vec![append(1, 1), append(2, 1)]),
        committed(2, vec![read(1, &[]), read(2, &[1])]),
        committed(3, vec![read(1, &[1])]),
    ];
    assert_eq!(found(&history, Isolation::SnapshotIsolation), vec!["G-single"]);
}

#[test]
fn a_write_skew_is_g2_allowed_by_snapshot_isolation_and_not_by_serializability() {
    let history = vec![
        committed(1, vec![read(1, &[]), append(2, 1)]),
        committed(2, vec![read(2, &[]), append(1, 2)]),
        committed(3, vec![read(1, &[2]), read(2, &[1])]),
    ];
    assert!(found(&history, Isolation::SnapshotIsolation).is_empty());
    assert_eq!(found(&history, Isolation::Serializable), vec!["G2"]);
}

#[test]
fn reads_no_single_order_explains_are_reported() {
    let history = vec![
        committed(1, vec![append(1, 1)]),
        committed(2, vec![append(1, 2)]),
        committed(3, vec![read(1, &[1, 2])]),
        committed(4, vec![read(1, &[2])]),
    ];
    assert!(found(&history, Isolation::SnapshotIsolation).contains(&"incompatible-order"));
}

#[test]
fn values_nobody_appended_or_seen_twice_are_reported() {
    let history = vec![committed(1, vec![append(1, 1)]), committed(2, vec![read(1, &[1, 1, 7])])];
    let anomalies = found(&history, Isolation::SnapshotIsolation);
    assert!(anomalies.contains(&"garbage") && anomalies.contains(&"duplicate"), "{anomalies:?}");
}

#[test]
fn a_cycle_names_its_transactions_and_dependencies() {
    let history = vec![
        committed(1, vec![append(1, 1), read(2, &[2])]),
        committed(2, vec![append(2, 2), read(1, &[1])]),
    ];
    let text = check(&history, Isolation::SnapshotIsolation)[0].to_string();
    assert!(text.starts_with("G1c: T") && text.contains("WriteRead"), "{text}");
}

#[test]
fn a_committed_append_missing_from_the_final_state_is_lost() {
    let history = vec![
        committed(1, vec![append(1, 1)]),
        committed(2, vec![append(1, 2)]),
        Transaction { id: 3, ops: vec![append(1, 3)], outcome: Outcome::Unknown },
    ];
    let final_state = BTreeMap::from([(1, vec![1])]);
    let lost = super::list_append::lost_appends(&history, &final_state);
    assert_eq!(names(&lost), vec!["lost"], "only the committed append 2; the unknown 3 may have failed");
    assert!(super::list_append::lost_appends(&history, &BTreeMap::from([(1, vec![1, 2])])).is_empty());
}

fn snapshot(label: &str, balances: &[(&str, i64)]) -> Snapshot {
    let balances: BTreeMap<String, i64> =
        balances.iter().map(|(name, value)| (name.to_string(), *value)).collect();
    Snapshot { label: label.into(), balances }
}

#[test]
fn a_bank_snapshot_that_saw_half_a_transfer_is_reported() {
    let accounts = vec!["a".to_string(), "b".to_string()];
    let good = snapshot("t1", &[("a", 60), ("b", 40)]);
    let half = snapshot("t2", &[("a", 50), ("b", 40)]);
    assert!(bank::check(std::slice::from_ref(&good), &accounts, 100).is_empty());
    assert_eq!(
        bank::check(&[good, half], &accounts, 100),
        vec![BankAnomaly::WrongTotal { label: "t2".into(), total: 90, expected: 100 }]
    );
    let missing = snapshot("t3", &[("a", 100)]);
    let stranger = snapshot("t4", &[("a", 50), ("b", 50), ("c", 0)]);
    let anomalies = bank::check(&[missing, stranger], &accounts, 100);
    assert!(matches!(&anomalies[0], BankAnomaly::MissingAccount { account, .. } if account == "b"));
    assert!(matches!(&anomalies[1], BankAnomaly::UnknownAccount { account, .. } if account == "c"));
}
