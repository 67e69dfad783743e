//! A client's region feeds, shared by its watches: however many watches cover a
//! region, the client follows it through one feed (per choice of previous values), and
//! each watch's span there subscribes to the part it covers. A store then serves one
//! feed per client and region, not one per watch, and an idle watch costs nothing per
//! resolve: a subscriber is sent resolved timestamps only while its watch is
//! **attentive** (it holds events that wait for them, or it wants to move its progress
//! or its hold on garbage collection) or when it was sent events since the last one.
//!
//! A feed keeps the events above its resolved timestamp (those no subscriber can be
//! released yet), so that a span can **join** it from any timestamp at or above the
//! feed's resolved one: the events above its start are handed over, and the rest
//! follows. A span from below that opens a feed of its own (its catch-up), which later
//! spans can join in turn. While a feed catches up it keeps everything it has received
//! (it started at a known timestamp), up to a bound; past the bound it forgets what it
//! kept and takes no joiner until it resolves past what it forgot.
//!
//! A feed that has not caught up yet takes only joiners from close to its start
//! ([`CATCH_UP_JOIN_WINDOW`]): a span that is up to date must not wait behind a long
//! catch-up (it opens a feed of its own, soon caught up, which the later spans join),
//! and spans opened together share one catch-up.
//!
//! A subscriber that does not keep up with a live feed is dropped, and told so (its
//! span backs off, then reopens from its resolved timestamp). A subscriber that joined
//! a feed still catching up is **paced** instead, until it has been sent a resolved
//! timestamp above its start: the feed waits for room in its channel before it reads
//! on (the store's catch-up waits for the feed in turn, within its own limits), so that
//! a reader slower than the catch-up slows it down rather than restart it from the same
//! point again and again; the spans that share a catch-up share its pace. A paced
//! subscriber that takes nothing for [`PACING_LIMIT`] is dropped for lagging, so that it
//! cannot hold the others for good. Resolved timestamps never take more than half
//! of a subscriber's channel, so that they alone cannot get it dropped, and one withheld
//! for want of room is sent when the span asks again after draining. A feed whose last subscriber
//! leaves ends at once. A feed that ends (leader change, split, replica moved, store stopped, a
//! broken connection, a congested client) first sends every subscriber it can its last
//! resolved timestamp, so that they all reopen from the same point and join one new
//! feed. While one span opens a feed of a region, the others wait for it instead of
//! opening their own.
//!
//! This module owns the shared feeds and their subscribers; what a span does with
//! what it receives is `span.rs`'s, and the merge of spans is `merge.rs`'s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tessera_engine::proto::metadata::Region;
use tessera_engine::region::KeyRange;
use tessera_engine::timestamp::Timestamp;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tonic::Streaming;

use super::ChangeEvent;
use crate::proto::{FeedCloseReason, RegionFeedResponse};

/// Messages in flight from a feed to one subscriber; a live subscriber that lets more
/// pile up is dropped for lagging (a paced one is waited for).
pub(super) const SUBSCRIBER_MESSAGES: usize = 64;

/// The most events, and bytes of them, a feed keeps above its resolved timestamp for
/// spans that join it.
const MAX_KEPT_EVENTS: usize = 100_000;
const MAX_KEPT_BYTES: usize = 32 << 20;

/// How long a feed waits for room in its paced subscribers' channels, for one message,
/// before it drops those still without room for lagging: well below the store's patience with a feed that does not
/// read (30 s), and long enough for any reader that is only slow.
const PACING_LIMIT: Duration = Duration::from_secs(10);

/// How far above a catching-up feed's start a span may join it: spans opened together
/// share a catch-up, and a span further ahead opens a feed of its own rather than
/// wait behind it.
const CATCH_UP_JOIN_WINDOW: Duration = Duration::from_secs(1);

/// Whether a watch wants its spans' resolved timestamps now, and how its spans learn
/// that it started to: they then ask their feeds for the latest one at once instead of
/// waiting for the region's next.
pub(super) struct Attention {
    wanted: AtomicBool,
    /// Counts the rises: a span's receiver remembers which it has seen, so that a rise
    /// while the span is busy elsewhere (say, blocked handing on a report) is not missed.
    rises: watch::Sender<u64>,
}

