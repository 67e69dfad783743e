//! One simulated replica: a [`RawNode`] over a [`MemStorage`] that plays the durable
//! disk, and the application that follows the Ready contract around it.
//!
//! A crash drops the `RawNode` and the state machine (both volatile) and keeps only the
//! storage, so a restart sees exactly what was persisted. Crashes can also strike in the
//! middle of handling a Ready, at each point where a real process could die.

use std::collections::HashMap;

use prost::Message as _;

use tessera_engine::raft::proto::{ConfChange, ConfState, EntryType, MessageType};
use tessera_engine::raft::{Config, MemStorage, RawNode, Role, Storage};

use super::checker::{Checker, Violation, ViolationKind, violation};
use super::network::Network;
use super::state_machine::{StateMachine, mix};
use super::trace::{Event, Trace};

/// Where in the handling of a Ready a crash strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    /// After sending the leader's messages, before anything is durable.
    BeforePersist,
    /// After persisting, before sending the messages that depend on it.
    AfterPersist,
    /// After applying committed entries, before `advance`.
    BeforeAdvance,
}

impl CrashPoint {
    pub(crate) fn name(self) -> &'static str {
        match self {
            CrashPoint::BeforePersist => "before persisting a Ready",
            CrashPoint::AfterPersist => "after persisting a Ready",
            CrashPoint::BeforeAdvance => "before advancing a Ready",
        }
    }
}

/// A client read waiting for an answer.
#[derive(Debug, Clone, Copy)]
pub struct ReadRequest {
    pub node: u64,
    pub key: u64,
    /// Highest acknowledged write index when the read was invoked.
    pub must_see: u64,
}

/// Everything outside the replicas that handling a Ready touches.
pub(crate) struct World {
    pub step: u64,
    pub network: Network,
    pub rng: rand_chacha::ChaCha8Rng,
    pub checker: Checker,
    pub trace: Trace,
    pub reads: HashMap<u64, ReadRequest>,
    /// Step at which faults were healed; proposals made after it prove liveness.
    pub healed_at: Option<u64>,
    pub live_after_heal: bool,
    pub stats: super::Stats,
    /// Raft settings shared by every replica of this run.
    pub raft_template: Config,
    /// The configuration at the highest index any replica applied: the newest committed
    /// one, since every replica applies the same sequence.
    pub latest_conf: (u64, ConfState),
}

pub(crate) struct SimNode {
    pub id: u64,
    pub raw: Option<RawNode<MemStorage>>,
    pub storage: MemStorage,
    pub state_machine: StateMachine,
    /// Writes proposed through this replica: index -> (term, op id, step proposed).
    pub proposals: HashMap<u64, (u64, u64, u64)>,
    /// Confirmed reads waiting for the state machine to reach their index.
    reads_waiting: Vec<(u64, u64)>,
    incarnation: u64,
    pub destroyed: bool,
    pub created_at: u64,
}

impl SimNode {
    pub(crate) fn new(id: u64, storage: MemStorage, world: &mut World) -> Result<SimNode, Violation> {
        let mut node = SimNode {
            id,
            raw: None,
            storage,
            state_machine: StateMachine::default(),
            proposals: HashMap::new(),
            reads_waiting: Vec::new(),
            incarnation: 0,
            destroyed: false,
            created_at: world.step,
        };
        node.start(world)?;
        Ok(node)
    }

    pub(crate) fn alive(&self) -> bool {
        self.raw.is_some()
    }

    pub(crate) fn role(&self) -> Option<(Role, u64)> {
        self.raw.as_ref().map(|raw| {
            let status = raw.status();
            (status.role, status.term)
        })
    }

    /// Starts (or restarts) the replica from its storage alone.
    pub(crate) fn start(&mut self, world: &mut World) -> Result<(), Violation> {
        let snapshot = self.storage.current_snapshot();
        let metadata = snapshot.metadata.unwrap_or_default();
        let conf_state = metadata.conf_state.unwrap_or_default();
        self.state_machine =
            StateMachine::restore(metadata.index, conf_state, &snapshot.data).ok_or_else(|| {
                violation(
                    ViolationKind::StateMachineSafety,
                    format!("{}: stored snapshot does not decode", self.id),
                )
            })?;
        let mut config = world.raft_template.clone();
        config.id = self.id;
        config.new_group = self.incarnation == 0;
        self.incarnation += 1;
        config.applied = metadata.index;
        config.random_seed = mix(world.rng_seed_salt() ^ mix(self.id) ^ self.incarnation);
        let raw = RawNode::new(config, self.storage.clone()).map_err(|error| {
            violation(ViolationKind::InvalidMessage, format!("{} cannot restart: {error}", self.id))
        })?;
        self.raw = Some(raw);
        self.reads_waiting.clear();
        self.proposals.clear();
        Ok(())
    }

