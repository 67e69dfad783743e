//! Write groups: concurrent puts and deletes bound for one region leave in one request.
//!
//! Under load, many callers write to the same region at once. Sent one by one, each
//! write pays a gRPC round trip, a Raft entry and an apply of its own; sent together,
//! they share them. The scheme is RocksDB's write group: the first caller to find its
//! region idle leads, and sends its write at once (a lone write waits for no company);
//! callers arriving while that request is in flight queue up; when it returns, the
//! leader hands the lead to the first of them, which takes everything queued meanwhile
//! into the next request.
//!
//! The writes of a group become one atomic entry, which no caller asked for and none
//! can tell: every one of them was in flight at once, so any order among them is one
//! the callers could have seen anyway.
//!
//! This module owns the queues and the hand-over. It must never lose a caller: a
//! leader dropped before its request returns (its future cancelled) still hands the
//! lead on, and the writes it carried are told their outcome is unknown, since the
//! request may have left.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use tessera_engine::storage::proto::WriteRequest as Write;
use tokio::sync::oneshot;

use super::ClientError;

/// At most this many writes, and about this many bytes of keys and values, per group.
pub const MAX_GROUP_WRITES: usize = 256;
pub const MAX_GROUP_BYTES: usize = 1 << 20;

/// A write waiting for its group.
pub struct Pending {
    pub key: Vec<u8>,
    pub write: Write,
    pub bytes: usize,
}

/// What a queued caller is told.
pub enum Turn {
    /// Its group returned: the write's outcome.
    Done(Outcome),
    /// It leads the next group (and gets its write back to send with it).
    Lead(Pending),
}

/// A write's outcome in its group.
pub enum Outcome {
    Applied,
    Failed(ClientError),
    /// The group was refused as a whole before it could apply (a stale route, a split,
    /// a bad write in it): the write goes on its own.
    SendAlone(Pending),
}

struct Waiter {
    pending: Pending,
    turn: oneshot::Sender<Turn>,
}

#[derive(Default)]
struct Queue {
    /// A group of this region is in flight.
    busy: bool,
    waiting: VecDeque<Waiter>,
}

#[derive(Default)]
pub struct WriteGroups {
    queues: Mutex<HashMap<u64, Queue>>,
}

/// Whether the caller leads at once or waits for its turn.
pub enum Joined {
    Lead(Pending),
    Wait(oneshot::Receiver<Turn>),
}

/// The writes a leader sends, and whom to tell how each went.
pub struct WriteGroup {
    pub writes: Vec<(Pending, Option<oneshot::Sender<Turn>>)>,
}

impl WriteGroups {
    /// Queues a write for `region_id`, or makes the caller the leader if the region is
    /// idle.
    pub fn join(&self, region_id: u64, pending: Pending) -> Joined {
        let mut queues = self.queues.lock();
        let queue = queues.entry(region_id).or_default();
        if !queue.busy {
            queue.busy = true;
            return Joined::Lead(pending);
        }
        let (turn, receiver) = oneshot::channel();
        queue.waiting.push_back(Waiter { pending, turn });
        Joined::Wait(receiver)
    }

    /// The leader's group: its own write and what queued behind it, within the limits.
    pub fn take(&self, region_id: u64, leader: Pending) -> WriteGroup {
        let mut bytes = leader.bytes;
        let mut writes = vec![(leader, None)];
        let mut queues = self.queues.lock();
        if let Some(queue) = queues.get_mut(&region_id) {
            while writes.len() < MAX_GROUP_WRITES {
                let Some(next) = queue.waiting.front() else { break };
                if bytes + next.pending.bytes > MAX_GROUP_BYTES {
                    break;
                }
                let Some(waiter) = queue.waiting.pop_front() else { break };
                bytes += waiter.pending.bytes;
                writes.push((waiter.pending, Some(waiter.turn)));
            }
        }
        WriteGroup { writes }
    }

