//! A tiny in-memory network of replicas for the paper tests.
//!
//! Every replica is a [`RawNode`] over its own [`MemStorage`], which plays the part of its
//! disk: whatever is in the storage survives [`Network::restart`], everything else is
//! lost. The network drives each replica exactly as the persistence contract in
//! `raw_node.rs` says (send `messages`, persist snapshot, entries and hard state, send
//! `persisted_messages`, apply, collect reads, advance) and delivers messages
//! synchronously, in the order they were produced. Links can be cut and messages dropped
//! by a predicate; nothing is ever reordered or duplicated unless a test does it by hand.
//!
//! Tests that look at one replica in isolation use [`new_raft`], [`drain`] and
//! [`message`] to hand it messages and read back what it queued, as the paper's rules
//! are phrased ("if a server receives X, it replies Y").

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;

use crate::raft::consensus::CampaignKind;
use crate::raft::proto::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfState, Entry, EntryType, HardState, Message,
    MessageType,
};
use crate::raft::{Config, MemStorage, Raft, RawNode, ReadState, Role, Storage};

pub(crate) const ELECTION_TICKS: u64 = 10;
pub(crate) const HEARTBEAT_TICKS: u64 = 2;

/// The algorithm as the paper's core describes it: no PreVote, no CheckQuorum. Tests
/// that exercise those extensions switch them on.
pub(crate) fn config(id: u64) -> Config {
    Config {
        election_ticks: ELECTION_TICKS,
        heartbeat_ticks: HEARTBEAT_TICKS,
        pre_vote: false,
        check_quorum: false,
        ..Config::new(id)
    }
}

pub(crate) fn conf_state(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState { voters: voters.to_vec(), learners: learners.to_vec(), ..Default::default() }
}

/// The storage of a founding member: the bootstrap snapshot at index 1 (term 1) holding
/// `conf`, then one entry per element of `terms` from index 2 on, with that term. The
/// hard state's term is the last entry's term, nothing is voted for, and only the
/// bootstrap snapshot is committed.
pub(crate) fn storage_with_log(conf: ConfState, terms: &[u64]) -> MemStorage {
    let storage = MemStorage::new_bootstrapped(1, conf);
    let entries: Vec<Entry> = terms.iter().enumerate().map(|(i, &term)| entry(i as u64 + 2, term)).collect();
    storage.append(&entries);
    let term = terms.last().copied().unwrap_or(1).max(1);
    storage.set_hard_state(HardState { term, vote: 0, commit: 1 });
    storage
}

/// A normal entry whose payload names its position, so that two logs holding different
/// entries at the same index are told apart by content as well as by term.
pub(crate) fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, entry_type: EntryType::Normal as i32, data: format!("{index}@{term}").into_bytes() }
}

pub(crate) fn new_raft(config: Config, storage: MemStorage) -> Raft<MemStorage> {
    Raft::new(config, storage).expect("a valid test configuration")
}

/// Takes everything the replica queued, whether or not it must wait for persistence.
pub(crate) fn drain(raft: &mut Raft<MemStorage>) -> Vec<Message> {
    let mut messages = std::mem::take(&mut raft.messages);
    messages.append(&mut raft.messages_after_persist);
    messages
}

pub(crate) fn message(from: u64, to: u64, message_type: MessageType, term: u64) -> Message {
    Message { from, to, term, msg_type: message_type as i32, ..Default::default() }
}

pub(crate) fn vote_request(from: u64, to: u64, term: u64, last_index: u64, last_term: u64) -> Message {
    Message { index: last_index, log_term: last_term, ..message(from, to, MessageType::RequestVote, term) }
}

pub(crate) fn single(change_type: ConfChangeType, node_id: u64) -> ConfChange {
    ConfChange {
        changes: vec![ConfChangeSingle { change_type: change_type as i32, node_id }],
        ..Default::default()
    }
}

/// `(index, term)` of every entry a replica holds after its snapshot.
pub(crate) fn log_of(raft: &Raft<MemStorage>) -> Vec<(u64, u64)> {
    let first = raft.log.first_index();
    let entries = raft.log.entries(first, None).expect("held entries are readable");
    entries.iter().map(|e| (e.index, e.term)).collect()
}

/// One replica with its "disk" and what its application saw.
pub(crate) struct Node {
    pub raw: RawNode<MemStorage>,
    pub storage: MemStorage,
    pub config: Config,
    /// Every entry handed out for application, in order.
    pub applied: Vec<Entry>,
    /// The application's applied index (moved forward by snapshots too).
    pub applied_index: u64,
    /// The configuration after every membership change applied, in order.
    pub conf_states: Vec<ConfState>,
    pub read_states: Vec<ReadState>,
    pub dropped_reads: Vec<Vec<u8>>,
    pub snapshots_installed: usize,
}

impl Node {
    pub(crate) fn new(config: Config, storage: MemStorage) -> Node {
        let applied_index = storage.first_index().expect("memory storage answers") - 1;
        let raw = RawNode::new(config.clone(), storage.clone()).expect("a valid test configuration");
        Node {
            raw,
            storage,
            config,
            applied: Vec::new(),
            applied_index,
            conf_states: Vec::new(),
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            snapshots_installed: 0,
        }
    }

