//! The shared feed's rules, driven by hand (no store): who may join, what a lagging
//! subscriber is sent, when a feed is abandoned, and how waiters learn of an opening.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;

use super::{Attention, FeedHub, FeedNews, FirstFeed, Found, SUBSCRIBER_MESSAGES, SharedFeed};
use crate::client::watch::testing::{at_millisecond, event, interest, whole_key_space};

fn drain(news: &mut mpsc::Receiver<FeedNews>) -> Vec<FeedNews> {
    std::iter::from_fn(|| news.try_recv().ok()).collect()
}

#[test]
fn resolved_timestamps_never_fill_more_than_half_of_a_lagging_subscribers_channel() {
    let region = whole_key_space();
    let feed = Arc::new(SharedFeed::new(region.clone(), at_millisecond(1_000)));
    let mut subscription = feed.join(&region, &interest(at_millisecond(1_000), true)).expect("joins");
    // The reader lags: many resolved timestamps and nothing read.
    for millisecond in 1_001..1_001 + 4 * SUBSCRIBER_MESSAGES as u64 {
        let _ = feed.on_resolved(at_millisecond(millisecond));
    }
    let _ = feed.on_events(&[event(b"k", at_millisecond(5_000))]);
    assert_eq!(feed.subscribers(), 1, "a subscriber with room for events is not dropped");
    let received = drain(&mut subscription.news);
    let resolved = received.iter().filter(|news| matches!(news, FeedNews::Resolved(_))).count();
    assert!(resolved <= SUBSCRIBER_MESSAGES / 2, "{resolved} resolved timestamps queued");
    assert!(matches!(received.last(), Some(FeedNews::Events(events)) if events.len() == 1));
}

#[test]
fn an_up_to_date_span_does_not_join_a_feed_still_catching_up_from_long_before() {
    let region = whole_key_space();
    let start = at_millisecond(100_000);
    let feed = Arc::new(SharedFeed::new(region.clone(), start));
    let _opener = feed.join(&region, &interest(start, false)).expect("the opener joins");
    assert!(feed.join(&region, &interest(at_millisecond(160_000), false)).is_none());
    let close = feed.join(&region, &interest(at_millisecond(100_500), false));
    assert!(close.is_some(), "a span from close above the start shares the catch-up");
    let _ = feed.on_resolved(at_millisecond(200_000));
    assert!(feed.join(&region, &interest(at_millisecond(200_000), false)).is_some(), "live: joinable");
    assert!(feed.join(&region, &interest(at_millisecond(160_000), false)).is_none(), "below resolved");
}

#[test]
fn a_feed_is_abandoned_when_its_last_subscriber_leaves_and_takes_no_joiner_after() {
    let region = whole_key_space();
    let from = at_millisecond(1_000);
    let feed = Arc::new(SharedFeed::new(region.clone(), from));
    let first = feed.join(&region, &interest(from, false)).expect("joins");
    let second = feed.join(&region, &interest(from, false)).expect("joins");
    drop(first);
    assert!(!feed.end_if_abandoned(), "one subscriber is left");
    drop(second);
    assert!(feed.abandoned.notified().now_or_never().is_some(), "the feed's task is told");
    assert!(feed.end_if_abandoned());
    assert!(feed.join(&region, &interest(from, false)).is_none(), "an ended feed takes no joiner");
}

#[test]
fn a_subscriber_asking_for_the_resolved_timestamp_gets_it_behind_the_events_before_it() {
    let region = whole_key_space();
    let from = at_millisecond(1_000);
    let feed = Arc::new(SharedFeed::new(region.clone(), from));
    let mut subscription = feed.join(&region, &interest(from, false)).expect("joins");
    let _ = feed.on_resolved(at_millisecond(2_000));
    assert!(
        matches!(drain(&mut subscription.news)[..], [FeedNews::Resolved(at)] if at == at_millisecond(2_000))
    );
    let _ = feed.on_resolved(at_millisecond(3_000));
    assert!(drain(&mut subscription.news).is_empty(), "an inattentive watch is not sent resolved timestamps");
    subscription.ask_resolved();
    assert!(
        matches!(drain(&mut subscription.news)[..], [FeedNews::Resolved(at)] if at == at_millisecond(3_000))
    );
    subscription.ask_resolved();
    assert!(drain(&mut subscription.news).is_empty(), "nothing it has had already");
}

