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

mod watches {
    use std::collections::BTreeMap;

    use crate::transactions::watches::{Appends, Delivery, WatcherRecord, check};

    fn list(values: &[u64]) -> Option<String> {
        Some(values.iter().map(u64::to_string).collect::<Vec<_>>().join(","))
    }

    fn transaction(commit_ts: u64, versions: &[(&str, Option<String>)]) -> Delivery {
        let versions = versions.iter().map(|(key, value)| (key.to_string(), value.clone())).collect();
        Delivery::Transaction { commit_ts, versions }
    }

    /// Transaction 1 appends 1 to si-0 and 2 to si-1; transaction 2 appends 3 to si-0;
    /// transaction 3 moves money between two accounts; then the final state.
    fn history() -> (Appends, BTreeMap<String, String>) {
        let mut appends = Appends::default();
        appends.record(1, "si-0".into(), 1);
        appends.record(1, "si-1".into(), 2);
        appends.record(2, "si-0".into(), 3);
        let last = BTreeMap::from([
            ("bank-0".to_string(), "90".to_string()),
            ("bank-1".to_string(), "110".to_string()),
            ("si-0".to_string(), "1,3".to_string()),
            ("si-1".to_string(), "2".to_string()),
        ]);
        (appends, last)
    }

    /// What a correct watcher of everything from 10 receives.
    fn correct() -> WatcherRecord {
        WatcherRecord {
            name: "w".into(),
            range: (String::new(), String::new()),
            from: 10,
            initial: BTreeMap::from([("bank-0".into(), "100".into()), ("bank-1".into(), "100".into())]),
            deliveries: vec![
                transaction(20, &[("si-0", list(&[1])), ("si-1", list(&[2]))]),
                Delivery::Progress(25),
                transaction(30, &[("bank-0", Some("90".into())), ("bank-1", Some("110".into()))]),
                transaction(40, &[("si-0", list(&[1, 3]))]),
                Delivery::Progress(50),
            ],
        }
    }

    fn problems(watcher: &WatcherRecord) -> Vec<String> {
        let (appends, last) = history();
        check(watcher, 50, &last, &appends)
    }

    fn rejected(watcher: &WatcherRecord, what: &str) {
        let found = problems(watcher);
        assert!(found.iter().any(|problem| problem.contains(what)), "expected {what:?} among {found:?}");
    }

    #[test]
    fn the_committed_history_in_order_passes() {
        assert_eq!(problems(&correct()), Vec::<String>::new());
        let mut narrow = correct();
        narrow.range = ("bank-".into(), "bank.".into());
        narrow.deliveries.retain(|delivery| match delivery {
            Delivery::Transaction { commit_ts, .. } => *commit_ts == 30,
            Delivery::Progress(_) => true,
        });
        assert_eq!(problems(&narrow), Vec::<String>::new(), "a watcher of the accounts only");
    }

    #[test]
    fn a_missing_version_is_a_gap() {
        let mut watcher = correct();
        watcher.deliveries.remove(0);
        rejected(&watcher, "a version is missing");
    }

    #[test]
    fn a_transaction_delivered_twice_is_caught() {
        let mut watcher = correct();
        watcher
            .deliveries
            .insert(3, transaction(30, &[("bank-0", Some("90".into())), ("bank-1", Some("110".into()))]));
        rejected(&watcher, "came after one at 30");
    }

    #[test]
    fn transactions_out_of_commit_order_are_caught() {
        let mut watcher = correct();
        watcher.deliveries.swap(2, 3);
        rejected(&watcher, "came after one at 40");
    }

    #[test]
    fn a_transaction_at_or_below_a_notified_progress_is_caught() {
        let mut watcher = correct();
        watcher.deliveries.insert(2, Delivery::Progress(35));
        rejected(&watcher, "came after progress to 35");
    }

    #[test]
    fn a_torn_transaction_is_caught() {
        let mut watcher = correct();
        watcher.deliveries[0] = transaction(20, &[("si-0", list(&[1]))]);
        watcher.deliveries.insert(1, transaction(21, &[("si-1", list(&[2]))]));
        rejected(&watcher, "is torn");
    }

    #[test]
    fn a_last_version_never_delivered_leaves_the_wrong_final_state() {
        let mut watcher = correct();
        watcher.deliveries.remove(2);
        rejected(&watcher, "key bank-0");
    }

    #[test]
    fn half_a_transfer_is_caught() {
        let mut watcher = correct();
        watcher.deliveries[2] = transaction(30, &[("bank-0", Some("90".into()))]);
        watcher.deliveries.insert(3, transaction(31, &[("bank-1", Some("110".into()))]));
        rejected(&watcher, "a transfer torn or lost");
    }

    #[test]
    fn a_key_outside_the_range_is_caught() {
        let mut watcher = correct();
        watcher.range = ("si-".into(), String::new());
        watcher.initial.clear();
        rejected(&watcher, "outside the range");
    }

    #[test]
    fn a_watcher_never_notified_past_the_end_is_caught() {
        let mut watcher = correct();
        watcher.deliveries.pop();
        rejected(&watcher, "never notified past the end");
    }
}
