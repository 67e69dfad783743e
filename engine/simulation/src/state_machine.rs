//! The replicated state machine the simulator runs on top of Raft: a map of small
//! integer keys to values, plus a hash chain over every applied entry.
//!
//! The chain makes state comparison cheap: two replicas that applied the same sequence
//! up to an index have the same chain value there, so a snapshot can be checked against
//! the globally committed sequence with one comparison.

use std::collections::BTreeMap;

use tessera_engine::raft::proto::{ConfState, Entry};

/// A client write carried in an entry: a unique operation id, a key and a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Write {
    pub op_id: u64,
    pub key: u64,
    pub value: u64,
}

impl Write {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut data = Vec::with_capacity(24);
        for word in [self.op_id, self.key, self.value] {
            data.extend_from_slice(&word.to_le_bytes());
        }
        data
    }

    /// Decodes a normal entry's payload; `None` for the leader's empty no-op entries.
    pub(crate) fn decode(data: &[u8]) -> Option<Write> {
        let words = decode_words(data)?;
        match words.as_slice() {
            [op_id, key, value] => Some(Write { op_id: *op_id, key: *key, value: *value }),
            _ => None,
        }
    }
}

fn decode_words(data: &[u8]) -> Option<Vec<u64>> {
    if !data.len().is_multiple_of(8) {
        return None;
    }
    Some(data.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
}

/// 64-bit mixing (splitmix64's finaliser); deterministic across platforms.
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

pub(crate) fn hash_bytes(data: &[u8]) -> u64 {
    data.iter().fold(0x9e3779b97f4a7c15, |h, &b| mix(h ^ u64::from(b)))
}

/// The chain value after applying `entry` on top of `previous`.
pub(crate) fn chain(previous: u64, entry: &Entry) -> u64 {
    mix(previous ^ mix(entry.index) ^ mix(entry.term.rotate_left(17)) ^ hash_bytes(&entry.data))
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StateMachine {
    pub applied: u64,
    pub chain: u64,
    pub kv: BTreeMap<u64, u64>,
    pub conf_state: ConfState,
}

impl StateMachine {
    /// The state a replica starts from when its storage holds the snapshot `data` taken
    /// at `index` (empty data: the bootstrap state).
    pub(crate) fn restore(index: u64, conf_state: ConfState, data: &[u8]) -> Option<StateMachine> {
        if data.is_empty() {
            return Some(StateMachine { applied: index, chain: 0, kv: BTreeMap::new(), conf_state });
        }
        let words = decode_words(data)?;
        let (&[applied, chain], pairs) = words.split_first_chunk::<2>()?;
        if applied != index || pairs.len() % 2 != 0 {
            return None;
        }
        let kv = pairs.chunks_exact(2).map(|pair| (pair[0], pair[1])).collect();
        Some(StateMachine { applied, chain, kv, conf_state })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut words = vec![self.applied, self.chain];
        for (&key, &value) in &self.kv {
            words.extend([key, value]);
        }
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Applies one committed entry; returns the write it carried, if any.
    pub(crate) fn apply(&mut self, entry: &Entry) -> Option<Write> {
        self.applied = entry.index;
        self.chain = chain(self.chain, entry);
        let write = Write::decode(&entry.data)?;
        self.kv.insert(write.key, write.value);
        Some(write)
    }
}