impl Default for Attention {
    fn default() -> Attention {
        Attention { wanted: AtomicBool::new(false), rises: watch::Sender::new(0) }
    }
}

impl Attention {
    pub(super) fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    pub(super) fn set(&self, wanted: bool) {
        let was = self.wanted.swap(wanted, Ordering::Relaxed);
        if wanted && !was {
            self.rises.send_modify(|rises| *rises += 1);
        }
    }

    /// A receiver whose `changed()` resolves at the first rise it has not seen.
    pub(super) fn rises(&self) -> watch::Receiver<u64> {
        self.rises.subscribe()
    }
}

/// What a feed sends a subscriber.
#[derive(Debug)]
pub(super) enum FeedNews {
    Events(Vec<ChangeEvent>),
    /// Every version of the subscriber's part committed at or below this was sent.
    Resolved(Timestamp),
}

/// Which feed: a region's, with previous values or without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FeedKey {
    region_id: u64,
    prev_values: bool,
}

/// What a span subscribes with.
pub(super) struct Interest {
    /// The part of the region the span covers: `start .. end` (empty: to the end).
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    /// Versions committed after this.
    pub from: Timestamp,
    /// Whether the span's watch wants resolved timestamps now.
    pub attentive: Arc<Attention>,
}

/// The client's shared feeds.
#[derive(Default)]
pub(crate) struct FeedHub {
    state: Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    feeds: HashMap<FeedKey, Vec<Arc<SharedFeed>>>,
    /// Feeds being opened, and how their waiters learn that the opening ended.
    opening: HashMap<FeedKey, Arc<Notify>>,
}

/// What [`FeedHub::join_or_open`] found for a span.
pub(super) enum Found {
    Joined(Subscription),
    /// Another span is opening the region's feed: wait for it, then ask again.
    Wait(OwnedNotified),
    /// No feed to join: the caller opens one and [`FeedHub::install`]s it; the spans
    /// of other watches wait meanwhile.
    Open(Opening),
}

/// Where a span's feed stands against its region's first feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FirstFeed {
    /// The span's feed is the first, or the only one left: nowhere to move.
    NoneOther,
    /// The first feed is still catching up: the span cannot move yet.
    CatchingUp,
    /// The first feed is live: the span can move once it knows its resolved timestamp.
    Live,
}

/// The right to open a region's feed; dropped without installing a feed, it lets the
/// spans that wait for it try again.
pub(super) struct Opening {
    hub: Arc<FeedHub>,
    key: FeedKey,
    installed: bool,
}

impl Drop for Opening {
    fn drop(&mut self) {
        if !self.installed
            && let Some(waiters) = self.hub.state.lock().opening.remove(&self.key)
        {
            waiters.notify_waiters();
        }
    }
}

impl FeedHub {
    /// Subscribes `interest` to a feed of `region` it can join, or says what to do.
    pub(super) fn join_or_open(
        self: &Arc<Self>,
        region: &Region,
        prev_values: bool,
        interest: &Interest,
    ) -> Found {
        let key = FeedKey { region_id: region.id, prev_values };
        let mut hub = self.state.lock();
        let feeds = hub.feeds.get(&key).map(Vec::as_slice).unwrap_or_default();
        // Live feeds first: joining one delivers at once.
        let (live, catching_up): (Vec<_>, Vec<_>) = feeds.iter().partition(|feed| feed.caught_up());
        for feed in live.into_iter().chain(catching_up) {
            if let Some(subscription) = feed.join(region, interest) {
                return Found::Joined(subscription);
            }
        }
        if let Some(notify) = hub.opening.get(&key) {
            // Made under the lock: the opener's wake-up cannot come before it.
            return Found::Wait(notify.clone().notified_owned());
        }
        hub.opening.insert(key, Arc::new(Notify::new()));
        Found::Open(Opening { hub: self.clone(), key, installed: false })
    }

