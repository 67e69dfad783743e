//! The checker of watches: what each watcher received must be exactly the committed
//! history of its range after its start.
//!
//! A watcher records where it started (`from`), its range's state at `from` (a snapshot
//! read), and everything it was delivered: transactions (a commit timestamp and the
//! versions of the range it wrote) and progress notifications. After the faults the
//! round reads the final state at `until` and lets every watcher run until it has been
//! notified past `until`. Then, per watcher:
//!
//! - **Order**: commit timestamps rise strictly (a transaction delivered twice breaks
//!   this), all above `from`, and none at or below a progress notification already
//!   received; progress rises strictly.
//! - **Range**: every version's key is in the range, at most once per transaction.
//! - **Nothing lost at the end**: the start state with every delivered version applied
//!   in order is the final state, key by key.
//! - **Transfers whole** (accounts): with every account in the range, the accounts add
//!   up to the same total after every delivery (a transfer half delivered, or one
//!   version of it lost, changes it).
//! - **No gap, nothing torn** (list keys, whose values are lists of unique appended
//!   values): each delivered version of a list extends the one before it by exactly the
//!   appends of one transaction to that key, and every transaction's appends to the
//!   range's list keys come in one delivery, together. A missing version shows as a
//!   list that grows by more than one transaction's appends; a torn transaction as a
//!   delivery with some of its keys missing.
//!
//! Like the other checkers: no I/O, no panic on what a history says.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One thing a watcher was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The versions one transaction committed in the range: key and new value (None:
    /// deleted), as text.
    Transaction {
        commit_ts: u64,
        versions: Vec<(String, Option<String>)>,
    },
    Progress(u64),
}

/// What one watcher saw.
#[derive(Debug, Clone, Default)]
pub struct WatcherRecord {
    pub name: String,
    /// `[start, end)`; an empty end: to the end of the key space.
    pub range: (String, String),
    pub from: u64,
    /// The range's keys and values at `from`.
    pub initial: BTreeMap<String, String>,
    pub deliveries: Vec<Delivery>,
}

/// What the checker knows of the list-append transactions: for each appended value,
/// the transaction and the key it was appended to; for each transaction, its appends
/// by key (values in the order appended).
#[derive(Debug, Default)]
pub struct Appends {
    pub writer: HashMap<u64, usize>,
    pub by_transaction: HashMap<usize, BTreeMap<String, Vec<u64>>>,
}

impl Appends {
    pub fn record(&mut self, transaction: usize, key: String, value: u64) {
        self.writer.insert(value, transaction);
        self.by_transaction.entry(transaction).or_default().entry(key).or_default().push(value);
    }
}

/// Whether `key` holds a list (the list-append workload's keys).
pub fn is_list_key(key: &str) -> bool {
    key.starts_with("si-") || key.starts_with("ser-")
}

/// Whether `key` is a bank account (the bank workload's keys).
pub fn is_account_key(key: &str) -> bool {
    key.starts_with("bank-")
}

/// The sum of the accounts in `state`; None if a balance is not a number.
fn accounts_total(state: &BTreeMap<String, String>) -> Option<i64> {
    state.iter().filter(|(key, _)| is_account_key(key)).map(|(_, balance)| balance.parse::<i64>().ok()).sum()
}

fn in_range(key: &str, (start, end): &(String, String)) -> bool {
    key >= start.as_str() && (end.is_empty() || key < end.as_str())
}

/// Everything wrong with what `watcher` received, given the final state at `until`
/// (every key of the transactional key space there) and the appends of the history.
pub fn check(
    watcher: &WatcherRecord,
    until: u64,
    last: &BTreeMap<String, String>,
    appends: &Appends,
) -> Vec<String> {
    let mut problems = check_order(watcher, until);
    let mut state = watcher.initial.clone();
    // With every account in the range, transfers keep the total.
    let accounts_watched = last.keys().any(|key| is_account_key(key))
        && last.keys().filter(|key| is_account_key(key)).all(|key| in_range(key, &watcher.range));
    let total = accounts_total(&state);
    for delivery in &watcher.deliveries {
        let Delivery::Transaction { commit_ts, versions } = delivery else { continue };
        problems.extend(check_lists(*commit_ts, versions, &state, appends, &watcher.range));
        for (key, value) in versions {
            match value {
                Some(value) => state.insert(key.clone(), value.clone()),
                None => state.remove(key),
            };
        }
        if accounts_watched && accounts_total(&state) != total {
            problems.push(format!(
                "the accounts add up to {:?} after the transaction at {commit_ts}, {total:?} at the start (a transfer torn or lost)",
                accounts_total(&state)
            ));
        }
    }
    let wanted: BTreeMap<&String, &String> =
        last.iter().filter(|(key, _)| in_range(key, &watcher.range)).collect();
    let replayed: BTreeMap<&String, &String> = state.iter().collect();
    if replayed != wanted {
        let keys: BTreeSet<&String> = wanted.keys().chain(replayed.keys()).copied().collect();
        for key in keys.into_iter().filter(|key| wanted.get(key) != replayed.get(key)) {
            problems.push(format!(
                "key {key}: the start state and the deliveries make {:?}, the final state at {until} is {:?}",
                replayed.get(key),
                wanted.get(key)
            ));
        }
    }
    problems.into_iter().map(|problem| format!("watcher {}: {problem}", watcher.name)).collect()
}