    /// Handles every pending Ready as the persistence contract requires; returns the
    /// messages to send, in the order they may leave.
    pub(crate) fn handle_readies(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while self.raw.has_ready() {
            let ready = self.raw.ready();
            // 1. A leader's messages may leave before anything is durable.
            out.extend(ready.messages);
            // 2. Make the snapshot, entries and hard state durable.
            if let Some(snapshot) = &ready.snapshot {
                self.storage.apply_snapshot(snapshot).expect("a newer snapshot installs");
                self.applied_index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
                self.snapshots_installed += 1;
            }
            self.storage.append(&ready.entries);
            if let Some(hard_state) = ready.hard_state {
                self.storage.set_hard_state(hard_state);
            }
            // 3. Then what promised durable state.
            out.extend(ready.persisted_messages);
            // 4. Apply.
            for entry in ready.committed_entries {
                self.apply(entry);
            }
            // 5. Reads.
            self.read_states.extend(ready.read_states);
            self.dropped_reads.extend(ready.dropped_reads);
            // 6.
            self.raw.advance();
        }
        out
    }

    fn apply(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.applied_index + 1,
            "replica {} must apply entries in order, without gaps",
            self.config.id
        );
        assert!(
            entry.index <= self.storage.hard_state().commit,
            "replica {} applies entry {} before its commit index is durable",
            self.config.id,
            entry.index
        );
        assert!(
            self.storage.last_index().expect("memory storage answers") >= entry.index,
            "replica {} applies entry {} that is not in its durable log",
            self.config.id,
            entry.index
        );
        if entry.entry_type() == EntryType::ConfChange {
            let change = ConfChange::decode(entry.data.as_slice()).expect("a membership entry decodes");
            let conf_state = self.raw.apply_conf_change(&change).expect("a committed change applies");
            self.conf_states.push(conf_state);
        }
        self.applied_index = entry.index;
        self.applied.push(entry);
    }

    /// Payloads of the applied application commands, in order.
    pub(crate) fn applied_data(&self) -> Vec<Vec<u8>> {
        self.applied
            .iter()
            .filter(|e| e.entry_type() == EntryType::Normal && !e.data.is_empty())
            .map(|e| e.data.clone())
            .collect()
    }
}

type Filter = Box<dyn Fn(&Message) -> bool>;

pub(crate) struct Network {
    pub nodes: BTreeMap<u64, Node>,
    /// Directed links that lose every message.
    cut: BTreeSet<(u64, u64)>,
    /// Messages for which this returns true are lost.
    drop_if: Option<Filter>,
    /// Every message that reached its recipient, in order.
    pub delivered: Vec<Message>,
}

impl Network {
    /// Founding voters `ids`, all with [`config`].
    pub(crate) fn new(ids: &[u64]) -> Network {
        Network::with_config(ids, &[], |_| {})
    }

    /// Founding voters and learners, with `configure` applied to every replica's config.
    pub(crate) fn with_config(voters: &[u64], learners: &[u64], configure: impl Fn(&mut Config)) -> Network {
        let mut network = Network::empty();
        let conf = conf_state(voters, learners);
        for &id in voters.iter().chain(learners) {
            let mut config = config(id);
            configure(&mut config);
            network.add_node(config, MemStorage::new_bootstrapped(1, conf.clone()));
        }
        network
    }

    pub(crate) fn empty() -> Network {
        Network { nodes: BTreeMap::new(), cut: BTreeSet::new(), drop_if: None, delivered: Vec::new() }
    }

    pub(crate) fn add_node(&mut self, config: Config, storage: MemStorage) {
        self.nodes.insert(config.id, Node::new(config, storage));
    }

    pub(crate) fn node(&self, id: u64) -> &Node {
        self.nodes.get(&id).unwrap_or_else(|| panic!("no replica {id}"))
    }