    /// Installs the feed of `region` opened from `interest.from` (after
    /// [`FeedHub::join_or_open`] said to open), with the opener as its first subscriber.
    pub(super) fn install(
        self: &Arc<Self>,
        mut opening: Opening,
        region: Region,
        stream: Streaming<RegionFeedResponse>,
        interest: &Interest,
    ) -> Subscription {
        let key = opening.key;
        assert_eq!(
            key.region_id, region.id,
            "invariant: a feed is installed for the region it was opened for"
        );
        opening.installed = true;
        let feed = Arc::new(SharedFeed::new(region.clone(), interest.from));
        let subscription = feed.join(&region, interest).unwrap_or_else(|| {
            unreachable!("invariant: a feed just opened from a timestamp takes a subscriber from it")
        });
        let waiters = {
            let mut hub = self.state.lock();
            hub.feeds.entry(key).or_default().push(feed.clone());
            hub.opening.remove(&key)
        };
        if let Some(notify) = waiters {
            notify.notify_waiters();
        }
        tokio::spawn(follow_feed(Arc::downgrade(self), key, feed, stream));
        subscription
    }

    /// Subscribes `interest` to the region's first feed (the oldest the client
    /// follows), if `current` is another one, the first has caught up, and `interest`
    /// can join it: a span that opened a feed of its own to catch up moves over once
    /// both are live, and its feed ends when nobody is left on it. Asked again at each
    /// resolved timestamp the span receives, until it moves.
    pub(super) fn join_first(
        &self,
        current: &Arc<SharedFeed>,
        region: &Region,
        prev_values: bool,
        interest: &Interest,
    ) -> Option<Subscription> {
        let key = FeedKey { region_id: region.id, prev_values };
        let hub = self.state.lock();
        let first = hub.feeds.get(&key)?.first()?;
        if Arc::ptr_eq(first, current) || !first.caught_up() {
            return None;
        }
        first.join(region, interest)
    }

    /// Where `feed` stands against the region's first feed (the one spans move to).
    pub(super) fn first_feed(&self, feed: &Arc<SharedFeed>, region: &Region, prev_values: bool) -> FirstFeed {
        let key = FeedKey { region_id: region.id, prev_values };
        let hub = self.state.lock();
        match hub.feeds.get(&key).and_then(|feeds| feeds.first()) {
            None => FirstFeed::NoneOther,
            Some(first) if Arc::ptr_eq(first, feed) => FirstFeed::NoneOther,
            Some(first) if first.caught_up() => FirstFeed::Live,
            Some(_) => FirstFeed::CatchingUp,
        }
    }

    /// Follows `feed` as if a span had opened it (for tests that drive feeds by hand).
    #[cfg(test)]
    pub(super) fn adopt(&self, feed: Arc<SharedFeed>, prev_values: bool) {
        let key = FeedKey { region_id: feed.region.id, prev_values };
        self.state.lock().feeds.entry(key).or_default().push(feed);
    }

    fn remove(&self, key: FeedKey, feed: &Arc<SharedFeed>) {
        let mut hub = self.state.lock();
        if let Some(feeds) = hub.feeds.get_mut(&key) {
            feeds.retain(|kept| !Arc::ptr_eq(kept, feed));
            if feeds.is_empty() {
                hub.feeds.remove(&key);
            }
        }
    }

    /// How many feeds the client follows.
    pub(crate) fn feeds(&self) -> usize {
        self.state.lock().feeds.values().map(Vec::len).sum()
    }
}

/// What the feed tells a subscriber's span outside its channel.
#[derive(Default)]
struct Signals {
    /// When the feed dropped the subscriber for not keeping up (whatever the feed did
    /// after: a feed whose only subscriber was dropped ends for want of subscribers).
    dropped_for_lag_at: Mutex<Option<Instant>>,
    /// A resolved timestamp owed to the subscriber was withheld for want of room in its
    /// channel: the span asks again once it has drained (the region may stay quiet, and
    /// its resolved timestamp with it, for long).
    resolved_withheld: AtomicBool,
}

impl Signals {
    fn note_dropped_for_lag(&self) {
        *self.dropped_for_lag_at.lock() = Some(Instant::now());
    }
}

