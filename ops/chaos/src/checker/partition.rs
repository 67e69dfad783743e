//! Splitting a history into one sub-history per key.
//!
//! Reads, writes and compare-and-sets name one key and go to it whole. A scan observes
//! many keys at once; here it becomes one read per key it could have seen, each with the
//! scan's interval. That loses the scan's cross-key atomicity (the checker does not judge
//! it) but keeps every per-key fact the scan states, including "this key was absent".

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::model::KeyOp;
use crate::history::{Call, Operation, Output};

/// One operation of one key's sub-history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyEntry {
    /// Index of the [`Call`] it came from, so a witness can show what the client did.
    pub call: usize,
    pub op: KeyOp,
    pub invoked_ns: u64,
    /// `None`: the outcome is unknown and the operation stays open to the end of time.
    pub completed_ns: Option<u64>,
}

impl KeyEntry {
    pub(super) fn is_open(&self) -> bool {
        self.completed_ns.is_none()
    }

    /// The entry as if its reply had been lost: open, outcome forgotten.
    pub(super) fn relaxed(&self) -> KeyEntry {
        KeyEntry { call: self.call, op: self.op.relaxed(), invoked_ns: self.invoked_ns, completed_ns: None }
    }
}

/// The sub-history of one key, entries in invocation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyHistory {
    pub key: String,
    pub entries: Vec<KeyEntry>,
}

#[derive(Debug, Default)]
pub(super) struct Partition {
    /// Every key of the universe, in key order.
    pub keys: Vec<KeyHistory>,
    /// Keys touched by a call whose output does not fit its operation (a hand-edited or
    /// corrupted history). Such a call is taken as unknown, and the key cannot be judged.
    pub malformed: BTreeSet<String>,
    /// Calls whose outcome is unknown.
    pub unknown: usize,
}

/// When the call completed and what it answered, if both are known. A completion
/// stamped before the invocation (a clock that is not monotonic after all) is read as
/// the invocation time: the tightest interval the call can honestly claim.
fn outcome(call: &Call) -> Option<(u64, &Output)> {
    match (call.completed_ns, &call.output) {
        (Some(completed), Some(output)) => Some((completed.max(call.invoked_ns), output)),
        _ => None,
    }
}

/// The keys a history is about: every key named by a read, write or compare-and-set,
/// and every key a successful scan returned (a key nobody wrote but a scan found is
/// evidence too: of a value that came from nowhere).
fn universe(calls: &[Call]) -> BTreeMap<String, Vec<KeyEntry>> {
    let mut keys = BTreeMap::new();
    for call in calls {
        match &call.operation {
            Operation::Read { key } | Operation::Write { key, .. } | Operation::Cas { key, .. } => {
                keys.entry(key.clone()).or_insert_with(Vec::new);
            }
            Operation::Scan { .. } => {
                if let Some((_, Output::Scan { pairs })) = outcome(call) {
                    for (key, _) in pairs {
                        keys.entry(key.clone()).or_insert_with(Vec::new);
                    }
                }
            }
        }
    }
    keys
}

pub(super) fn partition(calls: &[Call]) -> Partition {
    let mut keys = universe(calls);
    let mut malformed = BTreeSet::new();
    let mut unknown = 0;
    for (index, call) in calls.iter().enumerate() {
        let known = outcome(call);
        if known.is_none() {
            unknown += 1;
        }
        let entry = |op: KeyOp, completed_ns: Option<u64>| KeyEntry {
            call: index,
            op,
            invoked_ns: call.invoked_ns,
            completed_ns,
        };
        match &call.operation {
            Operation::Read { key } => match known {
                // A read that never answered constrains nothing.
                None => {}
                Some((completed, Output::Read { value })) => {
                    push(&mut keys, key, entry(KeyOp::Read(value.clone()), Some(completed)));
                }
                Some(_) => {
                    malformed.insert(key.clone());
                }
            },
            Operation::Write { key, value } => {
                let completed = match known {
                    Some((completed, Output::Written)) => Some(completed),
                    None => None,
                    Some(_) => {
                        malformed.insert(key.clone());
                        None
                    }
                };
                push(&mut keys, key, entry(KeyOp::Write(value.clone()), completed));
            }
            Operation::Cas { key, expected, new } => {
                let (outcome, completed) = match known {
                    Some((completed, Output::Cas { swapped, previous })) => {
                        (Some((*swapped, previous.clone())), Some(completed))
                    }
                    None => (None, None),
                    Some(_) => {
                        malformed.insert(key.clone());
                        (None, None)
                    }
                };
                let op = KeyOp::Cas { expected: expected.clone(), new: new.clone(), outcome };
                push(&mut keys, key, entry(op, completed));
            }
            Operation::Scan { start, end } => match known {
                None => {}
                Some((completed, Output::Scan { pairs })) => {
                    for (key, op) in scan_observations(&keys, start, end, pairs) {
                        push(&mut keys, &key, entry(op, Some(completed)));
                    }
                }
                Some(_) => {
                    malformed.extend(keys_in(&keys, start, end).cloned());
                }
            },
        }
    }
    let keys = keys
        .into_iter()
        .map(|(key, mut entries)| {
            entries.sort_by_key(|entry| (entry.invoked_ns, entry.call));
            KeyHistory { key, entries }
        })
        .collect();
    Partition { keys, malformed, unknown }
}

fn push(keys: &mut BTreeMap<String, Vec<KeyEntry>>, key: &str, entry: KeyEntry) {
    match keys.get_mut(key) {
        Some(entries) => entries.push(entry),
        // The universe was built from these very calls.
        None => panic!("partition invariant: key {key:?} is missing from the universe"),
    }
}

/// The universe's keys in `[start, end)`; none when the range is empty or reversed
/// (which `BTreeMap::range` would reject with a panic).
fn keys_in<'a>(
    keys: &'a BTreeMap<String, Vec<KeyEntry>>,
    start: &str,
    end: &str,
) -> impl Iterator<Item = &'a String> {
    let range = (start < end).then(|| keys.range::<str, _>((Bound::Included(start), Bound::Excluded(end))));
    range.into_iter().flatten().map(|(key, _)| key)
}

/// What one scan says about each key: every pair it returned is a read of that pair's
/// value, and every key of the universe inside its range that it did not return is a
/// read of "absent".
fn scan_observations(
    keys: &BTreeMap<String, Vec<KeyEntry>>,
    start: &str,
    end: &str,
    pairs: &[(String, String)],
) -> Vec<(String, KeyOp)> {
    let returned: BTreeSet<&str> = pairs.iter().map(|(key, _)| key.as_str()).collect();
    let mut observations: Vec<(String, KeyOp)> = keys_in(keys, start, end)
        .filter(|key| !returned.contains(key.as_str()))
        .map(|key| (key.clone(), KeyOp::Read(None)))
        .collect();
    observations.extend(pairs.iter().map(|(key, value)| (key.clone(), KeyOp::Read(Some(value.clone())))));
    observations
}
