//! etcd's Txn over one Tessera transaction, and with it Put and DeleteRange (each a
//! transaction of one operation). In etcd's order:
//!
//! 1. **Decide**: every compare, nested transactions' included, is evaluated against
//!    the transaction's start, before anything is written; this picks the branch of
//!    each transaction that runs.
//! 2. **Apply**: the operations of the chosen branches run in order, each seeing the
//!    writes of those before it (an overlay of the transaction's own writes on what
//!    it read at its start). A version written here has no revision yet: it carries
//!    [`OWN_REVISION`] until the commit names it.
//! 3. **Commit**: a transaction that wrote locks the keys it read and did not write
//!    (so that a compare or a read it acted on cannot change under it), has the ranges
//!    it read refreshed at its commit timestamp (so that no key can appear in one
//!    either: no phantoms), and commits; its commit timestamp is its revision, written
//!    into every response. Strictly serializable, as etcd's transactions are.
//!    A read-only transaction commits nothing: its revision is its start, a fresh
//!    timestamp from the oracle. A transaction that conflicts with another (first
//!    committer wins) runs again from a new start, as etcd would have serialized them.
//!
//! A transaction that read a range commits in two phases (the refresh needs the moment
//! between its commit timestamp and its commit point); one that read and wrote single
//! keys only, the pattern of Kubernetes and of etcd's own locks and elections, may
//! commit in one.

mod checks;
mod compare;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::auth::{Authorized, Needs};
use super::errors::EtcdError;
use super::keys::{self, KeyRange};
use super::kv;
use super::lease;
use super::record::{self, StoredValue};
use super::retry;
use crate::client::{Client, Transaction};
use crate::etcd_proto::etcdserverpb::request_op::Request;
use crate::etcd_proto::etcdserverpb::response_op::Response;
use crate::etcd_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::etcd_proto::mvccpb::KeyValue;

/// The revision of versions the transaction writes, until it commits and its
/// responses are given the real one. Never leaves this module.
const OWN_REVISION: i64 = -1;

/// Runs `request` (checked as etcd checks it); answers its response with every header
/// made from `header` at the transaction's revision.
pub(super) async fn run(
    client: &Arc<Client>,
    request: &TxnRequest,
    header: ResponseHeader,
    by: &Authorized,
) -> Result<TxnResponse, EtcdError> {
    checks::check(request)?;
    retry::until_no_conflict(|| async move {
        // Most of etcd's writes are single keys read and written (a Put, Kubernetes'
        // compare-and-swaps): one-phase commits, whose commit timestamp can be asked
        // for with the start.
        let transaction = client.begin_one_phase().await?;
        let mut run = Run { transaction, client, by, own: BTreeMap::new(), read: BTreeSet::new() };
        let decision = run.decide(request).await?;
        let responses = run.apply_branch(decision.branch(request), &decision.nested).await?;
        let header = ResponseHeader { revision: run.commit().await?, ..header };
        let mut response = TxnResponse { header: Some(header), succeeded: decision.succeeded, responses };
        settle_txn(&mut response, &header);
        Ok(response)
    })
    .await
}

/// Runs one operation as a transaction of its own (etcd's Put and DeleteRange).
pub(super) async fn run_one(
    client: &Arc<Client>,
    operation: Request,
    header: ResponseHeader,
    by: &Authorized,
) -> Result<Response, EtcdError> {
    let request = TxnRequest {
        compare: Vec::new(),
        success: vec![RequestOp { request: Some(operation) }],
        failure: Vec::new(),
    };
    let mut response = run(client, &request, header, by).await?;
    match response.responses.pop().and_then(|operation| operation.response) {
        Some(response) => Ok(response),
        None => Err(EtcdError::Internal("a transaction of one operation answered none".into())),
    }
}

/// Which branch each transaction takes: this one's, and its nested ones' in the order
/// they appear in the branch it takes.
struct Decision {
    succeeded: bool,
    nested: Vec<Decision>,
}

impl Decision {
    fn branch<'a>(&self, request: &'a TxnRequest) -> &'a [RequestOp] {
        if self.succeeded { &request.success } else { &request.failure }
    }
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, EtcdError>> + Send + 'a>>;

