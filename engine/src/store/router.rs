//! Which raft worker owns which region, and the mailboxes that reach them.
//!
//! A region belongs to one worker for its whole life (by its id), so a peer is only ever
//! touched by one thread and nothing needs a lock. Frames from other stores are split by
//! worker on arrival, keeping each worker's share in one message.
//!
//! A worker's inbox is unbounded for what the store itself sends it (ticks, proposals,
//! answers between workers: refusing those could deadlock or lose an answer), but what
//! comes from outside is bounded, so that a flood cannot take the store's memory:
//! - a share of a frame from another store arriving at an inbox holding
//!   [`MAX_INBOX_MESSAGES_FOR_FRAMES`] messages is dropped, as the network would drop
//!   it (Raft retransmits);
//! - a client's read or write arriving at an inbox holding
//!   [`MAX_INBOX_MESSAGES_FOR_REQUESTS`] is refused as busy, before it was proposed
//!   (retryable: the client backs off and sends it again). That is the backpressure
//!   a client sees when it sends faster than the worker applies.

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::proto::frame::StoreFrame;

use super::errors::StoreError;
use super::liveness::StoreLiveness;
use super::transport::BatchSink;
use super::worker::WorkerMsg;

/// Past this many messages waiting in a worker's inbox, frames from other stores for it
/// are dropped on arrival.
pub(crate) const MAX_INBOX_MESSAGES_FOR_FRAMES: usize = 65_536;

/// Past this many messages waiting in a worker's inbox, clients' reads and writes for
/// it are refused as busy. Below the frames' bound: under a flood of requests, Raft's
/// own traffic still gets in, so the replicas keep up and the queue drains.
pub(crate) const MAX_INBOX_MESSAGES_FOR_REQUESTS: usize = 32_768;

#[derive(Clone)]
pub(crate) struct Router {
    workers: Arc<Vec<Sender<WorkerMsg>>>,
    /// Told of every frame that arrives, whoever it is for.
    liveness: Arc<StoreLiveness>,
}

impl Router {
    pub(crate) fn new(workers: Vec<Sender<WorkerMsg>>, liveness: Arc<StoreLiveness>) -> Router {
        assert!(!workers.is_empty(), "invariant: a store runs at least one raft worker");
        Router { workers: Arc::new(workers), liveness }
    }

    pub(crate) fn workers(&self) -> usize {
        self.workers.len()
    }

    pub(crate) fn worker_of(&self, region_id: u64) -> usize {
        (region_id % self.workers.len() as u64) as usize
    }

    /// Sends to the worker owning `region_id`; false if the store is stopping.
    /// Hands `message` to its region's worker; false if the worker has stopped, in
    /// which case the request it carries is refused (the store is shutting down).
    pub(crate) fn send(&self, region_id: u64, message: WorkerMsg) -> bool {
        match self.workers[self.worker_of(region_id)].send(message) {
            Ok(()) => true,
            Err(returned) => {
                returned.0.refuse(StoreError::ShuttingDown);
                false
            }
        }
    }

    /// Hands a client's request to its region's worker, or refuses it as busy when the
    /// worker's inbox holds [`MAX_INBOX_MESSAGES_FOR_REQUESTS`] messages.
    pub(crate) fn send_request(&self, region_id: u64, message: WorkerMsg) {
        let queued = self.workers[self.worker_of(region_id)].len();
        if queued >= MAX_INBOX_MESSAGES_FOR_REQUESTS {
            crate::metrics::METRICS.requests_refused_busy.increment(1);
            message.refuse(StoreError::Busy { region_id, queued });
            return;
        }
        self.send(region_id, message);
    }

    pub(crate) fn broadcast(&self, make: impl Fn() -> WorkerMsg) {
        for worker in self.workers.iter() {
            let _ = worker.send(make());
        }
    }
}

