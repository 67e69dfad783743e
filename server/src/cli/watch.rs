//! `tessera ctl watch`: follow the changes of a transactional key range from the
//! command line, one line per committed version (or a JSON line per transaction with
//! `--json`), until interrupted or `--count` transactions have been printed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tessera_engine::timestamp::Timestamp;

use crate::client::{ChangeEvent, Client, WatchMessage, WatchOptions};

#[derive(clap::Args)]
pub(crate) struct WatchArgs {
    start: String,
    /// An empty END: to the end of the key space.
    end: String,
    /// Changes committed after this timestamp (a 64-bit integer from `ctl timestamp`)
    /// instead of from now.
    #[arg(long)]
    from: Option<u64>,
    /// Print each change's previous value too.
    #[arg(long)]
    prev: bool,
    /// Print the range's resolved timestamp (everything at or below it has been
    /// printed) every this many milliseconds when it has moved; 0: never.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    progress_ms: u64,
    /// Stop after this many transactions; 0: run until interrupted.
    #[arg(long, default_value_t = 0)]
    count: u64,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(crate) async fn run(client: Client, args: WatchArgs, as_json: bool) -> anyhow::Result<()> {
    let client = Arc::new(client);
    let options = WatchOptions {
        start: args.start.into_bytes(),
        end: args.end.into_bytes(),
        from: args.from.map(Timestamp::from_u64),
        prev_values: args.prev,
        progress_interval: (args.progress_ms > 0).then(|| Duration::from_millis(args.progress_ms)),
    };
    let mut watch = client.watch(options).await.context("starting the watch")?;
    if as_json {
        println!("{}", json!({"watching_from": watch.from().as_u64()}));
    } else {
        println!("watching changes after {} ({})", watch.from().as_u64(), watch.from());
    }
    let mut printed = 0;
    while let Some(message) = watch.next().await {
        match message.context("the watch ended")? {
            WatchMessage::Transaction { commit_ts, events } => {
                print_transaction(commit_ts, &events, args.prev, as_json);
                printed += 1;
                if printed == args.count {
                    return Ok(());
                }
            }
            WatchMessage::Progress(at) if as_json => println!("{}", json!({"progress": at.as_u64()})),
            WatchMessage::Progress(at) => println!("{} progress", at.as_u64()),
        }
    }
    Ok(())
}

fn print_transaction(commit_ts: Timestamp, events: &[ChangeEvent], prev: bool, as_json: bool) {
    if as_json {
        let events: Vec<_> = events
            .iter()
            .map(|event| {
                json!({
                    "key": text(&event.key),
                    "value": event.value.as_deref().map(text),
                    "prev_value": event.prev_value.as_deref().map(text),
                    "start_ts": event.start_ts.as_u64(),
                })
            })
            .collect();
        println!("{}", json!({"commit_ts": commit_ts.as_u64(), "events": events}));
        return;
    }
    for event in events {
        let change = match &event.value {
            Some(value) => format!("put {} {}", text(&event.key), text(value)),
            None => format!("delete {}", text(&event.key)),
        };
        let was = match (prev, &event.prev_value) {
            (false, _) => String::new(),
            (true, Some(value)) => format!(" (was {})", text(value)),
            (true, None) => " (was absent)".to_string(),
        };
        println!("{} {change}{was}", commit_ts.as_u64());
    }
}
