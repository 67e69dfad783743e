//! The search for a linearization of one key's sub-history: Wing and Gong's algorithm
//! with Lowe's memoization, as Knossos and Porcupine run it.
//!
//! Every operation is two events, its call and its return, laid out in time order in a
//! doubly linked list. The search walks the list from the front: at a call it tries to
//! linearize that operation now (legal in the current state, and the pair "these
//! operations done, this state" not already explored), and if so removes both events and
//! starts again from the front; at a return it has found an operation that had to take
//! effect before this point but could not, and backtracks. The memo is what makes this
//! usable: two orders that linearize the same set and reach the same state have the same
//! future, so the second is never explored.
//!
//! Operations with an unknown outcome return at infinity, after every real event, and
//! need not be linearized at all: the search succeeds as soon as every operation with a
//! real return is linearized, whatever open ones remain.

use std::collections::HashSet;

use super::model::{State, step};
use super::partition::KeyEntry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SearchOutcome {
    Linearizable,
    NotLinearizable,
    /// The step limit ran out first: the search says nothing.
    Inconclusive,
}

/// The set of entries linearized so far.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bitset(Box<[u64]>);

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset(vec![0; len.div_ceil(64)].into_boxed_slice())
    }

    fn set(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }

    fn clear(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }
}

/// One event in the list. Node 0 is the head sentinel and the last node the tail
/// sentinel; both have `entry == usize::MAX`.
#[derive(Debug, Clone)]
struct Node {
    entry: usize,
    is_call: bool,
    /// The other event of the same entry (for a call, its return).
    partner: usize,
    prev: usize,
    next: usize,
}

const HEAD: usize = 0;

struct List {
    nodes: Vec<Node>,
}

impl List {
    /// The events of `entries` in time order. At equal times calls come before returns:
    /// an operation that returns at the very nanosecond another is invoked is not known
    /// to precede it, so the two are concurrent (the permissive choice, which never
    /// invents a real-time order the clock did not show). Open operations' returns go
    /// last, in entry order.
    fn new(entries: &[KeyEntry]) -> List {
        // (open return, time, return, entry): the sort key, then what the event is.
        let mut events: Vec<(bool, u64, bool, usize)> = Vec::with_capacity(entries.len() * 2);
        for (index, entry) in entries.iter().enumerate() {
            events.push((false, entry.invoked_ns, false, index));
            match entry.completed_ns {
                Some(completed) => events.push((false, completed.max(entry.invoked_ns), true, index)),
                None => events.push((true, 0, true, index)),
            }
        }
        events.sort_unstable();
        let tail = events.len() + 1;
        let sentinel =
            |prev, next| Node { entry: usize::MAX, is_call: false, partner: usize::MAX, prev, next };
        let mut nodes = Vec::with_capacity(events.len() + 2);
        nodes.push(sentinel(HEAD, 1));
        let mut call_node = vec![usize::MAX; entries.len()];
        for (position, &(_, _, is_return, entry)) in events.iter().enumerate() {
            let node = position + 1;
            nodes.push(Node {
                entry,
                is_call: !is_return,
                partner: usize::MAX,
                prev: node - 1,
                next: node + 1,
            });
            if is_return {
                let call = call_node[entry];
                // Calls sort before their returns: a completion is never before its invocation.
                assert!(call != usize::MAX, "search invariant: a return is listed before its call");
                nodes[call].partner = node;
                nodes[node].partner = call;
            } else {
                call_node[entry] = node;
            }
        }
        nodes.push(sentinel(tail - 1, tail));
        List { nodes }
    }

    fn first(&self) -> usize {
        self.nodes[HEAD].next
    }

    fn is_tail(&self, node: usize) -> bool {
        node == self.nodes.len() - 1
    }

    /// Unlinks a call and its return. Both keep their own links, so [`List::unlift`]
    /// can put them back as long as lifts and unlifts nest (they do: the stack).
    fn lift(&mut self, call: usize) {
        for node in [call, self.nodes[call].partner] {
            let Node { prev, next, .. } = self.nodes[node];
            self.nodes[prev].next = next;
            self.nodes[next].prev = prev;
        }
    }

    fn unlift(&mut self, call: usize) {
        for node in [self.nodes[call].partner, call] {
            let Node { prev, next, .. } = self.nodes[node];
            self.nodes[prev].next = node;
            self.nodes[next].prev = node;
        }
    }
}

/// Whether `entries` (one key's sub-history) has a linearization, looking at no more
/// than `max_steps` events.
pub(super) fn search(entries: &[KeyEntry], max_steps: u64) -> SearchOutcome {
    let mut list = List::new(entries);
    let mut linearized = Bitset::new(entries.len());
    let mut cache: HashSet<(Bitset, State)> = HashSet::new();
    // Each linearized call node with the state from before it.
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    // Entries with a real return not yet linearized: the search is done at zero.
    let mut remaining = entries.iter().filter(|entry| !entry.is_open()).count();
    let mut node = list.first();
    let mut steps: u64 = 0;
    loop {
        if remaining == 0 {
            return SearchOutcome::Linearizable;
        }
        steps += 1;
        if steps > max_steps {
            return SearchOutcome::Inconclusive;
        }
        let at = &list.nodes[node];
        if at.is_call && !list.is_tail(node) {
            let entry = at.entry;
            if let Some(next) = step(&state, &entries[entry].op) {
                linearized.set(entry);
                if cache.insert((linearized.clone(), next.clone())) {
                    stack.push((node, std::mem::replace(&mut state, next)));
                    if !entries[entry].is_open() {
                        remaining -= 1;
                    }
                    list.lift(node);
                    node = list.first();
                    continue;
                }
                linearized.clear(entry);
            }
            node = list.nodes[node].next;
        } else {
            // A return (the tail cannot be reached while a real return is still listed,
            // but it would mean the same thing): the operation it closes found no place
            // before it, so undo the last choice and try the next call after it.
            let Some((call, before)) = stack.pop() else {
                return SearchOutcome::NotLinearizable;
            };
            let entry = list.nodes[call].entry;
            linearized.clear(entry);
            if !entries[entry].is_open() {
                remaining += 1;
            }
            state = before;
            list.unlift(call);
            node = list.nodes[call].next;
        }
    }
}