    pub(crate) fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).unwrap_or_else(|| panic!("no replica {id}"))
    }

    pub(crate) fn raft(&self, id: u64) -> &Raft<MemStorage> {
        &self.node(id).raw.raft
    }

    pub(crate) fn raw(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        &mut self.node_mut(id).raw
    }

    pub(crate) fn tick(&mut self, id: u64) {
        self.raw(id).tick();
    }

    /// Ticks every replica once, then lets the network settle.
    pub(crate) fn tick_all(&mut self) {
        for node in self.nodes.values_mut() {
            node.raw.tick();
        }
        self.stabilize();
    }

    /// Ticks `id` through one heartbeat interval, then lets the network settle.
    pub(crate) fn heartbeat(&mut self, id: u64) {
        for _ in 0..self.node(id).config.heartbeat_ticks {
            self.tick(id);
        }
        self.stabilize();
    }

    /// Handles every replica's pending Readies; returns the messages they send, not yet
    /// delivered.
    pub(crate) fn take_messages(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        for node in self.nodes.values_mut() {
            out.extend(node.handle_readies());
        }
        out
    }

    fn lost(&self, m: &Message) -> bool {
        self.cut.contains(&(m.from, m.to)) || self.drop_if.as_ref().is_some_and(|lose| lose(m))
    }

    /// Steps each message into its recipient, unless its link is cut or it is dropped.
    pub(crate) fn deliver(&mut self, messages: Vec<Message>) {
        for m in messages {
            if self.lost(&m) || !self.nodes.contains_key(&m.to) {
                continue;
            }
            self.delivered.push(m.clone());
            let description = format!("{m:?}");
            if let Err(error) = self.raw(m.to).step(m) {
                panic!("stepping {description} failed: {error}");
            }
        }
    }

    /// Delivers messages until no replica has anything left to say.
    pub(crate) fn stabilize(&mut self) {
        self.stabilize_losing(|_, _| false);
    }

    /// Like [`Network::stabilize`], but also loses every message for which `lose`
    /// returns true when it is about to be delivered (so it may look at the recipient's
    /// state at that moment).
    pub(crate) fn stabilize_losing(&mut self, lose: impl Fn(&Network, &Message) -> bool) {
        for _ in 0..10_000 {
            let messages = self.take_messages();
            if messages.is_empty() {
                return;
            }
            for m in messages {
                if !lose(self, &m) {
                    self.deliver(vec![m]);
                }
            }
        }
        panic!("the network did not settle");
    }

    /// Cuts `a` off from everyone, both ways.
    pub(crate) fn isolate(&mut self, a: u64) {
        let ids: Vec<u64> = self.nodes.keys().copied().filter(|&b| b != a).collect();
        for b in ids {
            self.cut(a, b);
        }
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub(crate) fn cut(&mut self, a: u64, b: u64) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Loses every message for which `lose` returns true (replacing any earlier rule).
    pub(crate) fn drop_if(&mut self, lose: impl Fn(&Message) -> bool + 'static) {
        self.drop_if = Some(Box::new(lose));
    }

    /// Restores every link and stops dropping.
    pub(crate) fn heal(&mut self) {
        self.cut.clear();
        self.drop_if = None;
    }

    /// Elects `id` by the campaign TimeoutNow orders: no PreVote round, and voters do not
    /// ignore it for having heard from a leader (or for having just started, see
    /// `campaign_elects_a_first_leader_at_once_with_the_default_config`). The tests of the
    /// election rules themselves campaign through ticks or [`RawNode::campaign`].
    pub(crate) fn elect(&mut self, id: u64) {
        self.raw(id).raft.hup(CampaignKind::Transfer);
        self.stabilize();
        assert_eq!(self.raft(id).role, Role::Leader, "replica {id} should have won the election");
    }

    /// Proposes `data` on `id`, which must lead; returns the entry's index.
    pub(crate) fn propose(&mut self, id: u64, data: &[u8]) -> u64 {
        self.raw(id).propose(data.to_vec()).expect("the leader accepts proposals").index
    }

    /// Crashes `id` and starts it again from what its storage holds: everything not yet
    /// persisted (including a Ready it was handling) is lost. Its application restarts
    /// from the storage's snapshot, as the simulator's does, so the core hands out every
    /// committed entry after it again (membership changes included).
    pub(crate) fn restart(&mut self, id: u64) {
        let mut node = self.nodes.remove(&id).unwrap_or_else(|| panic!("no replica {id}"));
        let snapshot_index = node.storage.first_index().expect("memory storage answers") - 1;
        node.config.applied = snapshot_index;
        node.config.new_group = false;
        node.applied.retain(|entry| entry.index <= snapshot_index);
        node.applied_index = snapshot_index;
        node.raw = RawNode::new(node.config.clone(), node.storage.clone()).expect("the replica restarts");
        self.nodes.insert(id, node);
    }

    /// The current leader with the highest term, if any.
    pub(crate) fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .map(|node| &node.raw.raft)
            .filter(|raft| raft.role == Role::Leader)
            .max_by_key(|raft| raft.term)
            .map(|raft| raft.id)
    }

    /// Asserts State Machine Safety: no two replicas applied different entries at the
    /// same index.
    pub(crate) fn assert_applied_agree(&self) {
        let mut seen: BTreeMap<u64, (u64, &Entry)> = BTreeMap::new();
        for (&id, node) in &self.nodes {
            for entry in &node.applied {
                if let Some((other, first)) = seen.get(&entry.index) {
                    assert_eq!(
                        *first, entry,
                        "replicas {other} and {id} applied different entries at index {}",
                        entry.index
                    );
                } else {
                    seen.insert(entry.index, (id, entry));
                }
            }
        }
    }

    /// Messages of `message_type` delivered from `from` to `to` so far.
    pub(crate) fn count_delivered(&self, from: u64, to: u64, message_type: MessageType) -> usize {
        self.delivered.iter().filter(|m| m.from == from && m.to == to && m.msg_type() == message_type).count()
    }
}