#[test]
fn a_span_waiting_for_an_opener_is_woken_when_the_opening_ends() {
    let hub = Arc::new(FeedHub::default());
    let region = whole_key_space();
    let from = at_millisecond(1_000);
    let Found::Open(opening) = hub.join_or_open(&region, false, &interest(from, false)) else {
        panic!("the first span opens the feed");
    };
    let Found::Wait(woken) = hub.join_or_open(&region, false, &interest(from, false)) else {
        panic!("the second span waits for the opener");
    };
    // The opener gives up before the waiter polls: the wake-up must not be lost.
    drop(opening);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    let woke = runtime.block_on(async { tokio::time::timeout(Duration::from_millis(50), woken).await });
    assert!(woke.is_ok(), "the waiter was not woken");
    assert!(matches!(hub.join_or_open(&region, false, &interest(from, false)), Found::Open(_)));
}

#[test]
fn a_subscriber_dropped_for_lag_is_told_so_even_when_its_feed_then_ends_for_want_of_subscribers() {
    let region = whole_key_space();
    let from = at_millisecond(1_000);
    let feed = Arc::new(SharedFeed::new(region.clone(), from));
    let _ = feed.on_resolved(from);
    let subscription = feed.join(&region, &interest(from, false)).expect("joins a live feed: not paced");
    for millisecond in 0..=SUBSCRIBER_MESSAGES as u64 {
        assert!(
            subscription.dropped_for_lag_at().is_none(),
            "dropped with room left, at message {millisecond}"
        );
        let _ = feed.on_events(&[event(b"k", at_millisecond(2_000 + millisecond))]);
    }
    assert!(subscription.dropped_for_lag_at().is_some(), "a full channel gets a live subscriber dropped");
    assert_eq!(feed.subscribers(), 0);
    assert!(feed.end_if_abandoned(), "its only subscriber gone, the feed ends");
    assert!(subscription.dropped_for_lag_at().is_some(), "the span still learns that it lagged");
}

#[test]
fn a_resolved_timestamp_withheld_for_want_of_room_is_sent_once_the_span_drains() {
    let region = whole_key_space();
    let from = at_millisecond(1_000);
    let feed = Arc::new(SharedFeed::new(region.clone(), from));
    let _ = feed.on_resolved(from);
    let mut subscription = feed.join(&region, &interest(from, false)).expect("joins");
    for millisecond in 0..(SUBSCRIBER_MESSAGES / 2) as u64 {
        let _ = feed.on_events(&[event(b"k", at_millisecond(2_000 + millisecond))]);
    }
    // Owed (it was sent events), but the channel is half full: withheld. The region
    // then stays quiet: no later resolved timestamp would carry the news.
    let _ = feed.on_resolved(at_millisecond(9_000));
    let received = drain(&mut subscription.news);
    assert_eq!(received.len(), SUBSCRIBER_MESSAGES / 2);
    assert!(received.iter().all(|news| matches!(news, FeedNews::Events(_))), "withheld: no room");
    subscription.ask_withheld_resolved();
    assert!(
        matches!(drain(&mut subscription.news)[..], [FeedNews::Resolved(at)] if at == at_millisecond(9_000))
    );
    subscription.ask_withheld_resolved();
    assert!(drain(&mut subscription.news).is_empty(), "sent once");
}

#[test]
fn a_rise_of_attention_is_seen_by_a_span_that_was_busy_when_it_happened() {
    let attention = Attention::default();
    let mut rises = attention.rises();
    assert!(!rises.has_changed().expect("the sender lives"));
    // The span is not waiting on `changed()` now (say, it hands a report on).
    attention.set(true);
    attention.set(false);
    assert!(rises.has_changed().expect("the sender lives"), "the rise is remembered");
    rises.mark_unchanged();
    attention.set(false);
    assert!(!rises.has_changed().expect("the sender lives"), "no rise, no news");
}

#[test]
fn a_span_on_a_second_feed_can_move_only_once_the_first_has_caught_up() {
    let hub = Arc::new(FeedHub::default());
    let region = whole_key_space();
    let from = at_millisecond(1_000);
    let first = Arc::new(SharedFeed::new(region.clone(), from));
    let second = Arc::new(SharedFeed::new(region.clone(), at_millisecond(500_000)));
    hub.adopt(first.clone(), false);
    hub.adopt(second.clone(), false);
    assert_eq!(hub.first_feed(&first, &region, false), FirstFeed::NoneOther);
    assert_eq!(hub.first_feed(&second, &region, false), FirstFeed::CatchingUp);
    let _ = first.on_resolved(at_millisecond(2_000));
    assert_eq!(hub.first_feed(&second, &region, false), FirstFeed::Live);
    assert_eq!(hub.first_feed(&second, &region, true), FirstFeed::NoneOther, "no feed with previous values");
}