/// Order of the deliveries, their range, and that the watcher got past `until`.
fn check_order(watcher: &WatcherRecord, until: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let (mut last_commit, mut progress) = (watcher.from, watcher.from);
    for delivery in &watcher.deliveries {
        match delivery {
            Delivery::Transaction { commit_ts, versions } => {
                if *commit_ts <= progress {
                    problems.push(format!("a transaction at {commit_ts} came after progress to {progress}"));
                } else if *commit_ts <= last_commit {
                    problems.push(format!("a transaction at {commit_ts} came after one at {last_commit}"));
                }
                last_commit = last_commit.max(*commit_ts);
                let mut keys = BTreeSet::new();
                for (key, _) in versions {
                    if !in_range(key, &watcher.range) {
                        problems.push(format!(
                            "key {key} at {commit_ts} is outside the range {:?}",
                            watcher.range
                        ));
                    }
                    if !keys.insert(key) {
                        problems.push(format!("key {key} came twice in the transaction at {commit_ts}"));
                    }
                }
            }
            Delivery::Progress(at) => {
                if *at <= progress {
                    problems.push(format!("progress went from {progress} to {at}"));
                }
                progress = progress.max(*at);
            }
        }
    }
    if progress < until {
        problems
            .push(format!("never notified past the end of the round ({until}); last progress {progress}"));
    }
    problems
}

/// The list versions of one delivered transaction: each extends the key's list by one
/// transaction's appends, the same transaction for every key, and every key in the
/// range that transaction appended to is there.
fn check_lists(
    commit_ts: u64,
    versions: &[(String, Option<String>)],
    state: &BTreeMap<String, String>,
    appends: &Appends,
    range: &(String, String),
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut writers = BTreeSet::new();
    for (key, value) in versions.iter().filter(|(key, _)| is_list_key(key)) {
        let before = parse_list(state.get(key).map(String::as_str));
        let after = parse_list(value.as_deref());
        let Some(added) = after.strip_prefix(before.as_slice()) else {
            problems.push(format!("key {key} at {commit_ts}: {after:?} does not extend {before:?}"));
            continue;
        };
        let added_by: BTreeSet<Option<&usize>> =
            added.iter().map(|value| appends.writer.get(value)).collect();
        match added_by.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(writer)] => {
                let wrote = appends.by_transaction.get(writer).and_then(|keys| keys.get(key));
                if wrote.map(Vec::as_slice) != Some(added) {
                    problems.push(format!(
                        "key {key} at {commit_ts} grew by {added:?}: transaction {writer} appended {wrote:?} (a version is missing)"
                    ));
                }
                writers.insert(**writer);
            }
            [] => problems.push(format!("key {key} at {commit_ts} did not grow: {after:?}")),
            several => problems.push(format!(
                "key {key} at {commit_ts} grew by {added:?}, the appends of {several:?} (a version is missing)"
            )),
        }
    }
    if writers.len() > 1 {
        problems.push(format!("the delivery at {commit_ts} mixes the appends of transactions {writers:?}"));
    }
    for writer in writers {
        let delivered: BTreeSet<&String> = versions.iter().map(|(key, _)| key).collect();
        let keys = appends.by_transaction.get(&writer).into_iter().flat_map(BTreeMap::keys);
        for key in keys.filter(|key| in_range(key, range) && !delivered.contains(key)) {
            problems.push(format!(
                "transaction {writer} at {commit_ts} is torn: its append to {key} is not with it"
            ));
        }
    }
    problems
}

/// A list value as the list-append workload writes it (`1,2,3`); what does not parse is
/// left out (the list-append checker reports garbage).
pub fn parse_list(value: Option<&str>) -> Vec<u64> {
    value
        .unwrap_or_default()
        .split(',')
        .filter(|word| !word.is_empty())
        .filter_map(|word| word.parse().ok())
        .collect()
}
