//! The nemesis: faults injected into a running cluster, one episode at a time, chosen
//! by a seeded random generator so that a round's schedule is reproducible from its
//! seed (the timing of the processes is not: a failure is reproduced by running the
//! seed a few times, and its evidence is kept either way).
//!
//! An episode starts a fault, holds it for a while (sometimes asking the driver for a
//! split, a leader transfer or a replica move meanwhile), then ends it. Ending a fault
//! restores what it broke; the round restores everything once more before its final
//! reads, so a fault that failed to end cannot hide a lost write.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tessera_server::client::Client;

use crate::availability::Episode;
use crate::cluster::daemon::Role;
use crate::cluster::{ChaosCluster, status};
use crate::workload::{self, Recorder};

/// What an episode does to the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Kill {
        role: Role,
        node: usize,
    },
    Pause {
        role: Role,
        node: usize,
    },
    /// Both ways between the two sides.
    Partition {
        minority: BTreeSet<usize>,
        majority: BTreeSet<usize>,
    },
    /// The store leading the workload's first key cut off from every other node.
    IsolateLeader,
    /// Two halves that cannot talk, and one node that talks to both.
    Bridge {
        left: BTreeSet<usize>,
        middle: usize,
        right: BTreeSet<usize>,
    },
    /// `to` hears nothing from `from`; `from` still hears `to`.
    OneWay {
        from: usize,
        to: usize,
    },
    /// Every process killed and restarted at once.
    RestartAll,
    /// The store leading the workload's first key paused (SIGSTOP) while the clients
    /// keep sending it reads: once the others elected a leader and took writes, what it
    /// answers on resuming must not come from its old lease.
    PauseLeader,
    /// The store leading the workload's first key cut off from the other stores only:
    /// the driver and the clients still reach it, so nobody declares it down; its
    /// regions' followers must notice by themselves (even hibernating ones).
    IsolateLeaderFromStores,
    /// A store holding a replica of the workload's first key killed, and that replica
    /// moved away while it is down; restarted, the store holds a replica removed
    /// without its knowledge, which it must destroy.
    KillDuringMove,
    /// A replica of the workload's first key moved to a store that drops every message
    /// that would create it (a fail point armed through its status address): the
    /// leader's first appends to the learner are lost. Once the fault ends the leader
    /// must probe again, and the move must finish. `armed_at` is the status address of
    /// the store armed, once started.
    DropAppendsToNewReplica {
        armed_at: Option<String>,
    },
}

/// The fail point the chaos cluster's stores drop replica-creating messages at.
const DROP_CREATING_MESSAGES: &str = "store/drop-creating-messages";

/// A change the driver is asked for in the middle of a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    Split { key: String },
    TransferLeader { key: String },
    MovePeer { key: String },
}

/// The kinds of fault a run draws from (`--faults`).
pub const FAULT_KINDS: &[&str] = &[
    "kill-store",
    "kill-pd",
    "pause-store",
    "pause-pd",
    "partition",
    "isolate-leader",
    "bridge",
    "one-way",
    "restart-all",
    "pause-leader",
    "isolate-leader-from-stores",
    "kill-during-move",
    "drop-appends-to-new-replica",
];

fn set(nodes: &[usize]) -> BTreeSet<usize> {
    nodes.iter().copied().collect()
}

