//! The watchers of a chaos round: opened at random times during the faults, each on a
//! random part of the transactional key space, from a timestamp taken when it opens
//! (after reading its range there). A watch that ends with an error is resumed from
//! the last timestamp it delivered, as an application would; one refused as compacted
//! cannot be, and that is a problem of the round. After the faults every watcher runs
//! until it is notified past the end of the round, and `watches::check` judges what it
//! received.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tessera_server::client::{Client, Watch, WatchError, WatchMessage, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::watches::{Delivery, WatcherRecord};
use super::workload::until_done;

/// The bounds watch ranges are drawn from (an empty end: to the end of the key space):
/// the accounts, the two families of lists, and cuts inside each.
const BOUNDS: [&str; 7] = ["", "bank-", "bank-5", "ser-", "ser-2", "si-", "si-2"];

/// How often watchers are told how far they have seen.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// The longest pause between two watchers opening.
const MAX_PAUSE: Duration = Duration::from_secs(4);

/// A watcher's task: what it recorded, or why it could not go on.
type Follower = JoinHandle<Result<(), String>>;

/// The round's watchers.
pub struct Watchers {
    followers: Vec<(Arc<Mutex<WatcherRecord>>, Follower)>,
    /// Set to the end of the round: every watcher runs until notified past it.
    until: watch::Sender<Option<u64>>,
}

/// Opens watchers at random times until `stop` is set.
pub async fn run(
    client: Arc<Client>,
    seed: u64,
    mut stop: watch::Receiver<bool>,
    deadline: Duration,
) -> Watchers {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7761_7463_6800);
    let (until, until_receiver) = watch::channel(None);
    let mut followers = Vec::new();
    while !*stop.borrow() {
        let first = rng.random_range(0..BOUNDS.len());
        let last = rng.random_range(first + 1..=BOUNDS.len());
        let range = (BOUNDS[first].to_string(), BOUNDS.get(last).copied().unwrap_or_default().to_string());
        let name = format!("watcher{} [{:?}, {:?})", followers.len(), range.0, range.1);
        let record = Arc::new(Mutex::new(WatcherRecord { name, range, ..WatcherRecord::default() }));
        let task = follow(client.clone(), record.clone(), until_receiver.clone(), deadline);
        followers.push((record, tokio::spawn(task)));
        let pause = rng.random_range(Duration::ZERO..MAX_PAUSE);
        let _ = tokio::time::timeout(pause, stop.wait_for(|stopped| *stopped)).await;
    }
    Watchers { followers, until }
}

impl Watchers {
    /// Lets every watcher run until notified past `until` (at most `deadline`);
    /// answers what each recorded, or why it fell short.
    pub async fn finish(self, until: u64, deadline: Duration) -> Vec<Result<WatcherRecord, String>> {
        let _ = self.until.send(Some(until));
        let mut finished = Vec::new();
        for (record, mut follower) in self.followers {
            let outcome = match tokio::time::timeout(deadline, &mut follower).await {
                Ok(Ok(Ok(()))) => Ok(record.lock().clone()),
                Ok(Ok(Err(why))) => Err(format!("{}: {why}", record.lock().name)),
                Ok(Err(error)) => Err(format!("{}: its task failed: {error}", record.lock().name)),
                Err(_) => {
                    follower.abort();
                    Err(format!("{}: not notified past {until} within {deadline:?}", record.lock().name))
                }
            };
            finished.push(outcome);
        }
        finished
    }

    pub fn len(&self) -> usize {
        self.followers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.followers.is_empty()
    }
}

/// One watcher: reads its range at its start, then follows it, resuming after errors,
/// until notified past the end of the round.
async fn follow(
    client: Arc<Client>,
    record: Arc<Mutex<WatcherRecord>>,
    mut until: watch::Receiver<Option<u64>>,
    deadline: Duration,
) -> Result<(), String> {
    let (start, end) = record.lock().range.clone();
    // The watch first: its hold on garbage collection keeps its start readable.
    let options = |from| WatchOptions {
        start: start.clone().into_bytes(),
        end: end.clone().into_bytes(),
        from,
        prev_values: false,
        progress_interval: Some(PROGRESS_INTERVAL),
    };
    let mut stream = resume(&client, &options(None), deadline).await?;
    let from = stream.from();
    let initial = until_done(deadline, || async {
        client.snapshot_at(from).await?.scan(start.as_bytes(), end.as_bytes(), 0, false).await
    })
    .await
    .map_err(|error| format!("no read of the range at its start {from}: {error}"))?;
    {
        let mut record = record.lock();
        record.from = from.as_u64();
        record.initial = initial.into_iter().map(|pair| (text(&pair.key), text(&pair.value))).collect();
    }
    let mut seen = from;
    loop {
        loop {
            let message = tokio::select! {
                message = stream.next() => message,
                // Nothing to do but look again (the end may already be passed).
                Ok(()) = until.changed() => continue,
            };
            match message {
                Some(Ok(WatchMessage::Transaction { commit_ts, events })) => {
                    let versions =
                        events.into_iter().map(|event| (text(&event.key), event.value.map(|v| text(&v))));
                    let delivery =
                        Delivery::Transaction { commit_ts: commit_ts.as_u64(), versions: versions.collect() };
                    record.lock().deliveries.push(delivery);
                    seen = commit_ts;
                }
                Some(Ok(WatchMessage::Progress(at))) => {
                    record.lock().deliveries.push(Delivery::Progress(at.as_u64()));
                    seen = at;
                    if until.borrow().is_some_and(|until| at.as_u64() >= until) {
                        return Ok(());
                    }
                }
                Some(Err(WatchError::Compacted { from, safe_point })) => {
                    return Err(format!(
                        "refused as compacted when resuming from {from} (safe point {safe_point})"
                    ));
                }
                // Resumed from what it has seen.
                Some(Err(_)) | None => break,
            }
        }
        stream = resume(&client, &options(Some(seen)), deadline).await?;
    }
}

/// A watch from `options.from`, tried until `deadline`; refused for good as compacted.
async fn resume(client: &Arc<Client>, options: &WatchOptions, deadline: Duration) -> Result<Watch, String> {
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        match client.watch(options.clone()).await {
            Ok(watch) => return Ok(watch),
            Err(WatchError::Compacted { from, safe_point }) => {
                return Err(format!(
                    "refused as compacted when resuming from {from} (safe point {safe_point})"
                ));
            }
            Err(error) if tokio::time::Instant::now() >= give_up => {
                return Err(format!("could not resume from {:?}: {error}", options.from));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
