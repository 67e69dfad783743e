//! What a Txn must be before it runs, as etcd checks it: at most
//! [`MAX_OPERATIONS`] compares and operations in each branch, and no key written
//! twice in the branch that runs (a put of a key another put of the branch writes, or
//! that a delete of the branch covers, nested transactions included: each of their
//! branches together with what encloses it). Deletes may overlap each other. A put
//! that ignores its value or lease must not carry one.

use super::super::errors::EtcdError;
use super::super::keys::KeyRange;
use crate::etcd_proto::etcdserverpb::request_op::Request;
use crate::etcd_proto::etcdserverpb::{RequestOp, TxnRequest};

/// The most compares, and operations in each branch, a Txn may have (etcd's default
/// `--max-txn-ops`).
pub(crate) const MAX_OPERATIONS: usize = 128;

/// Refuses a Txn etcd would refuse.
pub(super) fn check(request: &TxnRequest) -> Result<(), EtcdError> {
    check_sizes(request)?;
    for branch in [&request.success, &request.failure] {
        check_branch(branch, &Writes::default())?;
    }
    Ok(())
}

fn check_sizes(request: &TxnRequest) -> Result<(), EtcdError> {
    let largest = request.compare.len().max(request.success.len()).max(request.failure.len());
    if largest > MAX_OPERATIONS {
        return Err(EtcdError::TooManyOperations);
    }
    for operation in request.success.iter().chain(&request.failure) {
        if let Some(Request::RequestTxn(nested)) = &operation.request {
            check_sizes(nested)?;
        }
    }
    Ok(())
}

/// The keys a branch writes (stored keys) and the ranges it deletes.
#[derive(Default, Clone)]
struct Writes {
    puts: Vec<Vec<u8>>,
    deletes: Vec<KeyRange>,
}

impl Writes {
    fn covers(&self, key: &[u8]) -> bool {
        self.puts.iter().any(|put| put == key) || self.deletes.iter().any(|range| range.contains(key))
    }

    fn deletes_any_of(&self, range: &KeyRange) -> bool {
        self.puts.iter().any(|put| range.contains(put))
    }
}

/// Checks one branch whose enclosing branches write `outer`; answers what it writes.
fn check_branch(branch: &[RequestOp], outer: &Writes) -> Result<Writes, EtcdError> {
    let mut writes = outer.clone();
    let mut nested = Vec::new();
    for operation in branch {
        match &operation.request {
            Some(Request::RequestPut(put)) => {
                if put.ignore_value && !put.value.is_empty() {
                    return Err(EtcdError::ValueProvided);
                }
                if put.ignore_lease && put.lease != 0 {
                    return Err(EtcdError::LeaseProvided);
                }
                let key = super::super::keys::stored_key(&put.key);
                if writes.covers(&key) {
                    return Err(EtcdError::DuplicateKey);
                }
                writes.puts.push(key);
            }
            Some(Request::RequestDeleteRange(delete)) => {
                let range = KeyRange::of(&delete.key, &delete.range_end)?;
                if writes.deletes_any_of(&range) {
                    return Err(EtcdError::DuplicateKey);
                }
                writes.deletes.push(range);
            }
            Some(Request::RequestTxn(txn)) => nested.push(txn),
            Some(Request::RequestRange(_)) | None => {}
        }
    }
    // A nested transaction's branches against everything its branch writes, whatever
    // the order: only one of its branches runs, each with all of the enclosing writes.
    for txn in nested {
        for nested_branch in [&txn.success, &txn.failure] {
            let inner = check_branch(nested_branch, &Writes::default())?;
            let clashes = inner.puts.iter().any(|put| writes.covers(put))
                || inner.deletes.iter().any(|range| writes.deletes_any_of(range));
            if clashes {
                return Err(EtcdError::DuplicateKey);
            }
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd_proto::etcdserverpb::{DeleteRangeRequest, PutRequest};

    fn put(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest { key: key.into(), ..PutRequest::default() })),
        }
    }

    fn delete(key: &str, range_end: &str) -> RequestOp {
        let request =
            DeleteRangeRequest { key: key.into(), range_end: range_end.into(), ..Default::default() };
        RequestOp { request: Some(Request::RequestDeleteRange(request)) }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest { compare: Vec::new(), success, failure }
    }

    fn nested(success: Vec<RequestOp>) -> RequestOp {
        RequestOp { request: Some(Request::RequestTxn(txn(success, Vec::new()))) }
    }

    #[test]
    fn a_key_put_twice_or_put_and_deleted_in_one_branch_is_refused() {
        assert_eq!(check(&txn(vec![put("a"), put("a")], vec![])), Err(EtcdError::DuplicateKey));
        assert_eq!(check(&txn(vec![delete("a", "c"), put("b")], vec![])), Err(EtcdError::DuplicateKey));
        assert_eq!(check(&txn(vec![put("b"), delete("a", "c")], vec![])), Err(EtcdError::DuplicateKey));
        assert_eq!(check(&txn(vec![put("a"), nested(vec![put("a")])], vec![])), Err(EtcdError::DuplicateKey));
        assert_eq!(
            check(&txn(vec![nested(vec![put("b")]), delete("a", "c")], vec![])),
            Err(EtcdError::DuplicateKey)
        );
    }

    #[test]
    fn distinct_keys_overlapping_deletes_and_keys_in_different_branches_are_accepted() {
        assert_eq!(check(&txn(vec![put("a"), put("b"), delete("c", "e"), delete("d", "f")], vec![])), Ok(()));
        assert_eq!(check(&txn(vec![put("a")], vec![put("a")])), Ok(()), "only one branch runs");
        assert_eq!(check(&txn(vec![put("a"), delete("b", "")], vec![])), Ok(()));
    }

    #[test]
    fn a_put_ignoring_its_value_or_lease_must_not_carry_one() {
        let put_with = |request: PutRequest| RequestOp { request: Some(Request::RequestPut(request)) };
        let carrying_value =
            PutRequest { key: "a".into(), value: "v".into(), ignore_value: true, ..Default::default() };
        let carrying_lease =
            PutRequest { key: "a".into(), lease: 7, ignore_lease: true, ..Default::default() };
        assert_eq!(check(&txn(vec![put_with(carrying_value)], vec![])), Err(EtcdError::ValueProvided));
        assert_eq!(
            check(&txn(vec![], vec![nested(vec![put_with(carrying_lease)])])),
            Err(EtcdError::LeaseProvided)
        );
        let ignoring =
            PutRequest { key: "a".into(), ignore_value: true, ignore_lease: true, ..Default::default() };
        assert_eq!(check(&txn(vec![put_with(ignoring)], vec![])), Ok(()));
    }

    #[test]
    fn more_operations_than_etcd_takes_are_refused() {
        let many: Vec<RequestOp> = (0..=MAX_OPERATIONS).map(|index| put(&format!("k{index}"))).collect();
        assert_eq!(check(&txn(many.clone(), vec![])), Err(EtcdError::TooManyOperations));
        assert_eq!(check(&txn(vec![nested(many)], vec![])), Err(EtcdError::TooManyOperations));
        let enough: Vec<RequestOp> = (0..MAX_OPERATIONS).map(|index| put(&format!("k{index}"))).collect();
        assert_eq!(check(&txn(enough, vec![])), Ok(()));
    }
}
