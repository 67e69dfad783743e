//! The merge of a watch's spans: events held until every span has resolved past them,
//! then released in commit-timestamp order, each once, a transaction's together.
//!
//! The **frontier** is the lowest resolved timestamp over the spans: every version of
//! the range committed at or below it has arrived (each region promised so for its
//! span), so what is held up to it can go out in order, and nothing at or below it can
//! still come except as a copy of what went out (a span reopened from its resolved
//! timestamp, whose catch-up reads some versions again). Copies above the frontier
//! meet their first copy here and are dropped by `(commit_ts, key)`: one transaction
//! commits a key once.
//!
//! Pure: no I/O, no clock; the coordinator (`mod.rs`) feeds it.

use std::collections::{BTreeMap, HashMap};

use tessera_engine::timestamp::Timestamp;

use super::{ChangeEvent, SpanId};

pub(super) struct Merger {
    /// Each span's resolved timestamp.
    spans: HashMap<SpanId, Timestamp>,
    /// Events above the frontier, by commit timestamp and key.
    held: BTreeMap<(Timestamp, Vec<u8>), ChangeEvent>,
    /// Everything at or below this has gone out.
    released: Timestamp,
}

/// One transaction's events in one range: its commit timestamp and its versions in key
/// order.
pub(super) type TransactionEvents = (Timestamp, Vec<ChangeEvent>);

impl Merger {
    /// A merge of a watch from `from`: what committed at or below it is not watched.
    pub(super) fn new(from: Timestamp) -> Merger {
        Merger { spans: HashMap::new(), held: BTreeMap::new(), released: from }
    }

    /// A span that has seen everything of its range up to `resolved`.
    pub(super) fn add_span(&mut self, span: SpanId, resolved: Timestamp) {
        assert!(
            resolved >= self.released,
            "a span joins at {resolved}, below what went out ({}): the frontier would go back",
            self.released
        );
        let previous = self.spans.insert(span, resolved);
        assert!(previous.is_none(), "span {span} joined twice");
    }

    /// Events a span received: held until the frontier passes them; those at or below
    /// what went out, and copies of those held, are dropped.
    pub(super) fn add_events(&mut self, events: Vec<ChangeEvent>) {
        for event in events {
            if event.commit_ts > self.released {
                self.held.entry((event.commit_ts, event.key.clone())).or_insert(event);
            }
        }
    }

    /// A span's region promised that nothing at or below `at` is still to come.
    pub(super) fn resolve(&mut self, span: SpanId, at: Timestamp) {
        let resolved = self.spans.get_mut(&span).unwrap_or_else(|| panic!("span {span} is not in the merge"));
        *resolved = (*resolved).max(at);
    }

    /// The lowest resolved timestamp over the spans.
    pub(super) fn frontier(&self) -> Timestamp {
        let lowest = self.spans.values().copied().min().unwrap_or(self.released);
        assert!(lowest >= self.released, "the frontier went back from {} to {lowest}", self.released);
        lowest
    }

    /// Everything went out up to this.
    pub(super) fn released(&self) -> Timestamp {
        self.released
    }

    /// How many events wait for the frontier.
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// The transactions the frontier has passed, oldest first, taken out of the merge.
    pub(super) fn release(&mut self) -> Vec<TransactionEvents> {
        let frontier = self.frontier();
        let mut transactions: Vec<TransactionEvents> = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > frontier {
                break;
            }
            let event = entry.remove();
            match transactions.last_mut() {
                Some((commit_ts, events)) if *commit_ts == event.commit_ts => events.push(event),
                _ => transactions.push((event.commit_ts, vec![event])),
            }
        }
        self.released = frontier;
        transactions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(value: u64) -> Timestamp {
        Timestamp::from_u64(value)
    }

    fn event(key: &str, commit_ts: u64) -> ChangeEvent {
        ChangeEvent {
            key: key.as_bytes().to_vec(),
            value: Some(b"v".to_vec()),
            prev_value: None,
            prev_commit_ts: None,
            start_ts: ts(commit_ts - 1),
            commit_ts: ts(commit_ts),
        }
    }

