//! The replica's view of the Raft log: durable entries in [`Storage`], the not yet
//! durable tail in [`Unstable`], and the commit and apply positions.
//!
//! Invariants kept here: `applied <= committed`, `committed` never decreases, and
//! entries at or below `committed` are never replaced. Entries are handed out for
//! application only once they are both committed and durable on this replica.

use crate::failpoint::{self, points};

use super::errors::StorageError;
use super::log_unstable::{Unstable, snapshot_index};
use super::proto::{Entry, Snapshot};
use super::storage::Storage;
use super::util::limit_size;

pub(crate) struct RaftLog<S: Storage> {
    pub storage: S,
    pub unstable: Unstable,
    pub committed: u64,
    pub applied: u64,
    /// Highest index known to be durable on this replica.
    pub persisted: u64,
}

/// Stops the replica on a storage failure. A replica that cannot read its own log can
/// neither vote nor replicate safely, so it must fail rather than guess.
pub(crate) fn fail_stop(error: StorageError) -> ! {
    panic!("fail-stop: the Raft log storage failed and the replica cannot continue safely: {error}")
}

impl<S: Storage> RaftLog<S> {
    pub(crate) fn new(storage: S) -> RaftLog<S> {
        let first = storage.first_index().unwrap_or_else(|e| fail_stop(e));
        let last = storage.last_index().unwrap_or_else(|e| fail_stop(e));
        RaftLog {
            storage,
            unstable: Unstable::new(last + 1),
            committed: first - 1,
            applied: first - 1,
            persisted: last,
        }
    }

    pub(crate) fn first_index(&self) -> u64 {
        self.unstable
            .maybe_first_index()
            .unwrap_or_else(|| self.storage.first_index().unwrap_or_else(|e| fail_stop(e)))
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.unstable
            .maybe_last_index()
            .unwrap_or_else(|| self.storage.last_index().unwrap_or_else(|e| fail_stop(e)))
    }

    pub(crate) fn last_term(&self) -> u64 {
        self.term(self.last_index())
            .unwrap_or_else(|e| panic!("invariant: the last entry's term is always known: {e}"))
    }

    /// The term of the entry at `index`; `Compacted` or `Unavailable` when it is not held.
    pub(crate) fn term(&self, index: u64) -> Result<u64, StorageError> {
        let dummy = self.first_index() - 1;
        if index < dummy {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        if let Some(term) = self.unstable.maybe_term(index) {
            return Ok(term);
        }
        match self.storage.term(index) {
            Ok(term) => Ok(term),
            Err(e @ (StorageError::Compacted | StorageError::Unavailable)) => Err(e),
            Err(e) => fail_stop(e),
        }
    }

    /// The term at `index`, or 0 when the entry is not held.
    pub(crate) fn term_or_zero(&self, index: u64) -> u64 {
        self.term(index).unwrap_or(0)
    }

    pub(crate) fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// Whether a candidate whose last entry is `(last_index, last_term)` has a log at
    /// least as up to date as ours (§5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let our_term = self.last_term();
        last_term > our_term || (last_term == our_term && last_index >= self.last_index())
    }

