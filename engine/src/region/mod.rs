//! Regions: the contiguous key ranges that Raft groups replicate, their epochs, and the
//! key-range arithmetic of routing and splitting.
//!
//! A region covers `[start_key, end_key)`; an empty end key means the end of the key
//! space. Its epoch has two counters: `version` grows when the range changes (a split),
//! `conf_version` when the membership changes. A request routed with an older epoch was
//! routed on stale knowledge and is refused with the current descriptor, so the client
//! can refresh its cache. This module is pure: no I/O, no Raft.

mod commands;
mod display;
mod key_range;

use thiserror::Error;

pub use commands::{change_peer_command, split_command, split_id_count};
pub use display::{DisplayEpoch, DisplayKey, DisplayLeader};
pub use key_range::KeyRange;

use crate::proto::metadata::{Peer, Region, RegionEpoch};

#[derive(Debug, Clone, PartialEq, Error)]
pub enum RegionError {
    #[error("key {} is outside region {region_id} {}", DisplayKey(key), KeyRange::new(start, end))]
    KeyNotInRegion { key: Vec<u8>, region_id: u64, start: Vec<u8>, end: Vec<u8> },
    #[error(
        "stale epoch for region {region_id}: the request has {}, the region is at {}",
        DisplayEpoch(*requested),
        DisplayEpoch(*current)
    )]
    EpochNotMatch {
        region_id: u64,
        requested: RegionEpoch,
        current: RegionEpoch,
        current_region: Box<Region>,
    },
    /// The request names a later epoch than this replica's: it has not applied a change
    /// (a split, a membership change) that the client already knows of. Answering with
    /// this replica's older descriptor would move the client's cache backwards.
    #[error(
        "this replica of region {region_id} is behind the request (the request has {}, the replica is at \
         {}): it has not applied a change the client knows of yet; retry",
        DisplayEpoch(*requested),
        DisplayEpoch(*current)
    )]
    EpochAhead { region_id: u64, requested: RegionEpoch, current: RegionEpoch },
    #[error("split key {} is not strictly inside region {region_id}", DisplayKey(key))]
    InvalidSplitKey { key: Vec<u8>, region_id: u64 },
    #[error("split of region {region_id} needs {needed} new peer ids, got {given}")]
    SplitPeerCount { region_id: u64, needed: usize, given: usize },
    #[error("range start {} is after its end {}", DisplayKey(start), DisplayKey(end))]
    InvertedRange { start: Vec<u8>, end: Vec<u8> },
}

/// What a request intends, which decides the parts of the epoch that must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochCheck {
    /// Reads and writes of data: the range must be the one the client routed on.
    Data,
    /// Splits and membership changes: both range and membership must be current.
    Admin,
}

/// The region's epoch; a descriptor without one is at the first epoch (both counters 0).
/// The one place that default is written.
pub fn epoch(region: &Region) -> RegionEpoch {
    region.epoch.unwrap_or_default()
}

pub(crate) fn check_key(region: &Region, key: &[u8]) -> Result<(), RegionError> {
    if KeyRange::of(region).contains(key) {
        return Ok(());
    }
    Err(not_in_region(region, key))
}

fn not_in_region(region: &Region, key: &[u8]) -> RegionError {
    RegionError::KeyNotInRegion {
        key: key.to_vec(),
        region_id: region.id,
        start: region.start_key.clone(),
        end: region.end_key.clone(),
    }
}

/// Checks that `requested` is a valid range (not inverted) inside the region.
pub(crate) fn check_range(region: &Region, requested: KeyRange<'_>) -> Result<(), RegionError> {
    if requested.is_inverted() {
        return Err(RegionError::InvertedRange {
            start: requested.start().to_vec(),
            end: requested.end().to_vec(),
        });
    }
    check_key(region, requested.start())?;
    if !KeyRange::of(region).reaches(requested.end()) {
        return Err(not_in_region(region, requested.end()));
    }
    Ok(())
}