/// A span's subscription to a shared feed: what the feed sends it, until the feed
/// ends or drops it.
pub(super) struct Subscription {
    pub feed: Arc<SharedFeed>,
    pub news: mpsc::Receiver<FeedNews>,
    id: SubscriberId,
    signals: Arc<Signals>,
}

impl Subscription {
    /// When the feed dropped the subscriber because it did not keep up, if it did.
    pub(super) fn dropped_for_lag_at(&self) -> Option<Instant> {
        *self.signals.dropped_for_lag_at.lock()
    }

    /// Asks the feed again for a resolved timestamp it withheld for want of room, once
    /// the channel is below half full (what the feed requires to send one).
    pub(super) fn ask_withheld_resolved(&self) {
        if self.signals.resolved_withheld.load(Ordering::Relaxed) && self.news.len() < SUBSCRIBER_MESSAGES / 2
        {
            self.feed.push_resolved(self.id);
        }
    }

    /// Asks the feed for its latest resolved timestamp now (sent behind the events
    /// before it, like any other), if the subscriber has not had it.
    pub(super) fn ask_resolved(&self) {
        self.feed.push_resolved(self.id);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.leave(self.id);
    }
}

/// A subscriber's identity within its feed.
type SubscriberId = u64;

/// One region feed and its subscribers.
pub(super) struct SharedFeed {
    /// The region as it was when the feed opened.
    pub region: Region,
    /// Versions committed after this (the first subscriber's start).
    started_from: Timestamp,
    state: Mutex<FeedState>,
    /// Signalled when the last subscriber leaves: the feed ends.
    abandoned: Notify,
}

struct FeedState {
    /// A span may join from this timestamp or above; none while the feed has forgotten
    /// events a joiner would need.
    joinable_from: Option<Timestamp>,
    /// Events forgotten past the bound of those kept: joinable again once resolved
    /// past this.
    forgotten_up_to: Option<Timestamp>,
    /// Every version committed at or below this was received (the start, until the
    /// feed has caught up).
    resolved: Timestamp,
    caught_up: bool,
    /// Events above `resolved` (every one the feed received, while it catches up).
    kept: Vec<ChangeEvent>,
    kept_bytes: usize,
    subscribers: Vec<Subscriber>,
    next_subscriber: SubscriberId,
    /// Why the feed ended, once it has.
    ended: Option<FeedCloseReason>,
}

struct Subscriber {
    id: SubscriberId,
    start: Vec<u8>,
    end: Vec<u8>,
    from: Timestamp,
    attentive: Arc<Attention>,
    /// Sent events since the last resolved timestamp it was sent.
    owed_resolved: bool,
    resolved_sent: Timestamp,
    /// Joined while the feed caught up, and not yet sent a resolved timestamp above its
    /// start: waited for rather than dropped when its channel is full.
    paced: bool,
    news: mpsc::Sender<FeedNews>,
    signals: Arc<Signals>,
}

fn event_bytes(event: &ChangeEvent) -> usize {
    event.key.len() + event.value.as_ref().map_or(0, Vec::len) + event.prev_value.as_ref().map_or(0, Vec::len)
}

impl SharedFeed {
    pub(super) fn new(region: Region, start: Timestamp) -> SharedFeed {
        let state = FeedState {
            joinable_from: Some(start),
            forgotten_up_to: None,
            resolved: start,
            caught_up: false,
            kept: Vec::new(),
            kept_bytes: 0,
            subscribers: Vec::new(),
            next_subscriber: 0,
            ended: None,
        };
        SharedFeed { region, started_from: start, state: Mutex::new(state), abandoned: Notify::new() }
    }

    /// Whether the feed caught up at some point (a feed that ended before failed).
    pub(super) fn caught_up(&self) -> bool {
        self.state.lock().caught_up
    }

    /// Subscribes `interest` directly (for tests that drive feeds by hand).
    #[cfg(test)]
    pub(super) fn subscribe(self: &Arc<Self>, region: &Region, interest: &Interest) -> Option<Subscription> {
        self.join(region, interest)
    }

    /// How many spans are subscribed.
    #[cfg(test)]
    pub(super) fn subscribers(&self) -> usize {
        self.state.lock().subscribers.len()
    }

