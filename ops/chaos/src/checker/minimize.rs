//! Shrinking a non-linearizable sub-history to a witness a person can read.
//!
//! The one rule: every change must only *weaken* the history (remove constraints), so
//! that a witness that still has no linearization proves the original had none either.
//! Dropping an observation (a read, a compare-and-set known to have failed) weakens it:
//! it changed nothing, so any linearization of the original, without it, still works.
//! Forgetting an operation's outcome (opening it to infinity) weakens it too. Dropping a
//! write does *not*: the write happened, and a history without it can fail for a reason
//! the real one does not have. So state-changing operations are only ever relaxed, and
//! dropped only when they are proved irrelevant (see [`drop_irrelevant`]).

use std::collections::HashMap;

use super::partition::KeyEntry;
use super::search::{SearchOutcome, search};

/// One operation of a witness: the original entry, and whether the witness shows it with
/// its outcome forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Witnessed {
    pub entry: KeyEntry,
    pub relaxed: bool,
}

impl Witnessed {
    /// The entry as the witness history holds it.
    fn working(&self) -> KeyEntry {
        if self.relaxed { self.entry.relaxed() } else { self.entry.clone() }
    }
}

/// The candidate witness: one slot per original entry, `None` once dropped.
type Slots = Vec<Option<Witnessed>>;

fn working(slots: &[Option<Witnessed>]) -> Vec<KeyEntry> {
    slots.iter().flatten().map(Witnessed::working).collect()
}

/// The candidate, with what cannot matter dropped, if it is still known to fail. An
/// inconclusive search is not proof, so it counts as "does not fail" and the change under
/// trial is not kept.
fn still_fails(mut slots: Slots, max_steps: u64) -> Option<Slots> {
    drop_irrelevant(&mut slots);
    (search(&working(&slots), max_steps) == SearchOutcome::NotLinearizable).then_some(slots)
}

/// A minimal witness for `entries`, which must be a non-linearizable sub-history.
///
/// Every pass only weakens: cut the history at the earliest time by which it already
/// failed; weaken everything before the latest time from which it still fails; then,
/// from the last entry to the first, drop each observation and relax each acknowledged
/// state change whenever the result still fails. Between steps, open state changes that
/// cannot matter are dropped. Each trial runs the search with `max_steps`; the two cuts
/// are binary searches, so that the one-by-one pass works on the failing window only.
pub(super) fn minimize(entries: &[KeyEntry], max_steps: u64) -> Vec<Witnessed> {
    let mut slots = latest_failing_weakening(earliest_failing_prefix(entries, max_steps), max_steps);
    for index in (0..slots.len()).rev() {
        let Some(slot) = slots[index].clone() else { continue };
        let mut trial = slots.clone();
        if slot.entry.op.is_observation() {
            trial[index] = None;
        } else if !slot.relaxed && !slot.entry.is_open() {
            trial[index] = Some(Witnessed { relaxed: true, ..slot });
        } else {
            continue;
        }
        if let Some(reduced) = still_fails(trial, max_steps) {
            slots = reduced;
        }
    }
    drop_irrelevant(&mut slots);
    let witness: Vec<Witnessed> = slots.into_iter().flatten().collect();
    debug_assert!(
        search(&witness.iter().map(Witnessed::working).collect::<Vec<_>>(), max_steps)
            != SearchOutcome::Linearizable,
        "minimize invariant: a witness only weakens a failing history, so it must still fail"
    );
    witness
}

/// The history as it stood at time `at`: what had not been invoked yet is gone, and what
/// was still running has no outcome yet (an observation is dropped, a state change
/// relaxed). This weakens the history: everything invoked after `at` follows every
/// operation kept with a return, so a linearization of the whole, cut after the last of
/// those, linearizes the prefix.
fn prefix(entries: &[KeyEntry], at: u64) -> Slots {
    entries
        .iter()
        .map(|entry| {
            let witnessed = |relaxed| Some(Witnessed { entry: entry.clone(), relaxed });
            match entry.completed_ns {
                _ if entry.invoked_ns > at => None,
                Some(completed) if completed <= at => witnessed(false),
                Some(_) if entry.op.is_observation() => None,
                Some(_) => witnessed(true),
                None => witnessed(false),
            }
        })
        .collect()
}

