//! What the clients saw: a history of operations, each an invocation followed by at most
//! one completion, as Jepsen and Porcupine record them.
//!
//! A history is written as it happens, one JSON object per line, so that a round that
//! dies half-way still leaves its evidence. It is the only input of the checker: a
//! history file kept from a failed round can be checked again with `tessera-chaos check`.
//!
//! Every value written in a history is unique (the writing process and a sequence
//! number), so a value read names the one operation that wrote it.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// What a client asked for. Keys and values are text so that histories read easily.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Operation {
    Read {
        key: String,
    },
    Write {
        key: String,
        value: String,
    },
    /// Set `key` to `new` if its value is `expected` (absent when `None`).
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
    /// Every pair in `[start, end)`.
    Scan {
        start: String,
        end: String,
    },
}

impl Operation {
    /// Whether the operation can change the database.
    pub fn is_mutation(&self) -> bool {
        matches!(self, Operation::Write { .. } | Operation::Cas { .. })
    }
}

/// What a successful operation answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Output {
    Read {
        value: Option<String>,
    },
    Written,
    /// Whether it swapped, and the value it found.
    Cas {
        swapped: bool,
        previous: Option<String>,
    },
    /// The pairs, in key order.
    Scan {
        pairs: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Invoke {
        op: Operation,
    },
    Ok {
        output: Output,
    },
    /// Definitely had no effect.
    Fail {
        error: String,
    },
    /// May or may not have taken effect (a timeout, a lost connection). The process that
    /// invoked it never invokes again: its operation stays open to the end of time.
    Unknown {
        error: String,
    },
}

/// One line of a history. A process runs one operation at a time, so a completion
/// belongs to its process's last invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub process: u64,
    /// Nanoseconds since the history began, from a monotonic clock.
    pub time_ns: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// An operation with its completion paired, as the checker reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub process: u64,
    pub operation: Operation,
    pub invoked_ns: u64,
    /// When it completed: `None` for an operation whose outcome is unknown.
    pub completed_ns: Option<u64>,
    /// What it answered: `None` for an unknown outcome.
    pub output: Option<Output>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history line {line}: {reason}")]
    Malformed { line: usize, reason: String },
    #[error("reading the history: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a history written by [`HistoryWriter`].
pub fn read(reader: impl BufRead) -> Result<Vec<Event>, HistoryError> {
    let mut events = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line)
            .map_err(|error| HistoryError::Malformed { line: index + 1, reason: error.to_string() })?;
        events.push(event);
    }
    Ok(events)
}

/// Pairs every invocation with its completion. Failed operations are dropped (they had
/// no effect and answered nothing); an invocation never completed, or completed as
/// unknown, stays open. Errors name the first event that breaks the one-operation-
/// at-a-time rule or completes nothing.
pub fn calls(events: &[Event]) -> Result<Vec<Call>, HistoryError> {
    use std::collections::HashMap;
    let mut open: HashMap<u64, Call> = HashMap::new();
    let mut calls = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let malformed =
            |reason: &str| HistoryError::Malformed { line: index + 1, reason: reason.to_string() };
        match &event.kind {
            EventKind::Invoke { op } => {
                if open.contains_key(&event.process) {
                    return Err(malformed("a process invoked while its last operation was open"));
                }
                let call = Call {
                    process: event.process,
                    operation: op.clone(),
                    invoked_ns: event.time_ns,
                    completed_ns: None,
                    output: None,
                };
                open.insert(event.process, call);
            }
            EventKind::Ok { output } => {
                let mut call =
                    open.remove(&event.process).ok_or_else(|| malformed("completes no operation"))?;
                call.completed_ns = Some(event.time_ns);
                call.output = Some(output.clone());
                calls.push(call);
            }
            EventKind::Fail { .. } => {
                open.remove(&event.process).ok_or_else(|| malformed("completes no operation"))?;
            }
            EventKind::Unknown { .. } => {
                let call = open.remove(&event.process).ok_or_else(|| malformed("completes no operation"))?;
                calls.push(call);
            }
        }
    }
    calls.extend(open.into_values());
    calls.sort_by_key(|call| (call.invoked_ns, call.process));
    Ok(calls)
}