    /// Why the feed ended; `None` while it runs (a subscriber it dropped was congested).
    pub(super) fn ended(&self) -> Option<FeedCloseReason> {
        self.state.lock().ended
    }

    /// Subscribes `interest` if it can join: the feed runs, covers the part, has kept
    /// every event above `interest.from`, and has caught up or started close below it.
    fn join(self: &Arc<Self>, region: &Region, interest: &Interest) -> Option<Subscription> {
        let mut state = self.state.lock();
        let part = KeyRange::new(&interest.start, &interest.end);
        let covers = region.id == self.region.id && KeyRange::of(&self.region).encloses(&part);
        let joinable = state.joinable_from.is_some_and(|joinable_from| interest.from >= joinable_from);
        let close_enough = state.caught_up || interest.from.minus(CATCH_UP_JOIN_WINDOW) <= self.started_from;
        if state.ended.is_some() || !covers || !joinable || !close_enough {
            return None;
        }
        let (sender, news) = mpsc::channel(SUBSCRIBER_MESSAGES);
        let handed_over: Vec<ChangeEvent> = state
            .kept
            .iter()
            .filter(|event| event.commit_ts > interest.from && part.contains(&event.key))
            .cloned()
            .collect();
        if !handed_over.is_empty() && sender.try_send(FeedNews::Events(handed_over)).is_err() {
            unreachable!("invariant: a new subscriber's channel has room for its first message");
        }
        let id = state.next_subscriber;
        state.next_subscriber += 1;
        let signals = Arc::new(Signals::default());
        let paced = !state.caught_up;
        state.subscribers.push(Subscriber {
            id,
            start: interest.start.clone(),
            end: interest.end.clone(),
            from: interest.from,
            attentive: interest.attentive.clone(),
            // The first resolved timestamp after joining tells the span where it is
            // (a span on a feed of its own moves to the region's first one with it).
            owed_resolved: true,
            resolved_sent: interest.from,
            paced,
            news: sender,
            signals: signals.clone(),
        });
        drop(state);
        Some(Subscription { feed: self.clone(), news, id, signals })
    }

    /// The subscriber `id` left (its span dropped the subscription).
    fn leave(&self, id: SubscriberId) {
        let mut state = self.state.lock();
        state.subscribers.retain(|subscriber| subscriber.id != id);
        if state.subscribers.is_empty() && state.ended.is_none() {
            // A permit is stored if the feed's task is not waiting yet: never missed.
            self.abandoned.notify_one();
        }
    }

    /// Sends subscriber `id` the feed's resolved timestamp if it has not had it.
    fn push_resolved(&self, id: SubscriberId) {
        let mut state = self.state.lock();
        if state.ended.is_some() || !state.caught_up {
            return;
        }
        let resolved = state.resolved;
        if let Some(subscriber) = state.subscribers.iter_mut().find(|subscriber| subscriber.id == id) {
            subscriber.offer_resolved(resolved);
        }
    }

