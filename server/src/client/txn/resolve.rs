//! Lock resolution: what a reader or a writer does about another transaction's lock.
//!
//! The lock names its transaction's primary key, where the transaction's fate is
//! decided. The resolver asks it (CheckTxnStatus, with a timestamp from the oracle to
//! judge the lock's time to live by):
//! - committed: the lock's key is committed too, at the same timestamp;
//! - rolled back (or expired, which the status check turns into rolled back): the
//!   lock's key is rolled back;
//! - alive (the primary is locked and its time to live has not run out, or the primary
//!   is not locked yet while the lock we met has not expired): the caller waits or
//!   gives up.
//!
//! Transactional commands are idempotent, so they are sent again whatever happened to
//! an earlier try (`Resend::Always`).

use tessera_engine::proto::command::{
    CheckTxnStatus, Commit, LockInfo, Rollback, TxnResult, TxnState, Write, WriteResult, write,
};
use tessera_engine::timestamp::Timestamp;
use tessera_engine::txn::lock_expired;

use crate::client::batch::GroupOutcome;
use crate::client::{Client, ClientError, Resend};
use crate::proto::{TxnGetRequest, WriteRequest};

/// What became of a lock.
pub(super) enum Resolution {
    /// Its transaction committed or rolled back, and the key now says so.
    Resolved,
    /// Its transaction is alive.
    Alive,
}

/// What asking about a lock that held a change feed back found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleLockOutcome {
    /// Its transaction had committed or rolled back, and the key now says so.
    Resolved,
    /// Its transaction is alive: its coordinator finishes it.
    Alive,
    /// The lock was gone already.
    Gone,
}

/// The transactional outcome of a request that carried one command; an answer
/// without it is a broken protocol, never taken for success.
pub(super) fn txn_result(start_ts: Timestamp, results: Vec<WriteResult>) -> Result<TxnResult, ClientError> {
    results.into_iter().next().and_then(|result| result.txn).ok_or_else(|| ClientError::ProtocolViolation {
        start_ts,
        detail: "a transactional command was answered without its result".into(),
    })
}

/// The start timestamp a transactional command names.
fn start_ts_of(write: &Write) -> u64 {
    match &write.kind {
        Some(write::Kind::Prewrite(command)) => command.start_ts,
        Some(write::Kind::Commit(command)) => command.start_ts,
        Some(write::Kind::Rollback(command)) => command.start_ts,
        Some(write::Kind::CheckTxnStatus(command)) => command.start_ts,
        Some(write::Kind::TxnHeartBeat(command)) => command.start_ts,
        _ => 0,
    }
}

impl Client {
    /// Sends a two-phase command (prewrite, commit, rollback, status check, heartbeat)
    /// in the group of the region the cache places `key` in, with the other two-phase
    /// commands in flight for it: one request, one Raft entry, each command applied and
    /// answered on its own. None when the caller must send it alone: no group could
    /// carry it, or the group's answer was lost (the commands are idempotent, so
    /// sending again is safe whatever the lost try did).
    async fn grouped_txn_write(&self, key: &[u8], write: Write) -> Result<Option<TxnResult>, ClientError> {
        let start_ts = Timestamp::from_u64(start_ts_of(&write));
        let bytes = prost::Message::encoded_len(&write);
        match self.join_group(&self.two_phase_groups, key, write, bytes).await {
            Ok(GroupOutcome::Applied(result)) => txn_result(start_ts, vec![result]).map(Some),
            Ok(GroupOutcome::SendAlone(_))
            | Ok(GroupOutcome::Failed(ClientError::OutcomeUnknown(_)))
            | Err(ClientError::OutcomeUnknown(_)) => Ok(None),
            Ok(GroupOutcome::Failed(error)) | Err(error) => Err(error),
        }
    }

    /// Resolves the lock that the transaction started at `start_ts` holds on `key`, if
    /// it is still there, once: a live transaction is left alone, without waiting.
    /// Reading the key at `start_ts` finds the lock (or an older one, which is resolved
    /// as well) with what resolving needs (its primary, its time to live).
    pub async fn resolve_stale_lock(
        &self,
        key: &[u8],
        start_ts: Timestamp,
    ) -> Result<StaleLockOutcome, ClientError> {
        let (answer, _) = self
            .on_region(key, Resend::Always, |mut kv, context, _| {
                let request =
                    TxnGetRequest { context: Some(context), key: key.to_vec(), read_ts: start_ts.as_u64() };
                async move { kv.txn_get(request).await }
            })
            .await?;
        let Some(lock) = answer.into_inner().locked else { return Ok(StaleLockOutcome::Gone) };
        Ok(match self.resolve_lock(&lock).await? {
            Resolution::Resolved => StaleLockOutcome::Resolved,
            Resolution::Alive => StaleLockOutcome::Alive,
        })
    }

