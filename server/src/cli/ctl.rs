//! `tessera ctl`: reads, writes and cluster views from the command line, through the
//! client library. Keys and values are taken and shown as text (UTF-8, with invalid
//! bytes replaced when shown). Errors exit non-zero with one line naming the problem.

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;
use tessera_placement::proto::StoreState;

use crate::client::Client;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Addresses of the placement driver's replicas, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pd: Vec<String>,
    /// Print the cluster views (stores, regions, operators, members) as JSON arrays.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a request after this many seconds (1 to 86400).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
    /// Dial over TLS with these credentials (an admin certificate for split, transfer,
    /// move and store removal).
    #[command(flatten)]
    tls: super::tls::TlsFlags,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Print a key's value.
    Get { key: String },
    /// Set a key's value.
    Put { key: String, value: String },
    /// Delete a key.
    Delete { key: String },
    /// Print the pairs in [START, END) (an empty END: to the end of the key space).
    Scan {
        start: String,
        end: String,
        /// At most this many pairs (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// In descending key order.
        #[arg(long)]
        reverse: bool,
    },
    /// Delete every key in [START, END).
    DeleteRange { start: String, end: String },
    /// Set KEY to --new (or delete it without --new) if its value is --expected (or it
    /// is absent without --expected).
    Cas {
        key: String,
        #[arg(long)]
        expected: Option<String>,
        #[arg(long)]
        new: Option<String>,
    },
    /// Split the region holding KEY at KEY; waits for the split and says how it ended.
    /// KEY is taken as the argument's bytes (any bytes, as a shell passes them: etcd's
    /// keys live under the byte 0xfe, for one).
    Split {
        key: std::ffi::OsString,
        #[command(flatten)]
        wait: Wait,
    },
    /// Move REGION's leadership to its voter on STORE; waits for it and says how it ended.
    TransferLeader {
        region: u64,
        store: u64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Move REGION's replica on FROM to the store TO; waits for the move and says how it
    /// ended.
    MovePeer {
        region: u64,
        from: u64,
        to: u64,
        #[command(flatten)]
        wait: Wait,
    },
    /// The stores: address, state, regions and leaders; for a down store, when its
    /// replicas are replaced.
    Stores,
    /// Act on one store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// The regions: range, peers (store ids), leader (store id).
    Regions,
    /// The placement driver's operators in flight, then the most recent that ended.
    Operators,
    /// The placement driver's replicas: id, address, voter or learner.
    Members,
    /// A timestamp from the placement driver's oracle: the 64-bit integer, then its
    /// physical milliseconds and logical counter.
    Timestamp,
    /// Transactions over the transactional key space.
    #[command(subcommand)]
    Txn(super::txn::TxnCommand),
    /// Follow the transactional changes of [START, END) in commit order, from now or
    /// from --from TS.
    Watch(super::watch::WatchArgs),
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Declare store ID gone for good: its replicas are replaced now (not after the
    /// down grace) and it may never register again. Refused if a region could then no
    /// longer reach a quorum.
    Remove { id: u64 },
}

#[derive(clap::Args)]
struct Wait {
    /// Return once the driver accepted the operator, without waiting for it to end.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting for the operator after this many seconds (it carries on; 1 to
    /// 86400).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    wait_seconds: u64,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::with_dialer(args.pd.clone(), Duration::from_secs(args.timeout), args.tls.dialer()?);
    match args.command {
        CtlCommand::Txn(command) => super::txn::run(client, command).await?,
        CtlCommand::Watch(watch) => super::watch::run(client, watch, args.json).await?,
        CtlCommand::Get { key } => match client.get(key.as_bytes()).await? {
            Some(value) => println!("{}", text(&value)),
            None => println!("(not found)"),
        },
        CtlCommand::Put { key, value } => {
            client.put(key.as_bytes(), value.as_bytes()).await?;
            println!("OK");
        }
        CtlCommand::Delete { key } => {
            client.delete(key.as_bytes()).await?;
            println!("OK");
        }
        CtlCommand::Scan { start, end, limit, reverse } => {
            for pair in client.scan(start.as_bytes(), end.as_bytes(), limit, reverse).await? {
                println!("{}\t{}", text(&pair.key), text(&pair.value));
            }
        }
        CtlCommand::DeleteRange { start, end } => {
            client.delete_range(start.as_bytes(), end.as_bytes()).await?;
            println!("OK");
        }
        CtlCommand::Cas { key, expected, new } => {
            let (swapped, found) = client
                .compare_and_swap(
                    key.as_bytes(),
                    expected.as_deref().map(str::as_bytes),
                    new.as_deref().map(str::as_bytes),
                )
                .await?;
            let found = found.map_or("(absent)".to_string(), |value| text(&value));
            if swapped {
                println!("swapped (was {found})");
            } else {
                println!("not swapped (found {found})");
            }
        }
        CtlCommand::Split { key, wait } => {
            if key.is_empty() {
                bail!("the empty key starts the key space: nothing to split there");
            }
            let operator = client
                .pd()
                .split_region_async(std::os::unix::ffi::OsStrExt::as_bytes(key.as_os_str()))
                .await?;
            follow(&client, operator, &wait, "the region already splits there").await?;
        }
        CtlCommand::TransferLeader { region, store, wait } => {
            let operator = client.pd().transfer_leader_async(region, store).await?;
            follow(&client, operator, &wait, "the leader is already there").await?;
        }
        CtlCommand::MovePeer { region, from, to, wait } => {
            let operator = client.pd().move_peer_async(region, from, to).await?;
            follow(&client, operator, &wait, "nothing to move").await?;
        }
        CtlCommand::Stores => stores(&client, args.json).await?,
        CtlCommand::Store(StoreCommand::Remove { id }) => {
            client.pd().remove_store_async(id).await?;
            println!(
                "OK: store {id} is removed; its replicas are being replaced (`ctl operators` shows them)"
            );
        }
        CtlCommand::Members => members(&client, args.json).await?,
        CtlCommand::Regions => regions(&client, args.json).await?,
        CtlCommand::Operators => operators(&client, args.json).await?,
        CtlCommand::Timestamp => timestamp(&client, args.json).await?,
    }
    Ok(())
}

async fn timestamp(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let timestamp = client.timestamp().await?;
    if as_json {
        let (physical_ms, logical) = (timestamp.physical_milliseconds(), timestamp.logical());
        println!(
            "{}",
            json!({"timestamp": timestamp.as_u64(), "physical_ms": physical_ms, "logical": logical})
        );
    } else {
        println!("{} {timestamp}", timestamp.as_u64());
    }
    Ok(())
}

async fn members(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let members = client.pd().members_async().await?;
    let role = |voter: bool| if voter { "voter" } else { "learner" };
    if as_json {
        let rows: Vec<_> = members
            .iter()
            .map(|m| json!({"id": m.id, "address": m.address, "role": role(m.voter)}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:>6}  {:<22} role", "id", "address");
    for m in members {
        println!("{:>6}  {:<22} {}", m.id, m.address, role(m.voter));
    }
    Ok(())
}

/// Waits for the operator the driver started (unless told not to) and says how it
/// ended; an operator that did not finish is an error.
async fn follow(
    client: &Client,
    operator: Option<u64>,
    wait: &Wait,
    nothing_to_do: &str,
) -> anyhow::Result<()> {
    let Some(id) = operator else {
        println!("OK ({nothing_to_do})");
        return Ok(());
    };
    if wait.no_wait {
        println!("OK: operator {id} started (`ctl operators` shows its progress)");
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.wait_seconds);
    loop {
        let operators = client.pd().operators_async().await?;
        match operators.iter().find(|o| o.id == id) {
            Some(o) if o.outcome.is_empty() => {}
            Some(o) if o.outcome == "finished" => {
                println!("OK: operator {id} ({}) finished in {} ms", o.kind, o.age_ms);
                return Ok(());
            }
            Some(o) => {
                let step = o.steps.get(o.current_step as usize).cloned().unwrap_or_default();
                bail!(
                    "operator {id} ({}) {} at step {}/{} ({step})",
                    o.kind,
                    o.outcome,
                    o.current_step + 1,
                    o.steps.len()
                )
            }
            None => bail!(
                "operator {id} is unknown to the driver's leader (leadership changed): it may or may not have \
                 completed; `ctl regions` shows the regions now"
            ),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("operator {id} still in flight after {} s; `ctl operators` follows it", wait.wait_seconds);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn operators(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let operators = client.pd().operators_async().await?;
    if as_json {
        let rows: Vec<_> = operators
            .iter()
            .map(|o| {
                json!({"id": o.id, "region_id": o.region_id, "kind": o.kind, "steps": o.steps,
                       "current_step": o.current_step, "age_ms": o.age_ms, "outcome": o.outcome})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for o in operators {
        let step = o.steps.get(o.current_step as usize).cloned().unwrap_or_default();
        let (region, kind, at, of, age) = (o.region_id, &o.kind, o.current_step + 1, o.steps.len(), o.age_ms);
        if o.outcome.is_empty() {
            println!("operator {} region {region} {kind} step {at}/{of} ({step}) for {age} ms", o.id);
        } else {
            println!("operator {} region {region} {kind} {} after {age} ms", o.id, o.outcome);
        }
    }
    Ok(())
}

async fn stores(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let stores = client.pd().stores_async().await?;
    let state = |s: i32| match StoreState::try_from(s) {
        Ok(StoreState::Up) => "up",
        Ok(StoreState::Down) => "down",
        Ok(StoreState::Tombstone) => "tombstone",
        Err(_) => "unknown",
    };
    if as_json {
        let rows: Vec<_> = stores
            .iter()
            .map(|s| {
                let record = s.store.clone().unwrap_or_default();
                json!({"id": record.id, "address": record.address, "state": state(s.state),
                       "region_count": s.region_count, "leader_count": s.leader_count, "labels": record.labels,
                       "down_for_ms": s.down_for_ms, "replicas_replaced_in_ms": s.replicas_replaced_in_ms})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:>6}  {:<22} {:<9} {:>8} {:>8}", "id", "address", "state", "regions", "leaders");
    for s in stores {
        let record = s.store.clone().unwrap_or_default();
        let (id, address, regions, leaders) = (record.id, record.address, s.region_count, s.leader_count);
        println!("{id:>6}  {address:<22} {:<9} {regions:>8} {leaders:>8}{}", state(s.state), down_note(&s));
    }
    Ok(())
}

/// For a down store: for how long, and when its replicas get replaced elsewhere.
fn down_note(store: &tessera_placement::proto::StoreView) -> String {
    if store.down_for_ms == 0 {
        return String::new();
    }
    let down_for = seconds_text(store.down_for_ms);
    if store.replicas_replaced_in_ms == 0 {
        return format!("  down for {down_for}; its replicas are being replaced");
    }
    let replaced_in = seconds_text(store.replicas_replaced_in_ms);
    format!(
        "  down for {down_for}; its replicas are replaced in {replaced_in} (or now: `ctl store remove {}`)",
        store.store.as_ref().map_or(0, |s| s.id)
    )
}

fn seconds_text(milliseconds: u64) -> String {
    let seconds = milliseconds / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

async fn regions(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let routes = client.pd().scan_regions_async(b"", b"", 0).await?;
    let rows: Vec<_> = routes
        .iter()
        .filter_map(|route| {
            let region = route.region.as_ref()?;
            Some((region, route.leader.map(|p| p.store_id)))
        })
        .collect();
    if as_json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(region, leader)| {
                json!({"id": region.id, "start_key": text(&region.start_key), "end_key": text(&region.end_key),
                       "peers": region.peers.iter().map(|p| p.store_id).collect::<Vec<_>>(), "leader": leader})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:>8}  {:<20} {:<20} {:<20} {:>7}", "id", "start", "end", "peers (stores)", "leader");
    for (region, leader) in rows {
        let peers: Vec<String> = region.peers.iter().map(|p| p.store_id.to_string()).collect();
        println!(
            "{:>8}  {:<20} {:<20} {:<20} {:>7}",
            region.id,
            format!("{:?}", text(&region.start_key)),
            format!("{:?}", text(&region.end_key)),
            peers.join(","),
            leader.map_or("-".to_string(), |s| s.to_string())
        );
    }
    Ok(())
}
