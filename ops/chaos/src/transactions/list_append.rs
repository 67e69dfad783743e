//! The list-append history and what it implies.
//!
//! A [`Transaction`] is a list of micro-operations: `append(key, value)` (values unique
//! per key across the whole history) and `read(key) -> list`. Its outcome is committed,
//! aborted (certainly never visible), or unknown (it may have committed).
//!
//! From the history the checker derives, per key, the **version order**: the longest
//! list any read returned, which every other read of the key must be a prefix of (a
//! read that is not is an [`Anomaly::IncompatibleOrder`]). Then the dependencies
//! between transactions that committed (or whose writes were seen):
//! - **ww**: `T1` appended the value right before `T2`'s in a key's order;
//! - **wr**: `T2` read a list whose last value `T1` appended;
//! - **rw**: `T1` read a list that `T2`'s append (the next value) extends.
//!
//! Cycles among them are classified by `cycles.rs`. Found directly: a read of a value
//! from an aborted transaction ([`Anomaly::G1a`]), a read ending at a value its writer
//! later overwrote within the same transaction ([`Anomaly::G1b`]), and a read of a
//! value nobody appended ([`Anomaly::GarbageRead`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::cycles::{self, Dependency, Graph};

pub type Key = u64;
pub type Value = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MicroOp {
    Append {
        key: Key,
        value: Value,
    },
    /// What the read returned (`None`: the transaction did not commit, so the read's
    /// answer is not known to be part of any snapshot).
    Read {
        key: Key,
        values: Option<Vec<Value>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    /// Certainly never visible (a conflict, a refusal before anything was sent).
    Aborted,
    /// May or may not have committed.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub id: usize,
    pub ops: Vec<MicroOp>,
    pub outcome: Outcome,
}

/// What the database promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Forbids G0, G1a, G1b, G1c and G-single; allows G2 (write skew).
    SnapshotIsolation,
    /// Forbids G2 as well.
    Serializable,
}

/// A transaction in a cycle, and the dependency leading to the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub transaction: usize,
    pub dependency: Dependency,
    pub key: Key,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// Write cycle: dirty writes.
    G0(Vec<Step>),
    /// A committed transaction read a value an aborted one appended.
    G1a { reader: usize, writer: usize, key: Key, value: Value },
    /// A committed transaction read a value that was not its writer's last append to
    /// the key.
    G1b { reader: usize, writer: usize, key: Key, value: Value },
    /// Circular information flow: a cycle of ww and wr dependencies.
    G1c(Vec<Step>),
    /// A cycle with exactly one read-write anti-dependency (read skew and the like).
    GSingle(Vec<Step>),
    /// A cycle with read-write anti-dependencies (write skew): allowed by snapshot
    /// isolation.
    G2(Vec<Step>),
    /// Two reads of a key that no single order of its appends explains.
    IncompatibleOrder { key: Key, one: Vec<Value>, other: Vec<Value> },
    /// A read returned a value no transaction appended to the key.
    GarbageRead { reader: usize, key: Key, value: Value },
    /// One value appears twice in a read (an append applied twice).
    DuplicateValue { reader: usize, key: Key, value: Value },
    /// A committed append is missing from the key's final state.
    LostAppend { writer: usize, key: Key, value: Value },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cycle = |f: &mut fmt::Formatter<'_>, name: &str, steps: &[Step]| {
            write!(f, "{name}:")?;
            for step in steps {
                write!(f, " T{} -{:?}({})->", step.transaction, step.dependency, step.key)?;
            }
            write!(f, " T{}", steps.first().map_or(0, |step| step.transaction))
        };
        match self {
            Anomaly::G0(steps) => cycle(f, "G0", steps),
            Anomaly::G1c(steps) => cycle(f, "G1c", steps),
            Anomaly::GSingle(steps) => cycle(f, "G-single", steps),
            Anomaly::G2(steps) => cycle(f, "G2", steps),
            Anomaly::G1a { reader, writer, key, value } => {
                write!(f, "G1a: T{reader} read {value} of key {key}, appended by aborted T{writer}")
            }
            Anomaly::G1b { reader, writer, key, value } => {
                write!(f, "G1b: T{reader} read {value} of key {key}, an intermediate append of T{writer}")
            }
            Anomaly::IncompatibleOrder { key, one, other } => {
                write!(f, "incompatible orders of key {key}: {one:?} and {other:?}")
            }
            Anomaly::GarbageRead { reader, key, value } => {
                write!(f, "T{reader} read {value} of key {key}, which nobody appended")
            }
            Anomaly::DuplicateValue { reader, key, value } => {
                write!(f, "T{reader} read {value} twice in key {key}")
            }
            Anomaly::LostAppend { writer, key, value } => {
                write!(f, "committed T{writer} appended {value} to key {key}, missing from its final state")
            }
        }
    }
}

impl Anomaly {
    /// Whether `isolation` forbids this anomaly.
    pub fn violates(&self, isolation: Isolation) -> bool {
        !matches!((self, isolation), (Anomaly::G2(_), Isolation::SnapshotIsolation))
    }
}

/// Who appended each value of each key, and whether it was that writer's last append
/// to the key.
struct Appends {
    writer: HashMap<(Key, Value), usize>,
    last_of_writer: HashMap<(Key, Value), bool>,
}

impl Appends {
    fn of(history: &[Transaction]) -> Appends {
        let mut writer = HashMap::new();
        let mut last: HashMap<(usize, Key), Value> = HashMap::new();
        for transaction in history {
            for op in &transaction.ops {
                if let MicroOp::Append { key, value } = op {
                    writer.insert((*key, *value), transaction.id);
                    last.insert((transaction.id, *key), *value);
                }
            }
        }
        let last_of_writer = writer
            .iter()
            .map(|(&(key, value), &id)| ((key, value), last.get(&(id, key)) == Some(&value)))
            .collect();
        Appends { writer, last_of_writer }
    }
}

