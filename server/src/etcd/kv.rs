//! etcd's KV service over Tessera's transactions: Range is a snapshot read at the
//! request's revision (a fresh timestamp from the oracle when none is named, so that
//! it sees every write acknowledged before it: linearizable); Put, DeleteRange and Txn
//! run as transactions (`txn/`) whose commit timestamps are their revisions.
//!
//! Compact records the revision below which reads and watches are refused as
//! compacted (under a key of the API's own); the versions themselves are removed by
//! Tessera's garbage collection once its safe point passes them (a revision the
//! safe point has passed is refused as compacted too, whatever Compact said).
//! `physical` changes nothing: the record is durable when Compact answers.

use std::sync::Arc;

use tessera_engine::timestamp::Timestamp;
use tonic::{Request, Response, Status};

use super::auth::{Auth, Authorized, Needs, Requirement};
use super::errors::{EtcdError, revision};
use super::keys::{self, KeyRange};
use super::record;
use super::retry;
use super::txn;
use crate::client::{Client, Snapshot};
use crate::etcd_proto::etcdserverpb::kv_server::Kv;
use crate::etcd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::etcd_proto::etcdserverpb::request_op::Request as Operation;
use crate::etcd_proto::etcdserverpb::response_op::Response as OperationResponse;
use crate::etcd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use crate::etcd_proto::mvccpb::KeyValue;

/// The KV service of one store's etcd API.
pub(crate) struct EtcdKv {
    client: Arc<Client>,
    auth: Arc<Auth>,
    member_id: u64,
}

impl EtcdKv {
    pub(crate) fn new(client: Arc<Client>, auth: Arc<Auth>, member_id: u64) -> EtcdKv {
        EtcdKv { client, auth, member_id }
    }

    /// Refuses `request` unless its sender may do what `needs` says; answers who it is.
    async fn check<T>(&self, request: &Request<T>, needs: &Needs) -> Result<Authorized, Status> {
        Ok(self.auth.check_request(request, Requirement::Access(needs)).await?)
    }

    fn header(&self, revision: i64) -> ResponseHeader {
        super::response_header(self.member_id, revision)
    }

    async fn read_range(&self, request: RangeRequest) -> Result<RangeResponse, EtcdError> {
        let range = KeyRange::of(&request.key, &request.range_end)?;
        let snapshot = match u64::try_from(request.revision) {
            Ok(at) if at > 0 => self.client.snapshot_at(Timestamp::from_u64(at)).await?,
            _ => self.client.snapshot_now().await?,
        };
        let fresh = request.revision <= 0;
        let kvs = read_at(&self.client, &range, &snapshot, fresh).await?;
        let mut response = shape_range(kvs, &request);
        response.header = Some(self.header(revision(snapshot.read_ts())?));
        Ok(response)
    }

    async fn write_one(&self, operation: Operation, by: &Authorized) -> Result<OperationResponse, EtcdError> {
        txn::run_one(&self.client, operation, self.header(0), by).await
    }

    async fn compact(&self, request: CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        let now = revision(self.client.timestamp().await?)?;
        if request.revision > now {
            return Err(EtcdError::FutureRevision);
        }
        let request = &request;
        let committed_at = retry::until_no_conflict(|| async move {
            let mut transaction = self.client.begin().await?;
            let compacted = compacted_revision(&transaction.get(keys::COMPACTED_KEY).await?)?;
            if request.revision <= compacted {
                return Err(EtcdError::Compacted);
            }
            transaction.put(keys::COMPACTED_KEY, &request.revision.to_be_bytes())?;
            retry::commit(transaction).await
        })
        .await?;
        Ok(CompactionResponse { header: Some(self.header(committed_at)) })
    }
}

/// The revision Compact last recorded (0: none), from its stored form.
fn compacted_revision(stored: &Option<Vec<u8>>) -> Result<i64, EtcdError> {
    match stored {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
            .map(i64::from_be_bytes)
            .map_err(|_| EtcdError::Internal("the compacted revision's record does not decode".into())),
    }
}

/// The revision Compact last recorded (0: none), read now.
pub(super) async fn compacted_revision_now(client: &Arc<Client>) -> Result<i64, EtcdError> {
    let now = client.snapshot_now().await?;
    compacted_revision(&now.get(keys::COMPACTED_KEY).await?)
}

/// The keys of `range` in `snapshot`; refused as compacted below the revision Compact
/// recorded. `fresh`: the snapshot is at a fresh timestamp from the oracle (else the
/// record is read at one: a compaction recorded after the snapshot counts too).
async fn read_at(
    client: &Arc<Client>,
    range: &KeyRange,
    snapshot: &Snapshot,
    fresh: bool,
) -> Result<Vec<KeyValue>, EtcdError> {
    // A fresh timestamp is above every revision a Compact that finished before it
    // recorded (Compact refuses revisions past its own fresh timestamp), so only a read
    // at a named revision can be below one.
    if !fresh && revision(snapshot.read_ts())? < compacted_revision_now(client).await? {
        return Err(EtcdError::Compacted);
    }
    let mut kvs = Vec::new();
    if !range.is_empty() {
        let (start, end) = range.bounds();
        for stored in snapshot.scan_versions(&start, &end, 0, false).await? {
            kvs.push(record::key_value(stored)?);
        }
    }
    Ok(kvs)
}