    /// Resolves `lock` through its primary.
    pub(super) async fn resolve_lock(&self, lock: &LockInfo) -> Result<Resolution, ClientError> {
        let current_ts = self.timestamp().await?;
        let start_ts = Timestamp::from_u64(lock.start_ts);
        let check = CheckTxnStatus {
            primary: lock.primary.clone(),
            start_ts: lock.start_ts,
            current_ts: current_ts.as_u64(),
            // Our lock has expired: the primary's prewrite, if it never arrived, must
            // be refused when it does.
            rollback_if_missing: lock_expired(start_ts, lock.ttl_ms, current_ts),
        };
        let result = self.txn_command(&lock.primary, write::Kind::CheckTxnStatus(check)).await?;
        let status = result.status.unwrap_or_default();
        let finish = match status.state() {
            TxnState::Locked | TxnState::PrimaryMissing | TxnState::Unspecified => {
                return Ok(Resolution::Alive);
            }
            _ if lock.key == lock.primary => return Ok(Resolution::Resolved),
            TxnState::Committed => write::Kind::Commit(Commit {
                start_ts: lock.start_ts,
                commit_ts: status.commit_ts,
                keys: vec![lock.key.clone()],
            }),
            TxnState::RolledBack => {
                write::Kind::Rollback(Rollback { start_ts: lock.start_ts, keys: vec![lock.key.clone()] })
            }
        };
        let finished = self.txn_command(&lock.key, finish).await?;
        if let Some(error) = finished.errors.into_iter().next() {
            let detail =
                format!("a secondary key disagrees with its primary ({:?}): {error:?}", status.state());
            tracing::error!(start_ts = %start_ts, detail, "transaction protocol broken");
            return Err(ClientError::ProtocolViolation { start_ts, detail });
        }
        Ok(Resolution::Resolved)
    }

    /// Sends one transactional command about keys of the region holding `key`, in a
    /// group with the other two-phase commands in flight for that region, or alone and
    /// again until it is answered or the deadline passes.
    pub(super) async fn txn_command(
        &self,
        key: &[u8],
        command: write::Kind,
    ) -> Result<TxnResult, ClientError> {
        let write = Write { kind: Some(command) };
        let start_ts = Timestamp::from_u64(start_ts_of(&write));
        if let Some(result) = self.grouped_txn_write(key, write.clone()).await? {
            return Ok(result);
        }
        let writes = vec![write];
        let (answer, _) = self
            .on_region(key, Resend::Always, |mut kv, context, _| {
                let writes = writes.clone();
                async move { kv.write(WriteRequest { context: Some(context), writes }).await }
            })
            .await?;
        txn_result(start_ts, answer.into_inner().results)
    }

    /// Sends `items` region by region, in parallel, each region's share as the one
    /// transactional command `command` makes of it, in the region's group of two-phase
    /// commands when one carries it, else alone and again until answered. Answers each
    /// share's result.
    pub(super) async fn txn_by_region<V: Clone>(
        &self,
        start_ts: Timestamp,
        items: Vec<(Vec<u8>, V)>,
        command: impl Fn(Vec<(Vec<u8>, V)>) -> write::Kind,
    ) -> Result<Vec<(TxnResult, Vec<(Vec<u8>, V)>)>, ClientError> {
        let shares = self.group_by_region(items.into_iter()).await?;
        let command = &command;
        let sends = shares.into_iter().map(|(first, share)| async move {
            let write = Write { kind: Some(command(share.clone())) };
            match self.grouped_txn_write(&first, write).await? {
                Some(result) => Ok(vec![(result, share)]),
                None => self.txn_by_region_alone(start_ts, share, command).await,
            }
        });
        let mut answers = Vec::new();
        for answer in futures::future::join_all(sends).await {
            answers.extend(answer?);
        }
        Ok(answers)
    }

    /// [`Client::txn_by_region`] without groups: each region's share in a request of
    /// its own, split again when a region split under it.
    async fn txn_by_region_alone<V: Clone>(
        &self,
        start_ts: Timestamp,
        items: Vec<(Vec<u8>, V)>,
        command: impl Fn(Vec<(Vec<u8>, V)>) -> write::Kind,
    ) -> Result<Vec<(TxnResult, Vec<(Vec<u8>, V)>)>, ClientError> {
        let answers = self
            .by_region(items, Resend::Always, |mut kv, context, share| {
                let writes = vec![Write { kind: Some(command(share)) }];
                async move { kv.write(WriteRequest { context: Some(context), writes }).await }
            })
            .await?;
        answers
            .into_iter()
            .map(|(answer, share)| Ok((txn_result(start_ts, answer.into_inner().results)?, share)))
            .collect()
    }
}
