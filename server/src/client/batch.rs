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
//! This module owns the queues and the hand-over. It must never strand a caller: the
//! lead moves on when a leader is dropped mid-request (its future cancelled) and when
//! a caller handed the lead is dropped before taking it; a queued caller gives up at its
//! deadline if no group has taken its write yet (the write was never sent); and a write
//! whose caller went away is never sent later behind its back.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use tessera_engine::proto::command::Write;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::ClientError;

/// At most this many writes, and about this many bytes of keys and values, per group.
pub(crate) const MAX_GROUP_WRITES: usize = 256;
pub(crate) const MAX_GROUP_BYTES: usize = 1 << 20;
/// Writes queued for one region beyond this go alone: a queue must not grow without
/// bound while a region is unreachable.
pub(crate) const MAX_QUEUED: usize = 4 * MAX_GROUP_WRITES;

/// A write waiting for its group.
pub(crate) struct Pending {
    pub key: Vec<u8>,
    pub write: Write,
    pub bytes: usize,
}

/// What a queued caller is told.
pub(crate) enum Turn {
    /// Its group returned: the write's outcome.
    Done(GroupOutcome),
    /// It leads the next group (and gets its write back to send with it).
    Lead(Pending),
}

/// A write's outcome in its group.
pub enum GroupOutcome {
    /// Applied, with the store's result for it.
    Applied(tessera_engine::proto::command::WriteResult),
    Failed(ClientError),
    /// The group was refused as a whole before it could apply (a stale route, a split,
    /// a bad write in it): the write goes on its own.
    SendAlone(Pending),
}

struct Waiter {
    id: u64,
    pending: Pending,
    turn: oneshot::Sender<Turn>,
}

#[derive(Default)]
struct Queue {
    /// A group of this region is in flight, or its lead is being handed over.
    busy: bool,
    waiting: VecDeque<Waiter>,
}

#[derive(Default)]
pub(crate) struct WriteGroups {
    queues: Mutex<HashMap<u64, Queue>>,
    next_id: Mutex<u64>,
}

/// How a caller joined its region's queue.
pub(crate) enum Joined<'a> {
    /// The region was idle: send now.
    Lead(Pending),
    /// A group is in flight: wait for a turn.
    Wait(Waiting<'a>),
    /// The queue is full: send alone.
    Alone(Pending),
}

/// The writes a leader sends: its own, and those of the callers queued behind it.
pub(crate) struct WriteGroup {
    pub leader: Pending,
    pub followers: Vec<(Pending, oneshot::Sender<Turn>)>,
}

impl WriteGroups {
    /// Queues a write for `region_id`, or makes the caller the leader if the region is
    /// idle.
    pub(crate) fn join(&self, region_id: u64, pending: Pending) -> Joined<'_> {
        let id = {
            let mut next = self.next_id.lock();
            *next += 1;
            *next
        };
        let mut queues = self.queues.lock();
        let queue = queues.entry(region_id).or_default();
        if !queue.busy {
            queue.busy = true;
            return Joined::Lead(pending);
        }
        if queue.waiting.len() >= MAX_QUEUED {
            return Joined::Alone(pending);
        }
        let (turn, receiver) = oneshot::channel();
        queue.waiting.push_back(Waiter { id, pending, turn });
        Joined::Wait(Waiting { groups: self, region_id, id, receiver: Some(receiver) })
    }

    /// The leader's group: its own write and what queued behind it, within the limits.
    /// Writes whose callers went away are dropped unsent.
    pub(crate) fn take(&self, region_id: u64, leader: Pending) -> WriteGroup {
        let mut bytes = leader.bytes;
        let mut followers = Vec::new();
        let mut queues = self.queues.lock();
        if let Some(queue) = queues.get_mut(&region_id) {
            while followers.len() + 1 < MAX_GROUP_WRITES {
                let Some(next) = queue.waiting.front() else { break };
                if next.turn.is_closed() {
                    queue.waiting.pop_front();
                    continue;
                }
                if bytes + next.pending.bytes > MAX_GROUP_BYTES {
                    break;
                }
                let Some(waiter) = queue.waiting.pop_front() else { break };
                bytes += waiter.pending.bytes;
                followers.push((waiter.pending, waiter.turn));
            }
        }
        WriteGroup { leader, followers }
    }

    /// Passes the lead to the first caller still waiting, or marks the region idle.
    pub(crate) fn hand_over(&self, region_id: u64) {
        let mut queues = self.queues.lock();
        let Some(queue) = queues.get_mut(&region_id) else { return };
        while let Some(waiter) = queue.waiting.pop_front() {
            // A waiter whose caller went away cannot lead: try the next. One that goes
            // away after this send hands the lead on itself (see `Waiting`'s drop).
            if waiter.turn.send(Turn::Lead(waiter.pending)).is_ok() {
                return;
            }
        }
        queues.remove(&region_id);
    }

    /// Takes a queued write back out, if no group has taken it yet.
    fn withdraw(&self, region_id: u64, id: u64) -> bool {
        let mut queues = self.queues.lock();
        let Some(queue) = queues.get_mut(&region_id) else { return false };
        let before = queue.waiting.len();
        queue.waiting.retain(|waiter| waiter.id != id);
        queue.waiting.len() < before
    }
}