/// The keys of `range` at etcd revision `at` (above 0).
pub(super) async fn read_at_revision(
    client: &Arc<Client>,
    range: &KeyRange,
    at: i64,
) -> Result<Vec<KeyValue>, EtcdError> {
    let read_ts = u64::try_from(at).map_err(|_| EtcdError::FutureRevision)?;
    let snapshot = client.snapshot_at(Timestamp::from_u64(read_ts)).await?;
    read_at(client, range, &snapshot, false).await
}

/// A Range's answer (without its header) from the keys read, in key order: filtered,
/// counted, sorted, limited and stripped as the request asks.
pub(super) fn shape_range(mut kvs: Vec<KeyValue>, request: &RangeRequest) -> RangeResponse {
    kvs.retain(|kv| within_revision_filters(kv, request));
    let count = i64::try_from(kvs.len()).unwrap_or(i64::MAX);
    sort(&mut kvs, request.sort_order(), request.sort_target());
    let limit = usize::try_from(request.limit).unwrap_or(0);
    let more = limit > 0 && kvs.len() > limit;
    if more {
        kvs.truncate(limit);
    }
    if request.count_only {
        kvs.clear();
    } else if request.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    RangeResponse { header: None, kvs, more, count }
}

/// Whether `kv` passes the request's revision filters (0: no filter).
fn within_revision_filters(kv: &KeyValue, request: &RangeRequest) -> bool {
    let at_least = |value: i64, bound: i64| bound == 0 || value >= bound;
    let at_most = |value: i64, bound: i64| bound == 0 || value <= bound;
    at_least(kv.mod_revision, request.min_mod_revision)
        && at_most(kv.mod_revision, request.max_mod_revision)
        && at_least(kv.create_revision, request.min_create_revision)
        && at_most(kv.create_revision, request.max_create_revision)
}

/// Orders `kvs` (read in key order) as asked: by a target other than the key with no
/// order named, ascending, as etcd does; ties keep key order.
fn sort(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    match target {
        SortTarget::Key => {}
        SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
        SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
        SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
        SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
    if order == SortOrder::Descend {
        kvs.reverse();
    }
}

#[tonic::async_trait]
impl Kv for EtcdKv {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        self.check(&request, &Needs::range(request.get_ref())).await?;
        Ok(Response::new(self.read_range(request.into_inner()).await?))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let by = self.check(&request, &Needs::put(request.get_ref())).await?;
        match self.write_one(Operation::RequestPut(request.into_inner()), &by).await? {
            OperationResponse::ResponsePut(response) => Ok(Response::new(response)),
            _ => Err(EtcdError::Internal("a put answered as another operation".into()).into()),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let by = self.check(&request, &Needs::delete_range(request.get_ref())).await?;
        match self.write_one(Operation::RequestDeleteRange(request.into_inner()), &by).await? {
            OperationResponse::ResponseDeleteRange(response) => Ok(Response::new(response)),
            _ => Err(EtcdError::Internal("a delete answered as another operation".into()).into()),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let by = self.check(&request, &Needs::txn(request.get_ref())).await?;
        Ok(Response::new(txn::run(&self.client, &request.into_inner(), self.header(0), &by).await?))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        // As etcd: any signed-in user may compact.
        self.auth.check_request(&request, Requirement::Authenticated).await?;
        Ok(Response::new(self.compact(request.into_inner()).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, version: i64, mod_revision: i64) -> KeyValue {
        KeyValue { key: key.into(), version, mod_revision, create_revision: 1, ..KeyValue::default() }
    }

    fn keys_of(kvs: &[KeyValue]) -> Vec<&[u8]> {
        kvs.iter().map(|kv| kv.key.as_slice()).collect()
    }

    #[test]
    fn sorting_follows_etcd_s_defaults() {
        let read = vec![kv("a", 3, 30), kv("b", 1, 10), kv("c", 2, 20)];
        let mut kvs = read.clone();
        sort(&mut kvs, SortOrder::None, SortTarget::Key);
        assert_eq!(keys_of(&kvs), [b"a", b"b", b"c"]);
        sort(&mut kvs, SortOrder::None, SortTarget::Version);
        assert_eq!(keys_of(&kvs), [b"b", b"c", b"a"], "a target without an order ascends");
        let mut kvs = read.clone();
        sort(&mut kvs, SortOrder::Descend, SortTarget::Mod);
        assert_eq!(keys_of(&kvs), [b"a", b"c", b"b"]);
        let mut kvs = read;
        sort(&mut kvs, SortOrder::Descend, SortTarget::Key);
        assert_eq!(keys_of(&kvs), [b"c", b"b", b"a"]);
    }

    #[test]
    fn revision_filters_of_zero_filter_nothing() {
        let request = RangeRequest { min_mod_revision: 15, max_mod_revision: 25, ..RangeRequest::default() };
        assert!(!within_revision_filters(&kv("a", 1, 10), &request));
        assert!(within_revision_filters(&kv("a", 1, 20), &request));
        assert!(!within_revision_filters(&kv("a", 1, 30), &request));
        assert!(within_revision_filters(&kv("a", 1, 30), &RangeRequest::default()));
    }
}
