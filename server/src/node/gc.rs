//! Garbage collection's worker on the placement driver: what earns each new safe point.
//!
//! Every `gc_interval`, on the replica that leads the driver, one pass:
//! 1. the candidate is the highest safe point the lifetime allows (the wall clock
//!    minus `gc_lifetime`); nothing to do if the safe point is there already;
//! 2. every region is fenced at the candidate and cleared of the locks at or below it
//!    ([`Client::fence_all_regions`]): from its fence on, a region lets no transaction
//!    that started at or below the candidate lock anything, and the locks already
//!    there are resolved through their primaries;
//! 3. the driver persists the candidate as the safe point and hands it to the stores
//!    with their heartbeats' answers; they collect versions up to it.
//!
//! A pass that meets a live transaction older than the candidate stops there and the
//! safe point waits (the transaction keeps its versions until it ends); a pass that
//! fails (a region unavailable, the leadership lost) is tried again at the next
//! interval. Passes never overlap: one task runs them in turn.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tessera_placement::PlacementDriver;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, FencePass};

/// Runs passes until `stopping` is cancelled or the driver is gone.
pub(crate) async fn run(
    driver: Weak<PlacementDriver>,
    client: Client,
    interval: Duration,
    stopping: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let Some(driver) = driver.upgrade() else { return };
        if !driver.is_serving() {
            continue;
        }
        if let Err(error) = pass(&driver, &client).await {
            tracing::warn!(%error, "garbage-collection pass failed; it runs again at the next interval");
        }
    }
}

async fn pass(driver: &Arc<PlacementDriver>, client: &Client) -> anyhow::Result<()> {
    let current = driver.gc_safe_point()?;
    let candidate = driver.gc_safe_point_allowed()?;
    if candidate <= current {
        return Ok(());
    }
    // Before any region is fenced: no hold at or below the candidate is taken after
    // (and a hold taken meanwhile may lower it).
    let candidate = {
        let driver = driver.clone();
        tokio::task::spawn_blocking(move || driver.begin_gc_pass(candidate)).await??
    };
    if candidate <= current {
        return Ok(());
    }
    let started = std::time::Instant::now();
    match client.fence_all_regions(candidate).await? {
        FencePass::Blocked { key, start_ts } => {
            tracing::info!(
                candidate = candidate.as_u64(),
                start_ts = start_ts.as_u64(),
                key = %key.escape_ascii(),
                "garbage collection waits for a live transaction older than the candidate safe point"
            );
        }
        FencePass::Cleared { regions, locks_resolved } => {
            let driver = Arc::clone(driver);
            let safe_point =
                tokio::task::spawn_blocking(move || driver.advance_gc_safe_point(candidate)).await??;
            tracing::info!(
                safe_point = safe_point.as_u64(),
                regions,
                locks_resolved,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "garbage-collection pass done"
            );
        }
    }
    Ok(())
}
