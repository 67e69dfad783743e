//! Lease expiry: every store serving the etcd API looks for leases past their deadline
//! every [`SWEEP_INTERVAL`] and revokes them. Stores that find the same lease race
//! harmlessly: the revokes conflict, and the one that runs again finds it gone.
//!
//! A lease is expired once the oracle's clock is past its deadline **and** past one
//! TTL after this store's sweeper started. When the whole cluster was down, no client
//! could keep its leases alive: like etcd, which gives every lease a full TTL when a
//! new leader takes over, the leases then get a TTL from the restart before they
//! expire. A single store's restart changes nothing: the others' sweepers go on.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tessera_engine::store::Store;
use tessera_engine::timestamp::Timestamp;

use super::records::{self, LeaseRecord, Revoke};
use crate::client::Client;
use crate::etcd::errors::EtcdError;

/// How often a store looks for expired leases (etcd's lessor looks every 500 ms).
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// Looks for expired leases and revokes them, until `store` stops.
pub(crate) async fn expire_leases(client: Arc<Client>, store: Weak<Store>) {
    let started = match client.timestamp().await {
        Ok(now) => now,
        // The oracle is not there yet: count from the local clock's reading of it.
        Err(_) => {
            Timestamp::new(tessera_engine::timestamp::wall_clock_milliseconds(), 0).unwrap_or(Timestamp::ZERO)
        }
    };
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if store.strong_count() == 0 {
            return;
        }
        if let Err(error) = sweep(&client, started).await {
            tracing::debug!(%error, "looking for expired leases failed; trying again later");
        }
    }
}

/// Revokes every lease expired now.
async fn sweep(client: &Arc<Client>, started: Timestamp) -> Result<(), EtcdError> {
    let transaction = client.begin().await?;
    let now = transaction.start_ts().await?;
    for (id, record) in records::every_lease(&transaction).await? {
        let not_before_milliseconds = not_before(&record, started);
        if !record.expired(now, not_before_milliseconds) {
            continue;
        }
        match records::revoke(client, id, Revoke::IfExpired { not_before_milliseconds }).await {
            Ok(Some(at)) => tracing::debug!(lease = id, revision = at, "lease expired and revoked"),
            // Kept alive in the meantime, or revoked by another store.
            Ok(None) | Err(EtcdError::LeaseNotFound) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The earliest a lease may expire for this sweeper: one TTL after it started.
fn not_before(record: &LeaseRecord, started: Timestamp) -> u64 {
    let ttl_milliseconds = u64::try_from(record.granted_ttl_seconds).unwrap_or(0).saturating_mul(1000);
    started.physical_milliseconds().saturating_add(ttl_milliseconds)
}
