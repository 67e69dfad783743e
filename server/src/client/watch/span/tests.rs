use super::*;
use crate::client::watch::hub::{SUBSCRIBER_MESSAGES, SharedFeed};
use crate::client::watch::testing::{at_millisecond, event, interest, whole_key_space};

const BRIEFLY: Duration = Duration::from_millis(50);

#[test]
fn a_span_dropped_for_lagging_backs_off_even_when_its_feed_then_ended_for_want_of_subscribers() {
    // Its only subscriber gone, the feed ends without a reason, caught up or not.
    for caught_up in [false, true] {
        let reopen = Reopen::after(true, Some(FeedCloseReason::Unspecified), caught_up, Some(BRIEFLY));
        assert_eq!(reopen, Reopen::AfterLagging { kept_up_for: BRIEFLY }, "caught up: {caught_up}");
    }
    assert_eq!(Reopen::after(true, None, true, Some(BRIEFLY)), Reopen::AfterLagging { kept_up_for: BRIEFLY });
}

#[test]
fn a_feed_that_breaks_fails_before_catching_up_and_is_rejoined_at_once_after() {
    assert_eq!(Reopen::after(false, Some(FeedCloseReason::Unspecified), false, None), Reopen::Failed);
    assert_eq!(Reopen::after(false, Some(FeedCloseReason::Congested), true, Some(BRIEFLY)), Reopen::AtOnce);
    // Congested before the span was sent a resolved timestamp, during the catch-up or
    // after it: the store's queue filled while the reader paced the feed. Lagging (with
    // its backoff), not a failure of the feed, nor a reopen at once.
    for caught_up in [false, true] {
        let reopen = Reopen::after(false, Some(FeedCloseReason::Congested), caught_up, None);
        assert_eq!(reopen, Reopen::AfterLagging { kept_up_for: Duration::ZERO }, "caught up: {caught_up}");
    }
    assert_eq!(
        Reopen::after(false, Some(FeedCloseReason::NotLeader), true, Some(BRIEFLY)),
        Reopen::AfterPause
    );
}

#[test]
fn lagging_backs_off_longer_each_time_until_the_span_keeps_up_for_a_while() {
    let mut backoffs = Backoffs::new();
    let waits: Vec<Duration> = [BRIEFLY, BRIEFLY, BRIEFLY, LAG_FORGIVEN_AFTER]
        .into_iter()
        .map(|kept_up_for| backoffs.next_wait(Reopen::AfterLagging { kept_up_for }, 1).expect("never fails"))
        .collect();
    assert_eq!(waits, [LAG_BACKOFF_MIN, LAG_BACKOFF_MIN * 2, LAG_BACKOFF_MIN * 4, LAG_BACKOFF_MIN]);
    for _ in 0..100 {
        backoffs.next_wait(Reopen::AfterLagging { kept_up_for: BRIEFLY }, 1).expect("lagging never fails");
    }
    assert_eq!(backoffs.lag, LAG_BACKOFF_MAX);
    assert_eq!(backoffs.failed_in_a_row, 0, "lagging is not counted as a failing feed");
}

#[test]
fn feeds_failing_in_a_row_end_the_watch_and_one_that_catches_up_resets_the_count() {
    let mut backoffs = Backoffs::new();
    for _ in 1..FAILED_FEEDS_IN_A_ROW {
        backoffs.next_wait(Reopen::Failed, 9).expect("not yet");
    }
    assert_eq!(backoffs.next_wait(Reopen::AtOnce, 9).expect("at once"), Duration::ZERO);
    for _ in 1..FAILED_FEEDS_IN_A_ROW {
        backoffs.next_wait(Reopen::Failed, 9).expect("counted afresh");
    }
    let failed = backoffs.next_wait(Reopen::Failed, 9);
    assert!(matches!(
        failed,
        Err(WatchError::FeedsKeepFailing { region_id: 9, attempts: FAILED_FEEDS_IN_A_ROW })
    ));
}

/// A span receiving from a subscription in a task of its own, its reports read by the
/// test.
struct Receiving {
    reports: mpsc::Receiver<Report>,
    ended: tokio::task::JoinHandle<Ended>,
}

/// Starts a span over the whole key space from `from` receiving `subscription`, with
/// room for `report_room` reports towards its (test-driven) coordinator.
fn start_receiving(
    hub: &Arc<FeedHub>,
    subscription: Subscription,
    from: Timestamp,
    attentive: Arc<Attention>,
    report_room: usize,
) -> Receiving {
    let (sender, reports) = mpsc::channel(report_room);
    let hub = hub.clone();
    let ended = tokio::spawn(async move {
        let region = whole_key_space();
        let mut span = Span { id: 1, start: Vec::new(), end: Vec::new(), resolved: from };
        let mut rises = attentive.rises();
        let watched = Watched { prev_values: false, attentive: &attentive, rises: &mut rises };
        receive(&hub, &mut span, (subscription, &region), watched, &sender).await
    });
    Receiving { reports, ended }
}

