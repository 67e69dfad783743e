//! One simulated run: a cluster of replicas, a client workload, and a fault schedule,
//! all driven by one seeded RNG over virtual time.
//!
//! A run has two phases. During chaos, faults strike at random: partitions (symmetric,
//! one-way, isolated leader, bridge), lost, duplicated and delayed messages, slow
//! replicas, crashes at any point of a Ready and restarts, membership changes, leader
//! transfers and log compaction. Then everything heals and the run must make progress:
//! a leader is elected and a new proposal commits within a bounded number of ticks.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use tessera_engine::raft::proto::{ConfChange, ConfChangeSingle, ConfChangeType, ConfState, MessageType};
use tessera_engine::raft::{Config, MemStorage, ReadMode, Role};

use super::checker::{Checker, Violation, ViolationKind, violation};
use super::network::{Network, NetworkFaults};
use super::node::{CrashPoint, ReadRequest, SimNode, World, encode_read_id};
use super::state_machine::{Write, mix};
use super::trace::{Event, Trace};
use super::{SimConfig, Stats};

/// Simulation steps per Raft tick; message latencies are counted in steps.
const STEPS_PER_TICK: u64 = 4;
/// Index and term of the bootstrap snapshot founding replicas start from.
const BOOTSTRAP_INDEX: u64 = 1;
/// Keys the workload reads and writes; few, so that reads often race with writes.
const KEYS: u64 = 8;
/// Ticks a replica that is in no configuration is kept before it is destroyed.
const ORPHAN_GRACE_TICKS: u64 = 40;

/// How hard this seed hits the cluster; drawn once per seed.
#[derive(Debug, Clone)]
struct FaultProfile {
    loss: f64,
    duplication: f64,
    jitter: u64,
    crash_per_ready: f64,
    event_rate: f64,
    membership: bool,
    transfers: bool,
    compaction_rate: f64,
    write_rate: f64,
    read_rate: f64,
    /// Leaders are isolated or killed every few ticks, so that terms pile up with
    /// entries replicated to minorities: the ground on which Figure 8 of the paper grows.
    leader_churn: bool,
}

impl FaultProfile {
    fn draw(rng: &mut ChaCha8Rng) -> FaultProfile {
        FaultProfile {
            loss: *[0.0, 0.01, 0.05, 0.15].choose(rng).unwrap_or(&0.0),
            duplication: *[0.0, 0.02, 0.1].choose(rng).unwrap_or(&0.0),
            jitter: *[0, 2, 8, 20].choose(rng).unwrap_or(&0),
            crash_per_ready: *[0.0, 0.001, 0.004].choose(rng).unwrap_or(&0.0),
            event_rate: *[0.02, 0.05, 0.1].choose(rng).unwrap_or(&0.05),
            membership: rng.random_bool(0.5),
            transfers: rng.random_bool(0.5),
            compaction_rate: *[0.0, 0.02, 0.1].choose(rng).unwrap_or(&0.0),
            write_rate: *[0.3, 0.8, 1.0].choose(rng).unwrap_or(&0.8),
            read_rate: *[0.1, 0.4].choose(rng).unwrap_or(&0.1),
            leader_churn: false,
        }
    }

    fn draw_leader_churn(rng: &mut ChaCha8Rng) -> FaultProfile {
        FaultProfile {
            event_rate: *[0.2, 0.4].choose(rng).unwrap_or(&0.2),
            crash_per_ready: 0.0,
            leader_churn: true,
            ..FaultProfile::draw(rng)
        }
    }
}

fn draw_raft_config(rng: &mut ChaCha8Rng, seed: u64, profile: &FaultProfile) -> Config {
    let mut config = Config::new(1);
    config.pre_vote = rng.random_bool(0.75);
    config.check_quorum = rng.random_bool(0.75);
    // One entry per message makes acknowledgements arrive entry by entry, the setting in
    // which a leader could be tempted to commit an old term's entry (Figure 8).
    config.max_size_per_msg = *[1, 256, 1 << 20].choose(rng).unwrap_or(&(1 << 20));
    config.max_inflight_msgs = *[1, 4, 256].choose(rng).unwrap_or(&256);
    if profile.leader_churn {
        config.max_size_per_msg = 1;
    }
    config.random_seed = mix(seed);
    config
}