    /// The follower side of AppendEntries: if our log matches at `(prev_index,
    /// prev_term)`, appends `entries` (dropping a conflicting suffix), advances the commit
    /// index to `min(leader_commit, last new index)` and returns the last new index.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        leader_commit: u64,
        entries: &[Entry],
    ) -> Option<u64> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as u64;
        let conflict = self.find_conflict(entries);
        if conflict != 0 {
            assert!(
                conflict > self.committed,
                "invariant: entry {conflict} conflicts with the committed prefix (committed {})",
                self.committed
            );
            let start = (conflict - (prev_index + 1)) as usize;
            if conflict <= self.last_index() && failpoint::hit(points::RAFT_KEEP_CONFLICTING_SUFFIX) {
                // A known bug, armed only by tests: keep our conflicting entries and only
                // take what lies beyond our last index.
                let beyond = entries.iter().skip_while(|e| e.index <= self.last_index()).cloned();
                let beyond: Vec<Entry> = beyond.collect();
                self.append(&beyond);
                self.commit_to(leader_commit.min(last_new).min(self.last_index()));
                return Some(last_new);
            }
            self.append(&entries[start..]);
        }
        self.commit_to(leader_commit.min(last_new));
        Some(last_new)
    }

    /// The index of the first entry that is new or conflicts with ours, or 0 if we hold
    /// all of them already.
    fn find_conflict(&self, entries: &[Entry]) -> u64 {
        entries.iter().find(|entry| !self.match_term(entry.index, entry.term)).map_or(0, |entry| entry.index)
    }

    /// For fast backtracking: the largest index at or below `index` whose term is at most
    /// `term`, with that term. Every entry after it up to `index` has a larger term, so
    /// cannot match a log whose entry at `index` has term `term`.
    pub(crate) fn find_conflict_by_term(&self, mut index: u64, term: u64) -> (u64, u64) {
        loop {
            match self.term(index) {
                Ok(our_term) if our_term > term && index > 0 => index -= 1,
                Ok(our_term) => return (index, our_term),
                Err(_) => return (index, 0),
            }
        }
    }

    /// Appends entries produced or accepted by this replica; returns the new last index.
    pub(crate) fn append(&mut self, entries: &[Entry]) -> u64 {
        let Some(first) = entries.first() else { return self.last_index() };
        assert!(
            first.index > self.committed,
            "invariant: cannot overwrite committed entry {} (committed {})",
            first.index,
            self.committed
        );
        self.persisted = self.persisted.min(first.index - 1);
        self.unstable.truncate_and_append(entries);
        self.last_index()
    }

    /// Entries from `low` to the end of the log, cut at `max_size` encoded bytes.
    pub(crate) fn entries(&self, low: u64, max_size: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        let last = self.last_index();
        if low > last {
            return Ok(Vec::new());
        }
        self.slice(low, last + 1, max_size)
    }

    /// Entries in `[low, high)`.
    pub(crate) fn slice(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>, StorageError> {
        if low < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if high > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        if low == high {
            return Ok(Vec::new());
        }
        let mut entries = Vec::new();
        let offset = self.unstable.offset;
        if low < offset {
            match self.storage.entries(low, high.min(offset), max_size) {
                Ok(stored) => entries = stored,
                Err(StorageError::Compacted) => return Err(StorageError::Compacted),
                Err(e) => fail_stop(e),
            }
            if (entries.len() as u64) < high.min(offset) - low {
                return Ok(entries);
            }
        }
        if high > offset {
            entries.extend_from_slice(self.unstable.slice(low.max(offset), high));
        }
        limit_size(&mut entries, max_size);
        Ok(entries)
    }

    pub(crate) fn commit_to(&mut self, index: u64) {
        if index <= self.committed {
            return;
        }
        assert!(
            index <= self.last_index(),
            "invariant: commit index {index} beyond the last index {}; the log was truncated or lost",
            self.last_index()
        );
        self.committed = index;
    }

    /// Commits up to `index` if the entry there is from `term` (a leader commits by
    /// counting replicas only entries of its own term, §5.4.2).
    pub(crate) fn maybe_commit(&mut self, index: u64, term: u64) -> bool {
        if index > self.committed && self.term_or_zero(index) == term {
            self.commit_to(index);
            return true;
        }
        false
    }

    pub(crate) fn applied_to(&mut self, index: u64) {
        if index == 0 {
            return;
        }
        assert!(
            index <= self.committed && index >= self.applied,
            "invariant: applied index {index} must lie in [{}, {}]",
            self.applied,
            self.committed
        );
        self.applied = index;
    }

    /// The highest index that may be handed out for application: committed and durable.
    pub(crate) fn max_appliable_index(&self) -> u64 {
        if self.unstable.snapshot.is_some() {
            return self.applied;
        }
        self.committed.min(self.persisted)
    }

    pub(crate) fn has_next_committed_entries(&self) -> bool {
        self.max_appliable_index() > self.applied
    }

    pub(crate) fn next_committed_entries(&self, max_size: Option<u64>) -> Vec<Entry> {
        let high = self.max_appliable_index();
        if high <= self.applied {
            return Vec::new();
        }
        self.slice(self.applied + 1, high + 1, max_size)
            .unwrap_or_else(|e| panic!("invariant: unapplied committed entries are held: {e}"))
    }

    /// Installs a snapshot received from the leader: the whole log is replaced by it.
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        self.committed = snapshot_index(&snapshot);
        self.persisted = self.persisted.min(self.committed);
        self.unstable.restore(snapshot);
    }

    pub(crate) fn unstable_entries(&self) -> &[Entry] {
        &self.unstable.entries
    }

    /// The application made entries up to `(index, term)` durable.
    pub(crate) fn stable_to(&mut self, index: u64, term: u64) {
        if self.unstable.maybe_term(index) == Some(term) && index >= self.unstable.offset {
            self.unstable.stable_to(index, term);
            self.persisted = self.persisted.max(index);
        }
    }

    /// The application installed the pending snapshot.
    pub(crate) fn stable_snapshot_to(&mut self, snapshot: &Snapshot) {
        let index = snapshot_index(snapshot);
        self.unstable.stable_snapshot_to(index);
        self.persisted = self.persisted.max(index);
        if self.applied < index {
            self.applied = index;
        }
    }

    /// The snapshot to send to a follower that needs entries we no longer hold.
    pub(crate) fn snapshot(&self, request_index: u64) -> Result<Snapshot, StorageError> {
        if let Some(snapshot) = &self.unstable.snapshot {
            return Ok(snapshot.clone());
        }
        self.storage.snapshot(request_index)
    }
}
