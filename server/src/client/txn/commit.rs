//! The coordinator: commits one transaction's buffered writes by two-phase commit.
//!
//! 1. **Prewrite** every key, each region's share in one request, regions in parallel;
//!    the first key (in key order) is the primary. A lock in the way is resolved
//!    (`resolve.rs`) and the share sent again; a live transaction's lock, or a commit
//!    after our start, is a conflict: everything prewritten is rolled back and the
//!    caller gets [`ClientError::Conflict`].
//! 2. **Commit timestamp** from the oracle, after every key is locked: any reader that
//!    takes a later timestamp finds our locks and waits for our outcome. Key ranges the
//!    transaction asked to refresh are checked now (`refresh.rs`): a write in one
//!    between our start and this timestamp is a conflict, and we roll back.
//! 3. **Commit the primary**: the commit point. Refused because a resolver rolled us
//!    back (we were slower than our locks' time to live): a conflict. Never answered:
//!    the outcome is unknown (readers learn it from the primary).
//! 4. **Commit the secondaries** in the background: the transaction is committed
//!    already, and a reader that meets a secondary's lock before this reaches it
//!    commits that key itself.
//!
//! While the locks exist, a heartbeat extends the primary's time to live, so that a
//! long commit is not mistaken for an abandoned one.
//!
//! **One phase.** When every key is in one region and no range is to be refreshed (a
//! one-phase commit is visible as soon as it applies: there is no moment between its
//! commit timestamp and its commit point to refresh in), the commit timestamp is taken first
//! and one prewrite, one Raft proposal, writes the commit records directly: no locks,
//! no second round. The leader refuses it when a read at or above that timestamp may
//! have seen the keys already (see the store's `one_phase.rs`); nothing was written
//! then, and the transaction commits in two phases.
//!
//! **Async commit** (not built) would answer the caller once every prewrite succeeded,
//! before the primary's commit: each lock would carry the list of the transaction's
//! keys, and the commit timestamp would be computed by the stores (above every read
//! their keys served) rather than taken from the oracle, so that a resolver could
//! decide the outcome from the locks alone. It saves the commit round (one Raft write
//! and one oracle call) from a multi-region commit's latency; it costs a larger primary
//! lock, every store keeping the read watermark the one-phase guard keeps, commit
//! timestamps that may exceed any the oracle has handed out (so readers must check for
//! them), and a harder recovery: a resolver must check every key of the transaction.

use std::sync::Arc;
use std::time::Duration;

use tessera_engine::proto::command::{
    Commit as CommitCommand, KeyError, Mutation, OnePhaseRefusal, Prewrite, Rollback, TxnHeartBeat,
    TxnResult, Write, key_error, write,
};
use tessera_engine::region::KeyRange;
use tessera_engine::timestamp::Timestamp;
use tessera_engine::txn::MAX_LOCK_TTL_MS;
use tokio::time::Instant;

use super::refresh::RefreshSpan;
use super::resolve::{Resolution, txn_result};
use crate::client::batch::GroupOutcome;
use crate::client::{Client, ClientError, Conflict, PendingTimestamp, Resend, Transient, Uncertainty};
use crate::proto::WriteRequest;

/// How long a lock lives without a heartbeat: a coordinator that dies holds its keys
/// this long at most.
pub(super) const LOCK_TTL: Duration = Duration::from_secs(3);