impl Fault {
    /// Draws a fault of one of `kinds` for a cluster of `nodes` nodes, the first
    /// `pd_replicas` of which run a driver replica.
    pub fn draw(rng: &mut ChaCha8Rng, kinds: &[String], nodes: usize, pd_replicas: usize) -> Option<Fault> {
        let kind = kinds.get(rng.random_range(0..kinds.len().max(1)))?;
        let any_node = rng.random_range(1..=nodes);
        let pd_node = rng.random_range(1..=pd_replicas);
        let mut shuffled: Vec<usize> = (1..=nodes).collect();
        shuffled.shuffle(rng);
        Some(match kind.as_str() {
            "kill-store" => Fault::Kill { role: Role::Store, node: any_node },
            "kill-pd" => Fault::Kill { role: Role::Pd, node: pd_node },
            "pause-store" => Fault::Pause { role: Role::Store, node: any_node },
            "pause-pd" => Fault::Pause { role: Role::Pd, node: pd_node },
            "partition" => {
                let minority_size = rng.random_range(1..=(nodes - 1) / 2).max(1);
                Fault::Partition {
                    minority: set(&shuffled[..minority_size]),
                    majority: set(&shuffled[minority_size..]),
                }
            }
            "isolate-leader" => Fault::IsolateLeader,
            "bridge" if nodes >= 3 => {
                let half = (nodes - 1) / 2;
                Fault::Bridge {
                    left: set(&shuffled[..half]),
                    middle: shuffled[half],
                    right: set(&shuffled[half + 1..]),
                }
            }
            "one-way" if nodes >= 2 => Fault::OneWay { from: shuffled[0], to: shuffled[1] },
            "restart-all" => Fault::RestartAll,
            "pause-leader" => Fault::PauseLeader,
            "isolate-leader-from-stores" => Fault::IsolateLeaderFromStores,
            "kill-during-move" => Fault::KillDuringMove,
            "drop-appends-to-new-replica" => Fault::DropAppendsToNewReplica { armed_at: None },
            _ => return None,
        })
    }

    /// The fault's kind, as [`FAULT_KINDS`] names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { role: Role::Store, .. } => "kill-store",
            Fault::Kill { role: Role::Pd, .. } => "kill-pd",
            Fault::Pause { role: Role::Store, .. } => "pause-store",
            Fault::Pause { role: Role::Pd, .. } => "pause-pd",
            Fault::Partition { .. } => "partition",
            Fault::IsolateLeader => "isolate-leader",
            Fault::Bridge { .. } => "bridge",
            Fault::OneWay { .. } => "one-way",
            Fault::RestartAll => "restart-all",
            Fault::PauseLeader => "pause-leader",
            Fault::IsolateLeaderFromStores => "isolate-leader-from-stores",
            Fault::KillDuringMove => "kill-during-move",
            Fault::DropAppendsToNewReplica { .. } => "drop-appends-to-new-replica",
        }
    }

    /// Starts the fault; answers what it did, for the round's log, and notes in
    /// `moves` a move that must finish once the faults end.
    pub async fn start(
        &mut self,
        cluster: &mut ChaosCluster,
        client: &Client,
        moves: &mut Vec<u64>,
    ) -> anyhow::Result<String> {
        match self {
            Fault::Kill { role, node } => {
                cluster.daemon(*role, *node)?.kill()?;
                Ok(format!("kill -9 {} n{node}", role.name()))
            }
            Fault::Pause { role, node } => {
                cluster.daemon(*role, *node)?.pause()?;
                Ok(format!("pause {} n{node}", role.name()))
            }
            Fault::Partition { minority, majority } => {
                cluster.network.partition(minority, majority)?;
                Ok(format!("partition {minority:?} | {majority:?}"))
            }
            Fault::IsolateLeader => {
                let Some(node) = first_key_leader_node(cluster, client).await else {
                    return Ok("isolate leader: no leader known, nothing done".into());
                };
                let others: BTreeSet<usize> = (1..=cluster.nodes()).filter(|&n| n != node).collect();
                cluster.network.partition(&set(&[node]), &others)?;
                Ok(format!("isolate leader n{node}"))
            }
            Fault::PauseLeader => {
                let Some(node) = first_key_leader_node(cluster, client).await else {
                    return Ok("pause leader: no leader known, nothing done".into());
                };
                cluster.daemon(Role::Store, node)?.pause()?;
                Ok(format!("pause the leading store n{node} with reads in flight to it"))
            }
            Fault::IsolateLeaderFromStores => {
                let Some(node) = first_key_leader_node(cluster, client).await else {
                    return Ok("isolate leader from stores: no leader known, nothing done".into());
                };
                cluster.network.isolate_port(node, crate::cluster::STORE_PORT)?;
                Ok(format!(
                    "cut the leading store n{node} off from the other stores (not the driver, not the host's clients)"
                ))
            }
            Fault::KillDuringMove => kill_during_move(cluster, client).await,
            Fault::DropAppendsToNewReplica { armed_at } => {
                drop_appends_to_new_replica(cluster, client, armed_at, moves).await
            }
            Fault::Bridge { left, middle, right } => {
                cluster.network.partition(left, right)?;
                Ok(format!("bridge {left:?} - n{middle} - {right:?}"))
            }
            Fault::OneWay { from, to } => {
                cluster.network.drop_from(*to, *from)?;
                Ok(format!("one-way: n{to} hears nothing from n{from}"))
            }
            Fault::RestartAll => {
                for daemon in &mut cluster.daemons {
                    daemon.kill()?;
                }
                cluster.restore()?;
                Ok("kill -9 every process, restart all".into())
            }
        }
    }

    /// Ends the fault.
    pub async fn end(&self, cluster: &mut ChaosCluster) -> anyhow::Result<()> {
        match self {
            Fault::Kill { role, node } => cluster.daemon(*role, *node)?.start(),
            Fault::Pause { role, node } => cluster.daemon(*role, *node)?.resume(),
            Fault::Partition { .. }
            | Fault::IsolateLeader
            | Fault::IsolateLeaderFromStores
            | Fault::Bridge { .. }
            | Fault::OneWay { .. } => cluster.network.heal(),
            // Whichever store was paused or killed: resuming or starting a running one
            // does nothing.
            Fault::PauseLeader | Fault::KillDuringMove => cluster.restore(),
            Fault::RestartAll | Fault::DropAppendsToNewReplica { armed_at: None } => Ok(()),
            Fault::DropAppendsToNewReplica { armed_at: Some(address) } => {
                status::release(address, DROP_CREATING_MESSAGES).await
            }
        }
    }
}

