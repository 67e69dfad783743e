//! [`KeyRange`]: the one place the rule "a range is half-open, `[start, end)`, and an
//! empty end means the end of the key space" is written. Everything that compares range
//! bounds (routing, clamping requests to a region, overlap checks between regions, the
//! split key's position) goes through this type; nobody else tests `end.is_empty()`.
//!
//! The type borrows its bounds (`KeyRange<'a>` over two byte slices) rather than owning
//! them: ranges are built on hot paths (every request is checked against its region,
//! every route lookup compares ranges) from keys that already live in a `Region` or a
//! request, so a view costs two slices and never copies a key. Callers that must keep a
//! range keep its two `Vec<u8>` bounds and view them again when they compare.
//!
//! An empty start is the beginning of the key space, which needs no special case: the
//! empty key sorts before every other key.

use std::cmp::Ordering;

use crate::proto::metadata::Region;

/// `[start, end)`, an empty `end` meaning unbounded. Built without checks; an inverted
/// range (`start > end` with a bounded end) contains no key, and
/// [`KeyRange::is_inverted`] tells it apart for callers that must refuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange<'a> {
    start: &'a [u8],
    end: &'a [u8],
}

/// Orders two range ends, an empty end (unbounded) after every bounded one.
fn compare_ends(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

impl<'a> KeyRange<'a> {
    /// The whole key space.
    pub const FULL: KeyRange<'static> = KeyRange { start: b"", end: b"" };

    pub fn new(start: &'a [u8], end: &'a [u8]) -> Self {
        KeyRange { start, end }
    }

    /// The range a region covers.
    pub fn of(region: &'a Region) -> Self {
        KeyRange { start: &region.start_key, end: &region.end_key }
    }

    pub fn start(&self) -> &'a [u8] {
        self.start
    }

    /// The exclusive end; empty when the range is unbounded.
    pub fn end(&self) -> &'a [u8] {
        self.end
    }

    pub fn is_unbounded(&self) -> bool {
        self.end.is_empty()
    }

    /// Whether the start lies after a bounded end: a malformed request, not merely an
    /// empty range (`[k, k)` is empty but not inverted).
    pub fn is_inverted(&self) -> bool {
        !self.end.is_empty() && self.start > self.end
    }

    /// Whether no key lies in the range.
    pub fn is_empty(&self) -> bool {
        !self.end.is_empty() && self.start >= self.end
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start && self.is_before_end(key)
    }

    /// Whether `key` sorts before the end (always, when the end is unbounded).
    pub fn is_before_end(&self, key: &[u8]) -> bool {
        self.end.is_empty() || key < self.end
    }

    /// Whether `key` lies strictly inside: after the start and before the end. A split
    /// key must: splitting at the start (or the end) would leave one half empty.
    pub fn contains_strictly(&self, key: &[u8]) -> bool {
        key > self.start && self.is_before_end(key)
    }

    /// Whether this range extends at least to `end` (an empty `end`: to the end of the
    /// key space), so nothing before `end` lies past it.
    pub fn reaches(&self, end: &[u8]) -> bool {
        compare_ends(self.end, end) != Ordering::Less
    }

    /// Whether some key lies in both ranges.
    pub fn overlaps(&self, other: &KeyRange<'_>) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && self.is_before_end(other.start)
            && other.is_before_end(self.start)
    }

    /// Whether every key of `other` lies in this range, judged by its bounds: `other`'s
    /// start must be in this range and this range must reach `other`'s end. (An empty
    /// `other` placed outside is not "within"; requests are checked this way.)
    pub fn encloses(&self, other: &KeyRange<'_>) -> bool {
        self.contains(other.start) && self.reaches(other.end)
    }

    /// The keys in both ranges, or `None` when they share none.
    pub fn intersect(&self, other: &KeyRange<'a>) -> Option<KeyRange<'a>> {
        let clamped = self.clamp(other);
        (!clamped.is_empty()).then_some(clamped)
    }

    /// `other` cut to this range (the later start, the earlier end), whether or not any
    /// key remains; a request clamped to its region. [`KeyRange::intersect`] tells
    /// whether any key remains.
    pub fn clamp(&self, other: &KeyRange<'a>) -> KeyRange<'a> {
        let start = self.start.max(other.start);
        let end = if compare_ends(self.end, other.end) == Ordering::Less { self.end } else { other.end };
        KeyRange { start, end }
    }
}

#[cfg(test)]
mod tests;
