//! The transactional part of a chaos round: the accounts opened before the faults,
//! the clients running beside the register clients, and after the faults the final
//! state read and everything checked.

use std::sync::Arc;
use std::time::Duration;

use tessera_server::client::{Client, ClientError};

use super::bank::{self, Snapshot};
use super::list_append::{self, Isolation, MicroOp, Outcome, Transaction};
use super::watchers::Watchers;
use super::watches::{self, Appends, Delivery};
use super::workload::{self, ACCOUNTS, OPENING, TxnHistory};

/// Names the final reads in the histories.
const FINAL: usize = usize::MAX;

/// What the transactional clients did in a round, and what the checkers found.
#[derive(Debug, Default)]
pub struct TxnOutcome {
    pub committed: usize,
    pub aborted: usize,
    pub unknown: usize,
    pub audits: usize,
    pub watchers: usize,
    /// Transactions delivered to the watchers, all of them together.
    pub watched: usize,
    pub anomalies: Vec<String>,
}

/// Reads what the history must end in, once nothing else runs, and checks it all.
pub async fn judge(
    client: &Arc<Client>,
    mut history: TxnHistory,
    watchers: Watchers,
    deadline: Duration,
) -> TxnOutcome {
    let watcher_count = watchers.len();
    let (watched, mut anomalies) = judge_watchers(client, &history, watchers, deadline).await;
    match final_audit(client, deadline).await {
        Ok(snapshot) => history.snapshots.push(snapshot),
        Err(error) => anomalies.push(format!("the final audit never succeeded: {error}")),
    }
    let accounts: Vec<String> = (0..ACCOUNTS).map(workload::account).collect();
    let total = OPENING * ACCOUNTS as i64;
    anomalies.extend(bank::check(&history.snapshots, &accounts, total).iter().map(|a| format!("bank: {a}")));
    for (serializable, transactions) in [(false, &mut history.unlocked), (true, &mut history.locked)] {
        let isolation = if serializable { Isolation::Serializable } else { Isolation::SnapshotIsolation };
        let Some(final_state) = workload::final_lists(client, serializable, deadline).await else {
            anomalies.push(format!("the final read of the {isolation:?} lists never succeeded"));
            continue;
        };
        let lost = list_append::lost_appends(transactions, &final_state);
        let reads = final_state.into_iter().map(|(key, values)| MicroOp::Read { key, values: Some(values) });
        transactions.push(Transaction { id: FINAL, ops: reads.collect(), outcome: Outcome::Committed });
        let found = list_append::check(transactions, isolation).into_iter().chain(lost);
        anomalies.extend(found.map(|anomaly| format!("list-append ({isolation:?}): {anomaly}")));
    }
    TxnOutcome {
        committed: history.committed,
        aborted: history.aborted,
        unknown: history.unknown,
        audits: history.snapshots.len(),
        watchers: watcher_count,
        watched,
        anomalies,
    }
}

/// Reads the final state of the transactional key space, lets every watcher run past
/// it, and checks each; answers how many transactions they were delivered, and the
/// anomalies.
async fn judge_watchers(
    client: &Arc<Client>,
    history: &TxnHistory,
    watchers: Watchers,
    deadline: Duration,
) -> (usize, Vec<String>) {
    let last = workload::until_done(deadline, || async {
        let until = client.timestamp().await?;
        let pairs = client.snapshot_at(until).await?.scan(b"", b"", 0, false).await?;
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        Ok((until, pairs.into_iter().map(|pair| (text(&pair.key), text(&pair.value))).collect()))
    });
    let (until, last) = match last.await {
        Ok(read) => read,
        Err(error) => {
            return (0, vec![format!("watch: the final read for the watchers never succeeded: {error}")]);
        }
    };
    let mut appends = Appends::default();
    for (serializable, transactions) in [(false, &history.unlocked), (true, &history.locked)] {
        for transaction in transactions.iter() {
            for op in &transaction.ops {
                if let MicroOp::Append { key, value } = op {
                    appends.record(transaction.id, workload::list_key(serializable, *key), *value);
                }
            }
        }
    }
    let (mut watched, mut anomalies) = (0, Vec::new());
    for finished in watchers.finish(until.as_u64(), deadline).await {
        match finished {
            Ok(record) => {
                watched +=
                    record.deliveries.iter().filter(|d| matches!(d, Delivery::Transaction { .. })).count();
                let found = watches::check(&record, until.as_u64(), &last, &appends);
                anomalies.extend(found.into_iter().map(|problem| format!("watch: {problem}")));
            }
            Err(why) => anomalies.push(format!("watch: {why}")),
        }
    }
    (watched, anomalies)
}

/// Every balance in one snapshot, tried until the deadline.
async fn final_audit(client: &Arc<Client>, deadline: Duration) -> Result<Snapshot, ClientError> {
    workload::until_done(deadline, || workload::read_balances(client, "final audit")).await
}