#[test]
fn a_subscriber_without_room_is_paced_not_dropped_while_its_feed_catches_up() {
    let region = whole_key_space();
    let from = at_millisecond(1_000);
    let feed = Arc::new(SharedFeed::new(region.clone(), from));
    let mut subscription = feed.join(&region, &interest(from, false)).expect("joins");
    let mut paced = Vec::new();
    for millisecond in 0..=SUBSCRIBER_MESSAGES as u64 {
        paced.extend(feed.on_events(&[event(b"k", at_millisecond(2_000 + millisecond))]));
    }
    assert_eq!(paced.len(), 1, "the message past the channel's room waits for the feed's task");
    assert_eq!(feed.subscribers(), 1, "a catching-up subscriber is not dropped");
    assert!(subscription.dropped_for_lag_at().is_none());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    let mut sent_in_order = Vec::new();
    runtime.block_on(async {
        let feed_task = feed.clone();
        let waiting = tokio::spawn(async move {
            for send in paced {
                send.send(&feed_task, tokio::time::Instant::now() + Duration::from_secs(5)).await;
            }
        });
        while let Some(FeedNews::Events(events)) = subscription.news.recv().await {
            sent_in_order.extend(events.iter().map(|event| event.commit_ts));
            if sent_in_order.len() == SUBSCRIBER_MESSAGES + 1 {
                break;
            }
        }
        waiting.await.expect("the paced send ends");
    });
    let expected: Vec<_> =
        (0..=SUBSCRIBER_MESSAGES as u64).map(|millisecond| at_millisecond(2_000 + millisecond)).collect();
    assert_eq!(sent_in_order, expected, "every event, in order");
    // Live now: a reader without room is dropped, with the time it was.
    let _ = feed.on_resolved(at_millisecond(9_000));
    let mut paced = Vec::new();
    for millisecond in 0..=SUBSCRIBER_MESSAGES as u64 {
        paced.extend(feed.on_events(&[event(b"k", at_millisecond(10_000 + millisecond))]));
    }
    assert!(paced.is_empty(), "a live feed never waits for a subscriber");
    assert_eq!(feed.subscribers(), 0);
    assert!(subscription.dropped_for_lag_at().is_some());
}

#[test]
fn a_paced_subscriber_is_waited_for_until_sent_a_resolved_timestamp_above_its_start() {
    let region = whole_key_space();
    let from = at_millisecond(1_000);
    let feed = Arc::new(SharedFeed::new(region.clone(), from));
    let subscription = feed.join(&region, &interest(from, false)).expect("joins a catch-up: paced");
    let mut paced = Vec::new();
    for millisecond in 0..=SUBSCRIBER_MESSAGES as u64 {
        paced.extend(feed.on_events(&[event(b"k", at_millisecond(2_000 + millisecond))]));
    }
    assert_eq!(paced.len(), 1);
    // Caught up with nothing resolved above the start yet (the store's first word):
    // the live events that follow still wait for the subscriber.
    assert!(feed.on_resolved(from).is_empty());
    let paced = feed.on_events(&[event(b"k", at_millisecond(3_000))]);
    assert_eq!((paced.len(), feed.subscribers()), (1, 1), "still paced, not dropped");
    // Its first resolved timestamp above the start is sent whatever its room...
    let paced = feed.on_resolved(at_millisecond(4_000));
    assert!(matches!(&paced[..], [send] if matches!(send.message, FeedNews::Resolved(_))));
    // ...and from there it is a live subscriber: dropped when it lags.
    assert!(feed.on_events(&[event(b"k", at_millisecond(5_000))]).is_empty());
    assert_eq!(feed.subscribers(), 0);
    assert!(subscription.dropped_for_lag_at().is_some());
}

#[test]
fn a_paced_subscriber_that_takes_nothing_is_dropped_after_the_limit_and_the_others_go_on() {
    let region = whole_key_space();
    let from = at_millisecond(1_000);
    let feed = Arc::new(SharedFeed::new(region.clone(), from));
    let stalled = feed.join(&region, &interest(from, false)).expect("joins");
    let mut reading = feed.join(&region, &interest(from, false)).expect("joins");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    let received = runtime.block_on(async {
        let mut received = 0;
        for millisecond in 0..2 * SUBSCRIBER_MESSAGES as u64 {
            for paced in feed.on_events(&[event(b"k", at_millisecond(2_000 + millisecond))]) {
                paced.send(&feed, tokio::time::Instant::now() + Duration::from_millis(50)).await;
            }
            received += drain(&mut reading.news).len();
        }
        received
    });
    assert!(stalled.dropped_for_lag_at().is_some(), "the stalled subscriber holds the feed no longer");
    assert_eq!(feed.subscribers(), 1);
    assert_eq!(received, 2 * SUBSCRIBER_MESSAGES, "the reading subscriber lost nothing");
}