    /// Events the feed received: kept for joiners, and sent to each subscriber whose
    /// part they are in. A subscriber without room for them is dropped if the feed is
    /// live; while it catches up, the subscriber's share is answered instead, for the
    /// feed's task to send when there is room (before it reads on).
    #[must_use = "while catching up, the events of subscribers without room are answered, to be sent"]
    pub(super) fn on_events(&self, events: &[ChangeEvent]) -> Vec<PacedSend> {
        let mut state = self.state.lock();
        if state.ended.is_some() {
            return Vec::new();
        }
        state.keep(events);
        let mut paced = Vec::new();
        state.subscribers.retain_mut(|subscriber| {
            let theirs: Vec<ChangeEvent> = events
                .iter()
                .filter(|event| {
                    event.commit_ts > subscriber.from
                        && KeyRange::new(&subscriber.start, &subscriber.end).contains(&event.key)
                })
                .cloned()
                .collect();
            if theirs.is_empty() {
                return !subscriber.news.is_closed();
            }
            subscriber.owed_resolved = true;
            // The watch holds events now: its other spans' resolved timestamps matter.
            subscriber.attentive.set(true);
            match subscriber.news.try_send(FeedNews::Events(theirs)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(message)) if subscriber.paced => {
                    paced.push(subscriber.paced_send(message));
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    subscriber.signals.note_dropped_for_lag();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        paced
    }

    /// The region resolved to `resolved` (the feed has caught up). A paced subscriber
    /// is sent it whatever room it has (answered, for the feed's task to send), which
    /// ends its pacing.
    #[must_use = "the resolved timestamps of paced subscribers without room are answered, to be sent"]
    pub(super) fn on_resolved(&self, resolved: Timestamp) -> Vec<PacedSend> {
        let mut state = self.state.lock();
        if state.ended.is_some() {
            return Vec::new();
        }
        // A promise about what lies below the start tells nothing new.
        let resolved = resolved.max(state.resolved);
        state.caught_up = true;
        state.resolved = resolved;
        state.kept.retain(|event| event.commit_ts > resolved);
        state.kept_bytes = state.kept.iter().map(event_bytes).sum();
        if state.forgotten_up_to.is_none_or(|forgotten| forgotten <= resolved) {
            state.forgotten_up_to = None;
            state.joinable_from = Some(resolved);
        }
        let mut paced = Vec::new();
        state.subscribers.retain_mut(|subscriber| {
            if subscriber.news.is_closed() {
                return false;
            }
            if subscriber.paced && resolved > subscriber.resolved_sent {
                paced.extend(subscriber.pace_resolved(resolved));
            } else if subscriber.owed_resolved || subscriber.attentive.wanted() {
                subscriber.offer_resolved(resolved);
            }
            true
        });
        paced
    }

    /// Drops subscriber `id` for lagging (a paced one that took nothing for too long).
    fn drop_for_lag(&self, id: SubscriberId) {
        let mut state = self.state.lock();
        state.subscribers.retain(|subscriber| {
            if subscriber.id != id {
                return true;
            }
            subscriber.signals.note_dropped_for_lag();
            false
        });
    }

    /// Ends the feed: every subscriber with room is sent the last resolved timestamp,
    /// then dropped.
    fn end(&self, reason: FeedCloseReason) {
        let mut state = self.state.lock();
        state.ended = Some(reason);
        let (caught_up, resolved) = (state.caught_up, state.resolved);
        for subscriber in state.subscribers.drain(..) {
            if caught_up && resolved > subscriber.resolved_sent {
                let _ = subscriber.news.try_send(FeedNews::Resolved(resolved));
            }
        }
        state.kept = Vec::new();
        state.kept_bytes = 0;
    }

    /// Ends the feed if nobody is subscribed (under the lock that joining takes, so
    /// that no span joins a feed that is ending).
    fn end_if_abandoned(&self) -> bool {
        let mut state = self.state.lock();
        state.subscribers.retain(|subscriber| !subscriber.news.is_closed());
        if !state.subscribers.is_empty() {
            return false;
        }
        state.ended = Some(FeedCloseReason::Unspecified);
        state.kept = Vec::new();
        state.kept_bytes = 0;
        true
    }
}

/// A message for a paced subscriber that had no room for it: the feed's task waits to
/// send it before it reads on.
pub(super) struct PacedSend {
    id: SubscriberId,
    news: mpsc::Sender<FeedNews>,
    message: FeedNews,
}

impl PacedSend {
    /// Sends every one of `paced` in turn, each waiting until `deadline` at most.
    async fn send_all(paced: Vec<PacedSend>, feed: &SharedFeed, deadline: Instant) {
        for send in paced {
            send.send(feed, deadline).await;
        }
    }

    /// Waits for room and sends, until `deadline` at the latest, then drops the
    /// subscriber from `feed` for lagging; a subscriber that left meanwhile needs
    /// nothing.
    pub(super) async fn send(self, feed: &SharedFeed, deadline: Instant) {
        if let Err(tokio::time::error::Elapsed { .. }) =
            tokio::time::timeout_at(deadline, self.news.send(self.message)).await
        {
            feed.drop_for_lag(self.id);
        }
    }
}

impl Subscriber {
    /// Sends a paced subscriber `resolved` (above what it was sent): now if there is
    /// room, or else answered for the feed's task to send. Ends its pacing either way:
    /// from here on, dropped for lagging, its span reopens from there.
    fn pace_resolved(&mut self, resolved: Timestamp) -> Option<PacedSend> {
        self.paced = false;
        self.resolved_sent = resolved;
        self.owed_resolved = false;
        match self.news.try_send(FeedNews::Resolved(resolved)) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => None,
            Err(mpsc::error::TrySendError::Full(message)) => Some(self.paced_send(message)),
        }
    }

    /// `message`, found no room for, to be sent by the feed's task when there is.
    fn paced_send(&self, message: FeedNews) -> PacedSend {
        PacedSend { id: self.id, news: self.news.clone(), message }
    }

    /// Sends `resolved` if it is news to the subscriber and its channel is at most half
    /// full (no room: a later one will do, as each is only the latest promise; and
    /// resolved timestamps alone must never fill a channel and get it dropped).
    fn offer_resolved(&mut self, resolved: Timestamp) {
        if resolved <= self.resolved_sent {
            return;
        }
        let sent = self.news.capacity() > SUBSCRIBER_MESSAGES / 2
            && self.news.try_send(FeedNews::Resolved(resolved)).is_ok();
        if sent {
            self.resolved_sent = resolved;
            self.owed_resolved = false;
        }
        // Written on change only: most offers find it as it was.
        if self.signals.resolved_withheld.load(Ordering::Relaxed) == sent {
            self.signals.resolved_withheld.store(!sent, Ordering::Relaxed);
        }
    }
}

impl FeedState {
    /// Keeps `events` for joiners, or forgets everything kept past the bound.
    fn keep(&mut self, events: &[ChangeEvent]) {
        self.kept_bytes += events.iter().map(event_bytes).sum::<usize>();
        self.kept.extend_from_slice(events);
        if self.kept.len() > MAX_KEPT_EVENTS || self.kept_bytes > MAX_KEPT_BYTES {
            let highest = self.kept.iter().map(|event| event.commit_ts).max();
            self.forgotten_up_to = self.forgotten_up_to.max(highest);
            self.joinable_from = None;
            self.kept = Vec::new();
            self.kept_bytes = 0;
        }
    }
}

/// Follows one feed's stream until it ends or nobody is subscribed; then ends the
/// feed and forgets it.
async fn follow_feed(
    hub: Weak<FeedHub>,
    key: FeedKey,
    feed: Arc<SharedFeed>,
    mut stream: Streaming<RegionFeedResponse>,
) {
    let mut caught_up = false;
    let reason = loop {
        let received = tokio::select! {
            received = stream.message() => received,
            () = feed.abandoned.notified() => {
                if feed.end_if_abandoned() {
                    break None;
                }
                continue;
            }
        };
        let message = match received {
            Ok(Some(message)) => message,
            // The connection broke, or the store ended the stream without a word.
            Ok(None) | Err(_) => break Some(FeedCloseReason::Unspecified),
        };
        // One deadline for every paced subscriber of a message: their waits do not add
        // up (the store stops waiting for a feed that does not read, 30 s).
        let deadline = Instant::now() + PACING_LIMIT;
        if !message.events.is_empty() {
            let events: Vec<ChangeEvent> = message.events.into_iter().map(ChangeEvent::from).collect();
            // A slow reader paces the catch-up (the store waits in turn) instead of
            // being dropped and restarting it; its events go before the resolved
            // timestamp below.
            PacedSend::send_all(feed.on_events(&events), &feed, deadline).await;
        }
        caught_up |= message.caught_up;
        if caught_up {
            let paced = feed.on_resolved(Timestamp::from_u64(message.resolved_ts));
            PacedSend::send_all(paced, &feed, deadline).await;
        }
        if message.closed != FeedCloseReason::Unspecified as i32 {
            break Some(FeedCloseReason::try_from(message.closed).unwrap_or(FeedCloseReason::Unspecified));
        }
        if feed.end_if_abandoned() {
            break None;
        }
    };
    // None: ended for want of subscribers, with nobody left to tell.
    if let Some(reason) = reason {
        feed.end(reason);
    }
    if let Some(hub) = hub.upgrade() {
        hub.remove(key, &feed);
    }
}

#[cfg(test)]
mod tests;