/// The node whose store leads the region of the workload's first key, per the driver.
async fn first_key_leader_node(cluster: &ChaosCluster, client: &Client) -> Option<usize> {
    let route = client.pd().region_by_key_async(workload::key(0).as_bytes()).await.ok()?;
    node_of_store(cluster, client, route.leader?.store_id).await
}

/// Where the workload's first key lives, per the driver, and where it could move.
struct FirstKeyPlacement {
    region_id: u64,
    /// The stores holding a replica of the key's region.
    holders: Vec<u64>,
    leader: Option<u64>,
    /// A store holding none of the region's replicas: the target of a move.
    outsider: u64,
}

/// Asks the driver where the workload's first key lives; answers why not when it cannot
/// say or when no store is free to receive a replica.
async fn first_key_placement(client: &Client) -> Result<FirstKeyPlacement, &'static str> {
    let pd = client.pd();
    let route =
        pd.region_by_key_async(workload::key(0).as_bytes()).await.map_err(|_| "the driver did not answer")?;
    let region = route.region.ok_or("no region")?;
    let holders: Vec<u64> = region.peers.iter().map(|peer| peer.store_id).collect();
    if holders.is_empty() {
        return Err("no replica");
    }
    let stores = pd.stores_async().await.map_err(|_| "the driver did not list its stores")?;
    let outsider = store_without_replica(&stores, &holders).ok_or("no store to move to")?;
    Ok(FirstKeyPlacement {
        region_id: region.id,
        holders,
        leader: route.leader.map(|peer| peer.store_id),
        outsider,
    })
}

/// The chaos node that runs the store `store_id`.
async fn node_of_store(cluster: &ChaosCluster, client: &Client, store_id: u64) -> Option<usize> {
    let address = store_address(client, store_id).await?;
    cluster.node_of_address(&address)
}

/// Kills a store holding a replica of the workload's first key (not its leader, when
/// there is a choice) and asks the driver to move that replica to a store without one.
async fn kill_during_move(cluster: &mut ChaosCluster, client: &Client) -> anyhow::Result<String> {
    let placement = match first_key_placement(client).await {
        Ok(placement) => placement,
        Err(reason) => return Ok(format!("kill during move: {reason}, nothing done")),
    };
    let holders = &placement.holders;
    let victim = *holders.iter().find(|&&store| Some(store) != placement.leader).unwrap_or(&holders[0]);
    let Some(node) = node_of_store(cluster, client, victim).await else {
        return Ok(format!("kill during move: store {victim} has no node, nothing done"));
    };
    cluster.daemon(Role::Store, node)?.kill()?;
    let (region_id, to) = (placement.region_id, placement.outsider);
    let asked = match client.pd().move_peer_async(region_id, victim, to).await {
        Ok(_) => format!("moving region {region_id} from store {victim} to {to}"),
        Err(error) => format!("move of region {region_id} refused: {error}"),
    };
    Ok(format!("kill -9 store n{node} (store {victim}), {asked}"))
}

