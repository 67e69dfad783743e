//! What a request needs and what a role grants, as spans of etcd keys, and whether
//! the grants cover the needs.
//!
//! Spans are of etcd keys as clients name them (not of stored keys), read with etcd's
//! rules for `key` and `range_end`: an empty end names the key alone, an end of one
//! zero byte every key from `key` on, any other end `[key, range_end)`. A request is
//! allowed when the union of the spans its user's roles grant for an access covers
//! every span it needs that access on: a range read needs the whole range granted,
//! though pieces of it may come from different permissions or roles.

use crate::etcd_proto::authpb::Permission;
use crate::etcd_proto::authpb::permission::Type as PermissionType;
use crate::etcd_proto::etcdserverpb::request_op::Request as Operation;
use crate::etcd_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest};

/// `[start, end)` of etcd keys; no end: every key from `start` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Span {
    /// The span `key` and `range_end` name; None when it holds no key (an end at or
    /// before the key), which needs nothing and grants nothing.
    pub(crate) fn of(key: &[u8], range_end: &[u8]) -> Option<Span> {
        let end = match range_end {
            [] => Some([key, &[0]].concat()),
            [0] => None,
            end if end <= key => return None,
            end => Some(end.to_vec()),
        };
        Some(Span { start: key.to_vec(), end })
    }

    /// Whether the union of `granted` (sorted by start) covers this span.
    fn covered_by(&self, granted: &[Span]) -> bool {
        // Everything below `reached` (and at or above our start) is covered so far.
        let mut reached: Option<&[u8]> = Some(&self.start);
        for span in granted {
            let Some(covered_to) = reached else { return true };
            if span.start.as_slice() > covered_to {
                break;
            }
            reached = match (&span.end, covered_to) {
                (None, _) => None,
                (Some(end), covered_to) if end.as_slice() > covered_to => Some(end),
                (Some(_), covered_to) => Some(covered_to),
            };
        }
        match (reached, &self.end) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(covered_to), Some(end)) => covered_to >= end.as_slice(),
        }
    }
}

/// What one request must be allowed: spans to read and spans to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    reads: Vec<Span>,
    writes: Vec<Span>,
}

impl Needs {
    fn read(&mut self, key: &[u8], range_end: &[u8]) {
        self.reads.extend(Span::of(key, range_end));
    }

    fn write(&mut self, key: &[u8], range_end: &[u8]) {
        self.writes.extend(Span::of(key, range_end));
    }

    pub(crate) fn range(request: &RangeRequest) -> Needs {
        let mut needs = Needs::default();
        needs.add_range(request);
        needs
    }

    pub(crate) fn put(request: &PutRequest) -> Needs {
        let mut needs = Needs::default();
        needs.add_put(request);
        needs
    }

    pub(crate) fn delete_range(request: &DeleteRangeRequest) -> Needs {
        let mut needs = Needs::default();
        needs.add_delete_range(request);
        needs
    }

    /// A watch of `key` and `range_end`: reading them.
    pub(crate) fn watch(key: &[u8], range_end: &[u8]) -> Needs {
        let mut needs = Needs::default();
        needs.read(key, range_end);
        needs
    }

    /// Reading each of `keys` (the keys a lease's TimeToLive lists).
    pub(crate) fn read_keys<K: AsRef<[u8]>>(keys: &[K]) -> Needs {
        let mut needs = Needs::default();
        keys.iter().for_each(|key| needs.read(key.as_ref(), b""));
        needs
    }

    /// Writing each of `keys` (the keys a lease's revocation deletes).
    pub(crate) fn write_keys<K: AsRef<[u8]>>(keys: &[K]) -> Needs {
        let mut needs = Needs::default();
        keys.iter().for_each(|key| needs.write(key.as_ref(), b""));
        needs
    }

    /// A Txn: reading what every compare names, and what each operation of both
    /// branches needs, nested transactions' included (as etcd checks, whichever
    /// branch runs).
    pub(crate) fn txn(request: &TxnRequest) -> Needs {
        let mut needs = Needs::default();
        // A stack instead of recursion: nesting is as deep as the request makes it.
        let mut pending = vec![request];
        while let Some(txn) = pending.pop() {
            for compare in &txn.compare {
                needs.read(&compare.key, &compare.range_end);
            }
            for operation in txn.success.iter().chain(&txn.failure) {
                match &operation.request {
                    Some(Operation::RequestRange(range)) => needs.add_range(range),
                    Some(Operation::RequestPut(put)) => needs.add_put(put),
                    Some(Operation::RequestDeleteRange(delete)) => needs.add_delete_range(delete),
                    Some(Operation::RequestTxn(nested)) => pending.push(nested),
                    None => {}
                }
            }
        }
        needs
    }

    fn add_range(&mut self, request: &RangeRequest) {
        self.read(&request.key, &request.range_end);
    }

    /// A put writes its key, and reads it when it answers the previous value.
    fn add_put(&mut self, request: &PutRequest) {
        self.write(&request.key, b"");
        if request.prev_kv {
            self.read(&request.key, b"");
        }
    }

    fn add_delete_range(&mut self, request: &DeleteRangeRequest) {
        self.write(&request.key, &request.range_end);
        if request.prev_kv {
            self.read(&request.key, &request.range_end);
        }
    }

