//! The admin commands that change a region, built in one place: a split (proposed by a
//! leader whose region outgrew its thresholds, and by the placement driver's agent) and
//! a change of peer (the driver's operators and its own membership). Building only: the
//! callers propose them and the store validates them when they apply.

use crate::proto::command::{AdminCommand, ChangePeer, Split, admin_command};
use crate::proto::metadata::{Peer, Region};
use crate::raft::proto::ConfChangeType;

/// How many ids a split of `region` takes: the new region's, then one new peer for
/// each of its peers.
pub fn split_id_count(region: &Region) -> usize {
    1 + region.peers.len()
}

/// The command splitting `region` at `split_key`, naming the new region and its peers
/// with `ids` (as many as [`split_id_count`]: the region's id first, then the peers' in
/// the order of `region.peers`). `None` without ids.
pub fn split_command(split_key: Vec<u8>, ids: &[u64]) -> Option<AdminCommand> {
    let (&new_region_id, new_peer_ids) = ids.split_first()?;
    let split = Split { split_key, new_region_id, new_peer_ids: new_peer_ids.to_vec() };
    Some(AdminCommand { kind: Some(admin_command::Kind::Split(split)) })
}

/// The command adding, promoting or removing `peer` (with the role it is to have).
pub fn change_peer_command(change_type: ConfChangeType, peer: Peer) -> AdminCommand {
    let change = ChangePeer { change_type: change_type as i32, peer: Some(peer) };
    AdminCommand { kind: Some(admin_command::Kind::ChangePeer(change)) }
}
