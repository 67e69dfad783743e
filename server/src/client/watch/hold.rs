//! A client's hold on garbage collection for its watches.
//!
//! A watch reopens a span from the span's resolved timestamp after every fault, and
//! resumes from what it delivered after an error: the versions after those timestamps
//! must still be there. So while a client has watches, it holds garbage collection
//! below the lowest point any of them may reopen from (the lowest released frontier),
//! through the placement driver ([`crate::client::GrpcPdClient::hold_gc_async`]): one
//! hold per client, renewed every [`RENEW_EVERY`] with a time to live of [`HOLD_TTL`],
//! so that a client that dies stops holding within it. A watch is registered, and the
//! hold taken at its start, before the watch runs: a start the driver will not hold
//! (garbage collection is past it) is refused as compacted at once.
//!
//! Updates are sent one at a time, each with the lowest frontier at the moment it is
//! sent, so that a lower hold is never overwritten by an older, higher one.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tessera_engine::timestamp::Timestamp;

use super::WatchError;
use crate::client::GrpcPdClient;

/// How long a hold lasts without renewal.
const HOLD_TTL: Duration = Duration::from_secs(30);

/// How often a client with watches renews its hold.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// The watches of one client and their frontiers.
pub(crate) struct GcHolds {
    /// The client's name at the driver.
    service: String,
    frontiers: Mutex<Frontiers>,
    /// Held while an update is sent: updates go one at a time.
    sending: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Frontiers {
    by_watch: BTreeMap<u64, Timestamp>,
    next_watch: u64,
    /// Whether the renewing task runs.
    renewing: bool,
}

/// A watch's place in its client's hold; dropping it lets the hold rise past it.
pub(crate) struct HoldEntry {
    holds: Arc<GcHolds>,
    watch: u64,
}

impl Default for GcHolds {
    fn default() -> GcHolds {
        // Unique enough among the clients of a cluster: a random number and the process.
        let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        GcHolds {
            service: format!("watch-{}-{random:016x}", std::process::id()),
            frontiers: Mutex::new(Frontiers::default()),
            sending: tokio::sync::Mutex::new(()),
        }
    }
}

impl GcHolds {
    /// Registers a watch from `from` and holds garbage collection below it (refused as
    /// compacted when it is too late); renewed from then on while watches remain.
    pub(crate) async fn register(
        self: &Arc<Self>,
        pd: &Arc<GrpcPdClient>,
        from: Timestamp,
    ) -> Result<HoldEntry, WatchError> {
        let (watch, start_renewing) = {
            let mut frontiers = self.frontiers.lock();
            let watch = frontiers.next_watch;
            frontiers.next_watch += 1;
            frontiers.by_watch.insert(watch, from);
            (watch, !std::mem::replace(&mut frontiers.renewing, true))
        };
        let entry = HoldEntry { holds: self.clone(), watch };
        // Before anything can fail or be cancelled: the renewer must run while watches
        // remain, whatever becomes of this one.
        if start_renewing {
            tokio::spawn(renew(Arc::downgrade(self), pd.clone()));
        }
        let floor = self.send(pd).await.map_err(|error| WatchError::Client(error.into()))?;
        if from.as_u64() <= floor {
            return Err(WatchError::Compacted { from, safe_point: Timestamp::from_u64(floor) });
        }
        Ok(entry)
    }

    /// Sends the hold at the lowest frontier now (or its release when none is left);
    /// answers the floor the driver holds above. A frontier at or below the floor is
    /// lost already (its watch will be refused as compacted when it reopens there), and
    /// must not cost the others their hold: refused, the hold is sent again at the
    /// lowest frontier above the floor.
    async fn send(&self, pd: &GrpcPdClient) -> Result<u64, tessera_placement::PdError> {
        let _one_at_a_time = self.sending.lock().await;
        let frontiers: Vec<Timestamp> = self.frontiers.lock().by_watch.values().copied().collect();
        let lowest = frontiers.iter().copied().min().unwrap_or(Timestamp::ZERO);
        let (held, floor) = pd.hold_gc_async(&self.service, lowest, HOLD_TTL).await?;
        if !held && lowest != Timestamp::ZERO {
            let alive = frontiers.into_iter().filter(|frontier| frontier.as_u64() > floor).min();
            if let Some(alive) = alive {
                pd.hold_gc_async(&self.service, alive, HOLD_TTL).await?;
            }
        }
        Ok(floor)
    }
}

impl HoldEntry {
    /// Everything up to `released` went out: the watch will not reopen below it.
    pub(crate) fn advance(&self, released: Timestamp) {
        if let Some(frontier) = self.holds.frontiers.lock().by_watch.get_mut(&self.watch) {
            *frontier = (*frontier).max(released);
        }
    }
}

impl Drop for HoldEntry {
    fn drop(&mut self) {
        self.holds.frontiers.lock().by_watch.remove(&self.watch);
    }
}

/// Renews the hold while the client has watches; releases it when the last is gone.
async fn renew(holds: Weak<GcHolds>, pd: Arc<GrpcPdClient>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let Some(holds) = holds.upgrade() else { return };
        let none_left = {
            let mut frontiers = holds.frontiers.lock();
            let none_left = frontiers.by_watch.is_empty();
            frontiers.renewing = !none_left;
            none_left
        };
        // A renewal that fails is tried again next time; the hold lasts three periods.
        if let Err(error) = holds.send(&pd).await {
            tracing::warn!(%error, "renewing the watches' hold on garbage collection failed");
        }
        if none_left {
            return;
        }
    }
}
