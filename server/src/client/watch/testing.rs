//! What the watch's unit tests share: regions, timestamps, events and interests made
//! by hand.

use std::sync::Arc;

use tessera_engine::proto::metadata::Region;
use tessera_engine::timestamp::Timestamp;

use super::ChangeEvent;
use super::hub::{Attention, Interest};

/// A region over the whole key space.
pub(super) fn whole_key_space() -> Region {
    Region { id: 7, ..Default::default() }
}

pub(super) fn at_millisecond(millisecond: u64) -> Timestamp {
    Timestamp::new(millisecond, 0).expect("a millisecond in range")
}

/// An interest in the whole key space from `from`, its watch attentive or not.
pub(super) fn interest(from: Timestamp, wanted: bool) -> Interest {
    let attentive = Arc::new(Attention::default());
    attentive.set(wanted);
    Interest { start: Vec::new(), end: Vec::new(), from, attentive }
}

/// A put of `key` committed at `commit_ts`.
pub(super) fn event(key: &[u8], commit_ts: Timestamp) -> ChangeEvent {
    ChangeEvent {
        key: key.to_vec(),
        value: Some(b"v".to_vec()),
        prev_value: None,
        prev_commit_ts: None,
        start_ts: Timestamp::from_u64(commit_ts.as_u64() - 1),
        commit_ts,
    }
}