/// The shortest prefix (cut at a completion time) that already fails, found by binary
/// search: a longer prefix only adds constraints, so failing is monotone in the cut.
fn earliest_failing_prefix(entries: &[KeyEntry], max_steps: u64) -> Slots {
    let mut times: Vec<u64> = entries.iter().filter_map(|entry| entry.completed_ns).collect();
    times.sort_unstable();
    times.dedup();
    let mut found: Slots =
        entries.iter().map(|entry| Some(Witnessed { entry: entry.clone(), relaxed: false })).collect();
    // The answer is an index into `times`, or `times.len()` for the whole history.
    let (mut low, mut high) = (0, times.len());
    while low < high {
        let middle = low + (high - low) / 2;
        match still_fails(prefix(entries, times[middle]), max_steps) {
            Some(slots) => {
                found = slots;
                high = middle;
            }
            None => low = middle + 1,
        }
    }
    found
}

/// The candidate with everything invoked before `at` weakened: observations dropped,
/// state changes relaxed.
fn weakened_before(slots: &Slots, at: u64) -> Slots {
    let weaken = |slot: &Witnessed| {
        if slot.entry.invoked_ns >= at {
            Some(slot.clone())
        } else if slot.entry.op.is_observation() {
            None
        } else {
            Some(Witnessed { relaxed: slot.relaxed || !slot.entry.is_open(), ..slot.clone() })
        }
    };
    slots.iter().map(|slot| slot.as_ref().and_then(weaken)).collect()
}

/// The failing candidate weakened before the latest invocation time from which it still
/// fails, found by binary search: weakening from a later time weakens more, so failing
/// is monotone the other way. Weakening before the first invocation changes nothing.
fn latest_failing_weakening(slots: Slots, max_steps: u64) -> Slots {
    let mut times: Vec<u64> = slots.iter().flatten().map(|slot| slot.entry.invoked_ns).collect();
    times.sort_unstable();
    times.dedup();
    let mut found = None;
    let (mut low, mut high) = (0, times.len().saturating_sub(1));
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        match still_fails(weakened_before(&slots, times[middle]), max_steps) {
            Some(weakened) => {
                found = Some(weakened);
                low = middle;
            }
            None => high = middle - 1,
        }
    }
    found.unwrap_or(slots)
}

/// Drops open state changes (unknown, or relaxed above) that no linearization needs. An
/// open operation is irrelevant when either
///
/// - it was invoked after every operation with a return had returned: it can only be
///   linearized after all of them, where it constrains nothing, or not at all; or
/// - no other operation of the candidate names the value it installs. In any
///   linearization, whatever follows it while the state is that value must be an open
///   compare-and-set that fails (a read, a known outcome, or an expectation would name
///   the value) or a write, which does not care what came before. Removing it and those
///   open failures from the linearization leaves a linearization of the rest.
///
/// Either way the candidate with and without it stand or fall together, so dropping it
/// keeps the witness honest while showing only writes that matter. Dropping one can
/// make another irrelevant (it was the last to name its value), hence the work list.
fn drop_irrelevant(slots: &mut Slots) {
    let current: Vec<Option<KeyEntry>> =
        slots.iter().map(|slot| slot.as_ref().map(Witnessed::working)).collect();
    let last_return = current.iter().flatten().filter_map(|entry| entry.completed_ns).max();
    // How many operations name each value, and which open ones install it.
    let mut naming: HashMap<&str, usize> = HashMap::new();
    let mut installers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, entry) in current.iter().enumerate() {
        let Some(entry) = entry else { continue };
        for value in entry.op.named() {
            *naming.entry(value).or_default() += 1;
        }
        if entry.is_open()
            && let Some(value) = entry.op.installs()
        {
            installers.entry(value).or_default().push(index);
        }
    }
    let mut pending: Vec<usize> = installers.values().flatten().copied().collect();
    while let Some(index) = pending.pop() {
        let Some(entry) = &current[index] else { continue };
        let Some(value) = entry.op.installs() else { continue };
        if slots[index].is_none() {
            continue;
        }
        let invoked_last = last_return.is_none_or(|last| entry.invoked_ns > last);
        // The entry names its own value: anyone else makes two.
        let named_elsewhere = naming.get(value).is_some_and(|&count| count > 1);
        if named_elsewhere && !invoked_last {
            continue;
        }
        slots[index] = None;
        for value in entry.op.named() {
            if let Some(count) = naming.get_mut(value) {
                *count = count.saturating_sub(1);
                if *count <= 1 {
                    pending.extend(installers.get(value).into_iter().flatten().copied());
                }
            }
        }
    }
}
