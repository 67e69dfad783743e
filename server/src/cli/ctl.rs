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
    /// Give up on a request after this many seconds.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
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
    /// Ask the placement driver to split the region holding KEY at KEY.
    Split { key: String },
    /// Ask the placement driver to move REGION's leadership to its voter on STORE.
    TransferLeader { region: u64, store: u64 },
    /// Ask the placement driver to move REGION's replica on FROM to the store TO.
    MovePeer { region: u64, from: u64, to: u64 },
    /// The stores: address, state, regions and leaders.
    Stores,
    /// The regions: range, peers (store ids), leader (store id).
    Regions,
    /// The placement driver's operators in flight.
    Operators,
    /// The placement driver's replicas: id, address, voter or learner.
    Members,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::new(args.pd.clone(), Duration::from_secs(args.timeout));
    match args.command {
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
        CtlCommand::Split { key } => {
            if key.is_empty() {
                bail!("the empty key starts the key space: nothing to split there");
            }
            client.pd().split_region_async(key.as_bytes()).await?;
            println!("OK (the region's leader splits it shortly)");
        }
        CtlCommand::TransferLeader { region, store } => {
            client.pd().transfer_leader_async(region, store).await?;
            println!("OK (the region's leader hands over shortly)");
        }
        CtlCommand::MovePeer { region, from, to } => {
            client.pd().move_peer_async(region, from, to).await?;
            println!("OK (the replica moves shortly; `ctl operators` shows its progress)");
        }
        CtlCommand::Stores => stores(&client, args.json).await?,
        CtlCommand::Members => members(&client, args.json).await?,
        CtlCommand::Regions => regions(&client, args.json).await?,
        CtlCommand::Operators => operators(&client, args.json).await?,
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

async fn operators(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let operators = client.pd().operators_async().await?;
    if as_json {
        let rows: Vec<_> = operators
            .iter()
            .map(|o| {
                json!({"region_id": o.region_id, "kind": o.kind, "steps": o.steps,
                       "current_step": o.current_step, "age_ms": o.age_ms})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for o in operators {
        let step = o.steps.get(o.current_step as usize).cloned().unwrap_or_default();
        println!(
            "region {} {} step {}/{} ({step}) for {} ms",
            o.region_id,
            o.kind,
            o.current_step + 1,
            o.steps.len(),
            o.age_ms
        );
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
                       "region_count": s.region_count, "leader_count": s.leader_count, "labels": record.labels})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:>6}  {:<22} {:<9} {:>8} {:>8}", "id", "address", "state", "regions", "leaders");
    for s in stores {
        let record = s.store.unwrap_or_default();
        println!(
            "{:>6}  {:<22} {:<9} {:>8} {:>8}",
            record.id,
            record.address,
            state(s.state),
            s.region_count,
            s.leader_count
        );
    }
    Ok(())
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
