//! Liveness between stores, whatever their regions do.
//!
//! Hibernating regions send nothing, so a follower store cannot tell from its regions
//! that the store leading them went silent: it keeps sleeping, and a region whose
//! leader's store is cut off from the other stores (but not from the placement driver,
//! which therefore never declares it down) would have no leader for as long as the
//! partition lasts. So every store probes every store it shares regions with, once per
//! heartbeat interval: one empty frame per store, O(stores) and not O(regions). A store
//! heard from by nothing (no probe, no Raft traffic) for an election timeout is silent:
//! every region with a replica there is woken ([`super::Store::on_store_down`]'s
//! path), so that its followers elect another leader and its leaders here check their
//! quorum. A store heard again is no longer silent; a store neither heard from nor
//! written to for a long while is forgotten.
//!
//! This module owns the bookkeeping and the probes; waking is the workers' (by
//! `WorkerMsg::StoreDown`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::proto::frame::StoreFrame;

use super::StoreConfig;
use super::transport::Transport;

/// A store neither heard from nor written to for this long is no longer probed.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

pub(crate) struct StoreLiveness {
    store_id: u64,
    clock: Arc<dyn Clock>,
    probe_interval: Duration,
    silent_after: Duration,
    state: Mutex<LivenessState>,
}

#[derive(Default)]
struct LivenessState {
    peers: HashMap<u64, PeerStore>,
    last_probe: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct PeerStore {
    /// When a frame last came from it (or when it was first talked to).
    last_heard: Duration,
    /// When a frame was last sent to it by the regions here.
    last_written: Duration,
    silent: bool,
}

impl StoreLiveness {
    pub(crate) fn new(config: &StoreConfig) -> StoreLiveness {
        let ticks =
            |count: u64| config.tick_interval.saturating_mul(u32::try_from(count).unwrap_or(u32::MAX));
        StoreLiveness {
            store_id: config.store_id,
            clock: config.clock.clone(),
            probe_interval: ticks(config.heartbeat_ticks),
            silent_after: ticks(config.election_ticks),
            state: Mutex::new(LivenessState::default()),
        }
    }

    /// A frame arrived from `store_id`.
    pub(crate) fn heard_from(&self, store_id: u64) {
        if store_id == self.store_id || store_id == 0 {
            return;
        }
        let now = self.clock.now();
        let mut state = self.state.lock();
        let peer = state.peers.entry(store_id).or_insert(PeerStore {
            last_heard: now,
            last_written: now,
            silent: false,
        });
        peer.last_heard = now;
        if peer.silent {
            peer.silent = false;
            tracing::info!(store_id, "store heard from again");
        }
    }

    /// The regions here sent a frame to `store_id`: it is a store to probe.
    pub(crate) fn wrote_to(&self, store_id: u64) {
        if store_id == self.store_id || store_id == 0 {
            return;
        }
        let now = self.clock.now();
        let mut state = self.state.lock();
        state.peers.entry(store_id).and_modify(|peer| peer.last_written = now).or_insert(PeerStore {
            last_heard: now,
            last_written: now,
            silent: false,
        });
    }

    /// Once per tick: probes every known store when a heartbeat interval has passed, and
    /// returns the stores that have just gone silent.
    pub(crate) fn on_tick(&self, transport: &dyn Transport) -> Vec<u64> {
        let now = self.clock.now();
        let mut state = self.state.lock();
        state
            .peers
            .retain(|_, peer| now.saturating_sub(peer.last_heard.max(peer.last_written)) < FORGET_AFTER);
        let mut newly_silent = Vec::new();
        for (&store_id, peer) in state.peers.iter_mut() {
            if !peer.silent && now.saturating_sub(peer.last_heard) >= self.silent_after {
                peer.silent = true;
                newly_silent.push(store_id);
            }
        }
        let probe_due = state.last_probe.is_none_or(|last| now.saturating_sub(last) >= self.probe_interval);
        let targets: Vec<u64> = if probe_due { state.peers.keys().copied().collect() } else { Vec::new() };
        if probe_due {
            state.last_probe = Some(now);
        }
        drop(state);
        for to_store in targets {
            transport.send(StoreFrame { from_store: self.store_id, to_store, ..StoreFrame::default() });
        }
        for &store_id in &newly_silent {
            tracing::warn!(
                store_id,
                silent_for_ms = self.silent_after.as_millis() as u64,
                "store silent: waking the regions with a replica there"
            );
        }
        newly_silent
    }
}

/// The store's transport, noting every store the regions here write to (the stores to
/// probe).
pub(crate) struct NotingTransport {
    pub inner: Arc<dyn Transport>,
    pub liveness: Arc<StoreLiveness>,
}

impl Transport for NotingTransport {
    fn send(&self, frame: StoreFrame) {
        self.liveness.wrote_to(frame.to_store);
        self.inner.send(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ControlledClock;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<u64>>);

    impl Transport for Recorded {
        fn send(&self, frame: StoreFrame) {
            self.0.lock().push(frame.to_store);
        }
    }

    #[test]
    fn a_store_heard_from_by_nothing_for_an_election_timeout_is_silent_once() {
        let clock = ControlledClock::new();
        clock.stop();
        let config = StoreConfig { clock: clock.clone(), ..StoreConfig::new(1) };
        let liveness = StoreLiveness::new(&config);
        let sent = Recorded::default();
        liveness.wrote_to(2);
        liveness.wrote_to(3);
        liveness.wrote_to(1);
        assert!(liveness.on_tick(&sent).is_empty());
        assert_eq!(sent.0.lock().len(), 2, "one probe per other store");
        let election = config.tick_interval * config.election_ticks as u32;
        clock.resume_after(election / 2);
        clock.stop();
        liveness.heard_from(2);
        clock.resume_after(election / 2);
        clock.stop();
        assert_eq!(liveness.on_tick(&sent), vec![3], "3 was not heard from for an election timeout");
        assert!(liveness.on_tick(&sent).is_empty(), "reported once");
        liveness.heard_from(3);
        clock.resume_after(election);
        clock.stop();
        let mut silent = liveness.on_tick(&sent);
        silent.sort_unstable();
        assert_eq!(silent, vec![2, 3], "both silent again after a whole election timeout");
    }
}
