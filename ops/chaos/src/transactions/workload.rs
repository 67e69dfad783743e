//! Transactional clients for a chaos round, beside the register clients: bank
//! transfers with audits, and list-append transactions, recorded for the checkers.
//!
//! They run on the host (every node reachable), through the round's client library,
//! in the transactional key space (which the register clients' raw keys never meet).
//!
//! - **Bank**: `ACCOUNTS` accounts opened with `OPENING` each; transfers read two of
//!   the active ones and move an amount between them (the dormant ones keep their one
//!   version, for garbage collection to keep); audits read every account in one
//!   snapshot (a scan), and each audit's balances must add up.
//! - **List-append**: transactions of one to three micro-operations on a few keys,
//!   each a read of a key's list or an append of a unique value to it (a read then a
//!   write of the list, as text). Keys `si-*` are used without locks (snapshot
//!   isolation expected); on keys `ser-*` every transaction locks the keys it only
//!   reads (serializability expected).
//! - **Coordinators killed**: now and then a commit is abandoned at a random moment
//!   (its future dropped, as when its process dies): whatever it left is resolved by
//!   the others, and its outcome is unknown.
//!
//! A commit's outcome: committed when answered; aborted when refused before its commit
//! point (a conflict, or an error before the primary's commit was sent: only that
//! commit can make a transaction visible); unknown otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tessera_server::client::{Client, ClientError, Transaction};
use tokio::sync::watch;

use super::bank::Snapshot;
use super::list_append::{self, MicroOp, Outcome};

/// Accounts opened before the faults; transfers move money between the first
/// `ACTIVE_ACCOUNTS` only. The others are written once, when opened, and then only read:
/// by the end of a round their one version is far older than garbage collection's
/// lifetime, so a collection that removed a version a read still needs (the newest at or
/// below the safe point) shows as a missing account.
pub const ACCOUNTS: usize = 10;
const ACTIVE_ACCOUNTS: usize = 6;
pub const OPENING: i64 = 100;
const LIST_KEYS: u64 = 4;
/// One commit in this many is abandoned mid-way.
const ABANDON_ONE_IN: u32 = 20;

/// What the transactional clients saw.
#[derive(Debug, Default)]
pub struct TxnHistory {
    pub snapshots: Vec<Snapshot>,
    /// List-append transactions on the keys without locks, and on those with.
    pub unlocked: Vec<list_append::Transaction>,
    pub locked: Vec<list_append::Transaction>,
    pub committed: usize,
    pub aborted: usize,
    pub unknown: usize,
}

pub fn account(index: usize) -> String {
    format!("bank-{index}")
}

pub fn list_key(serializable: bool, key: u64) -> String {
    format!("{}-{key}", if serializable { "ser" } else { "si" })
}

/// Runs `attempt` again, 200 ms apart, until it succeeds or `deadline` has passed;
/// answers its last result.
pub async fn until_done<T, F, Fut>(deadline: Duration, attempt: F) -> Result<T, ClientError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        match attempt().await {
            Err(_) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            done => return done,
        }
    }
}

/// Opens the accounts (before the faults), trying until the deadline.
pub async fn open_accounts(client: &Arc<Client>, deadline: Duration) -> Result<(), ClientError> {
    until_done(deadline, || async {
        let mut opening = client.begin().await?;
        for index in 0..ACCOUNTS {
            opening.put(account(index).as_bytes(), OPENING.to_string().as_bytes())?;
        }
        opening.commit().await.map(drop)
    })
    .await
}

