//! Scans that cross regions: the walk from region to region in key order (or from the
//! end), shared by raw scans and transactional scans at a timestamp. What one region
//! answers, and how, is the caller's; the walk owns the cursor, the limit and what to
//! do when a region split or merged under it. A region's share may come in several
//! pages: a store stops an answer at its response size and says so, and the walk asks
//! again from where the page ended.

use std::future::Future;

use tessera_engine::proto::metadata::Region;
use tessera_engine::region::KeyRange;

use super::{Client, ClientError, Refusal};

/// One answer of a region's share of a scan.
pub(super) struct Page<Pair> {
    pub pairs: Vec<Pair>,
    /// The region it was read in.
    pub region: Region,
    /// Where the rest of the region's share begins, when the store cut the answer
    /// short: the low bound going forward, the (exclusive) high bound going backward.
    pub resume: Option<Vec<u8>>,
}

/// Where to resume after a page whose last key is `last_key`, if the store said the
/// page was cut (`more`): just after it going forward, at it (exclusive) going backward.
pub(super) fn resume_after(more: bool, last_key: Option<&[u8]>, reverse: bool) -> Option<Vec<u8>> {
    let last_key = last_key.filter(|_| more)?;
    Some(if reverse { last_key.to_vec() } else { [last_key, &[0]].concat() })
}

impl Client {
    /// Walks `[start, end)` region by region, asking `scan_region(low, high, wanted)`
    /// for each region's share (at most `wanted` pairs, 0: no limit, of `[low, high)`
    /// within the region holding `low`; from its top when `reverse`), one [`Page`] at a
    /// time. At most `limit` pairs (0: no limit) in all. What a pair is (a key and value,
    /// or a versioned one) is the caller's.
    pub(super) async fn scan_regions<Pair, F, Fut>(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
        scan_region: F,
    ) -> Result<Vec<Pair>, ClientError>
    where
        F: Fn(Vec<u8>, Vec<u8>, usize) -> Fut,
        Fut: Future<Output = Result<Page<Pair>, ClientError>>,
    {
        if KeyRange::new(start, end).is_inverted() {
            return Err(ClientError::InvalidArgument(Refusal::InvertedRange));
        }
        if reverse {
            return self.scan_regions_backwards(start, end, limit, scan_region).await;
        }
        let mut pairs = Vec::new();
        let mut cursor = start.to_vec();
        loop {
            let wanted = if limit == 0 { 0 } else { limit - pairs.len() };
            let page = scan_region(cursor.clone(), end.to_vec(), wanted).await?;
            pairs.extend(page.pairs);
            if limit > 0 && pairs.len() >= limit {
                return Ok(pairs);
            }
            if let Some(resume) = page.resume {
                cursor = resume;
                continue;
            }
            if KeyRange::of(&page.region).reaches(end) {
                return Ok(pairs);
            }
            cursor = page.region.end_key;
        }
    }

    async fn scan_regions_backwards<Pair, F, Fut>(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        scan_region: F,
    ) -> Result<Vec<Pair>, ClientError>
    where
        F: Fn(Vec<u8>, Vec<u8>, usize) -> Fut,
        Fut: Future<Output = Result<Page<Pair>, ClientError>>,
    {
        let mut pairs = Vec::new();
        let mut upper = end.to_vec();
        loop {
            // The last region below `upper`, by the driver's list of the range; if it
            // split since, the region holding the keys just below `upper` is further
            // right, and is found by walking on from the one the list named.
            let regions = self.pd.scan_regions_async(start, &upper, 0).await?;
            let Some(last) = regions.last().and_then(|route| route.region.clone()) else { return Ok(pairs) };
            let mut low =
                if last.start_key.as_slice() > start { last.start_key.clone() } else { start.to_vec() };
            let region = loop {
                let wanted = if limit == 0 { 0 } else { limit - pairs.len() };
                let page = scan_region(low.clone(), upper.clone(), wanted).await?;
                if !KeyRange::of(&page.region).reaches(&upper) {
                    low = page.region.end_key;
                    continue;
                }
                pairs.extend(page.pairs);
                match page.resume {
                    // The rest of this region's share lies below the page's last key.
                    Some(below) if limit == 0 || pairs.len() < limit => upper = below,
                    _ => break page.region,
                }
            };
            if (limit > 0 && pairs.len() >= limit) || region.start_key.as_slice() <= start {
                return Ok(pairs);
            }
            upper = region.start_key;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_page_resumes_just_past_its_last_key_in_the_direction_of_the_walk() {
        assert_eq!(resume_after(true, Some(b"k"), false), Some(b"k\0".to_vec()), "forward: the next key up");
        assert_eq!(resume_after(true, Some(b"k"), true), Some(b"k".to_vec()), "backward: below it");
        assert_eq!(resume_after(false, Some(b"k"), false), None, "a whole page");
        assert_eq!(resume_after(true, None, false), None, "nothing to resume after");
    }
}
