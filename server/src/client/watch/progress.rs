//! When a watch wants its spans' resolved timestamps, and when it notifies progress.
//!
//! A watch is attentive (its spans are sent resolved timestamps) while it holds events,
//! and after a progress tick, a refresh or a caller's ask, until its frontier passes
//! the frontier of that moment (or the timestamp asked for). Progress goes out after a
//! tick once the watch has released more than it last notified, and after an ask once
//! it has released everything up to the timestamp asked for.
//!
//! This module decides; the coordinator (`mod.rs`) sends.

use tessera_engine::timestamp::Timestamp;

/// One watch's progress bookkeeping.
#[derive(Debug)]
pub(super) struct Progress {
    /// The last progress notified (or the watch's start).
    notified: Timestamp,
    /// A progress tick came: notify once released moves past `notified`.
    tick_due: bool,
    /// Asked for: notify once everything up to this is released.
    owed: Option<Timestamp>,
    /// While some: the watch wants resolved timestamps until its frontier passes this.
    refreshing: Option<Timestamp>,
}

impl Progress {
    pub(super) fn new(from: Timestamp) -> Progress {
        Progress { notified: from, tick_due: false, owed: None, refreshing: None }
    }

    /// A progress tick at `frontier`.
    pub(super) fn on_tick(&mut self, frontier: Timestamp) {
        self.tick_due = true;
        self.on_refresh(frontier);
    }

    /// A periodic refresh at `frontier` (the frontier should move on even if idle), or
    /// anything else that wants the frontier past `frontier`.
    pub(super) fn on_refresh(&mut self, frontier: Timestamp) {
        self.refreshing = Some(self.refreshing.map_or(frontier, |refreshing| refreshing.max(frontier)));
    }

    /// A caller asked for progress up to `at`.
    pub(super) fn on_asked(&mut self, at: Timestamp) {
        self.owed = Some(self.owed.map_or(at, |owed| owed.max(at)));
        self.on_refresh(at);
    }

    /// After a report was merged and released: the progress to notify now, if any.
    pub(super) fn due_notification(&mut self, released: Timestamp) -> Option<Timestamp> {
        let asked_for = self.owed.is_some_and(|at| released >= at);
        let ticked = self.tick_due && released > self.notified;
        if !asked_for && !ticked {
            return None;
        }
        if asked_for {
            self.owed = None;
        }
        if ticked {
            self.tick_due = false;
        }
        self.notified = self.notified.max(released);
        Some(released)
    }

    /// Whether the watch wants its spans' resolved timestamps, its frontier being
    /// `frontier` and `held` events waiting for it.
    pub(super) fn attentive(&mut self, frontier: Timestamp, held: usize) -> bool {
        if self.refreshing.is_some_and(|floor| frontier > floor) {
            self.refreshing = None;
        }
        held > 0 || self.refreshing.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(timestamp: u64) -> Timestamp {
        Timestamp::from_u64(timestamp)
    }

    #[test]
    fn an_ask_is_answered_only_once_everything_up_to_it_is_released() {
        let mut progress = Progress::new(at(10));
        progress.on_asked(at(100));
        assert!(progress.attentive(at(50), 0), "attentive until the frontier passes 100");
        assert_eq!(progress.due_notification(at(50)), None, "not before 100 is released");
        assert_eq!(progress.due_notification(at(100)), Some(at(100)));
        assert_eq!(progress.due_notification(at(120)), None, "answered once");
        assert!(!progress.attentive(at(120), 0), "idle again past 100");
    }

    #[test]
    fn asks_made_before_the_answer_are_answered_together_by_the_highest() {
        let mut progress = Progress::new(at(10));
        progress.on_asked(at(100));
        progress.on_asked(at(80));
        progress.on_asked(at(150));
        assert_eq!(progress.due_notification(at(120)), None);
        assert_eq!(progress.due_notification(at(150)), Some(at(150)));
        assert_eq!(progress.due_notification(at(200)), None);
    }

    #[test]
    fn a_tick_notifies_only_when_released_moved_past_the_last_notification() {
        let mut progress = Progress::new(at(10));
        progress.on_tick(at(10));
        assert_eq!(progress.due_notification(at(10)), None, "nothing new since the start");
        assert_eq!(progress.due_notification(at(30)), Some(at(30)));
        assert_eq!(progress.due_notification(at(40)), None, "one notification per tick");
        progress.on_tick(at(40));
        progress.on_asked(at(35));
        assert_eq!(progress.due_notification(at(40)), Some(at(40)), "one answer for both");
        assert_eq!(progress.due_notification(at(50)), None);
    }

    #[test]
    fn held_events_keep_a_watch_attentive() {
        let mut progress = Progress::new(at(10));
        assert!(!progress.attentive(at(10), 0));
        assert!(progress.attentive(at(10), 3));
        progress.on_refresh(at(20));
        assert!(progress.attentive(at(20), 0), "until the frontier passes 20");
        assert!(!progress.attentive(at(21), 0));
    }
}