/// Appends events to a history file as they happen, with a clock started at creation.
pub struct HistoryWriter {
    out: Box<dyn Write + Send>,
    started: std::time::Instant,
    events: Vec<Event>,
}

impl HistoryWriter {
    pub fn new(out: Box<dyn Write + Send>) -> HistoryWriter {
        HistoryWriter { out, started: std::time::Instant::now(), events: Vec::new() }
    }

    /// Now, on the history's clock.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records an event now; answers the time it was given.
    pub fn record(&mut self, process: u64, kind: EventKind) -> std::io::Result<u64> {
        let time_ns = self.now_ns();
        let event = Event { process, time_ns, kind };
        let line = serde_json::to_string(&event).map_err(std::io::Error::other)?;
        writeln!(self.out, "{line}")?;
        self.events.push(event);
        Ok(time_ns)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Every event recorded so far, in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(process: u64, time_ns: u64, kind: EventKind) -> Event {
        Event { process, time_ns, kind }
    }

    #[test]
    fn events_round_trip_through_json_lines() {
        let events = vec![
            event(
                1,
                5,
                EventKind::Invoke { op: Operation::Cas { key: "k".into(), expected: None, new: "v".into() } },
            ),
            event(1, 9, EventKind::Ok { output: Output::Cas { swapped: true, previous: None } }),
            event(2, 10, EventKind::Invoke { op: Operation::Scan { start: "a".into(), end: "z".into() } }),
            event(2, 12, EventKind::Unknown { error: "timed out".into() }),
        ];
        let mut text = Vec::new();
        for event in &events {
            writeln!(text, "{}", serde_json::to_string(event).expect("events serialize")).expect("in memory");
        }
        assert_eq!(read(text.as_slice()).expect("written by us"), events);
    }

    #[test]
    fn calls_pair_completions_drop_failures_and_keep_unknowns_open() {
        let read_k = Operation::Read { key: "k".into() };
        let write_k = Operation::Write { key: "k".into(), value: "1".into() };
        let events = vec![
            event(1, 1, EventKind::Invoke { op: write_k.clone() }),
            event(2, 2, EventKind::Invoke { op: read_k.clone() }),
            event(2, 3, EventKind::Fail { error: "no leader".into() }),
            event(1, 4, EventKind::Unknown { error: "timed out".into() }),
            event(3, 5, EventKind::Invoke { op: read_k.clone() }),
            event(3, 6, EventKind::Ok { output: Output::Read { value: Some("1".into()) } }),
            event(4, 7, EventKind::Invoke { op: write_k.clone() }),
        ];
        let calls = calls(&events).expect("well formed");
        assert_eq!(calls.len(), 3);
        assert_eq!((calls[0].operation.clone(), calls[0].completed_ns), (write_k.clone(), None));
        assert_eq!((calls[1].invoked_ns, calls[1].completed_ns), (5, Some(6)));
        assert_eq!((calls[2].invoked_ns, calls[2].output.clone()), (7, None));
    }

    #[test]
    fn a_second_invocation_while_open_is_malformed() {
        let op = Operation::Read { key: "k".into() };
        let events =
            vec![event(1, 1, EventKind::Invoke { op: op.clone() }), event(1, 2, EventKind::Invoke { op })];
        assert!(matches!(calls(&events), Err(HistoryError::Malformed { line: 2, .. })));
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let text = "{\"process\":1,\"time_ns\":1,\"type\":\"invoke\",\"op\":{\"f\":\"read\",\"key\":\"k\"}}\nnot json\n";
        assert!(matches!(read(text.as_bytes()), Err(HistoryError::Malformed { line: 2, .. })));
    }
}
