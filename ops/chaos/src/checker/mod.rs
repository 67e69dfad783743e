//! The history checker: were the operations the clients saw linearizable, and did any
//! acknowledged write go missing?
//!
//! It owns the judgement of a history and nothing else: it takes paired [`Call`]s (see
//! [`crate::history::calls`]) and answers a [`Report`]. It does no I/O and keeps no state
//! between checks, so a history file kept from a failed round checks the same way again.
//!
//! Each key is checked on its own, against a register (absent, then written, read and
//! compared-and-set). That is sound because linearizability is local (Herlihy and Wing):
//! a history of single-key operations is linearizable exactly when every key's
//! sub-history is, and each per-key search is far smaller than one over the whole
//! history. Scans span keys: each becomes one read per key in its range. A violation
//! found that way is still real (a linearization of everything, restricted to one key,
//! linearizes that key), but the checker does not judge whether a scan saw one instant
//! across keys.
//!
//! What it must never do: report a violation that did not happen (the witness minimizer
//! only ever weakens a history, and never drops a write that may have happened), call a
//! history valid that it did not finish checking (a search that hits its step limit is
//! reported as inconclusive), or panic on what a history file says.

mod lost;
mod minimize;
mod model;
mod partition;
mod search;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::history::{Call, Operation, Output};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckConfig {
    /// How many events the search for one key may visit before giving up on it (and on
    /// each trial when minimizing a witness). The search is exponential in the worst case;
    /// this bounds the time and the memo's memory a pathological key can take.
    pub max_steps_per_key: u64,
}

impl Default for CheckConfig {
    fn default() -> CheckConfig {
        CheckConfig { max_steps_per_key: 5_000_000 }
    }
}

/// What the checker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Keys checked: every key a call names or a scan returned.
    pub keys: usize,
    /// Calls in the history.
    pub calls: usize,
    /// Calls whose outcome is unknown.
    pub unknown: usize,
    /// One per key with no linearization, in key order.
    pub violations: Vec<Violation>,
    pub lost_writes: Vec<LostWrite>,
    /// Keys the checker could not judge, in key order: the search hit the step limit, or
    /// a call of the key answered something that does not fit its operation.
    pub inconclusive: Vec<String>,
}

impl Report {
    /// Whether the history passed: no violation, no lost write, and every key judged.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty() && self.lost_writes.is_empty() && self.inconclusive.is_empty()
    }
}

/// A key whose sub-history has no linearization, with a minimal failing part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    /// The calls of a sub-history that already has no linearization, in invocation
    /// order. Calls not shown are reads that were not needed, or writes of unknown
    /// outcome that could not matter.
    pub witness: Vec<WitnessCall>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessCall {
    pub call: Call,
    /// The witness fails even with this call's outcome treated as unknown, so the
    /// outcome the client saw is not part of the explanation.
    pub relaxed: bool,
}

/// An acknowledged write that the key's final read no longer shows, though that read
/// began after the write was acknowledged and shows a value written before the write
/// was even invoked (or no value at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostWrite {
    pub key: String,
    pub value: String,
    pub acknowledged_ns: u64,
    /// What the final read saw; `None`: absent.
    pub final_value: Option<String>,
}

/// Checks `calls` key by key. Never fails: what it cannot judge, it reports as
/// inconclusive.
#[must_use]
pub fn check(calls: &[Call], config: &CheckConfig) -> Report {
    let partition = partition::partition(calls);
    let mut violations = Vec::new();
    let mut inconclusive: Vec<String> = partition.malformed.iter().cloned().collect();
    for history in &partition.keys {
        match search::search(&history.entries, config.max_steps_per_key) {
            search::SearchOutcome::Linearizable => {}
            search::SearchOutcome::Inconclusive => inconclusive.push(history.key.clone()),
            search::SearchOutcome::NotLinearizable => {
                let witness = minimize::minimize(&history.entries, config.max_steps_per_key)
                    .into_iter()
                    .map(|witnessed| WitnessCall {
                        call: calls[witnessed.entry.call].clone(),
                        relaxed: witnessed.relaxed,
                    })
                    .collect();
                violations.push(Violation { key: history.key.clone(), witness });
            }
        }
    }
    inconclusive.sort();
    inconclusive.dedup();
    Report {
        keys: partition.keys.len(),
        calls: calls.len(),
        unknown: partition.unknown,
        violations,
        lost_writes: lost::lost_writes(calls),
        inconclusive,
    }
}

/// Nanoseconds as seconds with microseconds, right-aligned: `  1.234567s`.
fn seconds(ns: u64) -> String {
    format!("{:>3}.{:06}s", ns / 1_000_000_000, (ns % 1_000_000_000) / 1_000)
}

/// A value as a client saw it: quoted, or `absent`.
fn shown(value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "absent".to_string(),
    }
}

/// One call of a witness of `key`'s violation, as one line without its newline.
fn describe(key: &str, witnessed: &WitnessCall) -> String {
    let call = &witnessed.call;
    let end = call.completed_ns.map_or_else(|| format!("{:>11}", "open"), seconds);
    let outcome = match (&call.operation, &call.output) {
        (_, None) => "unknown".to_string(),
        (Operation::Read { .. }, Some(Output::Read { value })) => shown(value.as_deref()),
        (Operation::Write { .. }, Some(Output::Written)) => "ok".to_string(),
        (Operation::Cas { .. }, Some(Output::Cas { swapped, previous })) => format!(
            "{} (previous {})",
            if *swapped { "swapped" } else { "not swapped" },
            shown(previous.as_deref())
        ),
        // A scan is shown by what it said about this key.
        (Operation::Scan { .. }, Some(Output::Scan { pairs })) => {
            let seen: Vec<String> = pairs
                .iter()
                .filter(|(found, _)| found == key)
                .map(|(_, value)| format!("{value:?}"))
                .collect();
            if seen.is_empty() { format!("{key} absent") } else { format!("{key} = {}", seen.join(", ")) }
        }
        (_, Some(other)) => format!("unexpected answer {other:?}"),
    };
    let operation = match &call.operation {
        Operation::Read { key } => format!("read {key} -> {outcome}"),
        Operation::Write { key, value } => format!("write {key} = {value:?} -> {outcome}"),
        Operation::Cas { key, expected, new } => {
            format!("cas {key} {} -> {new:?}: {outcome}", shown(expected.as_deref()))
        }
        Operation::Scan { start, end } => format!("scan [{start}, {end}) -> {outcome}"),
    };
    let relaxed = if witnessed.relaxed { " (relaxed: outcome treated as unknown)" } else { "" };
    format!("[{} .. {}] p{} {operation}{relaxed}", seconds(call.invoked_ns), end, call.process)
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: no linearization explains these {} calls:", self.key, self.witness.len())?;
        for witnessed in &self.witness {
            write!(f, "\n  {}", describe(&self.key, witnessed))?;
        }
        Ok(())
    }
}

impl fmt::Display for LostWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: write {:?} acknowledged at {} is lost: the final read saw {}",
            self.key,
            self.value,
            seconds(self.acknowledged_ns).trim_start(),
            shown(self.final_value.as_deref())
        )
    }
}
