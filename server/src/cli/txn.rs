//! `tessera ctl txn`: transactions from the command line. Each invocation is one
//! transaction: `get` and `scan` read a snapshot (now, or at `--at TS`), `put` and
//! `delete` commit their keys together, and `exec` runs a script of reads and writes
//! from standard input in one transaction, committing at its end. Keys and values are
//! text, as in the rest of `ctl`; the transactional key space is separate from the raw
//! one that `ctl get` and `ctl put` use.

use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use tessera_engine::timestamp::Timestamp;

use crate::client::{Client, Snapshot, Transaction};

#[derive(Subcommand)]
pub(crate) enum TxnCommand {
    /// Print a key's value in a snapshot.
    Get {
        key: String,
        /// Read at this timestamp (a 64-bit integer from `ctl timestamp`) instead of now.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Print the pairs of [START, END) in a snapshot (an empty END: to the end).
    Scan {
        start: String,
        end: String,
        #[arg(long, default_value_t = 0)]
        limit: usize,
        #[arg(long)]
        reverse: bool,
        #[arg(long)]
        at: Option<u64>,
    },
    /// Set KEY VALUE pairs in one transaction; prints its commit timestamp.
    Put {
        #[arg(required = true, num_args = 2.., value_names = ["KEY", "VALUE"])]
        pairs: Vec<String>,
    },
    /// Delete the keys in one transaction; prints its commit timestamp.
    Delete {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Run one transaction from standard input, a command per line: `get KEY`,
    /// `scan START END [LIMIT]`, `put KEY VALUE`, `delete KEY`, `lock KEY` (conflict if
    /// another transaction writes KEY meanwhile), `rollback`. Commits at the end of the
    /// input; prints each read's result and the commit timestamp.
    Exec,
}

pub(crate) async fn run(client: Client, command: TxnCommand) -> anyhow::Result<()> {
    let client = Arc::new(client);
    match command {
        TxnCommand::Get { key, at } => {
            let value = snapshot(&client, at).await?.get(key.as_bytes()).await?;
            println!("{}", value.map_or("(not found)".to_string(), |value| text(&value)));
        }
        TxnCommand::Scan { start, end, limit, reverse, at } => {
            for pair in
                snapshot(&client, at).await?.scan(start.as_bytes(), end.as_bytes(), limit, reverse).await?
            {
                println!("{}\t{}", text(&pair.key), text(&pair.value));
            }
        }
        TxnCommand::Put { pairs } => {
            if pairs.len() % 2 != 0 {
                bail!("put takes KEY VALUE pairs; {} words given", pairs.len());
            }
            let mut txn = client.begin().await?;
            for pair in pairs.chunks(2) {
                txn.put(pair[0].as_bytes(), pair[1].as_bytes())?;
            }
            println!("committed at {}", txn.commit().await?.as_u64());
        }
        TxnCommand::Delete { keys } => {
            let mut txn = client.begin().await?;
            for key in keys {
                txn.delete(key.as_bytes())?;
            }
            println!("committed at {}", txn.commit().await?.as_u64());
        }
        TxnCommand::Exec => exec(&client).await?,
    }
    Ok(())
}

/// A snapshot at `at`, or now.
async fn snapshot(client: &Arc<Client>, at: Option<u64>) -> anyhow::Result<Snapshot> {
    let read_ts = match at {
        Some(at) => Timestamp::from_u64(at),
        None => client.timestamp().await?,
    };
    Ok(client.snapshot_at(read_ts).await?)
}

/// Runs the script on standard input as one transaction.
async fn exec(client: &Arc<Client>) -> anyhow::Result<()> {
    let mut txn = client.begin().await?;
    println!("started at {}", txn.start_ts().await?.as_u64());
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading the script")?;
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first().is_some_and(|word| *word == "rollback") {
            txn.rollback();
            println!("rolled back");
            return Ok(());
        }
        step(&mut txn, &words).await.with_context(|| format!("line {}: {line:?}", number + 1))?;
    }
    println!("committed at {}", txn.commit().await?.as_u64());
    Ok(())
}

async fn step(txn: &mut Transaction, words: &[&str]) -> anyhow::Result<()> {
    match words {
        [] => {}
        ["get", key] => {
            let value = txn.get(key.as_bytes()).await?;
            println!("{key}\t{}", value.map_or("(not found)".to_string(), |value| text(&value)));
        }
        ["scan", start, end] | ["scan", start, end, _] => {
            let limit = match words.get(3) {
                Some(limit) => limit.parse().with_context(|| format!("bad limit {limit:?}"))?,
                None => 0,
            };
            for pair in txn.scan(start.as_bytes(), end.as_bytes(), limit, false).await? {
                println!("{}\t{}", text(&pair.key), text(&pair.value));
            }
        }
        ["put", key, value] => txn.put(key.as_bytes(), value.as_bytes())?,
        ["delete", key] => txn.delete(key.as_bytes())?,
        ["lock", key] => txn.lock_keys([key.as_bytes()])?,
        _ => {
            bail!("expected get KEY, scan START END [LIMIT], put KEY VALUE, delete KEY, lock KEY or rollback")
        }
    }
    Ok(())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
