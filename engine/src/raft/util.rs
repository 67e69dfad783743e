//! Small helpers shared by the log and the message builders.

use prost::Message as _;

use super::proto::Entry;

/// Cuts `entries` so that their encoded size stays within `max_size`, always keeping at
/// least the first entry so that replication makes progress with oversized entries.
pub(crate) fn limit_size(entries: &mut Vec<Entry>, max_size: Option<u64>) {
    let Some(max_size) = max_size else { return };
    let mut size = 0u64;
    let keep = entries
        .iter()
        .take_while(|entry| {
            size += entry.encoded_len() as u64;
            size <= max_size
        })
        .count();
    entries.truncate(keep.max(1));
}
