//! How keys, ranges, epochs and peers read in messages meant for people: error texts
//! and log lines. Keys are bytes, shown quoted with anything unprintable escaped
//! (`"user\x0042"`); an unbounded range end is shown as `end`. Never Rust's debug
//! formatting, which shows a key as a list of numbers.

use std::fmt;

use crate::proto::metadata::{Peer, RegionEpoch};

use super::KeyRange;

/// A key, quoted and escaped.
#[derive(Debug, Clone, Copy)]
pub struct DisplayKey<'a>(pub &'a [u8]);

impl fmt::Display for DisplayKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

impl fmt::Display for KeyRange<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, ", DisplayKey(self.start()))?;
        if self.is_unbounded() { write!(f, "end)") } else { write!(f, "{})", DisplayKey(self.end())) }
    }
}

/// An epoch as its two counters.
#[derive(Debug, Clone, Copy)]
pub struct DisplayEpoch(pub RegionEpoch);

impl fmt::Display for DisplayEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {}, conf_version {}", self.0.version, self.0.conf_version)
    }
}

/// A region's leader as far as a replica knows it.
#[derive(Debug, Clone, Copy)]
pub struct DisplayLeader(pub Option<Peer>);

impl fmt::Display for DisplayLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(peer) => write!(f, "peer {} on store {}", peer.id, peer.store_id),
            None => write!(f, "not known here"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_quoted_and_escaped() {
        assert_eq!(DisplayKey(b"user\x0042\"").to_string(), r#""user\x0042\"""#);
        assert_eq!(DisplayKey(b"").to_string(), r#""""#);
    }

    #[test]
    fn an_unbounded_end_reads_as_end() {
        assert_eq!(KeyRange::new(b"a", b"").to_string(), r#"["a", end)"#);
        assert_eq!(KeyRange::new(b"", b"m").to_string(), r#"["", "m")"#);
    }

    #[test]
    fn epochs_and_leaders_read_without_debug_formatting() {
        let epoch = RegionEpoch { conf_version: 3, version: 7 };
        assert_eq!(DisplayEpoch(epoch).to_string(), "version 7, conf_version 3");
        let peer = Peer { id: 198, store_id: 2, role: 0 };
        assert_eq!(DisplayLeader(Some(peer)).to_string(), "peer 198 on store 2");
        assert_eq!(DisplayLeader(None).to_string(), "not known here");
    }
}
