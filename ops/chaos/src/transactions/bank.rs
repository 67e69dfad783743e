//! The bank: accounts whose balances transfers move between, never creating or
//! destroying money. Every read of all the balances in one snapshot must add up to
//! the total the accounts opened with; a read that does not saw part of a transfer
//! (or a transfer that was applied twice, or lost).

use std::collections::BTreeMap;
use std::fmt;

/// One snapshot read of every account: the balances found (an account missing from
/// the map was not found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Names the read in the history (its process and sequence, or its timestamp).
    pub label: String,
    pub balances: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankAnomaly {
    /// The balances do not add up: the snapshot saw half a transfer.
    WrongTotal { label: String, total: i64, expected: i64 },
    /// An account that was opened is missing from the snapshot.
    MissingAccount { label: String, account: String },
    /// An account no one opened appears.
    UnknownAccount { label: String, account: String },
}

impl fmt::Display for BankAnomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BankAnomaly::WrongTotal { label, total, expected } => {
                write!(f, "{label}: the balances add up to {total}, not {expected}")
            }
            BankAnomaly::MissingAccount { label, account } => {
                write!(f, "{label}: account {account} is missing")
            }
            BankAnomaly::UnknownAccount { label, account } => write!(f, "{label}: unknown account {account}"),
        }
    }
}

/// Every snapshot that breaks the bank's invariant: the `accounts` opened, together
/// holding `total`.
pub fn check(snapshots: &[Snapshot], accounts: &[String], total: i64) -> Vec<BankAnomaly> {
    let mut anomalies = Vec::new();
    for snapshot in snapshots {
        let label = snapshot.label.clone();
        for account in accounts.iter().filter(|account| !snapshot.balances.contains_key(*account)) {
            anomalies.push(BankAnomaly::MissingAccount { label: label.clone(), account: account.clone() });
        }
        for account in snapshot.balances.keys().filter(|account| !accounts.contains(account)) {
            anomalies.push(BankAnomaly::UnknownAccount { label: label.clone(), account: account.clone() });
        }
        let sum = snapshot.balances.values().fold(0i64, |sum, balance| sum.saturating_add(*balance));
        if sum != total {
            anomalies.push(BankAnomaly::WrongTotal { label, total: sum, expected: total });
        }
    }
    anomalies
}
