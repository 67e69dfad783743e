//! The invariants checked after every simulation step.
//!
//! The checker keeps a global view no single replica has: which replica led each term,
//! every entry ever made durable anywhere by (index, term), the committed sequence as
//! replicas applied it, and the writes acknowledged to clients. From these it checks the
//! Raft paper's safety properties (Figure 3.2) plus durability of committed entries and
//! linearizability of reads.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use tessera_engine::raft::proto::{Entry, HardState};
use tessera_engine::raft::{RawNode, Storage};

use super::state_machine::hash_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// Two leaders in one term.
    ElectionSafety,
    /// A replica changed its persisted vote within a term.
    DoubleVote,
    /// Two logs hold the same (index, term) with different contents or histories.
    LogMatching,
    /// A new leader lacks a committed entry.
    LeaderCompleteness,
    /// Two replicas applied different entries at the same index.
    StateMachineSafety,
    /// A committed entry is held durably by no replica.
    LostCommittedEntry,
    /// A replica's persisted commit index went backwards.
    CommitRegressed,
    /// A read missed a write acknowledged before it started, or returned a value that
    /// was never committed at its index.
    StaleRead,
    /// The Raft core rejected a message that a correct peer sent.
    InvalidMessage,
    /// After faults healed, no proposal committed within the bound.
    Liveness,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub kind: ViolationKind,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