/// Arms the fail point that drops replica-creating messages on a store without a
/// replica of the workload's first key, then asks the driver to move one there.
async fn drop_appends_to_new_replica(
    cluster: &ChaosCluster,
    client: &Client,
    armed_at: &mut Option<String>,
    moves: &mut Vec<u64>,
) -> anyhow::Result<String> {
    let placement = match first_key_placement(client).await {
        Ok(placement) => placement,
        Err(reason) => return Ok(format!("drop appends to a new replica: {reason}, nothing done")),
    };
    let (region_id, from, to) = (placement.region_id, placement.holders[0], placement.outsider);
    let Some(node) = node_of_store(cluster, client, to).await else {
        return Ok(format!("drop appends: store {to} has no node, nothing done"));
    };
    let status_address = cluster.store_status_address(node);
    // A store that cannot be armed (it crashed: the round reports that) is left alone.
    if let Err(error) = status::arm(&status_address, DROP_CREATING_MESSAGES, "trigger").await {
        return Ok(format!("drop appends: arming n{node} failed ({error:#}), nothing done"));
    }
    *armed_at = Some(status_address);
    let asked = match client.pd().move_peer_async(region_id, from, to).await {
        Ok(operator) => {
            moves.extend(operator);
            format!("moving region {region_id} from store {from} to {to} (operator {operator:?})")
        }
        Err(error) => format!("move of region {region_id} refused: {error}"),
    };
    Ok(format!("n{node} (store {to}) drops the messages that would create a replica; {asked}"))
}

