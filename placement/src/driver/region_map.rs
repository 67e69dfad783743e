//! The driver's map of regions: by id, and sorted by start key for lookups by key and
//! range. It holds at most one region per key: a region reported with a newer epoch
//! replaces every older one it overlaps.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use tessera_engine::proto::metadata::{Peer, Region};
use tessera_engine::region::{KeyRange, epoch};

use crate::cluster::RegionInfo;

/// A region as the driver knows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RegionEntry {
    pub info: RegionInfo,
    /// The reporting leader's term; zero until a leader reported in this driver term.
    pub term: u64,
    pub leader: Option<Peer>,
    pub approximate_keys: u64,
    pub write_keys_per_sec: u64,
    pub read_keys_per_sec: u64,
}

impl RegionEntry {
    pub(crate) fn new(region: Region) -> RegionEntry {
        RegionEntry {
            info: RegionInfo {
                region,
                leader_store: None,
                pending_peers: Vec::new(),
                approximate_bytes: 0,
                write_bytes_per_sec: 0,
                read_bytes_per_sec: 0,
            },
            term: 0,
            leader: None,
            approximate_keys: 0,
            write_keys_per_sec: 0,
            read_keys_per_sec: 0,
        }
    }

    pub(crate) fn region(&self) -> &Region {
        &self.info.region
    }
}

/// Whether `a`'s epoch is older than `b`'s in either component.
pub(crate) fn is_stale(a: &Region, b: &Region) -> bool {
    let (a, b) = (epoch(a), epoch(b));
    a.version < b.version || a.conf_version < b.conf_version
}

/// How a reported descriptor compares with the map.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// The map knows a newer epoch of this region or of one overlapping it.
    Stale(Region),
    /// Same descriptor as the map's.
    Known,
    /// New or newer: to be persisted, replacing the overlapped regions listed.
    Changed { replaces: Vec<u64> },
}

#[derive(Debug, Default)]
pub(crate) struct RegionMap {
    by_id: HashMap<u64, RegionEntry>,
    by_start: BTreeMap<Vec<u8>, u64>,
}

impl RegionMap {
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn get(&self, region_id: u64) -> Option<&RegionEntry> {
        self.by_id.get(&region_id)
    }

    pub(crate) fn get_mut(&mut self, region_id: u64) -> Option<&mut RegionEntry> {
        self.by_id.get_mut(&region_id)
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &RegionEntry> {
        self.by_id.values()
    }

    /// Regions overlapping `range`, in key order.
    pub(crate) fn range<'a>(&'a self, range: KeyRange<'a>) -> impl Iterator<Item = &'a RegionEntry> {
        let start = range.start();
        // The region holding `start` begins at or before it.
        let first = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back()
            .map(|(key, _)| key.clone())
            .unwrap_or_default();
        self.by_start
            .range::<[u8], _>((Bound::Included(first.as_slice()), Bound::Unbounded))
            .map(|(_, id)| &self.by_id[id])
            .skip_while(move |entry| !KeyRange::of(entry.region()).overlaps(&range))
            .take_while(move |entry| KeyRange::of(entry.region()).overlaps(&range))
    }

    pub(crate) fn by_key(&self, key: &[u8]) -> Option<&RegionEntry> {
        let (_, id) = self.by_start.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back()?;
        let entry = &self.by_id[id];
        KeyRange::of(entry.region()).is_before_end(key).then_some(entry)
    }

    /// Compares a reported descriptor with the map.
    pub(crate) fn judge(&self, region: &Region) -> Verdict {
        if let Some(known) = self.by_id.get(&region.id) {
            if is_stale(region, known.region()) {
                return Verdict::Stale(known.region().clone());
            }
            if known.region() == region {
                return Verdict::Known;
            }
        }
        let mut replaces = Vec::new();
        for other in self.range(KeyRange::of(region)) {
            if other.region().id == region.id {
                continue;
            }
            if epoch(other.region()).version > epoch(region).version {
                return Verdict::Stale(other.region().clone());
            }
            replaces.push(other.region().id);
        }
        Verdict::Changed { replaces }
    }

    /// Puts `region` in the map, removing the regions it overlaps (the caller judged it
    /// newer than each). Keeps what is known of the region's leader and load.
    pub(crate) fn insert(&mut self, region: Region) {
        let overlapped: Vec<u64> = self
            .range(KeyRange::of(&region))
            .map(|entry| entry.region().id)
            .filter(|&id| id != region.id)
            .collect();
        for id in overlapped {
            self.remove(id);
        }
        let entry = match self.by_id.remove(&region.id) {
            Some(mut entry) => {
                self.by_start.remove(&entry.info.region.start_key);
                entry.info.region = region;
                entry
            }
            None => RegionEntry::new(region),
        };
        self.by_start.insert(entry.info.region.start_key.clone(), entry.info.region.id);
        self.by_id.insert(entry.info.region.id, entry);
    }

    pub(crate) fn remove(&mut self, region_id: u64) -> Option<RegionEntry> {
        let entry = self.by_id.remove(&region_id)?;
        if self.by_start.get(&entry.info.region.start_key) == Some(&region_id) {
            self.by_start.remove(&entry.info.region.start_key);
        }
        Some(entry)
    }
}