/// A live feed of the whole key space, resolved to `from`, that `hub` follows.
fn live_feed(hub: &FeedHub, from: Timestamp) -> Arc<SharedFeed> {
    let feed = Arc::new(SharedFeed::new(whole_key_space(), from));
    let _ = feed.on_resolved(from);
    hub.adopt(feed.clone(), false);
    feed
}

/// Reads reports until one says the span resolved to `at`; false if none did within
/// a few seconds.
async fn resolved_to(reports: &mut mpsc::Receiver<Report>, at: Timestamp) -> bool {
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(report) = reports.recv().await {
            if matches!(report, Report::Resolved { at: resolved, .. } if resolved == at) {
                return true;
            }
        }
        false
    });
    seen.await.unwrap_or(false)
}

#[tokio::test]
async fn a_span_dropped_for_lagging_counts_the_time_it_kept_up_until_the_drop_not_its_drain() {
    let hub = Arc::new(FeedHub::default());
    let from = at_millisecond(1_000);
    let feed = live_feed(&hub, from);
    let subscription = feed.subscribe(&whole_key_space(), &interest(from, false)).expect("joins");
    let mut receiving = start_receiving(&hub, subscription, from, Arc::new(Attention::default()), 1);
    // The span learns where it is (it keeps up from here), and reports it.
    let _ = feed.on_resolved(at_millisecond(1_500));
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The span waits for news without taking any before the test yields again: its
    // channel fills, and the next message drops it.
    for millisecond in 0..=SUBSCRIBER_MESSAGES as u64 {
        let paced = feed.on_events(&[event(b"k", at_millisecond(2_000 + millisecond))]);
        assert!(paced.is_empty(), "a live feed never waits");
    }
    assert_eq!(feed.subscribers(), 0, "dropped for lagging");
    // The coordinator is slow to take the reports: the drain lasts long after the drop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut events = 0;
    while let Some(report) = receiving.reports.recv().await {
        events += usize::from(matches!(report, Report::Events(_)));
    }
    assert_eq!(events, SUBSCRIBER_MESSAGES, "every message it had room for is reported");
    let ended = receiving.ended.await.expect("the span's task ends");
    let Ended::Reopen(Reopen::AfterLagging { kept_up_for }) = ended else {
        panic!("a span dropped for lagging reopens after lagging");
    };
    assert!(
        kept_up_for >= Duration::from_millis(200),
        "kept up for {kept_up_for:?}: from its first resolved"
    );
    assert!(kept_up_for < Duration::from_millis(450), "kept up for {kept_up_for:?}: the drain was counted");
}

#[tokio::test]
async fn a_span_is_sent_a_resolved_timestamp_withheld_while_its_channel_was_half_full() {
    let hub = Arc::new(FeedHub::default());
    let from = at_millisecond(1_000);
    let feed = live_feed(&hub, from);
    let subscription = feed.subscribe(&whole_key_space(), &interest(from, false)).expect("joins");
    for millisecond in 0..(SUBSCRIBER_MESSAGES / 2) as u64 {
        assert!(feed.on_events(&[event(b"k", at_millisecond(2_000 + millisecond))]).is_empty());
    }
    // Owed (events were sent) but withheld: the channel is half full. The region then
    // stays quiet, so no later resolved timestamp would carry the news.
    let _ = feed.on_resolved(at_millisecond(9_000));
    let mut receiving = start_receiving(&hub, subscription, from, Arc::new(Attention::default()), 64);
    assert!(
        resolved_to(&mut receiving.reports, at_millisecond(9_000)).await,
        "the withheld one was never sent"
    );
    receiving.ended.abort();
}

#[tokio::test]
async fn an_idle_span_on_a_second_feed_moves_to_the_first_once_the_first_has_caught_up() {
    let hub = Arc::new(FeedHub::default());
    let first = Arc::new(SharedFeed::new(whole_key_space(), at_millisecond(1_000)));
    hub.adopt(first.clone(), false);
    let from = at_millisecond(5_000);
    let second = live_feed(&hub, from);
    let subscription = second.subscribe(&whole_key_space(), &interest(from, false)).expect("joins");
    let mut receiving = start_receiving(&hub, subscription, from, Arc::new(Attention::default()), 64);
    // The first resolved timestamp after joining is sent, idle or not; the first feed
    // still catches up, so the span stays.
    let _ = second.on_resolved(at_millisecond(6_000));
    assert!(resolved_to(&mut receiving.reports, at_millisecond(6_000)).await);
    let _ = second.on_resolved(at_millisecond(7_000));
    tokio::time::sleep(MOVE_CHECK_INTERVAL + Duration::from_millis(500)).await;
    assert_eq!((first.subscribers(), second.subscribers()), (0, 1), "moved to a feed still catching up");
    assert!(receiving.reports.try_recv().is_err(), "an idle span is sent nothing while it cannot move");
    // The first catches up; the span learns where it is from its own feed, and moves.
    let _ = first.on_resolved(at_millisecond(2_000));
    assert!(resolved_to(&mut receiving.reports, at_millisecond(7_000)).await, "the span never asked");
    let moved = tokio::time::timeout(Duration::from_secs(5), async {
        while (first.subscribers(), second.subscribers()) != (1, 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(moved.await.is_ok(), "the span did not move to the first feed");
    receiving.ended.abort();
}