/// Waits until every operator of `moves` the driver still knows has ended; answers a
/// problem for each that timed out or is still in flight at `deadline`. An operator
/// the driver forgot (its leader changed) or cancelled (its region changed under it)
/// is not judged.
pub async fn unfinished_moves(client: &Client, moves: &[u64], deadline: tokio::time::Instant) -> Vec<String> {
    if moves.is_empty() {
        return Vec::new();
    }
    loop {
        let operators = match client.pd().operators_async().await {
            Ok(operators) => operators,
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return vec![format!(
                    "the driver did not list its operators to judge the moves {moves:?}: {error}"
                )];
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let unfinished: Vec<String> = operators
            .iter()
            .filter(|operator| moves.contains(&operator.id))
            .filter(|operator| operator.outcome.is_empty() || operator.outcome == "timed_out")
            .map(|operator| {
                format!(
                    "the move {} of region {} (its first appends dropped) never finished: {}, at step {} of {:?}",
                    operator.id,
                    operator.region_id,
                    if operator.outcome.is_empty() { "in flight" } else { &operator.outcome },
                    operator.current_step,
                    operator.steps
                )
            })
            .collect();
        if unfinished.is_empty() || tokio::time::Instant::now() >= deadline {
            return unfinished;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A store among `stores` that holds none of the replicas, if any.
fn store_without_replica(stores: &[tessera_placement::proto::StoreView], holders: &[u64]) -> Option<u64> {
    stores
        .iter()
        .filter_map(|view| view.store.as_ref())
        .map(|store| store.id)
        .find(|id| !holders.contains(id))
}

async fn store_address(client: &Client, store_id: u64) -> Option<String> {
    let stores = client.pd().stores_async().await.ok()?;
    stores
        .into_iter()
        .filter_map(|view| view.store)
        .find(|store| store.id == store_id)
        .map(|store| store.address)
}

impl Operator {
    pub fn draw(rng: &mut ChaCha8Rng, keys: usize) -> Operator {
        let key = workload::key(rng.random_range(0..keys.max(1)));
        match rng.random_range(0..3) {
            0 => Operator::Split { key },
            1 => Operator::TransferLeader { key },
            _ => Operator::MovePeer { key },
        }
    }

    /// Asks the driver; answers what was asked and what the driver said. A refusal
    /// (the region is busy, the driver unreachable during a fault) is part of the
    /// experiment, not an error of the run.
    pub async fn ask(&self, client: &Client, rng: &mut ChaCha8Rng) -> String {
        self.try_ask(client, rng).await.unwrap_or_else(|why| format!("{self:?} refused: {why}"))
    }

    async fn try_ask(&self, client: &Client, rng: &mut ChaCha8Rng) -> Result<String, String> {
        let pd = client.pd();
        match self {
            Operator::Split { key } => {
                pd.split_region_async(key.as_bytes()).await.map_err(|e| e.to_string())?;
                Ok(format!("split at {key}"))
            }
            Operator::TransferLeader { key } => {
                let (region_id, replicas, leader) = replicas_of(client, key, rng).await?;
                let to = replicas.into_iter().find(|&s| Some(s) != leader).ok_or("no other replica")?;
                pd.transfer_leader_async(region_id, to).await.map_err(|e| e.to_string())?;
                Ok(format!("transfer region {region_id} leader to store {to}"))
            }
            Operator::MovePeer { key } => {
                let (region_id, replicas, _) = replicas_of(client, key, rng).await?;
                let stores = pd.stores_async().await.map_err(|e| e.to_string())?;
                let outsider = store_without_replica(&stores, &replicas);
                let (Some(to), Some(&from)) = (outsider, replicas.first()) else {
                    return Err("no store to move to".into());
                };
                pd.move_peer_async(region_id, from, to).await.map_err(|e| e.to_string())?;
                Ok(format!("move region {region_id} replica from store {from} to {to}"))
            }
        }
    }
}

/// The region holding `key`: its id, its replicas' stores in random order, and its
/// leader's store.
async fn replicas_of(
    client: &Client,
    key: &str,
    rng: &mut ChaCha8Rng,
) -> Result<(u64, Vec<u64>, Option<u64>), String> {
    let route = client.pd().region_by_key_async(key.as_bytes()).await.map_err(|e| e.to_string())?;
    let region = route.region.ok_or("no region")?;
    let mut stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
    stores.shuffle(rng);
    Ok((region.id, stores, route.leader.map(|p| p.store_id)))
}

/// What the nemesis did, for the round: its log lines, its episodes on the history's
/// clock, and the moves that must finish once the faults end.
#[derive(Debug, Default)]
pub struct Record {
    pub lines: Vec<String>,
    pub episodes: Vec<Episode>,
    pub moves: Vec<u64>,
}

/// Runs episodes until `until`: a fault held for 1 to 4 seconds (with an operator
/// asked in its middle half the time), then a second or two of calm. Episodes are
/// dated by `recorder`'s clock, the history's.
pub async fn run(
    cluster: &mut ChaosCluster,
    client: &Client,
    rng: &mut ChaCha8Rng,
    (kinds, keys): (&[String], usize),
    recorder: &Recorder,
    until: tokio::time::Instant,
    record: &mut Record,
) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let at = |log_line: String| format!("{:>6.2}s {log_line}", started.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_millis(rng.random_range(500..1500))).await;
    while tokio::time::Instant::now() + Duration::from_secs(1) < until {
        let Some(mut fault) = Fault::draw(rng, kinds, cluster.nodes(), cluster.pd_replicas()) else {
            anyhow::bail!("none of the faults {kinds:?} fits a cluster of {} nodes", cluster.nodes());
        };
        record.episodes.push(Episode { kind: fault.kind(), started_ns: recorder.lock().now_ns() });
        let done = fault.start(cluster, client, &mut record.moves).await?;
        record.lines.push(at(format!("fault: {done}")));
        let hold = Duration::from_millis(rng.random_range(1000..4000));
        let hold_until = (tokio::time::Instant::now() + hold).min(until);
        if rng.random_bool(0.5) {
            tokio::time::sleep_until(tokio::time::Instant::now() + hold / 2).await;
            let operator = Operator::draw(rng, keys);
            record.lines.push(at(format!("operator: {}", operator.ask(client, rng).await)));
        }
        tokio::time::sleep_until(hold_until).await;
        fault.end(cluster).await?;
        record.lines.push(at("end of fault".into()));
        let calm = Duration::from_millis(rng.random_range(500..2000));
        tokio::time::sleep_until((tokio::time::Instant::now() + calm).min(until)).await;
    }
    Ok(())
}