pub(crate) fn check_epoch(
    region: &Region,
    requested: RegionEpoch,
    check: EpochCheck,
) -> Result<(), RegionError> {
    let current = epoch(region);
    let stale = match check {
        EpochCheck::Data => requested.version < current.version,
        EpochCheck::Admin => {
            requested.version < current.version || requested.conf_version < current.conf_version
        }
    };
    let ahead = match check {
        EpochCheck::Data => requested.version > current.version,
        EpochCheck::Admin => requested != current,
    };
    if stale {
        return Err(RegionError::EpochNotMatch {
            region_id: region.id,
            requested,
            current,
            current_region: Box::new(region.clone()),
        });
    }
    if ahead {
        return Err(RegionError::EpochAhead { region_id: region.id, requested, current });
    }
    Ok(())
}

/// Splits `region` at `split_key`: the left half keeps the region's id and takes
/// `[start, split_key)`, a new region `new_region_id` takes `[split_key, end)` with one
/// new peer (from `new_peer_ids`, in order) on each store of the original. Both halves
/// get the next range version.
pub(crate) fn split(
    region: &Region,
    split_key: &[u8],
    new_region_id: u64,
    new_peer_ids: &[u64],
) -> Result<(Region, Region), RegionError> {
    if !KeyRange::of(region).contains_strictly(split_key) {
        return Err(RegionError::InvalidSplitKey { key: split_key.to_vec(), region_id: region.id });
    }
    if new_peer_ids.len() != region.peers.len() {
        return Err(RegionError::SplitPeerCount {
            region_id: region.id,
            needed: region.peers.len(),
            given: new_peer_ids.len(),
        });
    }
    let mut epoch = epoch(region);
    epoch.version += 1;
    let mut left = region.clone();
    left.end_key = split_key.to_vec();
    left.epoch = Some(epoch);
    let right = Region {
        id: new_region_id,
        start_key: split_key.to_vec(),
        end_key: region.end_key.clone(),
        epoch: Some(epoch),
        peers: region
            .peers
            .iter()
            .zip(new_peer_ids)
            .map(|(peer, &id)| Peer { id, store_id: peer.store_id, role: peer.role })
            .collect(),
    };
    Ok((left, right))
}

/// The region's peer on `store_id`, if it has one.
pub(crate) fn peer_on_store(region: &Region, store_id: u64) -> Option<&Peer> {
    region.peers.iter().find(|peer| peer.store_id == store_id)
}