impl BatchSink for Router {
    fn deliver(&self, batch: StoreFrame) {
        self.liveness.heard_from(batch.from_store);
        let mut shares: Vec<StoreFrame> = (0..self.workers.len())
            .map(|_| StoreFrame {
                from_store: batch.from_store,
                to_store: batch.to_store,
                ..StoreFrame::default()
            })
            .collect();
        for message in batch.messages {
            shares[self.worker_of(message.region_id)].messages.push(message);
        }
        for heartbeat in batch.heartbeats {
            shares[self.worker_of(heartbeat.region_id)].heartbeats.push(heartbeat);
        }
        for response in batch.heartbeat_responses {
            shares[self.worker_of(response.region_id)].heartbeat_responses.push(response);
        }
        for (worker, share) in self.workers.iter().zip(shares) {
            if !share.messages.is_empty()
                || !share.heartbeats.is_empty()
                || !share.heartbeat_responses.is_empty()
            {
                if worker.len() >= MAX_INBOX_MESSAGES_FOR_FRAMES {
                    crate::metrics::METRICS.inbound_frames_dropped.increment(1);
                    continue;
                }
                let _ = worker.send(WorkerMsg::Inbound(share));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::HeartbeatEntry;
    use crate::store::StoreConfig;

    fn frame_for_region(region_id: u64) -> StoreFrame {
        let heartbeat = HeartbeatEntry { region_id, ..HeartbeatEntry::default() };
        StoreFrame { from_store: 2, to_store: 1, heartbeats: vec![heartbeat], ..StoreFrame::default() }
    }

    #[test]
    fn frames_from_other_stores_are_dropped_at_a_full_inbox_and_taken_again_below_it() {
        let (sender, inbox) = crossbeam_channel::unbounded();
        let router = Router::new(vec![sender], Arc::new(StoreLiveness::new(&StoreConfig::new(1))));
        for region_id in 0..MAX_INBOX_MESSAGES_FOR_FRAMES as u64 {
            router.deliver(frame_for_region(region_id));
        }
        assert_eq!(inbox.len(), MAX_INBOX_MESSAGES_FOR_FRAMES);
        router.deliver(frame_for_region(7));
        assert_eq!(inbox.len(), MAX_INBOX_MESSAGES_FOR_FRAMES, "a frame past the bound was queued");
        inbox.recv().expect("a queued frame");
        router.deliver(frame_for_region(7));
        assert_eq!(inbox.len(), MAX_INBOX_MESSAGES_FOR_FRAMES, "a frame below the bound was dropped");
    }

    fn read_for(region_id: u64, answers: &crossbeam_channel::Sender<Result<(), StoreError>>) -> WorkerMsg {
        let answers = answers.clone();
        let respond = crate::store::Responder::new(move |answer: Result<_, StoreError>| {
            drop(answers.send(answer.map(drop)));
        });
        let request = crate::store::ReadRequest::Get { key: b"k".to_vec() };
        WorkerMsg::Read { region_id, epoch: Default::default(), request, respond }
    }

    #[test]
    fn clients_requests_are_refused_as_busy_at_a_full_inbox_and_taken_below_it() {
        let (sender, inbox) = crossbeam_channel::unbounded();
        let router = Router::new(vec![sender], Arc::new(StoreLiveness::new(&StoreConfig::new(1))));
        let (answers, refusals) = crossbeam_channel::unbounded();
        for _ in 0..MAX_INBOX_MESSAGES_FOR_REQUESTS {
            router.send_request(1, read_for(1, &answers));
        }
        assert_eq!(inbox.len(), MAX_INBOX_MESSAGES_FOR_REQUESTS);
        assert!(refusals.is_empty(), "a request below the bound was refused");
        router.send_request(1, read_for(1, &answers));
        assert_eq!(inbox.len(), MAX_INBOX_MESSAGES_FOR_REQUESTS, "a request past the bound was queued");
        match refusals.try_recv() {
            Ok(Err(StoreError::Busy { region_id: 1, queued })) => {
                assert_eq!(queued, MAX_INBOX_MESSAGES_FOR_REQUESTS)
            }
            other => panic!("not refused as busy: {other:?}"),
        }
        assert_eq!(StoreError::Busy { region_id: 1, queued: 1 }.retry(), crate::store::Retry::Possible);
        inbox.recv().expect("a queued request");
        router.send_request(1, read_for(1, &answers));
        assert_eq!(inbox.len(), MAX_INBOX_MESSAGES_FOR_REQUESTS, "a request below the bound was refused");
        // Frames from other stores still get in above the requests' bound.
        router.deliver(frame_for_region(1));
        assert_eq!(inbox.len(), MAX_INBOX_MESSAGES_FOR_REQUESTS + 1);
    }
}
