//! The simulated network: every message waits in one ordered queue until its delivery
//! step, and faults decide whether and when it arrives.
//!
//! Loss, duplication, random delay (which reorders), slow replicas and directed link
//! cuts (symmetric partitions are two cuts) are all drawn from the simulation's seeded
//! RNG, so a seed replays the same network exactly.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use tessera_engine::raft::proto::Message;

/// Fault settings of the network at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct NetworkFaults {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplication: f64,
    /// Extra random delay, in steps, on top of the base latency; larger values reorder more.
    pub jitter: u64,
    /// Directed links that deliver nothing: (from, to).
    pub blocked: BTreeSet<(u64, u64)>,
    /// Replicas whose messages (in and out) take much longer.
    pub slow: BTreeSet<u64>,
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    Lost,
    Partitioned,
}

#[derive(Debug, Default)]
pub(crate) struct Network {
    pub faults: NetworkFaults,
    queue: BTreeMap<(u64, u64), Message>,
    sequence: u64,
}

/// Steps a message takes at least.
const BASE_LATENCY: u64 = 1;
/// Extra steps for a message to or from a slow replica.
const SLOW_LATENCY: u64 = 30;

impl Network {
    /// Queues `message` sent at step `now`, unless the faults drop it.
    pub(crate) fn send(&mut self, message: Message, now: u64, rng: &mut ChaCha8Rng) -> Result<(), Dropped> {
        if self.faults.blocked.contains(&(message.from, message.to)) {
            return Err(Dropped::Partitioned);
        }
        if self.faults.loss > 0.0 && rng.random_bool(self.faults.loss) {
            return Err(Dropped::Lost);
        }
        let copies =
            if self.faults.duplication > 0.0 && rng.random_bool(self.faults.duplication) { 2 } else { 1 };
        for _ in 0..copies {
            let mut delay = BASE_LATENCY + rng.random_range(0..=self.faults.jitter);
            if self.faults.slow.contains(&message.from) || self.faults.slow.contains(&message.to) {
                delay += SLOW_LATENCY + rng.random_range(0..SLOW_LATENCY);
            }
            self.sequence += 1;
            self.queue.insert((now + delay, self.sequence), message.clone());
        }
        Ok(())
    }

    /// Removes and returns the next message due at or before `now`.
    pub(crate) fn next_due(&mut self, now: u64) -> Option<Message> {
        let (&(due, _), _) = self.queue.first_key_value()?;
        if due > now {
            return None;
        }
        self.queue.pop_first().map(|(_, message)| message)
    }

    /// Whether a message now in flight would still arrive: partitions cut messages
    /// already on the wire too.
    pub(crate) fn link_open(&self, from: u64, to: u64) -> bool {
        !self.faults.blocked.contains(&(from, to))
    }

    pub(crate) fn heal(&mut self) {
        self.faults = NetworkFaults::default();
    }
}
