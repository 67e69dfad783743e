//! When a leader measures its region, and the split it proposes when the region
//! outgrew the thresholds (the measuring itself is [`crate::store::split_check`]).
//!
//! - Due: every `split_check_interval_ticks`, and only for a region written since its
//!   last check (a new peer is measured once, so that its reports carry a size).
//! - Propose: a region over a threshold gets a split at its middle key, with ids from
//!   the store's [`IdAllocator`]; nobody waits for the answer. Until a check finds the
//!   region within the thresholds, every check measures it again, because the split
//!   proposed may fail (a concurrent change of epoch, no ids to be had).

use crate::proto::command::RaftCommand;
use crate::region;
use crate::storage::Engine;
use crate::store::StoreConfig;
use crate::store::peer::Peer;
use crate::store::responder::Responder;
use crate::store::split_check::{self, IdAllocator};

impl Peer {
    /// Whether it is time to check this region's size: every
    /// `split_check_interval_ticks`, and only if it was written since the last check.
    fn due_for_split_check(&mut self, config: &StoreConfig) -> bool {
        let due = config.split_check_interval_ticks > 0
            && self.ticks.is_multiple_of(config.split_check_interval_ticks)
            && self.written_since_split_check;
        if due {
            self.written_since_split_check = false;
        }
        due
    }
}

/// Measures `peer`'s region when its leader is due for a check, keeping the figures for
/// reports, and proposes a split if it outgrew the thresholds and `ids` can name the
/// new region.
pub(in crate::store) fn propose_split_if_oversized(
    engine: &Engine,
    config: &StoreConfig,
    ids: Option<&dyn IdAllocator>,
    peer: &mut Peer,
) {
    if !peer.is_leader() || !peer.due_for_split_check(config) {
        return;
    }
    let Ok(size) =
        split_check::check_size(engine, &peer.region, config.split_max_keys, config.split_max_bytes)
    else {
        return;
    };
    peer.size = (size.keys, size.bytes);
    let (Some(split_key), Some(ids)) = (size.split_key, ids) else { return };
    // Measured again at the next check until the region is within the thresholds.
    peer.written_since_split_check = true;
    // Without ids the split waits for the next check.
    let Ok(ids) = ids.allocate(region::split_id_count(&peer.region)) else { return };
    let Some(split) = region::split_command(split_key, &ids) else { return };
    let command = RaftCommand {
        region_id: peer.region_id,
        epoch: Some(region::epoch(&peer.region)),
        writes: Vec::new(),
        admin: Some(split),
    };
    // Nobody waits for the answer: the next check retries if the split did not happen.
    peer.propose(command, Responder::new(drop));
}
