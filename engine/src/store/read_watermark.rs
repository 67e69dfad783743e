//! A leader's read watermark: the highest timestamp at which a snapshot read may have
//! seen each key of its region, which one-phase commits must stay above
//! (`operation/one_phase.rs` says why).
//!
//! A single watermark for the whole region would do, but it makes every key pay for
//! reads of every other: under etcd's Put (a read of the key at a fresh timestamp, then
//! a one-phase commit of it) each Put's read raises the watermark past the commit
//! timestamps of its neighbours in flight, and they are refused. So a point read raises
//! only its key's slot: keys are hashed into [`KEY_SLOTS`] slots, and a key's watermark
//! is the highest of its slot and the region-wide floor. Two keys that share a slot
//! share a watermark, which is safe (a watermark may only err high). Scans, refreshes,
//! change feeds' promises and syncs with the oracle raise the floor.
//!
//! The same slots name what a one-phase commit in flight writes ([`KeySlots`]), so that
//! a point read waits only for those that may write its key.
//!
//! This module owns the timestamps and never lowers one.

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::timestamp::Timestamp;

/// How many slots point reads are hashed into per region: enough that the one-phase
/// commits in flight for one region rarely share a slot with a read of another key,
/// small enough (2 KiB, and only for leaders that served point reads) to keep per
/// region.
pub(crate) const KEY_SLOTS: usize = 256;

#[derive(Debug, Default)]
pub(in crate::store) struct ReadWatermark {
    /// Every key's watermark is at least this.
    floor: Timestamp,
    /// Raised by point reads, by the slot of the key read; allocated at the first.
    by_key_slot: Option<Box<[Timestamp; KEY_SLOTS]>>,
}

impl ReadWatermark {
    /// A read (or a promise) that covers every key at `timestamp`.
    pub(in crate::store) fn raise_floor(&mut self, timestamp: Timestamp) {
        self.floor = self.floor.max(timestamp);
    }

    /// A read of `key` alone at `timestamp`.
    pub(in crate::store) fn raise_key(&mut self, key: &[u8], timestamp: Timestamp) {
        if timestamp <= self.floor {
            return;
        }
        let slots = self.by_key_slot.get_or_insert_with(|| Box::new([Timestamp::ZERO; KEY_SLOTS]));
        let slot = &mut slots[slot_of(key)];
        *slot = (*slot).max(timestamp);
    }

    /// Raises the floor to `timestamp`, which the caller knows to be above every read
    /// ever served in this region (a timestamp the oracle handed out after this leader
    /// was elected): the slots say nothing more then, and are freed.
    pub(in crate::store) fn raise_floor_above_every_read(&mut self, timestamp: Timestamp) {
        self.raise_floor(timestamp);
        if self.by_key_slot.as_ref().is_some_and(|slots| slots.iter().all(|slot| *slot <= self.floor)) {
            self.by_key_slot = None;
        }
    }

    /// The highest timestamp at which a read may have seen any of `keys`.
    pub(in crate::store) fn of_keys<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> Timestamp {
        let Some(slots) = &self.by_key_slot else { return self.floor };
        keys.into_iter().map(|key| slots[slot_of(key)]).fold(self.floor, Timestamp::max)
    }
}

/// The slots of a set of keys, each once, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::store) struct KeySlots(Vec<u16>);

impl KeySlots {
    pub(in crate::store) fn of<'k>(keys: impl IntoIterator<Item = &'k [u8]>) -> KeySlots {
        let mut slots: Vec<u16> = keys.into_iter().map(|key| slot_of(key) as u16).collect();
        slots.sort_unstable();
        slots.dedup();
        KeySlots(slots)
    }

    /// Whether `key` may be among the keys (it shares a slot with one).
    pub(in crate::store) fn may_hold(&self, key: &[u8]) -> bool {
        self.0.binary_search(&(slot_of(key) as u16)).is_ok()
    }
}

/// The slot of `key`: std's SipHash with fixed keys, the same in every process (the
/// slots are never persisted, so only spread matters).
pub(in crate::store) fn slot_of(key: &[u8]) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % KEY_SLOTS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(value: u64) -> Timestamp {
        Timestamp::from_u64(value)
    }

    /// Two keys in different slots.
    fn keys_in_two_slots() -> (Vec<u8>, Vec<u8>) {
        let first = b"key-0".to_vec();
        let other =
            (1..).map(|n| format!("key-{n}").into_bytes()).find(|key| slot_of(key) != slot_of(&first));
        (first, other.expect("a key in another slot"))
    }

    #[test]
    fn a_point_read_raises_its_key_and_not_the_others() {
        let (read, other) = keys_in_two_slots();
        let mut watermark = ReadWatermark::default();
        watermark.raise_floor(ts(10));
        watermark.raise_key(&read, ts(50));
        assert_eq!(watermark.of_keys([read.as_slice()]), ts(50));
        assert_eq!(watermark.of_keys([other.as_slice()]), ts(10), "another key keeps the floor");
        assert_eq!(watermark.of_keys([other.as_slice(), read.as_slice()]), ts(50), "the highest of the keys");
    }

    #[test]
    fn the_floor_covers_every_key_and_never_falls() {
        let (read, other) = keys_in_two_slots();
        let mut watermark = ReadWatermark::default();
        watermark.raise_key(&read, ts(50));
        watermark.raise_floor(ts(70));
        watermark.raise_floor(ts(60));
        watermark.raise_key(&read, ts(65));
        assert_eq!(watermark.of_keys([read.as_slice()]), ts(70));
        assert_eq!(watermark.of_keys([other.as_slice()]), ts(70));
    }

    #[test]
    fn keys_sharing_a_slot_share_a_watermark() {
        let first = b"key-0".to_vec();
        let twin = (1..)
            .map(|n| format!("key-{n}").into_bytes())
            .find(|key| slot_of(key) == slot_of(&first))
            .expect("a key in the same slot");
        let mut watermark = ReadWatermark::default();
        watermark.raise_key(&first, ts(40));
        assert_eq!(watermark.of_keys([twin.as_slice()]), ts(40), "erring high is safe, low is not");
    }

    #[test]
    fn key_slots_hold_their_keys_and_not_keys_of_other_slots() {
        let (read, other) = keys_in_two_slots();
        let slots = KeySlots::of([read.as_slice(), read.as_slice()]);
        assert_eq!(slots.0.len(), 1, "each slot once");
        assert!(slots.may_hold(&read));
        assert!(!slots.may_hold(&other));
    }

    #[test]
    fn a_floor_above_every_read_frees_the_slots_only_when_it_covers_them() {
        let (read, _) = keys_in_two_slots();
        let mut watermark = ReadWatermark::default();
        watermark.raise_key(&read, ts(50));
        watermark.raise_floor_above_every_read(ts(40));
        assert!(watermark.by_key_slot.is_some(), "a slot above the floor is kept");
        assert_eq!(watermark.of_keys([read.as_slice()]), ts(50));
        watermark.raise_floor_above_every_read(ts(80));
        assert!(watermark.by_key_slot.is_none());
        assert_eq!(watermark.of_keys([read.as_slice()]), ts(80));
    }
}
