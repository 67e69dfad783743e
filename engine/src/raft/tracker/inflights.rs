//! The bounded window of append messages in flight to one follower.

use std::collections::VecDeque;

/// Last indexes of the appends sent but not yet acknowledged, oldest first. When the
/// window is full the leader stops sending to that follower until acknowledgements free
/// room, which bounds the memory and bandwidth one slow follower can take.
#[derive(Debug, Clone)]
pub struct Inflights {
    capacity: usize,
    last_indexes: VecDeque<u64>,
}

impl Inflights {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.last_indexes.len()
    }

    pub(crate) fn new(capacity: usize) -> Inflights {
        Inflights { capacity, last_indexes: VecDeque::new() }
    }

    pub(crate) fn full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }

    pub(crate) fn add(&mut self, last_index: u64) {
        assert!(!self.full(), "invariant: no append is sent while the inflight window is full");
        self.last_indexes.push_back(last_index);
    }

    /// Frees every append whose last index is at or below `index`.
    pub(crate) fn free_to(&mut self, index: u64) {
        while self.last_indexes.front().is_some_and(|&last| last <= index) {
            self.last_indexes.pop_front();
        }
    }

    /// Frees the oldest append in flight.
    pub(crate) fn free_first(&mut self) {
        self.last_indexes.pop_front();
    }

    pub(crate) fn reset(&mut self) {
        self.last_indexes.clear();
    }
}
