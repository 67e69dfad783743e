//! etcd's KV service over Tessera's transactions: Range is a snapshot read at the
//! request's revision (a fresh timestamp from the oracle when none is named, so that
//! it sees every write acknowledged before it: linearizable); Put and DeleteRange are
//! transactions that read what they replace at their start and commit at their
//! revision. Writers that conflict on a key (first committer wins) are run again
//! from a new start, as etcd serializes them.
//!
//! Not yet: Txn, Compact and leases (answered UNIMPLEMENTED, saying so). A
//! DeleteRange deletes the keys its start saw; a key created in the range between its
//! start and its commit survives it (Percolator locks keys, not ranges), which a
//! strictly serializable range delete must not allow: to be closed with Txn.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::errors::{EtcdError, revision};
use super::keys::{self, KeyRange};
use super::record::{self, StoredValue};
use crate::client::{Client, Snapshot};
use crate::etcd_proto::etcdserverpb::kv_server::Kv;
use crate::etcd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::etcd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use crate::etcd_proto::mvccpb::KeyValue;

/// How many times a write is run again after conflicting with another.
const MAX_WRITE_ATTEMPTS: u32 = 32;

/// The KV service of one store's etcd API.
pub(crate) struct EtcdKv {
    client: Arc<Client>,
    member_id: u64,
}

impl EtcdKv {
    pub(crate) fn new(client: Arc<Client>, member_id: u64) -> EtcdKv {
        EtcdKv { client, member_id }
    }

    fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader { cluster_id: 0, member_id: self.member_id, revision, raft_term: 0 }
    }

    /// The snapshot a read at etcd revision `revision` (0 or less: the newest) sees.
    async fn snapshot(&self, revision: i64) -> Result<Snapshot, EtcdError> {
        let read_ts = match u64::try_from(revision) {
            Ok(at) if at > 0 => tessera_engine::timestamp::Timestamp::from_u64(at),
            _ => self.client.timestamp().await?,
        };
        Ok(self.client.snapshot_at(read_ts).await?)
    }

    async fn read_range(&self, request: RangeRequest) -> Result<RangeResponse, EtcdError> {
        let range = KeyRange::of(&request.key, &request.range_end)?;
        let snapshot = self.snapshot(request.revision).await?;
        let mut kvs = Vec::new();
        if !range.is_empty() {
            let (start, end) = range.bounds();
            for stored in snapshot.scan_versions(&start, &end, 0, false).await? {
                kvs.push(record::key_value(stored)?);
            }
        }
        kvs.retain(|kv| within_revision_filters(kv, &request));
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
        let header = Some(self.header(revision(snapshot.read_ts())?));
        Ok(RangeResponse { header, kvs, more, count })
    }

    async fn write_put(&self, request: PutRequest) -> Result<PutResponse, EtcdError> {
        if request.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        if request.lease != 0 && !request.ignore_lease {
            return Err(EtcdError::LeaseNotFound);
        }
        let stored_key = keys::stored_key(&request.key);
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let mut transaction = self.client.begin().await?;
            let previous = match transaction.get_committed_version(&stored_key).await? {
                Some(stored) => Some(record::key_value(stored)?),
                None => None,
            };
            let (value, lease) = match (&previous, request.ignore_value, request.ignore_lease) {
                (None, true, _) | (None, _, true) => return Err(EtcdError::KeyNotFound),
                (Some(previous), ignore_value, ignore_lease) => (
                    if ignore_value { previous.value.clone() } else { request.value.clone() },
                    if ignore_lease { previous.lease } else { request.lease },
                ),
                (None, false, false) => (request.value.clone(), request.lease),
            };
            let record = StoredValue::after(previous.as_ref(), value, lease);
            transaction.put(&stored_key, &record.encode())?;
            match transaction.commit().await {
                Ok(commit_ts) => {
                    let prev_kv = if request.prev_kv { previous } else { None };
                    return Ok(PutResponse { header: Some(self.header(revision(commit_ts)?)), prev_kv });
                }
                Err(error) if error.is_conflict() => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(EtcdError::Contended { attempts: MAX_WRITE_ATTEMPTS })
    }

    async fn write_delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        let range = KeyRange::of(&request.key, &request.range_end)?;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let mut transaction = self.client.begin().await?;
            let mut existing = Vec::new();
            if !range.is_empty() {
                let (start, end) = range.bounds();
                for stored in transaction.scan_committed_versions(&start, &end, 0, false).await? {
                    transaction.delete(&stored.key)?;
                    existing.push(record::key_value(stored)?);
                }
            }
            let deleted = i64::try_from(existing.len()).unwrap_or(i64::MAX);
            let prev_kvs = if request.prev_kv { existing } else { Vec::new() };
            if deleted == 0 {
                // Nothing to delete: the answer is a read at the start.
                let at = transaction.start_ts().await?;
                return Ok(DeleteRangeResponse {
                    header: Some(self.header(revision(at)?)),
                    deleted,
                    prev_kvs,
                });
            }
            match transaction.commit().await {
                Ok(commit_ts) => {
                    let header = Some(self.header(revision(commit_ts)?));
                    return Ok(DeleteRangeResponse { header, deleted, prev_kvs });
                }
                Err(error) if error.is_conflict() => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(EtcdError::Contended { attempts: MAX_WRITE_ATTEMPTS })
    }
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
        Ok(Response::new(self.read_range(request.into_inner()).await?))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(self.write_put(request.into_inner()).await?))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(self.write_delete_range(request.into_inner()).await?))
    }

    async fn txn(&self, _request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(EtcdError::unsupported("Txn (not yet)").into())
    }

    async fn compact(
        &self,
        _request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(EtcdError::unsupported("Compact (not yet)").into())
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