/// How often a coordinator with locks out extends them.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct Commit {
    client: Arc<Client>,
    start_ts: Timestamp,
    primary: Vec<u8>,
    /// In key order; the primary first.
    mutations: Vec<(Vec<u8>, Mutation)>,
    /// Key ranges to refresh before the commit point.
    refreshed: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Commit {
    pub(super) fn new(
        client: Arc<Client>,
        start_ts: Timestamp,
        mutations: Vec<(Vec<u8>, Mutation)>,
        refreshed: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Commit {
        assert!(!mutations.is_empty(), "invariant: only a transaction with writes runs the commit protocol");
        let primary = mutations[0].0.clone();
        Commit { client, start_ts, primary, mutations, refreshed }
    }

    /// A commit timestamp for a one-phase try: `early`, asked for already, if given and
    /// above the start timestamp (it is, unless the start timestamp had to be asked for
    /// again), else a fresh one.
    async fn one_phase_commit_ts(&self, early: Option<PendingTimestamp>) -> Result<Timestamp, ClientError> {
        if let Some(early) = early {
            let commit_ts = early.await?;
            if commit_ts > self.start_ts {
                return Ok(commit_ts);
            }
        }
        self.client.timestamp().await
    }

    /// Commits; `first_commit_ts`, asked for already, serves the first one-phase try.
    pub(super) async fn run(
        self,
        first_commit_ts: Option<PendingTimestamp>,
    ) -> Result<Timestamp, ClientError> {
        let uncertain = match self.one_phase(first_commit_ts).await? {
            OnePhase::Committed(commit_ts) => return Ok(commit_ts),
            OnePhase::NotTaken { uncertain } => uncertain,
        };
        let heartbeat = Heartbeat::start(self.client.clone(), self.primary.clone(), self.start_ts);
        let prepared = match self.prewrite().await {
            Ok(()) => self.commit_ts_refreshed().await,
            Err(error) => Err(error),
        };
        let commit_ts = match prepared {
            Ok(commit_ts) => commit_ts,
            Err(error) => {
                drop(heartbeat);
                return self.abandon(error, uncertain).await;
            }
        };
        let committed = self.commit_primary(commit_ts).await;
        drop(heartbeat);
        // An earlier try may have committed at another timestamp: the store says which.
        let commit_ts = committed?;
        let secondaries: Vec<(Vec<u8>, ())> =
            self.mutations.into_iter().skip(1).map(|(key, _)| (key, ())).collect();
        if !secondaries.is_empty() {
            let (client, start_ts) = (self.client, self.start_ts);
            tokio::spawn(async move { commit_secondaries(client, start_ts, commit_ts, secondaries).await });
        }
        Ok(commit_ts)
    }

    /// A commit timestamp from the oracle, with every range to refresh checked up to it.
    async fn commit_ts_refreshed(&self) -> Result<Timestamp, ClientError> {
        let commit_ts = self.client.timestamp().await?;
        let span = RefreshSpan { start_ts: self.start_ts, commit_ts };
        for (start, end) in &self.refreshed {
            self.client.refresh_range(start, end, span).await?;
        }
        Ok(commit_ts)
    }

    /// After the commit failed before its commit point: rolls the transaction back and
    /// says how it ended. A one-phase try whose answer was lost may still apply (its
    /// entry may be in a log): rolling back the primary makes sure it never does, and
    /// finds out if it already did.
    async fn abandon(&self, error: ClientError, uncertain: bool) -> Result<Timestamp, ClientError> {
        match self.roll_back().await {
            RolledBack::Yes => Err(error),
            RolledBack::AlreadyCommitted(commit_ts) => Ok(commit_ts),
            RolledBack::Unknown(last) if uncertain => Err(self.outcome_unknown(last)),
            // Without a one-phase try in doubt, nothing can commit it: the primary's
            // commit was never sent, and its locks will be resolved as rolled back.
            RolledBack::Unknown(_) => Err(error),
        }
    }

    /// The one-phase path, when every key is in one region (by the client's cache): a
    /// commit timestamp first, then one prewrite that writes commit records directly,
    /// sent with the other one-phase commits in flight for the region (one request,
    /// one Raft entry). When the path does not apply or the leader refused it (nothing
    /// was written then), the caller commits in two phases, told whether a try's
    /// answer was lost.
    async fn one_phase(
        &self,
        mut first_commit_ts: Option<PendingTimestamp>,
    ) -> Result<OnePhase, ClientError> {
        if !self.refreshed.is_empty() {
            return Ok(OnePhase::NotTaken { uncertain: false });
        }
        let Some(region) = self.client.cache.find(&self.primary).and_then(|route| route.region) else {
            return Ok(OnePhase::NotTaken { uncertain: false });
        };
        if !self.mutations.iter().all(|(key, _)| KeyRange::of(&region).contains(key)) {
            return Ok(OnePhase::NotTaken { uncertain: false });
        }
        let bytes = self.mutations.iter().map(|(key, mutation)| key.len() + mutation.value.len()).sum();
        let give_up = Instant::now() + self.client.deadline;
        let mut uncertain = false;
        while Instant::now() < give_up {
            let commit_ts = self.one_phase_commit_ts(first_commit_ts.take()).await?;
            let write = self.one_phase_prewrite(commit_ts);
            let grouped =
                self.client.join_group(&self.client.txn_groups, &self.primary, write.clone(), bytes).await;
            let answer = match grouped {
                Ok(GroupOutcome::Applied(result)) => result.txn,
                Ok(GroupOutcome::SendAlone(_)) => self.one_phase_alone(write, uncertain).await?,
                // Sent again alone: one-phase prewrites are idempotent.
                Ok(GroupOutcome::Failed(ClientError::OutcomeUnknown(_)))
                | Err(ClientError::OutcomeUnknown(_)) => {
                    uncertain = true;
                    self.one_phase_alone(write, uncertain).await?
                }
                Ok(GroupOutcome::Failed(error)) | Err(error) => return Err(error),
            };
            let Some(result) = answer else { return Ok(OnePhase::NotTaken { uncertain }) };
            if result.one_phase_refused != OnePhaseRefusal::OnePhaseAccepted as i32 {
                return Ok(OnePhase::NotTaken { uncertain });
            }
            if result.below_fence != 0 {
                // Refused without a look at what an earlier, lost try may have done.
                let too_old = self.too_old(result.below_fence);
                return Err(if uncertain { self.outcome_unknown(too_old) } else { too_old });
            }
            if result.errors.is_empty() {
                // The recorded commit timestamp, if an earlier try had committed it.
                let recorded = result.status.map(|status| status.commit_ts).filter(|ts| *ts != 0);
                return Ok(OnePhase::Committed(recorded.map_or(commit_ts, Timestamp::from_u64)));
            }
            // Locks of finished transactions in the way are resolved, then it goes again.
            self.settle_refusals(result.errors).await?;
        }
        Ok(OnePhase::NotTaken { uncertain })
    }

    fn one_phase_prewrite(&self, commit_ts: Timestamp) -> Write {
        let prewrite = Prewrite {
            start_ts: self.start_ts.as_u64(),
            primary: self.primary.clone(),
            lock_ttl_ms: 0,
            mutations: self.mutations.iter().map(|(_, mutation)| mutation.clone()).collect(),
            one_phase_commit_ts: commit_ts.as_u64(),
        };
        Write { kind: Some(write::Kind::Prewrite(prewrite)) }
    }

    /// Sends a one-phase prewrite on its own, again until answered; None if its keys
    /// are no longer in one region (it split). Given up on after an earlier try's
    /// answer was lost (`uncertain`), the outcome is unknown.
    async fn one_phase_alone(&self, write: Write, uncertain: bool) -> Result<Option<TxnResult>, ClientError> {
        let mutations = &self.mutations;
        let sent = self
            .client
            .on_region(&self.primary, Resend::Always, |mut kv, context, region| {
                let writes = vec![write.clone()];
                let whole = mutations.iter().all(|(key, _)| KeyRange::of(&region).contains(key));
                async move {
                    if !whole {
                        return Ok(None);
                    }
                    kv.write(WriteRequest { context: Some(context), writes }).await.map(Some)
                }
            })
            .await;
        let answer = match sent {
            Ok((answer, _)) => answer,
            Err(error) if uncertain => return Err(self.outcome_unknown(error)),
            Err(error) => return Err(error),
        };
        answer.map(|answer| txn_result(self.start_ts, answer.into_inner().results)).transpose()
    }

    /// Locks every key, resolving abandoned locks in the way.
    async fn prewrite(&self) -> Result<(), ClientError> {
        let give_up = Instant::now() + self.client.deadline;
        let mut pending = self.mutations.clone();
        while !pending.is_empty() {
            let start_ts = self.start_ts.as_u64();
            let answers = self
                .client
                .txn_by_region(self.start_ts, pending, |share| {
                    write::Kind::Prewrite(Prewrite {
                        start_ts,
                        primary: self.primary.clone(),
                        lock_ttl_ms: ttl_from_start(self.start_ts),
                        mutations: share.into_iter().map(|(_, mutation)| mutation).collect(),
                        one_phase_commit_ts: 0,
                    })
                })
                .await?;
            let mut refused = Vec::new();
            for (result, share) in answers {
                if result.below_fence != 0 {
                    return Err(self.too_old(result.below_fence));
                }
                if !result.errors.is_empty() {
                    self.settle_refusals(result.errors).await?;
                    refused.extend(share);
                }
            }
            if !refused.is_empty() && Instant::now() >= give_up {
                let last = Transient::Store {
                    region_id: 0,
                    code: tonic::Code::Aborted,
                    message: "prewrite kept meeting locks".into(),
                };
                return Err(ClientError::Unavailable { attempts: 0, last });
            }
            pending = refused;
        }
        Ok(())
    }

    /// The transaction may or may not have committed; `last` is what made it unknowable.
    fn outcome_unknown(&self, last: ClientError) -> ClientError {
        ClientError::OutcomeUnknown(Uncertainty::Commit { start_ts: self.start_ts, last: Box::new(last) })
    }

    /// The transaction started at or below a region's garbage-collection fence.
    fn too_old(&self, fence_ts: u64) -> ClientError {
        let fence_ts = Timestamp::from_u64(fence_ts);
        ClientError::Conflict(Conflict::TooOld { start_ts: self.start_ts, fence_ts })
    }

    /// Acts on a refused prewrite's reasons: a conflict ends the transaction; locks of
    /// finished transactions are resolved, so that the share can be sent again.
    async fn settle_refusals(&self, errors: Vec<KeyError>) -> Result<(), ClientError> {
        for KeyError { key, kind } in errors {
            let conflict = match kind {
                Some(key_error::Kind::Locked(lock)) => match self.client.resolve_lock(&lock).await? {
                    Resolution::Resolved => continue,
                    Resolution::Alive => {
                        Conflict::Locked { key, holder_start_ts: Timestamp::from_u64(lock.start_ts) }
                    }
                },
                Some(key_error::Kind::ConflictCommitTs(commit_ts)) => Conflict::WriteConflict {
                    key,
                    start_ts: self.start_ts,
                    commit_ts: Timestamp::from_u64(commit_ts),
                },
                Some(key_error::Kind::RolledBack(_)) => Conflict::RolledBack { start_ts: self.start_ts },
                other => {
                    let detail = format!("a prewrite was refused with {other:?}");
                    return Err(ClientError::ProtocolViolation { start_ts: self.start_ts, detail });
                }
            };
            return Err(ClientError::Conflict(conflict));
        }
        Ok(())
    }

    /// The commit point; answers the transaction's commit timestamp.
    async fn commit_primary(&self, commit_ts: Timestamp) -> Result<Timestamp, ClientError> {
        let command = write::Kind::Commit(CommitCommand {
            start_ts: self.start_ts.as_u64(),
            commit_ts: commit_ts.as_u64(),
            keys: vec![self.primary.clone()],
        });
        let result = match self.client.txn_command(&self.primary, command).await {
            Ok(result) => result,
            Err(error @ ClientError::Unavailable { .. }) => return Err(self.outcome_unknown(error)),
            Err(other) => return Err(other),
        };
        if result.below_fence != 0 {
            // Without its lock, the region can no longer say what became of it.
            return Err(self.outcome_unknown(self.too_old(result.below_fence)));
        }
        let recorded = result.status.map(|status| Timestamp::from_u64(status.commit_ts));
        match result.errors.into_iter().next().and_then(|error| error.kind) {
            None => Ok(recorded.filter(|recorded| *recorded != Timestamp::ZERO).unwrap_or(commit_ts)),
            // Rolled back by a resolver, or (no lock and no record) never to commit.
            Some(key_error::Kind::RolledBack(_) | key_error::Kind::LockMissing(_)) => {
                Err(ClientError::Conflict(Conflict::RolledBack { start_ts: self.start_ts }))
            }
            Some(other) => {
                let detail = format!("the primary's commit was refused with {other:?}");
                Err(ClientError::ProtocolViolation { start_ts: self.start_ts, detail })
            }
        }
    }

    /// Rolls back every key after a failed prewrite, the primary first (which settles
    /// the transaction's fate for any resolver). The secondaries are best effort: what
    /// is left behind is resolved, as rolled back, by whoever meets it.
    async fn roll_back(&self) -> RolledBack {
        let start_ts = self.start_ts.as_u64();
        let primary = write::Kind::Rollback(Rollback { start_ts, keys: vec![self.primary.clone()] });
        let refusal = match self.client.txn_command(&self.primary, primary).await {
            // Below the fence without its lock, the primary cannot tell whether an
            // earlier try committed it.
            Ok(result) if result.below_fence != 0 => {
                return RolledBack::Unknown(self.too_old(result.below_fence));
            }
            Ok(result) => result.errors.into_iter().next().and_then(|error| error.kind),
            Err(error) => return RolledBack::Unknown(error),
        };
        match refusal {
            None => {}
            Some(key_error::Kind::CommittedAt(commit_ts)) => {
                return RolledBack::AlreadyCommitted(Timestamp::from_u64(commit_ts));
            }
            Some(other) => {
                let detail = format!("the primary's rollback was refused with {other:?}");
                return RolledBack::Unknown(ClientError::ProtocolViolation {
                    start_ts: self.start_ts,
                    detail,
                });
            }
        }
        let secondaries: Vec<(Vec<u8>, ())> =
            self.mutations.iter().skip(1).map(|(key, _)| (key.clone(), ())).collect();
        if secondaries.is_empty() {
            return RolledBack::Yes;
        }
        let rolled = self
            .client
            .txn_by_region(self.start_ts, secondaries, |share| {
                let keys = share.into_iter().map(|(key, ())| key).collect();
                write::Kind::Rollback(Rollback { start_ts, keys })
            })
            .await;
        if let Err(error) = rolled {
            tracing::info!(%error, start_ts = %self.start_ts, "rolling back a transaction's secondaries failed; readers will resolve them");
        }
        RolledBack::Yes
    }
}

/// How the one-phase path ended when it did not commit.
enum OnePhase {
    Committed(Timestamp),
    /// Not taken (nothing written by it, unless `uncertain`: a try's answer was lost,
    /// and its entry may still apply).
    NotTaken {
        uncertain: bool,
    },
}

/// How a rollback after a failed prewrite ended.
enum RolledBack {
    /// The primary is rolled back: the transaction can never commit.
    Yes,
    /// The primary refused: an earlier try committed the transaction, at this timestamp.
    AlreadyCommitted(Timestamp),
    /// Not known: the primary's rollback was not answered, or the primary, below its
    /// region's garbage-collection fence and without the lock, could not tell.
    Unknown(ClientError),
}

/// Commits the secondary keys of a committed transaction. A failure only delays:
/// readers that meet the locks commit the keys themselves.
async fn commit_secondaries(
    client: Arc<Client>,
    start_ts: Timestamp,
    commit_ts: Timestamp,
    keys: Vec<(Vec<u8>, ())>,
) {
    let (start, commit) = (start_ts.as_u64(), commit_ts.as_u64());
    let committed = client
        .txn_by_region(start_ts, keys, |share| {
            let keys = share.into_iter().map(|(key, ())| key).collect();
            write::Kind::Commit(CommitCommand { start_ts: start, commit_ts: commit, keys })
        })
        .await;
    match committed {
        Err(error) => {
            tracing::info!(%error, %start_ts, "committing a transaction's secondaries failed; readers will resolve them");
        }
        Ok(answers) => {
            for error in answers.iter().filter_map(|(result, _)| result.errors.first()) {
                tracing::error!(?error, %start_ts, "a secondary key refused the commit of its committed transaction");
            }
        }
    }
}

/// A lock's time to live is counted from its transaction's start timestamp: the time
/// the transaction has run so far (by this machine's clock against the timestamp's
/// physical part) and a full [`LOCK_TTL`], at most [`MAX_LOCK_TTL_MS`].
fn ttl_from_start(start_ts: Timestamp) -> u64 {
    let elapsed = std::time::SystemTime::now().duration_since(start_ts.wall_time()).unwrap_or_default();
    ((elapsed + LOCK_TTL).as_millis() as u64).min(MAX_LOCK_TTL_MS)
}

/// Extends the primary lock's time to live while the coordinator works; stops when
/// dropped.
struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    fn start(client: Arc<Client>, primary: Vec<u8>, start_ts: Timestamp) -> Heartbeat {
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT_INTERVAL).await;
                let ttl_ms = ttl_from_start(start_ts);
                if ttl_ms >= MAX_LOCK_TTL_MS {
                    tracing::warn!(%start_ts, "a transaction's commit outlasted the longest lock time to live");
                    return;
                }
                let beat = TxnHeartBeat { primary: primary.clone(), start_ts: start_ts.as_u64(), ttl_ms };
                // A lock not there yet (its prewrite still on its way) or gone already
                // (rolled back, or committed) is beaten again next time: the
                // coordinator stops the heartbeat once past its commit point.
                if let Err(error) = client.txn_command(&primary, write::Kind::TxnHeartBeat(beat)).await {
                    tracing::info!(%error, %start_ts, "a transaction heartbeat failed");
                }
            }
        });
        Heartbeat { task }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}