/// Runs `clients` transactional clients until `stop` says so.
pub async fn run(client: Arc<Client>, clients: usize, seed: u64, stop: watch::Receiver<bool>) -> TxnHistory {
    let history = Arc::new(Mutex::new(TxnHistory::default()));
    let tasks: Vec<_> = (0..clients)
        .map(|index| {
            let (client, history, stop) = (client.clone(), history.clone(), stop.clone());
            let rng = ChaCha8Rng::seed_from_u64(seed ^ (0x7478_6e00 + index as u64));
            tokio::spawn(client_loop(client, history, stop, rng, index))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    std::mem::take(&mut *history.lock())
}

async fn client_loop(
    client: Arc<Client>,
    history: Arc<Mutex<TxnHistory>>,
    stop: watch::Receiver<bool>,
    mut rng: ChaCha8Rng,
    index: usize,
) {
    let mut sequence = 0u64;
    while !*stop.borrow() {
        sequence += 1;
        let label = format!("c{index}-{sequence}");
        match rng.random_range(0..4) {
            0 => audit(&client, &history, label).await,
            1 => transfer(&client, &history, &mut rng).await,
            _ => list_append(&client, &history, &mut rng, (index as u64) << 40 | sequence).await,
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
    }
}

async fn audit(client: &Arc<Client>, history: &Mutex<TxnHistory>, label: String) {
    if let Ok(snapshot) = read_balances(client, &label).await {
        history.lock().snapshots.push(snapshot);
    }
}

/// Every account's balance in one snapshot (a transaction's scan).
pub async fn read_balances(client: &Arc<Client>, label: &str) -> Result<Snapshot, ClientError> {
    let snapshot = client.begin().await?;
    let pairs = snapshot.scan(b"bank-", b"bank.", 0, false).await?;
    let balances: BTreeMap<String, i64> = pairs
        .into_iter()
        .map(|pair| {
            let name = String::from_utf8_lossy(&pair.key).into_owned();
            // A balance that is not a number counts as a wrong total, not a crash.
            let balance = String::from_utf8_lossy(&pair.value).parse().unwrap_or(i64::MIN);
            (name, balance)
        })
        .collect();
    let read_ts = snapshot.start_ts().await?;
    Ok(Snapshot { label: format!("{label} at {read_ts}"), balances })
}

async fn transfer(client: &Arc<Client>, history: &Mutex<TxnHistory>, rng: &mut ChaCha8Rng) {
    let (from, to) = (rng.random_range(0..ACTIVE_ACCOUNTS), rng.random_range(0..ACTIVE_ACCOUNTS));
    if from == to {
        return;
    }
    let amount: i64 = rng.random_range(1..=10);
    let Ok(mut transaction) = client.begin().await else { return };
    let prepared = async {
        let balance = |value: Option<Vec<u8>>| -> i64 {
            value.and_then(|bytes| String::from_utf8(bytes).ok()?.parse().ok()).unwrap_or(0)
        };
        let from_balance = balance(transaction.get(account(from).as_bytes()).await?);
        let to_balance = balance(transaction.get(account(to).as_bytes()).await?);
        transaction.put(account(from).as_bytes(), (from_balance - amount).to_string().as_bytes())?;
        transaction.put(account(to).as_bytes(), (to_balance + amount).to_string().as_bytes())?;
        Ok::<_, ClientError>(())
    };
    if prepared.await.is_err() {
        return;
    }
    let outcome = commit(transaction, rng).await;
    history.lock().count(outcome);
}

async fn list_append(client: &Arc<Client>, history: &Mutex<TxnHistory>, rng: &mut ChaCha8Rng, id: u64) {
    let serializable = rng.random_bool(0.5);
    let Ok(mut transaction) = client.begin().await else { return };
    let mut ops = Vec::new();
    for position in 0..rng.random_range(1..=3u64) {
        let key = rng.random_range(0..LIST_KEYS);
        let name = list_key(serializable, key);
        let current = match transaction.get(name.as_bytes()).await {
            Ok(value) => parse_list(value),
            Err(_) => return,
        };
        if rng.random_bool(0.5) {
            let mut appended = current.clone();
            // Unique across the history: the transaction's id and the append's place.
            let value = id << 2 | position;
            appended.push(value);
            if transaction.put(name.as_bytes(), format_list(&appended).as_bytes()).is_err() {
                return;
            }
            ops.push(MicroOp::Append { key, value });
        } else {
            if serializable && transaction.lock_keys([name.as_bytes()]).is_err() {
                return;
            }
            ops.push(MicroOp::Read { key, values: Some(current) });
        }
    }
    let outcome = commit(transaction, rng).await;
    if outcome != Outcome::Committed {
        for op in &mut ops {
            if let MicroOp::Read { values, .. } = op {
                *values = None;
            }
        }
    }
    let mut history = history.lock();
    history.count(outcome);
    let recorded = list_append::Transaction { id: id as usize, ops, outcome };
    if serializable { history.locked.push(recorded) } else { history.unlocked.push(recorded) }
}

/// Commits, or now and then abandons the commit at a random moment.
async fn commit(transaction: Transaction, rng: &mut ChaCha8Rng) -> Outcome {
    if rng.random_ratio(1, ABANDON_ONE_IN) {
        let after = Duration::from_micros(rng.random_range(0..20_000));
        return match tokio::time::timeout(after, transaction.commit()).await {
            Ok(result) => judge(result),
            Err(_) => Outcome::Unknown,
        };
    }
    judge(transaction.commit().await)
}

fn judge<T>(result: Result<T, ClientError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Committed,
        Err(ClientError::OutcomeUnknown(_) | ClientError::ProtocolViolation { .. }) => Outcome::Unknown,
        // Refused before the primary's commit was sent: nothing can make it visible.
        Err(_) => Outcome::Aborted,
    }
}

impl TxnHistory {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Committed => self.committed += 1,
            Outcome::Aborted => self.aborted += 1,
            Outcome::Unknown => self.unknown += 1,
        }
    }
}

fn parse_list(value: Option<Vec<u8>>) -> Vec<u64> {
    let Some(bytes) = value else { return Vec::new() };
    String::from_utf8_lossy(&bytes)
        .split(',')
        .filter(|word| !word.is_empty())
        .filter_map(|word| word.parse().ok())
        .collect()
}

fn format_list(values: &[u64]) -> String {
    values.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// The final state of every list key, read after the faults (a committed read-only
/// transaction, tried until the deadline).
pub async fn final_lists(
    client: &Arc<Client>,
    serializable: bool,
    deadline: Duration,
) -> Option<BTreeMap<u64, Vec<u64>>> {
    let lists = until_done(deadline, || async {
        let snapshot = client.begin().await?;
        let mut lists = BTreeMap::new();
        for key in 0..LIST_KEYS {
            lists.insert(key, parse_list(snapshot.get(list_key(serializable, key).as_bytes()).await?));
        }
        Ok(lists)
    });
    lists.await.ok()
}