/// How a queued caller's wait ended.
pub(crate) enum Waited {
    /// Its turn came.
    Turn(Turn),
    /// The deadline passed while the write was still queued: it was never sent.
    Expired,
    /// The leader carrying the write was dropped without a word, maybe after sending:
    /// the write's outcome is unknown.
    Abandoned,
}

/// A queued caller's place: its turn comes through it. Dropped before the turn is
/// taken, it passes on a lead it was handed.
pub(crate) struct Waiting<'a> {
    groups: &'a WriteGroups,
    region_id: u64,
    id: u64,
    receiver: Option<oneshot::Receiver<Turn>>,
}

impl Waiting<'_> {
    /// Waits for the caller's turn until `give_up`; past it, a write still queued is
    /// withdrawn ([`Waited::Expired`]). A write a group already took is waited for to
    /// the end: its group's request has a deadline of its own.
    pub(crate) async fn turn(mut self, give_up: Instant) -> Waited {
        // The receiver stays in `self` while waiting: a caller cancelled here must pass
        // on a lead that arrives meanwhile, which the drop does.
        let Some(receiver) = self.receiver.as_mut() else {
            unreachable!("invariant: a waiting caller's receiver is only taken when its wait ends")
        };
        let result = match tokio::time::timeout_at(give_up, &mut *receiver).await {
            Ok(result) => result,
            Err(_) if self.groups.withdraw(self.region_id, self.id) => {
                self.receiver = None;
                return Waited::Expired;
            }
            Err(_) => receiver.await,
        };
        self.receiver = None;
        match result {
            Ok(turn) => Waited::Turn(turn),
            Err(_) => Waited::Abandoned,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(mut receiver) = self.receiver.take() else { return };
        receiver.close();
        if let Ok(Turn::Lead(_)) = receiver.try_recv() {
            self.groups.hand_over(self.region_id);
        }
    }
}

/// Hands the lead on when dropped: a leader whose future is cancelled mid-request must
/// not strand the callers queued behind it.
pub(crate) struct LeadGuard<'a> {
    pub groups: &'a WriteGroups,
    pub region_id: u64,
}

