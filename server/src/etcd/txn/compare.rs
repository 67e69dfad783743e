//! Evaluating a Txn's compares, as etcd's API reference defines them: a compare over
//! a range holds when every key in it satisfies it; a missing key compares as zero in
//! its version, revisions and lease, and fails every comparison of its value (there is
//! no value to compare).

use std::cmp::Ordering;

use crate::etcd_proto::etcdserverpb::Compare;
use crate::etcd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::etcd_proto::mvccpb::KeyValue;

/// Whether the keys a compare read (those of its key or range) satisfy it.
pub(super) fn holds(compare: &Compare, read: &[KeyValue]) -> bool {
    if read.is_empty() {
        return compare.target() != CompareTarget::Value && holds_for(compare, &KeyValue::default());
    }
    read.iter().all(|kv| holds_for(compare, kv))
}

fn holds_for(compare: &Compare, kv: &KeyValue) -> bool {
    let ordering = match (compare.target(), &compare.target_union) {
        (CompareTarget::Version, Some(TargetUnion::Version(version))) => kv.version.cmp(version),
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(revision))) => {
            kv.create_revision.cmp(revision)
        }
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(revision))) => kv.mod_revision.cmp(revision),
        (CompareTarget::Value, Some(TargetUnion::Value(value))) => kv.value.as_slice().cmp(value.as_slice()),
        (CompareTarget::Lease, Some(TargetUnion::Lease(lease))) => kv.lease.cmp(lease),
        // A target without its operand (or another's) compares with zero, as a missing
        // field in etcd's messages reads.
        (CompareTarget::Value, _) => kv.value.as_slice().cmp(&[]),
        (CompareTarget::Version, _) => kv.version.cmp(&0),
        (CompareTarget::Create, _) => kv.create_revision.cmp(&0),
        (CompareTarget::Mod, _) => kv.mod_revision.cmp(&0),
        (CompareTarget::Lease, _) => kv.lease.cmp(&0),
    };
    match compare.result() {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
        CompareResult::NotEqual => ordering != Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compare(target: CompareTarget, result: CompareResult, operand: TargetUnion) -> Compare {
        Compare {
            target: target as i32,
            result: result as i32,
            key: b"k".to_vec(),
            target_union: Some(operand),
            range_end: Vec::new(),
        }
    }

    fn kv(mod_revision: i64, value: &[u8]) -> KeyValue {
        KeyValue {
            key: b"k".to_vec(),
            mod_revision,
            create_revision: 5,
            version: 2,
            value: value.to_vec(),
            lease: 0,
        }
    }

    #[test]
    fn kube_s_create_compare_holds_only_for_a_missing_key() {
        let create = compare(CompareTarget::Mod, CompareResult::Equal, TargetUnion::ModRevision(0));
        assert!(holds(&create, &[]));
        assert!(!holds(&create, &[kv(7, b"x")]));
    }

    #[test]
    fn a_value_compare_on_a_missing_key_fails_whatever_it_asks() {
        for result in
            [CompareResult::Equal, CompareResult::NotEqual, CompareResult::Less, CompareResult::Greater]
        {
            let value = compare(CompareTarget::Value, result, TargetUnion::Value(Vec::new()));
            assert!(!holds(&value, &[]), "{result:?}");
        }
    }

    #[test]
    fn a_range_compare_holds_only_when_every_key_satisfies_it() {
        let older = compare(CompareTarget::Mod, CompareResult::Less, TargetUnion::ModRevision(10));
        assert!(holds(&older, &[kv(7, b"a"), kv(9, b"b")]));
        assert!(!holds(&older, &[kv(7, b"a"), kv(10, b"b")]));
        let value = compare(CompareTarget::Value, CompareResult::Greater, TargetUnion::Value(b"b".to_vec()));
        assert!(holds(&value, &[kv(1, b"c")]) && !holds(&value, &[kv(1, b"b")]));
        let not_equal = compare(CompareTarget::Version, CompareResult::NotEqual, TargetUnion::Version(2));
        assert!(!holds(&not_equal, &[kv(1, b"a")]));
    }
}