pub(crate) fn violation(kind: ViolationKind, detail: impl Into<String>) -> Violation {
    Violation { kind, detail: detail.into() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CommittedEntry {
    term: u64,
    data_hash: u64,
    chain: u64,
    /// A term by which the entry is known to have been committed: the lowest term in
    /// which any replica applied it. It was committed in this term or an earlier one.
    committed_by_term: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Checker {
    leaders_by_term: HashMap<u64, u64>,
    /// Every entry made durable anywhere: (index, term) -> (data hash, previous term).
    durable_entries: HashMap<(u64, u64), (u64, Option<u64>)>,
    /// The committed sequence, as first applied by any replica.
    committed: BTreeMap<u64, CommittedEntry>,
    /// For each key, the value committed at each index that wrote it.
    writes_by_key: HashMap<u64, BTreeMap<u64, u64>>,
    /// The last persisted hard state of each replica.
    hard_states: HashMap<u64, HardState>,
    /// The highest index of a write acknowledged to a client.
    pub max_acknowledged_index: u64,
}

impl Checker {
    /// Records the bootstrap state every founding replica starts from.
    pub(crate) fn bootstrap(&mut self, index: u64, term: u64) {
        self.committed
            .insert(index, CommittedEntry { term, data_hash: 0, chain: 0, committed_by_term: term });
    }

    /// Election Safety: at most one leader per term. Leader Completeness: the new leader
    /// holds every entry committed in an earlier term that it has not compacted. (A leader
    /// of a stale term may be elected after a later term committed entries it lacks; it
    /// can commit nothing, since the voters of the later term reject it.)
    pub(crate) fn on_leader(&mut self, id: u64, term: u64, log: &impl LogView) -> Result<(), Violation> {
        if let Some(&other) = self.leaders_by_term.get(&term)
            && other != id
        {
            return Err(violation(
                ViolationKind::ElectionSafety,
                format!("{id} and {other} both led term {term}"),
            ));
        }
        self.leaders_by_term.insert(term, id);
        let (first, last) = (log.first_index(), log.last_index());
        for (&index, entry) in self.committed.range(first..) {
            if entry.committed_by_term >= term {
                continue;
            }
            if index > last {
                return Err(violation(
                    ViolationKind::LeaderCompleteness,
                    format!("leader {id} of term {term} ends at {last} but {index} is committed"),
                ));
            }
            let held = log.term(index);
            if held != Some(entry.term) {
                return Err(violation(
                    ViolationKind::LeaderCompleteness,
                    format!(
                        "leader {id} of term {term} holds term {held:?} at {index}, committed term {}",
                        entry.term
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Log Matching, checked on every entry as it becomes durable: an (index, term) pair
    /// names one entry and one predecessor term, whoever holds it.
    pub(crate) fn on_persisted(
        &mut self,
        id: u64,
        entries: &[Entry],
        previous_term: Option<u64>,
    ) -> Result<(), Violation> {
        let mut previous = previous_term;
        for entry in entries {
            let identity =
                (hash_bytes(&entry.data) ^ u64::from(entry.entry_type as u32).rotate_left(7), previous);
            match self.durable_entries.get(&(entry.index, entry.term)) {
                None => {
                    self.durable_entries.insert((entry.index, entry.term), identity);
                }
                Some(&(data_hash, expected_previous)) => {
                    if data_hash != identity.0 {
                        return Err(violation(
                            ViolationKind::LogMatching,
                            format!(
                                "{id} holds a different entry at index {} term {}",
                                entry.index, entry.term
                            ),
                        ));
                    }
                    if let (Some(expected), Some(actual)) = (expected_previous, previous)
                        && expected != actual
                    {
                        return Err(violation(
                            ViolationKind::LogMatching,
                            format!(
                                "{id} holds index {} term {} after term {actual}, another log after term {expected}",
                                entry.index, entry.term
                            ),
                        ));
                    }
                }
            }
            previous = Some(entry.term);
        }
        Ok(())
    }

    /// A replica's persisted hard state: its vote in a term never changes, its commit
    /// index never goes back.
    pub(crate) fn on_hard_state(&mut self, id: u64, hard_state: HardState) -> Result<(), Violation> {
        if let Some(previous) = self.hard_states.get(&id) {
            if previous.term == hard_state.term && previous.vote != 0 && previous.vote != hard_state.vote {
                return Err(violation(
                    ViolationKind::DoubleVote,
                    format!(
                        "{id} voted for {} and then {} in term {}",
                        previous.vote, hard_state.vote, hard_state.term
                    ),
                ));
            }
            if hard_state.commit < previous.commit {
                return Err(violation(
                    ViolationKind::CommitRegressed,
                    format!("{id} persisted commit {} after {}", hard_state.commit, previous.commit),
                ));
            }
        }
        self.hard_states.insert(id, hard_state);
        Ok(())
    }

    /// State Machine Safety: every replica applies the same entry at each index. The
    /// first application of an index also records the write it carries. `current_term`
    /// is the applying replica's term: the entry was committed by then.
    pub(crate) fn on_applied(
        &mut self,
        id: u64,
        entry: &Entry,
        chain: u64,
        current_term: u64,
        write: Option<(u64, u64)>,
    ) -> Result<(), Violation> {
        let data_hash = hash_bytes(&entry.data);
        match self.committed.get_mut(&entry.index) {
            Some(existing)
                if (existing.term, existing.data_hash, existing.chain) != (entry.term, data_hash, chain) =>
            {
                Err(violation(
                    ViolationKind::StateMachineSafety,
                    format!(
                        "{id} applied term {} at index {}, which was applied elsewhere with term {}",
                        entry.term, entry.index, existing.term
                    ),
                ))
            }
            Some(existing) => {
                existing.committed_by_term = existing.committed_by_term.min(current_term);
                Ok(())
            }
            None => {
                let committed =
                    CommittedEntry { term: entry.term, data_hash, chain, committed_by_term: current_term };
                self.committed.insert(entry.index, committed);
                if let Some((key, value)) = write {
                    self.writes_by_key.entry(key).or_default().insert(entry.index, value);
                }
                Ok(())
            }
        }
    }

    /// A snapshot installed at `index` must carry the committed sequence's state there.
    pub(crate) fn on_snapshot_installed(&self, id: u64, index: u64, chain: u64) -> Result<(), Violation> {
        match self.committed.get(&index) {
            Some(entry) if entry.chain == chain => Ok(()),
            Some(entry) => Err(violation(
                ViolationKind::StateMachineSafety,
                format!(
                    "{id} installed a snapshot at {index} whose state differs (chain {chain:x} != {:x})",
                    entry.chain
                ),
            )),
            // Snapshots are only taken of applied state, so the index was applied.
            None => Err(violation(
                ViolationKind::StateMachineSafety,
                format!("{id} installed a snapshot at {index}, an index no replica applied"),
            )),
        }
    }

    pub(crate) fn on_acknowledged(&mut self, index: u64) {
        self.max_acknowledged_index = self.max_acknowledged_index.max(index);
    }

    /// A read of `key` served at applied index `served_at` returned `value`; it was
    /// invoked when writes up to `must_see` had been acknowledged.
    pub(crate) fn check_read(
        &self,
        id: u64,
        key: u64,
        value: Option<u64>,
        served_at: u64,
        must_see: u64,
    ) -> Result<(), Violation> {
        if served_at < must_see {
            return Err(violation(
                ViolationKind::StaleRead,
                format!(
                    "{id} served a read at index {served_at}; index {must_see} was acknowledged before it began"
                ),
            ));
        }
        let committed =
            self.writes_by_key.get(&key).and_then(|w| w.range(..=served_at).next_back()).map(|(_, &v)| v);
        if committed != value {
            return Err(violation(
                ViolationKind::StaleRead,
                format!(
                    "{id} read key {key} = {value:?} at {served_at}; the committed value there is {committed:?}"
                ),
            ));
        }
        Ok(())
    }

    /// The last committed entry must be durable somewhere: in a log or under a snapshot.
    pub(crate) fn check_durable<'a>(
        &self,
        storages: impl Iterator<Item = &'a tessera_engine::raft::MemStorage>,
    ) -> Result<(), Violation> {
        let Some((&index, entry)) = self.committed.last_key_value() else { return Ok(()) };
        let mut storages = storages.peekable();
        if storages.peek().is_none() {
            return Ok(());
        }
        let held = storages.any(|storage| {
            let snapshot_index = storage.first_index().unwrap_or(0).saturating_sub(1);
            snapshot_index >= index || storage.term(index).is_ok_and(|term| term == entry.term)
        });
        if held {
            Ok(())
        } else {
            Err(violation(
                ViolationKind::LostCommittedEntry,
                format!("committed entry {index} (term {}) is durable on no replica", entry.term),
            ))
        }
    }
}

/// What the checker reads of a replica's log.
pub(crate) trait LogView {
    fn first_index(&self) -> u64;
    fn last_index(&self) -> u64;
    fn term(&self, index: u64) -> Option<u64>;
}

impl<S: Storage> LogView for RawNode<S> {
    fn first_index(&self) -> u64 {
        self.status().first_index
    }

    fn last_index(&self) -> u64 {
        self.status().last_index
    }

    fn term(&self, index: u64) -> Option<u64> {
        self.entry_term(index)
    }
}