    /// Kills the process: only the storage survives.
    pub(crate) fn crash(&mut self, world: &mut World, point: &'static str) {
        self.raw = None;
        self.proposals.clear();
        for (read_id, _) in self.reads_waiting.drain(..) {
            world.reads.remove(&read_id);
        }
        world.reads.retain(|_, read| read.node != self.id);
        world.stats.crashes += 1;
        world.trace.record(world.step, Event::Crash { id: self.id, point });
    }

    /// Handles every Ready the replica has, following the persistence contract. A crash
    /// point, if given, kills the replica partway through the first Ready.
    pub(crate) fn handle_readies(
        &mut self,
        world: &mut World,
        mut crash: Option<CrashPoint>,
    ) -> Result<(), Violation> {
        for _ in 0..16 {
            let Some(raw) = self.raw.as_mut() else { return Ok(()) };
            if !raw.has_ready() {
                return Ok(());
            }
            self.handle_ready(world, crash.take())?;
        }
        Ok(())
    }

    fn handle_ready(&mut self, world: &mut World, crash: Option<CrashPoint>) -> Result<(), Violation> {
        let Some(raw) = self.raw.as_mut() else { return Ok(()) };
        let mut ready = raw.ready();
        if let Some(soft) = ready.soft_state
            && soft.role == Role::Leader
        {
            world.stats.elections += 1;
            let term = raw.status().term;
            world.trace.record(world.step, Event::Leader { id: self.id, term });
            world.checker.on_leader(self.id, term, raw)?;
        }
        for message in std::mem::take(&mut ready.messages) {
            send(world, self, message);
        }
        if crash == Some(CrashPoint::BeforePersist) {
            self.crash(world, CrashPoint::BeforePersist.name());
            return Ok(());
        }
        if let Some(snapshot) = &ready.snapshot {
            let metadata = snapshot.metadata.clone().unwrap_or_default();
            // The core only hands out snapshots newer than anything applied here.
            self.storage.apply_snapshot(snapshot).map_err(|error| {
                violation(
                    ViolationKind::StateMachineSafety,
                    format!(
                        "{} was handed a snapshot at {} it cannot install: {error}",
                        self.id, metadata.index
                    ),
                )
            })?;
            let conf_state = metadata.conf_state.unwrap_or_default();
            self.state_machine = StateMachine::restore(metadata.index, conf_state, &snapshot.data)
                .ok_or_else(|| {
                    violation(
                        ViolationKind::StateMachineSafety,
                        format!("{}: snapshot does not decode", self.id),
                    )
                })?;
            world.checker.on_snapshot_installed(self.id, metadata.index, self.state_machine.chain)?;
            world.stats.snapshots_installed += 1;
        }
        if let Some(first) = ready.entries.first() {
            let previous_term = self.storage.term(first.index - 1).ok();
            self.storage.append(&ready.entries);
            world.checker.on_persisted(self.id, &ready.entries, previous_term)?;
        }
        if let Some(hard_state) = ready.hard_state {
            self.storage.set_hard_state(hard_state);
            world.checker.on_hard_state(self.id, hard_state)?;
        }
        if crash == Some(CrashPoint::AfterPersist) {
            self.crash(world, CrashPoint::AfterPersist.name());
            return Ok(());
        }
        for message in std::mem::take(&mut ready.persisted_messages) {
            send(world, self, message);
        }
        for entry in &ready.committed_entries {
            self.apply(world, entry)?;
        }
        for read in &ready.read_states {
            let read_id = decode_read_id(&read.context);
            self.reads_waiting.push((read_id, read.index));
        }
        for context in &ready.dropped_reads {
            world.reads.remove(&decode_read_id(context));
        }
        self.serve_reads(world)?;
        if crash == Some(CrashPoint::BeforeAdvance) {
            self.crash(world, CrashPoint::BeforeAdvance.name());
            return Ok(());
        }
        if let Some(raw) = self.raw.as_mut() {
            raw.advance();
        }
        Ok(())
    }