    /// Passes the lead to the first caller still waiting, or marks the region idle.
    pub fn hand_over(&self, region_id: u64) {
        let mut queues = self.queues.lock();
        let Some(queue) = queues.get_mut(&region_id) else { return };
        while let Some(waiter) = queue.waiting.pop_front() {
            // A waiter whose caller went away cannot lead: try the next.
            match waiter.turn.send(Turn::Lead(waiter.pending)) {
                Ok(()) => return,
                Err(_) => continue,
            }
        }
        queues.remove(&region_id);
    }
}

/// Hands the lead on when dropped: a leader whose future is cancelled mid-request must
/// not strand the callers queued behind it.
pub struct LeadGuard<'a> {
    pub groups: &'a WriteGroups,
    pub region_id: u64,
}

impl Drop for LeadGuard<'_> {
    fn drop(&mut self) {
        self.groups.hand_over(self.region_id);
    }
}

/// What a queued caller's write came to, when its turn channel closed without a word:
/// the leader carrying it was dropped, maybe after sending.
pub fn abandoned() -> ClientError {
    ClientError::OutcomeUnknown("the request carrying this write was abandoned by its caller".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(key: &str, bytes: usize) -> Pending {
        Pending { key: key.as_bytes().to_vec(), write: Write::default(), bytes }
    }

    #[test]
    fn the_first_writer_leads_and_later_ones_wait_their_turn() {
        let groups = WriteGroups::default();
        let Joined::Lead(leader) = groups.join(7, pending("a", 10)) else { panic!("an idle region") };
        let Joined::Wait(mut second) = groups.join(7, pending("b", 10)) else { panic!("busy") };
        let Joined::Wait(_third) = groups.join(7, pending("c", 10)) else { panic!("busy") };
        // Another region is not held up by this one.
        assert!(matches!(groups.join(8, pending("x", 10)), Joined::Lead(_)));
        let group = groups.take(7, leader);
        let keys: Vec<&[u8]> = group.writes.iter().map(|(p, _)| p.key.as_slice()).collect();
        assert_eq!(keys, vec![b"a".as_slice(), b"b", b"c"]);
        assert!(second.try_recv().is_err(), "nobody is told anything before the group returns");
        groups.hand_over(7);
        // Everyone was in the group: the region is idle again, and the next writer leads.
        assert!(matches!(groups.join(7, pending("d", 10)), Joined::Lead(_)));
    }

    #[test]
    fn the_lead_passes_to_the_first_waiter_still_listening() {
        let groups = WriteGroups::default();
        let Joined::Lead(_leader) = groups.join(1, pending("a", 10)) else { panic!("idle") };
        let Joined::Wait(gone) = groups.join(1, pending("b", 10)) else { panic!("busy") };
        let Joined::Wait(mut next) = groups.join(1, pending("c", 10)) else { panic!("busy") };
        drop(gone);
        {
            // A leader dropped mid-request still hands over.
            let _guard = LeadGuard { groups: &groups, region_id: 1 };
        }
        match next.try_recv() {
            Ok(Turn::Lead(pending)) => assert_eq!(pending.key, b"c"),
            _ => panic!("the first waiter still listening leads"),
        }
    }

    #[test]
    fn groups_stop_at_their_limits() {
        let groups = WriteGroups::default();
        let Joined::Lead(leader) = groups.join(1, pending("a", MAX_GROUP_BYTES / 2)) else { panic!("idle") };
        let _b = groups.join(1, pending("b", MAX_GROUP_BYTES / 2));
        let _c = groups.join(1, pending("c", 1));
        let group = groups.take(1, leader);
        assert_eq!(group.writes.len(), 2, "the third write would pass the byte limit");
        let Joined::Lead(leader) = groups.join(2, pending("a", 0)) else { panic!("idle") };
        let _waiting: Vec<_> = (0..MAX_GROUP_WRITES + 5).map(|_| groups.join(2, pending("k", 0))).collect();
        assert_eq!(groups.take(2, leader).writes.len(), MAX_GROUP_WRITES);
    }
}