    fn keys(transactions: &[TransactionEvents]) -> Vec<(u64, Vec<&str>)> {
        transactions
            .iter()
            .map(|(commit_ts, events)| {
                let keys = events.iter().map(|event| std::str::from_utf8(&event.key).unwrap()).collect();
                (commit_ts.as_u64(), keys)
            })
            .collect()
    }

    #[test]
    fn nothing_goes_out_until_every_span_has_resolved_past_it() {
        let mut merge = Merger::new(ts(10));
        merge.add_span(1, ts(10));
        merge.add_span(2, ts(10));
        merge.add_events(vec![event("b", 30), event("a", 20)]);
        merge.resolve(1, ts(40));
        assert!(merge.release().is_empty(), "span 2 may still bring something below 20");
        merge.resolve(2, ts(25));
        assert_eq!(keys(&merge.release()), vec![(20, vec!["a"])]);
        assert_eq!(merge.released(), ts(25));
        merge.resolve(2, ts(40));
        assert_eq!(keys(&merge.release()), vec![(30, vec!["b"])]);
    }

    #[test]
    fn a_transaction_s_events_from_several_spans_go_out_together_in_key_order() {
        let mut merge = Merger::new(ts(10));
        merge.add_span(1, ts(10));
        merge.add_span(2, ts(10));
        merge.add_events(vec![event("x", 20), event("y", 21)]);
        merge.add_events(vec![event("c", 20), event("a", 21)]);
        merge.resolve(1, ts(30));
        merge.resolve(2, ts(30));
        assert_eq!(keys(&merge.release()), vec![(20, vec!["c", "x"]), (21, vec!["a", "y"])]);
    }

    #[test]
    fn copies_from_a_reopened_span_and_versions_already_out_are_dropped() {
        let mut merge = Merger::new(ts(10));
        merge.add_span(1, ts(10));
        merge.add_events(vec![event("a", 20), event("b", 40)]);
        merge.resolve(1, ts(30));
        assert_eq!(keys(&merge.release()), vec![(20, vec!["a"])]);
        // The span reopened from 30 after a leader change; its catch-up from 10 would
        // repeat both, one already out and one held.
        merge.add_events(vec![event("a", 20), event("b", 40), event("b", 40)]);
        assert_eq!(merge.held(), 1);
        merge.resolve(1, ts(50));
        assert_eq!(keys(&merge.release()), vec![(40, vec!["b"])]);
        assert!(merge.release().is_empty());
    }

    #[test]
    fn nothing_at_or_below_the_watch_s_start_goes_out() {
        let mut merge = Merger::new(ts(10));
        merge.add_span(1, ts(10));
        merge.add_events(vec![event("a", 10), event("a", 5), event("b", 11)]);
        merge.resolve(1, ts(20));
        assert_eq!(keys(&merge.release()), vec![(11, vec!["b"])]);
    }

    #[test]
    fn a_span_split_off_joins_at_its_parent_s_resolved_timestamp() {
        let mut merge = Merger::new(ts(10));
        merge.add_span(1, ts(10));
        merge.resolve(1, ts(20));
        merge.add_span(2, ts(20));
        merge.add_events(vec![event("z", 25)]);
        merge.resolve(1, ts(30));
        assert!(merge.release().is_empty(), "the new span has not resolved past 25");
        merge.resolve(2, ts(26));
        assert_eq!(keys(&merge.release()), vec![(25, vec!["z"])]);
    }

    #[test]
    #[should_panic(expected = "the frontier would go back")]
    fn a_span_joining_below_what_went_out_is_a_broken_invariant() {
        let mut merge = Merger::new(ts(10));
        merge.add_span(1, ts(10));
        merge.resolve(1, ts(30));
        merge.release();
        merge.add_span(2, ts(20));
    }
}
