//! The tail of the log that has been accepted but is not yet durable.
//!
//! Entries (or an incoming snapshot) live here from the moment the core accepts them
//! until the application reports them persisted through
//! [`RawNode::advance`](super::RawNode::advance). Nothing here has been acknowledged to
//! anyone as durable.

use super::proto::{Entry, Snapshot};

#[derive(Debug, Default)]
pub(crate) struct Unstable {
    /// A snapshot received from the leader, not yet installed by the application.
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    /// Index of `entries[0]` (or where the next entry would go).
    pub offset: u64,
}

impl Unstable {
    pub(crate) fn new(offset: u64) -> Unstable {
        Unstable { snapshot: None, entries: Vec::new(), offset }
    }

    /// The index right after the pending snapshot, if one is pending.
    pub(crate) fn maybe_first_index(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|snapshot| snapshot_index(snapshot) + 1)
    }

    pub(crate) fn maybe_last_index(&self) -> Option<u64> {
        match (self.entries.last(), &self.snapshot) {
            (Some(last), _) => Some(last.index),
            (None, Some(snapshot)) => Some(snapshot_index(snapshot)),
            (None, None) => None,
        }
    }

    pub(crate) fn maybe_term(&self, index: u64) -> Option<u64> {
        if index < self.offset {
            let snapshot = self.snapshot.as_ref()?;
            let metadata = snapshot.metadata.as_ref()?;
            return (metadata.index == index).then_some(metadata.term);
        }
        let last = self.maybe_last_index()?;
        if index > last {
            return None;
        }
        self.entries.get((index - self.offset) as usize).map(|entry| entry.term)
    }

    /// Marks entries up to `index` durable, if the entry there still has `term` (it may
    /// have been replaced by a newer leader's entry since the Ready was taken).
    pub(crate) fn stable_to(&mut self, index: u64, term: u64) {
        if self.maybe_term(index) != Some(term) || index < self.offset {
            return;
        }
        let count = (index + 1 - self.offset) as usize;
        self.entries.drain(..count);
        self.offset = index + 1;
    }

    pub(crate) fn stable_snapshot_to(&mut self, index: u64) {
        if self.snapshot.as_ref().is_some_and(|snapshot| snapshot_index(snapshot) == index) {
            self.snapshot = None;
        }
    }

    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        self.offset = snapshot_index(&snapshot) + 1;
        self.entries.clear();
        self.snapshot = Some(snapshot);
    }

    /// Appends entries, first dropping any held entries at or after their first index.
    pub(crate) fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let after = first.index;
        if after == self.offset + self.entries.len() as u64 {
            // Directly after the held entries.
        } else if after <= self.offset {
            // Replaces everything held; the new entries start the unstable tail.
            self.offset = after;
            self.entries.clear();
        } else {
            self.entries.truncate((after - self.offset) as usize);
        }
        self.entries.extend_from_slice(entries);
    }

    /// Entries in `[low, high)`, which must lie within the unstable tail.
    pub(crate) fn slice(&self, low: u64, high: u64) -> &[Entry] {
        assert!(
            low >= self.offset && high <= self.offset + self.entries.len() as u64 && low <= high,
            "invariant: unstable slice [{low}, {high}) out of [{}, {}]",
            self.offset,
            self.offset + self.entries.len() as u64
        );
        &self.entries[(low - self.offset) as usize..(high - self.offset) as usize]
    }
}

pub(crate) fn snapshot_index(snapshot: &Snapshot) -> u64 {
    snapshot.metadata.as_ref().map_or(0, |metadata| metadata.index)
}

pub(crate) fn snapshot_term(snapshot: &Snapshot) -> u64 {
    snapshot.metadata.as_ref().map_or(0, |metadata| metadata.term)
}
