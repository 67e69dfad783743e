//! Acknowledged writes that the end of the history no longer shows.
//!
//! Linearizability already condemns a lost write, but as "no order explains these
//! reads", which is hard to act on. This check says the plain thing: the client was told
//! the write was done, and the final read shows an older value. It looks only at keys
//! with a clean final read, one invoked after every other call of the key had returned,
//! so that the read must reflect every acknowledged write.

use std::collections::{BTreeMap, HashMap};

use super::LostWrite;
use crate::history::{Call, Operation, Output};

/// The key a single-key call is about.
fn key_of(call: &Call) -> Option<&str> {
    match &call.operation {
        Operation::Read { key } | Operation::Write { key, .. } | Operation::Cas { key, .. } => Some(key),
        Operation::Scan { .. } => None,
    }
}

/// The value a call may have installed, if it may have installed one: a write, or a
/// compare-and-set not known to have failed.
fn may_install(call: &Call) -> Option<&str> {
    match (&call.operation, &call.output) {
        (Operation::Write { value, .. }, _) => Some(value),
        (Operation::Cas { .. }, Some(Output::Cas { swapped: false, .. })) => None,
        (Operation::Cas { new, .. }, _) => Some(new),
        _ => None,
    }
}

/// The value an acknowledged state change installed, and when it was acknowledged.
fn acknowledged(call: &Call) -> Option<(&str, u64)> {
    let completed = call.completed_ns?;
    match (&call.operation, call.output.as_ref()?) {
        (Operation::Write { value, .. }, Output::Written) => Some((value, completed)),
        (Operation::Cas { new, .. }, Output::Cas { swapped: true, .. }) => Some((new, completed)),
        _ => None,
    }
}

/// The final read of a key's calls (given as indices into `calls`), if it is clean:
/// the successful read invoked last, invoked after every other call of the key with a
/// return had returned. Answers the read and the value it saw.
fn final_read<'a>(calls: &'a [Call], of_key: &[usize]) -> Option<(&'a Call, Option<&'a str>)> {
    let (index, read, value) = of_key
        .iter()
        .filter_map(|&index| {
            let call = &calls[index];
            match (&call.operation, &call.output, call.completed_ns) {
                (Operation::Read { .. }, Some(Output::Read { value }), Some(_)) => {
                    Some((index, call, value.as_deref()))
                }
                _ => None,
            }
        })
        .max_by_key(|(index, call, _)| (call.invoked_ns, *index))?;
    let clean = of_key
        .iter()
        .filter(|&&other| other != index)
        .filter_map(|&other| calls[other].completed_ns)
        .all(|completed| completed < read.invoked_ns);
    clean.then_some((read, value))
}

/// Every acknowledged write lost by the end of the history, by key, then by time.
pub(super) fn lost_writes(calls: &[Call]) -> Vec<LostWrite> {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, call) in calls.iter().enumerate() {
        if let Some(key) = key_of(call) {
            by_key.entry(key).or_default().push(index);
        }
    }
    let mut lost = Vec::new();
    for (key, of_key) in by_key {
        let Some((read, final_value)) = final_read(calls, &of_key) else { continue };
        // Values are unique per history, so a value names its writer; a corrupted history
        // may have several, and then a write counts as lost only against all of them.
        let mut writers: HashMap<&str, Vec<&Call>> = HashMap::new();
        for &index in &of_key {
            if let Some(value) = may_install(&calls[index]) {
                writers.entry(value).or_default().push(&calls[index]);
            }
        }
        let final_writers = match final_value {
            None => Vec::new(),
            Some(value) => match writers.get(value) {
                Some(found) => found.clone(),
                // A value nobody wrote: the linearizability check reports that.
                None => continue,
            },
        };
        let mut lost_here: Vec<LostWrite> = of_key
            .iter()
            .map(|&index| &calls[index])
            .filter_map(|call| {
                acknowledged(call).map(|(value, acknowledged_ns)| (call, value, acknowledged_ns))
            })
            .filter(|&(call, value, acknowledged_ns)| {
                // The final read began after this write was acknowledged (it is clean),
                // so it must show this write or a later one. It shows an earlier one if
                // its value is absent or was written by calls that all returned before
                // this write was even invoked.
                acknowledged_ns < read.invoked_ns
                    && final_value != Some(value)
                    && final_writers.iter().all(|writer| {
                        writer.completed_ns.is_some_and(|completed| completed < call.invoked_ns)
                    })
            })
            .map(|(_, value, acknowledged_ns)| LostWrite {
                key: key.to_string(),
                value: value.to_string(),
                acknowledged_ns,
                final_value: final_value.map(str::to_string),
            })
            .collect();
        lost_here.sort_by_key(|lost| lost.acknowledged_ns);
        lost.append(&mut lost_here);
    }
    lost
}