/// A region with one peer (id `id * 10`, on store 1): what tests of other layers
/// place ranges with.
#[cfg(test)]
pub(crate) fn single_peer_region(id: u64, start: &[u8], end: &[u8]) -> Region {
    Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        epoch: None,
        peers: vec![Peer { id: id * 10, store_id: 1, role: 0 }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> Region {
        Region {
            id: 1,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            epoch: Some(RegionEpoch { conf_version: 3, version: 7 }),
            peers: vec![
                Peer { id: 11, store_id: 1, role: 0 },
                Peer { id: 12, store_id: 2, role: 0 },
                Peer { id: 13, store_id: 3, role: 1 },
            ],
        }
    }

    #[test]
    fn ranges_are_half_open_and_an_empty_end_is_unbounded() {
        let bounded = region(b"b", b"d");
        assert!(KeyRange::of(&bounded).contains(b"b"));
        assert!(KeyRange::of(&bounded).contains(b"cz"));
        assert!(!KeyRange::of(&bounded).contains(b"d"));
        assert!(!KeyRange::of(&bounded).contains(b"a"));
        let unbounded = region(b"", b"");
        assert!(KeyRange::of(&unbounded).contains(b""));
        assert!(KeyRange::of(&unbounded).contains(&[0xff; 100]));
        assert!(matches!(check_key(&bounded, b"e"), Err(RegionError::KeyNotInRegion { .. })));
    }

    #[test]
    fn range_checks_reject_inverted_and_overflowing_ranges() {
        let bounded = region(b"b", b"d");
        assert!(check_range(&bounded, KeyRange::new(b"b", b"d")).is_ok());
        assert!(check_range(&bounded, KeyRange::new(b"c", b"cc")).is_ok());
        assert!(matches!(
            check_range(&bounded, KeyRange::new(b"c", b"b")),
            Err(RegionError::InvertedRange { .. })
        ));
        assert!(check_range(&bounded, KeyRange::new(b"c", b"e")).is_err());
        assert!(
            check_range(&bounded, KeyRange::new(b"c", b"")).is_err(),
            "an unbounded end leaves a bounded region"
        );
        assert!(check_range(&region(b"b", b""), KeyRange::new(b"c", b"")).is_ok());
    }

    #[test]
    fn data_requests_need_the_current_range_version_admin_requests_the_whole_epoch() {
        let current = region(b"b", b"d");
        let same = RegionEpoch { conf_version: 3, version: 7 };
        let old_membership = RegionEpoch { conf_version: 2, version: 7 };
        let old_range = RegionEpoch { conf_version: 3, version: 6 };
        assert!(check_epoch(&current, same, EpochCheck::Admin).is_ok());
        assert!(check_epoch(&current, old_membership, EpochCheck::Data).is_ok());
        assert!(check_epoch(&current, old_membership, EpochCheck::Admin).is_err());
        let Err(RegionError::EpochNotMatch { current_region, .. }) =
            check_epoch(&current, old_range, EpochCheck::Data)
        else {
            panic!("a request routed before a split must be refused");
        };
        assert_eq!(*current_region, current, "the refusal carries the current descriptor");
    }

    /// A replica that has not applied a split the client knows of must not hand the
    /// client its older descriptor: the client's cache would move backwards.
    #[test]
    fn a_request_ahead_of_the_replica_is_refused_without_an_older_descriptor() {
        let current = region(b"b", b"d");
        let newer_range = RegionEpoch { conf_version: 3, version: 8 };
        let newer_membership = RegionEpoch { conf_version: 4, version: 7 };
        assert!(matches!(
            check_epoch(&current, newer_range, EpochCheck::Data),
            Err(RegionError::EpochAhead { region_id: 1, .. })
        ));
        assert!(check_epoch(&current, newer_membership, EpochCheck::Data).is_ok());
        assert!(matches!(
            check_epoch(&current, newer_membership, EpochCheck::Admin),
            Err(RegionError::EpochAhead { .. })
        ));
        // Behind in one counter and ahead in the other: stale, with the descriptor.
        let mixed = RegionEpoch { conf_version: 4, version: 6 };
        assert!(matches!(
            check_epoch(&current, mixed, EpochCheck::Admin),
            Err(RegionError::EpochNotMatch { .. })
        ));
    }

    #[test]
    fn a_split_divides_the_range_and_bumps_the_version() {
        let original = region(b"b", b"");
        let (left, right) = split(&original, b"m", 9, &[91, 92, 93]).unwrap();
        assert_eq!((left.id, left.start_key.as_slice(), left.end_key.as_slice()), (1, &b"b"[..], &b"m"[..]));
        assert_eq!(
            (right.id, right.start_key.as_slice(), right.end_key.as_slice()),
            (9, &b"m"[..], &b""[..])
        );
        assert_eq!(epoch(&left), RegionEpoch { conf_version: 3, version: 8 });
        assert_eq!(epoch(&right), epoch(&left));
        let stores: Vec<(u64, u64, i32)> = right.peers.iter().map(|p| (p.id, p.store_id, p.role)).collect();
        assert_eq!(stores, vec![(91, 1, 0), (92, 2, 0), (93, 3, 1)]);
        assert!(split(&original, b"b", 9, &[91, 92, 93]).is_err(), "the start key splits nothing");
        assert!(split(&original, b"a", 9, &[91, 92, 93]).is_err());
        assert!(matches!(split(&original, b"m", 9, &[91]), Err(RegionError::SplitPeerCount { .. })));
    }
}
