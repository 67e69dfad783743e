//! The reserved part of the transactional key space: keys from `0xfe` up to (not
//! including) `0xff` belong to Tessera's own layers (the etcd API keeps its keys,
//! leases, users and password hashes there, `crate::etcd`). Over TLS, a client's
//! certificate may not read, write, lock, watch or resolve them through the key-value
//! API, or the etcd API's permissions could be stepped around; nodes (whose etcd API is
//! a client of the others) and admins may. Nor may a client fence garbage collection,
//! which is a node's job. In the clear there are no identities: everything is allowed,
//! as every method is.
//!
//! A range touching the reserved keys is refused whole, not cut short: a client
//! scanning "to the end of the key space" gets a refusal saying so instead of an
//! answer that silently omits keys.

use tessera_engine::proto::command::{Write, write};
use tonic::{Request, Status};

use crate::failure::forbidden_kv_request;
use crate::security::Role;
use crate::security::listener::PeerConnectInfo;

/// The first reserved key, and the first key past them.
pub const RESERVED_START: &[u8] = b"\xfe";
pub const RESERVED_END: &[u8] = b"\xff";

/// Whether the sender of `request` is kept out of the reserved keys: a client
/// certificate (not a node's or an admin's) on a TLS connection.
pub(crate) fn kept_out<T>(request: &Request<T>) -> bool {
    request
        .extensions()
        .get::<PeerConnectInfo>()
        .is_some_and(|info| !matches!(info.identity.role, Role::Node | Role::Admin))
}

fn refusal(what: &str) -> Status {
    forbidden_kv_request(&format!(
        "{what}: transactional keys from 0xfe up to 0xff are reserved for Tessera's own layers \
         (the etcd API); a client certificate may not reach them (end a range before 0xfe)"
    ))
}

fn is_reserved(key: &[u8]) -> bool {
    key >= RESERVED_START && key < RESERVED_END
}

/// Whether `[start, end)` (an empty end: to the end of the key space) holds a
/// reserved key.
fn touches_reserved(start: &[u8], end: &[u8]) -> bool {
    start < RESERVED_END && (end.is_empty() || end > RESERVED_START)
}

/// Refuses a client's read of `key` when it is reserved.
pub(crate) fn check_key(kept_out: bool, key: &[u8]) -> Result<(), Status> {
    if kept_out && is_reserved(key) { Err(refusal("the key")) } else { Ok(()) }
}

/// Refuses a client's read or watch of `[start, end)` when it touches reserved keys.
pub(crate) fn check_range(kept_out: bool, start: &[u8], end: &[u8]) -> Result<(), Status> {
    if kept_out && touches_reserved(start, end) { Err(refusal("the range")) } else { Ok(()) }
}

/// Refuses a client's transactional commands on reserved keys, and its fences.
pub(crate) fn check_writes(kept_out: bool, writes: &[Write]) -> Result<(), Status> {
    if !kept_out {
        return Ok(());
    }
    for command in writes.iter().filter_map(|write| write.kind.as_ref()) {
        let reserved = match command {
            write::Kind::Prewrite(prewrite) => {
                is_reserved(&prewrite.primary)
                    || prewrite.mutations.iter().any(|mutation| is_reserved(&mutation.key))
            }
            write::Kind::Commit(commit) => commit.keys.iter().any(|key| is_reserved(key)),
            write::Kind::Rollback(rollback) => rollback.keys.iter().any(|key| is_reserved(key)),
            write::Kind::CheckTxnStatus(check) => is_reserved(&check.primary),
            write::Kind::TxnHeartBeat(heartbeat) => is_reserved(&heartbeat.primary),
            write::Kind::TxnFence(_) => {
                return Err(forbidden_kv_request(
                    "garbage-collection fences are sent by nodes; a client certificate may not send one",
                ));
            }
            // The raw key space: none of it is reserved.
            write::Kind::Put(_)
            | write::Kind::Delete(_)
            | write::Kind::DeleteRange(_)
            | write::Kind::CompareAndSwap(_) => false,
        };
        if reserved {
            return Err(refusal("a transactional command's keys"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_engine::proto::command::{Commit, Mutation, Prewrite, Put, TxnFence};

    #[test]
    fn reserved_keys_are_those_from_0xfe_below_0xff() {
        assert!(is_reserved(b"\xfe") && is_reserved(b"\xfeetcd/u/root") && is_reserved(b"\xfe\xff\xff"));
        assert!(!is_reserved(b"\xfd\xff") && !is_reserved(b"\xff") && !is_reserved(b"user"));
        assert!(touches_reserved(b"a", b""), "to the end of the key space");
        assert!(touches_reserved(b"a", b"\xfe\x00") && touches_reserved(b"\xfeetcd/", b"\xfeetcd0"));
        assert!(!touches_reserved(b"a", b"\xfe"), "ending at the first reserved key");
        assert!(!touches_reserved(b"\xff", b"") && !touches_reserved(b"a", b"b"));
    }

    #[test]
    fn clients_are_refused_reserved_keys_and_fences_and_others_are_not() {
        assert!(check_key(true, b"\xfeetcd/u/root").is_err());
        assert!(check_key(false, b"\xfeetcd/u/root").is_ok(), "a node or admin, or no TLS");
        assert!(check_key(true, b"user").is_ok());
        assert!(check_range(true, b"a", b"").is_err() && check_range(true, b"a", b"z").is_ok());
        let prewrite = |key: &[u8]| Write {
            kind: Some(write::Kind::Prewrite(Prewrite {
                primary: b"user".to_vec(),
                mutations: vec![Mutation { key: key.to_vec(), ..Mutation::default() }],
                ..Prewrite::default()
            })),
        };
        assert!(check_writes(true, &[prewrite(b"user2")]).is_ok());
        let refused =
            check_writes(true, &[prewrite(b"user2"), prewrite(b"\xfeetcd/k/x")]).expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        let commit = Write {
            kind: Some(write::Kind::Commit(Commit { keys: vec![b"\xfe".to_vec()], ..Commit::default() })),
        };
        assert!(
            check_writes(true, std::slice::from_ref(&commit)).is_err()
                && check_writes(false, &[commit]).is_ok()
        );
        let fence = Write { kind: Some(write::Kind::TxnFence(TxnFence::default())) };
        assert!(
            check_writes(true, std::slice::from_ref(&fence)).is_err()
                && check_writes(false, &[fence]).is_ok()
        );
        let raw = Write {
            kind: Some(write::Kind::Put(Put { key: b"\xfeetcd/u/root".to_vec(), ..Put::default() })),
        };
        assert!(check_writes(true, &[raw]).is_ok(), "the raw key space is not reserved");
    }
}