pub(crate) struct Simulation {
    seed: u64,
    config: SimConfig,
    nodes: BTreeMap<u64, SimNode>,
    world: World,
    profile: FaultProfile,
    next_node_id: u64,
    next_op_id: u64,
    next_read_id: u64,
}

impl Simulation {
    pub(crate) fn new(seed: u64, config: SimConfig) -> Result<Simulation, Violation> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let profile = if rng.random_bool(0.25) {
            FaultProfile::draw_leader_churn(&mut rng)
        } else {
            FaultProfile::draw(&mut rng)
        };
        let raft_template = draw_raft_config(&mut rng, seed, &profile);
        let mut world = World {
            step: 0,
            network: Network::default(),
            rng,
            checker: Checker::default(),
            trace: Trace::new(config.trace_events),
            reads: HashMap::new(),
            healed_at: None,
            live_after_heal: false,
            stats: Stats::default(),
            raft_template,
            latest_conf: (BOOTSTRAP_INDEX, ConfState::default()),
        };
        world.network.faults = NetworkFaults {
            loss: profile.loss,
            duplication: profile.duplication,
            jitter: profile.jitter,
            ..NetworkFaults::default()
        };
        world.checker.bootstrap(BOOTSTRAP_INDEX, BOOTSTRAP_INDEX);
        let founders: Vec<u64> = (1..=config.nodes as u64).collect();
        let conf_state = ConfState { voters: founders.clone(), ..ConfState::default() };
        world.latest_conf = (BOOTSTRAP_INDEX, conf_state.clone());
        let mut nodes = BTreeMap::new();
        for &id in &founders {
            let storage = MemStorage::new_bootstrapped(BOOTSTRAP_INDEX, conf_state.clone());
            nodes.insert(id, SimNode::new(id, storage, &mut world)?);
        }
        Ok(Simulation {
            seed,
            next_node_id: config.nodes as u64 + 1,
            config,
            nodes,
            world,
            profile,
            next_op_id: 1,
            next_read_id: 1,
        })
    }

    /// Runs the seed to the end; on a violation, returns it with the recent trace.
    pub(crate) fn run(mut self) -> Result<Stats, (Violation, String)> {
        match self.run_phases() {
            Ok(()) => Ok(self.world.stats),
            Err(violation) => Err((violation, self.world.trace.render())),
        }
    }

    fn run_phases(&mut self) -> Result<(), Violation> {
        let chaos_ticks = self.config.chaos_ticks;
        let heal_deadline = chaos_ticks + self.config.liveness_bound_ticks;
        for tick in 0.. {
            if tick == chaos_ticks {
                self.heal()?;
            }
            let chaos = tick < chaos_ticks;
            if !chaos && self.world.live_after_heal {
                return Ok(());
            }
            if tick >= heal_deadline {
                return Err(self.liveness_violation());
            }
            if chaos && self.world.rng.random_bool(self.profile.event_rate) {
                self.fault_event()?;
            }
            self.client_operations();
            self.compactions();
            for sub_step in 0..STEPS_PER_TICK {
                self.world.step += 1;
                self.deliver_due(chaos)?;
                if sub_step == 0 {
                    self.tick_all(chaos)?;
                }
            }
            self.world
                .checker
                .check_durable(self.nodes.values().filter(|n| !n.destroyed).map(|n| &n.storage))?;
            self.destroy_orphans();
        }
        Ok(())
    }

    fn crash_point(&mut self, chaos: bool) -> Option<CrashPoint> {
        if !chaos
            || self.profile.crash_per_ready == 0.0
            || !self.world.rng.random_bool(self.profile.crash_per_ready)
        {
            return None;
        }
        [CrashPoint::BeforePersist, CrashPoint::AfterPersist, CrashPoint::BeforeAdvance]
            .choose(&mut self.world.rng)
            .copied()
    }

    fn deliver_due(&mut self, chaos: bool) -> Result<(), Violation> {
        while let Some(message) = self.world.network.next_due(self.world.step) {
            let (from, to, message_type) = (message.from, message.to, message.msg_type());
            let receiver_alive = self.nodes.get(&to).is_some_and(|n| n.alive());
            let delivered = receiver_alive && self.world.network.link_open(from, to);
            if message_type == MessageType::Snapshot
                && let Some(sender) = self.nodes.get_mut(&from).and_then(|n| n.raw.as_mut())
            {
                sender.report_snapshot(to, delivered);
            }
            if !delivered {
                let reason = if receiver_alive { "partitioned in flight" } else { "receiver down" };
                self.world.trace.record(self.world.step, Event::Drop { from, to, message_type, reason });
                continue;
            }
            self.world.trace.record(
                self.world.step,
                Event::Deliver {
                    from,
                    to,
                    message_type,
                    term: message.term,
                    index: message.index,
                    entries: message.entries.len(),
                },
            );
            self.world.stats.messages += 1;
            let crash = self.crash_point(chaos);
            let Some(node) = self.nodes.get_mut(&to) else { continue };
            if let Some(raw) = node.raw.as_mut()
                && let Err(error) = raw.step(message)
            {
                return Err(violation(
                    ViolationKind::InvalidMessage,
                    format!("{to} rejected {message_type:?} from {from}: {error}"),
                ));
            }
            node.handle_readies(&mut self.world, crash)?;
        }
        Ok(())
    }

    fn tick_all(&mut self, chaos: bool) -> Result<(), Violation> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            let crash = self.crash_point(chaos);
            let Some(node) = self.nodes.get_mut(&id) else { continue };
            let Some(raw) = node.raw.as_mut() else { continue };
            raw.tick();
            node.handle_readies(&mut self.world, crash)?;
        }
        Ok(())
    }

    /// The live replica that believes it leads the highest term.
    fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter_map(|n| n.role().filter(|(role, _)| *role == Role::Leader).map(|(_, term)| (term, n.id)))
            .max()
            .map(|(_, id)| id)
    }

    fn pick_target(&mut self) -> Option<u64> {
        if let Some(leader) = self.leader()
            && self.world.rng.random_bool(0.85)
        {
            return Some(leader);
        }
        let alive: Vec<u64> = self.nodes.values().filter(|n| n.alive()).map(|n| n.id).collect();
        alive.choose(&mut self.world.rng).copied()
    }

    fn client_operations(&mut self) {
        if self.world.rng.random_bool(self.profile.write_rate) {
            self.client_write();
        }
        if self.world.rng.random_bool(self.profile.read_rate) {
            self.client_read();
        }
    }

    fn client_write(&mut self) {
        let Some(id) = self.pick_target() else { return };
        let write = Write {
            op_id: self.next_op_id,
            key: self.world.rng.random_range(0..KEYS),
            value: self.next_op_id,
        };
        self.next_op_id += 1;
        let step = self.world.step;
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let Some(raw) = node.raw.as_mut() else { return };
        if let Ok(position) = raw.propose(write.encode()) {
            node.proposals.insert(position.index, (position.term, write.op_id, step));
            self.world.trace.record(step, Event::Propose { id, index: position.index, term: position.term });
        }
    }

    fn client_read(&mut self) {
        let Some(id) = self.pick_target() else { return };
        let read_id = self.next_read_id;
        self.next_read_id += 1;
        let key = self.world.rng.random_range(0..KEYS);
        let lease = self.world.raft_template.check_quorum && self.world.rng.random_bool(0.5);
        let mode = if lease { ReadMode::Lease } else { ReadMode::Safe };
        let must_see = self.world.checker.max_acknowledged_index;
        let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) else { return };
        if raw.read_index(encode_read_id(read_id), mode).is_ok() {
            self.world.reads.insert(read_id, ReadRequest { node: id, key, must_see });
        }
    }

    fn compactions(&mut self) {
        if self.profile.compaction_rate == 0.0 {
            return;
        }
        for node in self.nodes.values_mut() {
            if node.alive() && self.world.rng.random_bool(self.profile.compaction_rate) {
                node.compact(&mut self.world);
            }
        }
    }

    fn fault_event(&mut self) -> Result<(), Violation> {
        match self.world.rng.random_range(0..14) {
            0..=2 => self.partition(),
            3..=4 => {
                self.world.network.faults.blocked.clear();
                self.world.network.faults.slow.clear();
                self.world.trace.record(self.world.step, Event::Heal);
            }
            5..=6 => self.crash_random(),
            7..=8 => self.restart_random()?,
            9 => self.slow_random(),
            10..=11 if self.profile.membership => self.change_membership()?,
            12..=13 if self.profile.transfers => self.transfer_leadership(),
            _ => {}
        }
        Ok(())
    }

    fn live_ids(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| !n.destroyed).map(|n| n.id).collect()
    }

    fn partition(&mut self) {
        let mut ids = self.live_ids();
        ids.shuffle(&mut self.world.rng);
        let rng = &mut self.world.rng;
        let mut blocked = BTreeSet::new();
        let cut_between =
            |blocked: &mut BTreeSet<(u64, u64)>, left: &[u64], right: &[u64], both_ways: bool| {
                for &a in left {
                    for &b in right {
                        blocked.insert((a, b));
                        if both_ways {
                            blocked.insert((b, a));
                        }
                    }
                }
            };
        let mode = if self.profile.leader_churn { 1 } else { rng.random_range(0..4) };
        match mode {
            0 => {
                // Two sides, either a majority and a minority or any split.
                let cut = rng.random_range(1..ids.len().max(2));
                let (left, right) = ids.split_at(cut.min(ids.len()));
                cut_between(&mut blocked, left, right, true);
            }
            1 => {
                // The leader alone.
                if let Some(leader) = self.leader() {
                    let others: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
                    cut_between(&mut blocked, &[leader], &others, true);
                }
            }
            2 => {
                // A bridge: two sides that both still reach one node in the middle.
                if ids.len() >= 3 {
                    let (bridge, rest) =
                        ids.split_first().map(|(b, r)| (*b, r.to_vec())).unwrap_or((0, Vec::new()));
                    let half = rest.len() / 2;
                    cut_between(&mut blocked, &rest[..half], &rest[half..], true);
                    blocked.retain(|(a, b)| *a != bridge && *b != bridge);
                }
            }
            _ => {
                // One-way cuts.
                for _ in 0..rng.random_range(1..=3) {
                    if let (Some(&a), Some(&b)) = (ids.choose(rng), ids.choose(rng))
                        && a != b
                    {
                        blocked.insert((a, b));
                    }
                }
            }
        }
        self.world
            .trace
            .record(self.world.step, Event::Partition { blocked: blocked.iter().copied().collect() });
        self.world.network.faults.blocked = blocked;
    }

    fn crash_random(&mut self) {
        let alive: Vec<u64> = self.nodes.values().filter(|n| n.alive()).map(|n| n.id).collect();
        let victim = if self.profile.leader_churn { self.leader() } else { None };
        if let Some(id) = victim.or_else(|| alive.choose(&mut self.world.rng).copied())
            && let Some(node) = self.nodes.get_mut(&id)
        {
            node.crash(&mut self.world, "killed");
        }
    }

    fn restart_random(&mut self) -> Result<(), Violation> {
        let down: Vec<u64> =
            self.nodes.values().filter(|n| !n.alive() && !n.destroyed).map(|n| n.id).collect();
        if let Some(&id) = down.choose(&mut self.world.rng)
            && let Some(node) = self.nodes.get_mut(&id)
        {
            node.start(&mut self.world)?;
            self.world.trace.record(self.world.step, Event::Restart { id });
        }
        Ok(())
    }

    fn slow_random(&mut self) {
        let ids = self.live_ids();
        if let Some(&id) = ids.choose(&mut self.world.rng) {
            self.world.network.faults.slow.insert(id);
            self.world.trace.record(self.world.step, Event::Slow { id });
        }
    }

    /// Keeps the voter count between the founding size and one more: add a learner,
    /// promote it (joint consensus), remove a voter (possibly the leader).
    fn change_membership(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader() else { return Ok(()) };
        let Some(config) = self.nodes.get(&leader).and_then(|n| n.raw.as_ref()).map(|r| r.conf_state())
        else {
            return Ok(());
        };
        if is_joint(&config) {
            return Ok(());
        }
        // Sorted, as the core hands them out: the seed picks the same replica every run.
        let voters: Vec<u64> = config.voters.clone();
        let live_learners: Vec<u64> = config
            .learners
            .iter()
            .copied()
            .filter(|id| self.nodes.get(id).is_some_and(|n| !n.destroyed))
            .collect();
        let single = |change_type: ConfChangeType, node_id: u64| ConfChangeSingle {
            change_type: change_type as i32,
            node_id,
        };
        let (change, new_node) = if voters.len() > self.config.nodes {
            let &victim = voters.choose(&mut self.world.rng).unwrap_or(&leader);
            (single(ConfChangeType::Remove, victim), None)
        } else if let Some(&learner) = live_learners.first() {
            (single(ConfChangeType::AddVoter, learner), None)
        } else if let Some(&dead_learner) = config.learners.first() {
            (single(ConfChangeType::Remove, dead_learner), None)
        } else {
            let id = self.next_node_id;
            (single(ConfChangeType::AddLearner, id), Some(id))
        };
        let description = format!("{:?} {}", change.change_type(), change.node_id);
        let conf_change = ConfChange { changes: vec![change], context: Vec::new() };
        let Some(raw) = self.nodes.get_mut(&leader).and_then(|n| n.raw.as_mut()) else { return Ok(()) };
        if raw.propose_conf_change(&conf_change).is_err() {
            return Ok(());
        }
        self.world.trace.record(self.world.step, Event::ConfChange { id: leader, description });
        if let Some(id) = new_node {
            // A new replica starts empty; the leader brings it up to date by snapshot.
            self.next_node_id += 1;
            let node = SimNode::new(id, MemStorage::new(), &mut self.world)?;
            self.nodes.insert(id, node);
        }
        Ok(())
    }

    fn transfer_leadership(&mut self) {
        let Some(leader) = self.leader() else { return };
        let Some(raw) = self.nodes.get_mut(&leader).and_then(|n| n.raw.as_mut()) else { return };
        let voters: Vec<u64> = raw.conf_state().voters.into_iter().filter(|&id| id != leader).collect();
        if let Some(&target) = voters.choose(&mut self.world.rng)
            && raw.transfer_leader(target).is_ok()
        {
            self.world.trace.record(self.world.step, Event::Transfer { from: leader, to: target });
            self.world.stats.transfers_started += 1;
        }
    }

    /// Destroys replicas that the newest applied configuration no longer contains (and
    /// new replicas whose addition never took effect), as an operator would.
    fn destroy_orphans(&mut self) {
        let config = &self.world.latest_conf.1;
        if is_joint(config) || config.voters.is_empty() {
            return;
        }
        let members: BTreeSet<u64> = config
            .voters
            .iter()
            .chain(&config.voters_outgoing)
            .chain(&config.learners)
            .chain(&config.learners_next)
            .copied()
            .collect();
        let grace = ORPHAN_GRACE_TICKS * STEPS_PER_TICK;
        let step = self.world.step;
        let orphans: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| !n.destroyed && !members.contains(&n.id) && n.created_at + grace < step)
            .map(|n| n.id)
            .collect();
        for id in orphans {
            if let Some(node) = self.nodes.get_mut(&id) {
                if node.alive() {
                    node.crash(&mut self.world, "destroyed after removal");
                }
                node.destroyed = true;
            }
        }
    }

    fn heal(&mut self) -> Result<(), Violation> {
        self.world.network.heal();
        for node in self.nodes.values_mut() {
            if !node.destroyed && !node.alive() {
                node.start(&mut self.world)?;
                self.world.trace.record(self.world.step, Event::Restart { id: node.id });
            }
        }
        self.world.healed_at = Some(self.world.step);
        self.world.trace.record(self.world.step, Event::Phase("faults healed; a proposal must commit"));
        Ok(())
    }

    fn liveness_violation(&self) -> Violation {
        let roles: Vec<String> = self
            .nodes
            .values()
            .filter(|n| !n.destroyed)
            .map(|n| match n.raw.as_ref() {
                Some(raw) => {
                    let status = raw.status();
                    let conf_state = raw.conf_state();
                    format!(
                        "{}: {:?} term {} last {} commit {} applied {} voters {:?} outgoing {:?}",
                        n.id,
                        status.role,
                        status.term,
                        status.last_index,
                        status.commit_index,
                        status.applied_index,
                        conf_state.voters,
                        conf_state.voters_outgoing
                    )
                }
                None => format!("{}: down", n.id),
            })
            .collect();
        violation(
            ViolationKind::Liveness,
            format!(
                "seed {}: no proposal committed within {} ticks after healing; replicas: [{}]",
                self.seed,
                self.config.liveness_bound_ticks,
                roles.join("; ")
            ),
        )
    }
}

/// Whether a configuration is joint: old voters still have their say.
fn is_joint(conf_state: &ConfState) -> bool {
    !conf_state.voters_outgoing.is_empty()
}