/// The reads of committed transactions: (reader, key, list).
fn committed_reads(history: &[Transaction]) -> impl Iterator<Item = (usize, Key, &Vec<Value>)> {
    history.iter().filter(|transaction| transaction.outcome == Outcome::Committed).flat_map(|transaction| {
        transaction.ops.iter().filter_map(move |op| match op {
            MicroOp::Read { key, values: Some(values) } => Some((transaction.id, *key, values)),
            _ => None,
        })
    })
}

/// Every anomaly in `history` that `isolation` forbids.
pub fn check(history: &[Transaction], isolation: Isolation) -> Vec<Anomaly> {
    let outcomes: HashMap<usize, Outcome> = history.iter().map(|t| (t.id, t.outcome)).collect();
    let appends = Appends::of(history);
    let mut anomalies = read_anomalies(history, &appends, &outcomes);
    let (orders, incompatible) = version_orders(history);
    anomalies.extend(incompatible);
    let graph = dependencies(history, &appends, &orders, &outcomes);
    anomalies.extend(cycles::classify(&graph));
    anomalies.retain(|anomaly| anomaly.violates(isolation));
    anomalies
}

/// The appends of committed transactions that `final_state` (every key's list, read
/// once nothing else ran) lacks.
pub fn lost_appends(history: &[Transaction], final_state: &BTreeMap<Key, Vec<Value>>) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for transaction in history.iter().filter(|transaction| transaction.outcome == Outcome::Committed) {
        for op in &transaction.ops {
            if let MicroOp::Append { key, value } = op
                && !final_state.get(key).is_some_and(|list| list.contains(value))
            {
                anomalies.push(Anomaly::LostAppend { writer: transaction.id, key: *key, value: *value });
            }
        }
    }
    anomalies
}

/// Aborted, intermediate, garbage and duplicated reads.
fn read_anomalies(
    history: &[Transaction],
    appends: &Appends,
    outcomes: &HashMap<usize, Outcome>,
) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for (reader, key, values) in committed_reads(history) {
        let mut seen = std::collections::HashSet::new();
        for &value in values {
            if !seen.insert(value) {
                anomalies.push(Anomaly::DuplicateValue { reader, key, value });
            }
            match appends.writer.get(&(key, value)) {
                None => anomalies.push(Anomaly::GarbageRead { reader, key, value }),
                Some(&writer) if outcomes.get(&writer) == Some(&Outcome::Aborted) => {
                    anomalies.push(Anomaly::G1a { reader, writer, key, value });
                }
                Some(_) => {}
            }
        }
        // The last value a read shows must be its writer's last append to the key
        // (unless the reader is the writer, reading its own transaction in progress).
        if let Some(&value) = values.last()
            && let Some(&writer) = appends.writer.get(&(key, value))
            && writer != reader
            && appends.last_of_writer.get(&(key, value)) == Some(&false)
        {
            anomalies.push(Anomaly::G1b { reader, writer, key, value });
        }
    }
    anomalies
}

/// Each key's version order (the longest list read), and the reads no single order
/// explains.
fn version_orders(history: &[Transaction]) -> (BTreeMap<Key, Vec<Value>>, Vec<Anomaly>) {
    let mut longest: BTreeMap<Key, Vec<Value>> = BTreeMap::new();
    for (_, key, values) in committed_reads(history) {
        let entry = longest.entry(key).or_default();
        if values.len() > entry.len() {
            *entry = values.clone();
        }
    }
    let mut anomalies = Vec::new();
    for (_, key, values) in committed_reads(history) {
        let order = &longest[&key];
        if !order.starts_with(values) {
            let (one, other) = (order.clone(), values.clone());
            let known = anomalies
                .iter()
                .any(|anomaly| matches!(anomaly, Anomaly::IncompatibleOrder { key: k, .. } if *k == key));
            if !known {
                anomalies.push(Anomaly::IncompatibleOrder { key, one, other });
            }
        }
    }
    (longest, anomalies)
}

/// The dependency graph between transactions that committed or whose appends were
/// read (an unknown outcome that a read saw did commit).
fn dependencies(
    history: &[Transaction],
    appends: &Appends,
    orders: &BTreeMap<Key, Vec<Value>>,
    outcomes: &HashMap<usize, Outcome>,
) -> Graph {
    let mut graph = Graph::default();
    let visible = |id: usize| outcomes.get(&id) != Some(&Outcome::Aborted);
    for (key, order) in orders {
        // ww: consecutive versions by different transactions.
        for pair in order.windows(2) {
            if let (Some(&from), Some(&to)) =
                (appends.writer.get(&(*key, pair[0])), appends.writer.get(&(*key, pair[1])))
                && from != to
                && visible(from)
                && visible(to)
            {
                graph.add(from, to, Dependency::WriteWrite, *key);
            }
        }
    }
    for (reader, key, values) in committed_reads(history) {
        let order = &orders[&key];
        if !order.starts_with(values) {
            continue;
        }
        // wr: the writer of the last value read.
        if let Some(&writer) = values.last().and_then(|value| appends.writer.get(&(key, *value)))
            && writer != reader
            && visible(writer)
        {
            graph.add(writer, reader, Dependency::WriteRead, key);
        }
        // rw: the writer of the version after the one read.
        if let Some(&next) = order.get(values.len())
            && let Some(&overwriter) = appends.writer.get(&(key, next))
            && overwriter != reader
            && visible(overwriter)
        {
            graph.add(reader, overwriter, Dependency::ReadWrite, key);
        }
    }
    graph
}