    fn apply(
        &mut self,
        world: &mut World,
        entry: &tessera_engine::raft::proto::Entry,
    ) -> Result<(), Violation> {
        if entry.index <= self.state_machine.applied {
            return Err(violation(
                ViolationKind::StateMachineSafety,
                format!("{} was handed entry {} again after applying it", self.id, entry.index),
            ));
        }
        if entry.index != self.state_machine.applied + 1 {
            return Err(violation(
                ViolationKind::StateMachineSafety,
                format!("{} skipped from {} to {}", self.id, self.state_machine.applied, entry.index),
            ));
        }
        let write = self.state_machine.apply(entry);
        let current_term = self.raw.as_ref().map_or(u64::MAX, |raw| raw.status().term);
        let applied_write = write.map(|w| (w.key, w.value));
        world.checker.on_applied(self.id, entry, self.state_machine.chain, current_term, applied_write)?;
        world.stats.applied += 1;
        if entry.entry_type() == EntryType::ConfChange {
            let change = ConfChange::decode(entry.data.as_slice()).map_err(|error| {
                violation(
                    ViolationKind::InvalidMessage,
                    format!("conf change entry does not decode: {error}"),
                )
            })?;
            if let Some(raw) = self.raw.as_mut() {
                // An invalid change is refused identically everywhere: no state changes.
                if let Ok(conf_state) = raw.apply_conf_change(&change) {
                    world.stats.conf_changes_applied += 1;
                    if entry.index > world.latest_conf.0 {
                        world.latest_conf = (entry.index, conf_state.clone());
                    }
                    self.state_machine.conf_state = conf_state;
                }
            }
        }
        if let Some((term, op_id, proposed_at)) = self.proposals.remove(&entry.index)
            && term == entry.term
            && write.is_some_and(|w| w.op_id == op_id)
        {
            world.checker.on_acknowledged(entry.index);
            world.stats.acknowledged += 1;
            if world.healed_at.is_some_and(|healed| proposed_at >= healed) {
                world.live_after_heal = true;
            }
        }
        Ok(())
    }

    fn serve_reads(&mut self, world: &mut World) -> Result<(), Violation> {
        let applied = self.state_machine.applied;
        let mut index = 0;
        while index < self.reads_waiting.len() {
            let (read_id, read_index) = self.reads_waiting[index];
            if read_index > applied {
                index += 1;
                continue;
            }
            self.reads_waiting.swap_remove(index);
            if let Some(request) = world.reads.remove(&read_id) {
                let value = self.state_machine.kv.get(&request.key).copied();
                world.checker.check_read(self.id, request.key, value, applied, request.must_see)?;
                world.stats.reads += 1;
                world.trace.record(world.step, Event::Read { id: self.id, read_id, index: applied });
            }
        }
        Ok(())
    }

    /// Compacts the log at the applied index into a snapshot of the state machine.
    pub(crate) fn compact(&mut self, world: &mut World) {
        let applied = self.state_machine.applied;
        let data = self.state_machine.encode();
        if self.storage.compact(applied, self.state_machine.conf_state.clone(), data).is_ok() {
            world.trace.record(world.step, Event::Compact { id: self.id, index: applied });
        }
    }
}

/// Sends a message through the simulated network. A snapshot that cannot be delivered is
/// reported back to the leader as failed, as a real transport would.
pub(crate) fn send(world: &mut World, sender: &mut SimNode, message: tessera_engine::raft::proto::Message) {
    let (from, to, message_type) = (message.from, message.to, message.msg_type());
    if let Err(dropped) = world.network.send(message, world.step, &mut world.rng) {
        let reason = match dropped {
            super::network::Dropped::Lost => "lost",
            super::network::Dropped::Partitioned => "partitioned",
        };
        world.trace.record(world.step, Event::Drop { from, to, message_type, reason });
        if message_type == MessageType::Snapshot
            && let Some(raw) = sender.raw.as_mut()
        {
            raw.report_snapshot(to, false);
        }
    }
}

pub(crate) fn encode_read_id(read_id: u64) -> Vec<u8> {
    read_id.to_le_bytes().to_vec()
}

fn decode_read_id(context: &[u8]) -> u64 {
    context.try_into().map(u64::from_le_bytes).unwrap_or(u64::MAX)
}

impl World {
    /// A value mixed into every replica's election RNG seed so that runs differ by seed.
    fn rng_seed_salt(&self) -> u64 {
        self.raft_template.random_seed
    }
}