impl Drop for LeadGuard<'_> {
    fn drop(&mut self) {
        self.groups.hand_over(self.region_id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot::error::TryRecvError;

    use super::*;

    fn pending(key: &str, bytes: usize) -> Pending {
        Pending { key: key.as_bytes().to_vec(), write: Write::default(), bytes }
    }

    fn waiting<'a>(groups: &'a WriteGroups, region_id: u64, key: &str) -> Waiting<'a> {
        match groups.join(region_id, pending(key, 10)) {
            Joined::Wait(waiting) => waiting,
            _ => panic!("region {region_id} should be busy"),
        }
    }

    fn lead(groups: &WriteGroups, region_id: u64, key: &str) -> Pending {
        match groups.join(region_id, pending(key, 10)) {
            Joined::Lead(pending) => pending,
            _ => panic!("region {region_id} should be idle"),
        }
    }

    fn keys(group: &WriteGroup) -> Vec<&[u8]> {
        std::iter::once(&group.leader)
            .chain(group.followers.iter().map(|(p, _)| p))
            .map(|p| p.key.as_slice())
            .collect()
    }

    #[test]
    fn the_first_writer_leads_and_later_ones_wait_their_turn() {
        let groups = WriteGroups::default();
        let leader = lead(&groups, 7, "a");
        let mut second = waiting(&groups, 7, "b");
        let _third = waiting(&groups, 7, "c");
        // Another region is not held up by this one.
        lead(&groups, 8, "x");
        let group = groups.take(7, leader);
        assert_eq!(keys(&group), vec![b"a".as_slice(), b"b", b"c"]);
        let receiver = second.receiver.as_mut().expect("a queued caller listens");
        assert!(matches!(receiver.try_recv(), Err(TryRecvError::Empty)), "nobody is told anything early");
        groups.hand_over(7);
        // Everyone was in the group: the region is idle again, and the next writer leads.
        lead(&groups, 7, "d");
    }

    #[test]
    fn a_caller_left_out_of_a_full_group_leads_the_next() {
        let groups = WriteGroups::default();
        let leader = lead(&groups, 1, "first");
        let mut queued: Vec<Waiting> =
            (0..MAX_GROUP_WRITES).map(|i| waiting(&groups, 1, &format!("k{i}"))).collect();
        let group = groups.take(1, leader);
        assert_eq!(group.followers.len(), MAX_GROUP_WRITES - 1);
        groups.hand_over(1);
        let last = queued.pop().expect("one was left out");
        let mut last = last;
        match last.receiver.as_mut().expect("listening").try_recv() {
            Ok(Turn::Lead(pending)) => {
                assert_eq!(pending.key, format!("k{}", MAX_GROUP_WRITES - 1).as_bytes())
            }
            _ => panic!("the caller left out leads the next group"),
        }
    }

    #[test]
    fn a_cancelled_leader_hands_over_to_the_first_caller_still_listening() {
        let groups = WriteGroups::default();
        let _leader = lead(&groups, 1, "a");
        let gone = waiting(&groups, 1, "b");
        let mut next = waiting(&groups, 1, "c");
        drop(gone);
        drop(LeadGuard { groups: &groups, region_id: 1 });
        match next.receiver.as_mut().expect("listening").try_recv() {
            Ok(Turn::Lead(pending)) => assert_eq!(pending.key, b"c"),
            _ => panic!("the first caller still listening leads"),
        }
        // The region stays busy while the new leader holds the lead.
        let _later = waiting(&groups, 1, "d");
    }

    #[test]
    fn a_caller_dropped_after_being_handed_the_lead_passes_it_on() {
        let groups = WriteGroups::default();
        let _leader = lead(&groups, 1, "a");
        let handed = waiting(&groups, 1, "b");
        let mut next = waiting(&groups, 1, "c");
        groups.hand_over(1);
        // The lead was sent to "b", whose caller is cancelled before reading it.
        drop(handed);
        match next.receiver.as_mut().expect("listening").try_recv() {
            Ok(Turn::Lead(pending)) => assert_eq!(pending.key, b"c"),
            _ => panic!("the lead must not be lost with a cancelled caller"),
        }
        // "c" leads; when its group is done, nobody waits: the region is idle.
        drop(next);
        drop(LeadGuard { groups: &groups, region_id: 1 });
        lead(&groups, 1, "e");
    }

    #[test]
    fn writes_of_callers_gone_away_are_never_sent() {
        let groups = WriteGroups::default();
        let leader = lead(&groups, 1, "a");
        let gone = waiting(&groups, 1, "b");
        let _kept = waiting(&groups, 1, "c");
        drop(gone);
        assert_eq!(keys(&groups.take(1, leader)), vec![b"a".as_slice(), b"c"]);
    }

    #[tokio::test]
    async fn a_queued_caller_gives_up_at_its_deadline_unless_its_write_was_taken() {
        let groups = WriteGroups::default();
        let leader = lead(&groups, 1, "a");
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(
            matches!(waiting(&groups, 1, "b").turn(soon).await, Waited::Expired),
            "never sent: the caller may say so"
        );
        // Withdrawn: a group no longer takes it.
        let taken = waiting(&groups, 1, "c");
        let group = groups.take(1, leader);
        assert_eq!(keys(&group), vec![b"a".as_slice(), b"c"]);
        let (_, turn) = group.followers.into_iter().next().expect("c was taken");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = turn.send(Turn::Done(GroupOutcome::Applied(Default::default())));
        });
        // Past its deadline, but its group's answer still comes.
        match taken.turn(Instant::now()).await {
            Waited::Turn(Turn::Done(GroupOutcome::Applied(_))) => {}
            _ => panic!("a write a group took is waited for to the end"),
        }
    }

    #[test]
    fn groups_and_queues_stop_at_their_limits() {
        let groups = WriteGroups::default();
        let leader = match groups.join(1, pending("a", MAX_GROUP_BYTES / 2)) {
            Joined::Lead(pending) => pending,
            _ => panic!("idle"),
        };
        let _b = groups.join(1, pending("b", MAX_GROUP_BYTES / 2));
        let _c = groups.join(1, pending("c", 1));
        assert_eq!(groups.take(1, leader).followers.len(), 1, "the third write would pass the byte limit");
        let _leader = lead(&groups, 2, "a");
        let _queued: Vec<Waiting> = (0..MAX_QUEUED).map(|_| waiting(&groups, 2, "k")).collect();
        assert!(matches!(groups.join(2, pending("over", 1)), Joined::Alone(_)), "a full queue sends alone");
    }
}