    /// Whether `granted` (a user's permissions, every role's together) allows all of it.
    pub(crate) fn allowed_by<'a>(&self, granted: impl IntoIterator<Item = &'a Permission>) -> bool {
        let (mut readable, mut writable) = (Vec::new(), Vec::new());
        for permission in granted {
            let Some(span) = Span::of(&permission.key, &permission.range_end) else { continue };
            // A type this version does not know grants nothing (never read as READ).
            match PermissionType::try_from(permission.perm_type) {
                Ok(PermissionType::Read) => readable.push(span),
                Ok(PermissionType::Write) => writable.push(span),
                Ok(PermissionType::Readwrite) => {
                    readable.push(span.clone());
                    writable.push(span);
                }
                Err(_) => {}
            }
        }
        readable.sort_by(|a, b| a.start.cmp(&b.start));
        writable.sort_by(|a, b| a.start.cmp(&b.start));
        self.reads.iter().all(|span| span.covered_by(&readable))
            && self.writes.iter().all(|span| span.covered_by(&writable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd_proto::etcdserverpb::{Compare, RequestOp};

    fn permission(kind: PermissionType, key: &str, range_end: &str) -> Permission {
        Permission { perm_type: kind as i32, key: key.into(), range_end: range_end.into() }
    }

    fn range(key: &str, range_end: &str) -> RangeRequest {
        RangeRequest { key: key.into(), range_end: range_end.into(), ..RangeRequest::default() }
    }

    #[test]
    fn a_range_is_allowed_only_when_the_grants_cover_all_of_it() {
        let granted = [
            permission(PermissionType::Read, "a", "c"),
            permission(PermissionType::Readwrite, "c", "e"),
            permission(PermissionType::Read, "x", "\0"),
        ];
        assert!(Needs::range(&range("a", "e")).allowed_by(&granted), "two grants meet at c");
        assert!(Needs::range(&range("b", "")).allowed_by(&granted), "one key inside");
        assert!(!Needs::range(&range("a", "f")).allowed_by(&granted), "past the last grant");
        assert!(!Needs::range(&range("0", "b")).allowed_by(&granted), "before the first grant");
        assert!(Needs::range(&range("y", "\0")).allowed_by(&granted), "from a key on");
        assert!(!Needs::range(&range("e", "\0")).allowed_by(&granted), "a gap between e and x");
        assert!(Needs::range(&range("b", "a")).allowed_by(&granted), "an empty range reads nothing");
        assert!(!Needs::put(&PutRequest { key: "a".into(), ..PutRequest::default() }).allowed_by(&granted));
        assert!(Needs::put(&PutRequest { key: "d".into(), ..PutRequest::default() }).allowed_by(&granted));
    }

    #[test]
    fn a_single_key_grant_covers_that_key_and_nothing_after_it() {
        let granted = [permission(PermissionType::Readwrite, "k", "")];
        assert!(Needs::range(&range("k", "")).allowed_by(&granted));
        assert!(Needs::range(&range("k", "k\0")).allowed_by(&granted), "the same span named as a range");
        assert!(!Needs::range(&range("k\0", "")).allowed_by(&granted), "the next key");
        assert!(!Needs::range(&range("k", "l")).allowed_by(&granted), "a prefix of it");
    }

    #[test]
    fn reading_the_previous_value_needs_read_as_well_as_write() {
        let write_only = [permission(PermissionType::Write, "k", "l")];
        let put = PutRequest { key: "k".into(), ..PutRequest::default() };
        assert!(Needs::put(&put).allowed_by(&write_only));
        assert!(!Needs::put(&PutRequest { prev_kv: true, ..put }).allowed_by(&write_only));
        let delete = DeleteRangeRequest { key: "k".into(), range_end: "l".into(), prev_kv: true };
        assert!(!Needs::delete_range(&delete).allowed_by(&write_only));
        assert!(!Needs::range(&range("k", "")).allowed_by(&write_only), "write does not grant read");
    }

    #[test]
    fn a_txn_needs_its_compares_and_both_branches_nested_ones_included() {
        let put = |key: &str| RequestOp {
            request: Some(Operation::RequestPut(PutRequest { key: key.into(), ..PutRequest::default() })),
        };
        let nested = TxnRequest { failure: vec![put("secret")], ..TxnRequest::default() };
        let txn = TxnRequest {
            compare: vec![Compare { key: "c".into(), ..Compare::default() }],
            success: vec![put("a")],
            failure: vec![RequestOp { request: Some(Operation::RequestTxn(nested)) }],
        };
        let mut granted = vec![permission(PermissionType::Readwrite, "a", "d")];
        assert!(!Needs::txn(&txn).allowed_by(&granted), "the nested else-branch writes elsewhere");
        granted.push(permission(PermissionType::Write, "secret", ""));
        assert!(Needs::txn(&txn).allowed_by(&granted));
        let compare_only = [permission(PermissionType::Write, "a", "z")];
        assert!(!Needs::txn(&txn).allowed_by(&compare_only), "a compare reads its key");
    }

    #[test]
    fn nothing_granted_allows_only_what_needs_nothing() {
        assert!(!Needs::range(&range("a", "")).allowed_by(&[]));
        assert!(Needs::default().allowed_by(&[]));
        assert!(Needs::read_keys::<&[u8]>(&[]).allowed_by(&[]));
        assert!(!Needs::write_keys(&[b"k"]).allowed_by(&[permission(PermissionType::Read, "k", "")]));
    }
}