/// One attempt at a transaction.
struct Run<'a> {
    transaction: Transaction,
    client: &'a Arc<Client>,
    /// Who sent it: a put attaching a key to a lease must be allowed to write every key
    /// already attached to that lease (or its owner could be kept from revoking it).
    by: &'a Authorized,
    /// What the transaction wrote, by stored key: a version, or a delete (None).
    own: BTreeMap<Vec<u8>, Option<StoredValue>>,
    /// The stored keys it read (locked at commit if it writes).
    read: BTreeSet<Vec<u8>>,
}

impl<'a> Run<'a> {
    fn decide<'s>(&'s mut self, request: &'s TxnRequest) -> Boxed<'s, Decision> {
        Box::pin(async move {
            let mut succeeded = true;
            for each in &request.compare {
                let range = KeyRange::of(&each.key, &each.range_end)?;
                let read = self.read_range(&range).await?;
                if !compare::holds(each, &read) {
                    succeeded = false;
                    break;
                }
            }
            let branch = if succeeded { &request.success } else { &request.failure };
            let mut nested = Vec::new();
            for operation in branch {
                if let Some(Request::RequestTxn(txn)) = &operation.request {
                    nested.push(self.decide(txn).await?);
                }
            }
            Ok(Decision { succeeded, nested })
        })
    }

    fn apply_branch<'s>(
        &'s mut self,
        branch: &'s [RequestOp],
        nested: &'s [Decision],
    ) -> Boxed<'s, Vec<ResponseOp>> {
        Box::pin(async move {
            let mut responses = Vec::with_capacity(branch.len());
            let mut decisions = nested.iter();
            for operation in branch {
                let response = match &operation.request {
                    Some(Request::RequestRange(range)) => Response::ResponseRange(self.range(range).await?),
                    Some(Request::RequestPut(put)) => Response::ResponsePut(self.put(put).await?),
                    Some(Request::RequestDeleteRange(delete)) => {
                        Response::ResponseDeleteRange(self.delete_range(delete).await?)
                    }
                    Some(Request::RequestTxn(txn)) => {
                        let Some(decision) = decisions.next() else {
                            unreachable!("invariant: every nested transaction of a branch was decided");
                        };
                        let responses = self.apply_branch(decision.branch(txn), &decision.nested).await?;
                        Response::ResponseTxn(TxnResponse {
                            header: None,
                            succeeded: decision.succeeded,
                            responses,
                        })
                    }
                    None => return Err(EtcdError::EmptyOperation),
                };
                responses.push(ResponseOp { response: Some(response) });
            }
            Ok(responses)
        })
    }

    /// The key as the transaction sees it.
    async fn read_key(&mut self, stored_key: &[u8]) -> Result<Option<KeyValue>, EtcdError> {
        if let Some(own) = self.own.get(stored_key) {
            return Ok(own.as_ref().map(|version| own_key_value(stored_key, version)));
        }
        self.read.insert(stored_key.to_vec());
        match self.transaction.get_committed_version(stored_key).await? {
            Some(stored) => Ok(Some(record::key_value(stored)?)),
            None => Ok(None),
        }
    }

    /// The keys of `range` as the transaction sees them, in key order.
    async fn read_range(&mut self, range: &KeyRange) -> Result<Vec<KeyValue>, EtcdError> {
        let (start, end) = match range {
            KeyRange::Single(key) => return Ok(self.read_key(key).await?.into_iter().collect()),
            KeyRange::Span { .. } if range.is_empty() => return Ok(Vec::new()),
            KeyRange::Span { start, end } => (start, end),
        };
        // Checked again at the commit timestamp, if the transaction writes: a key that
        // appears in the range meanwhile is a conflict.
        self.transaction.refresh_on_commit(start, end)?;
        let mut seen = BTreeMap::new();
        for stored in self.transaction.scan_committed_versions(start, end, 0, false).await? {
            self.read.insert(stored.key.clone());
            seen.insert(stored.key.clone(), record::key_value(stored)?);
        }
        for (key, own) in self.own.range(start.clone()..end.clone()) {
            match own {
                Some(version) => seen.insert(key.clone(), own_key_value(key, version)),
                None => seen.remove(key),
            };
        }
        Ok(seen.into_values().collect())
    }

    async fn range(&mut self, request: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        let range = KeyRange::of(&request.key, &request.range_end)?;
        let kvs = if request.revision > 0 {
            // An older revision: what was committed then, without this transaction.
            kv::read_at_revision(self.client, &range, request.revision).await?
        } else {
            self.read_range(&range).await?
        };
        Ok(kv::shape_range(kvs, request))
    }

    async fn put(&mut self, request: &PutRequest) -> Result<PutResponse, EtcdError> {
        if request.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        if request.lease != 0 && !request.ignore_lease {
            lease::guard_attachment(&mut self.transaction, request.lease, &request.key).await?;
            if self.by.is_limited() {
                // Refreshed at commit: a key another writer attaches meanwhile (under
                // another guard) makes this one run again and see it.
                let (start, end) = keys::attached_keys(request.lease);
                self.transaction.refresh_on_commit(&start, &end)?;
                let attached = lease::attached(&self.transaction, request.lease).await?;
                self.by.require(&Needs::write_keys(&attached))?;
            }
        }
        let stored_key = keys::stored_key(&request.key);
        let previous = self.read_key(&stored_key).await?;
        let (value, lease) = match (&previous, request.ignore_value, request.ignore_lease) {
            (None, true, _) | (None, _, true) => return Err(EtcdError::KeyNotFound),
            (Some(previous), ignore_value, ignore_lease) => (
                if ignore_value { previous.value.clone() } else { request.value.clone() },
                if ignore_lease { previous.lease } else { request.lease },
            ),
            (None, false, false) => (request.value.clone(), request.lease),
        };
        let previous_lease = previous.as_ref().map_or(0, |previous| previous.lease);
        lease::move_attachment(&mut self.transaction, &request.key, previous_lease, lease)?;
        let version = StoredValue::after(previous.as_ref(), value, lease);
        self.transaction.put(&stored_key, &version.encode())?;
        self.own.insert(stored_key, Some(version));
        let prev_kv = if request.prev_kv { previous } else { None };
        Ok(PutResponse { header: None, prev_kv })
    }

    async fn delete_range(&mut self, request: &DeleteRangeRequest) -> Result<DeleteRangeResponse, EtcdError> {
        let range = KeyRange::of(&request.key, &request.range_end)?;
        let existing = self.read_range(&range).await?;
        for kv in &existing {
            let stored_key = keys::stored_key(&kv.key);
            lease::move_attachment(&mut self.transaction, &kv.key, kv.lease, 0)?;
            self.transaction.delete(&stored_key)?;
            self.own.insert(stored_key, None);
        }
        let deleted = i64::try_from(existing.len()).unwrap_or(i64::MAX);
        let prev_kvs = if request.prev_kv { existing } else { Vec::new() };
        Ok(DeleteRangeResponse { header: None, deleted, prev_kvs })
    }

    /// Commits; answers the transaction's revision, or [`EtcdError::Conflict`].
    async fn commit(mut self) -> Result<i64, EtcdError> {
        if self.own.is_empty() {
            return super::errors::revision(self.transaction.start_ts().await?);
        }
        let read_only: Vec<&Vec<u8>> = self.read.iter().filter(|key| !self.own.contains_key(*key)).collect();
        self.transaction.lock_keys(read_only)?;
        retry::commit(self.transaction).await
    }
}

/// A version the transaction wrote, as etcd shows it (its revision to come).
fn own_key_value(stored_key: &[u8], version: &StoredValue) -> KeyValue {
    KeyValue {
        key: keys::etcd_key(stored_key).unwrap_or_default().to_vec(),
        create_revision: if version.create_revision == 0 { OWN_REVISION } else { version.create_revision },
        mod_revision: OWN_REVISION,
        version: version.version,
        value: version.value.clone(),
        lease: version.lease,
    }
}

/// Gives every response of a committed transaction its header and the revision of the
/// versions it wrote.
fn settle_txn(response: &mut TxnResponse, header: &ResponseHeader) {
    response.header = Some(*header);
    for operation in &mut response.responses {
        match &mut operation.response {
            Some(Response::ResponseRange(range)) => {
                range.header = Some(*header);
                range.kvs.iter_mut().for_each(|kv| settle_key_value(kv, header.revision));
            }
            Some(Response::ResponsePut(put)) => put.header = Some(*header),
            Some(Response::ResponseDeleteRange(delete)) => {
                delete.header = Some(*header);
                delete.prev_kvs.iter_mut().for_each(|kv| settle_key_value(kv, header.revision));
            }
            Some(Response::ResponseTxn(txn)) => settle_txn(txn, header),
            None => {}
        }
    }
}

fn settle_key_value(kv: &mut KeyValue, revision: i64) {
    if kv.mod_revision == OWN_REVISION {
        kv.mod_revision = revision;
    }
    if kv.create_revision == OWN_REVISION {
        kv.create_revision = revision;
    }
}
