//! Scans that cross regions: the walk from region to region in key order (or from the
//! end), shared by raw scans and transactional scans at a timestamp. What one region
//! answers, and how, is the caller's; the walk owns the cursor, the limit and what to
//! do when a region split or merged under it.

use std::future::Future;

use tessera_engine::proto::metadata::Region;
use tessera_engine::region::KeyRange;

use super::{Client, ClientError, Refusal};

impl Client {
    /// Walks `[start, end)` region by region, asking `scan_region(low, high, wanted)`
    /// for each region's share (at most `wanted` pairs, 0: no limit, of `[low, high)`
    /// within the region holding `low`; from its top when `reverse`). The share answers
    /// with the region it was read in. At most `limit` pairs (0: no limit) in all. What a
    /// pair is (a key and value, or a versioned one) is the caller's.
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
        Fut: Future<Output = Result<(Vec<Pair>, Region), ClientError>>,
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
            let (share, region) = scan_region(cursor.clone(), end.to_vec(), wanted).await?;
            pairs.extend(share);
            if (limit > 0 && pairs.len() >= limit) || KeyRange::of(&region).reaches(end) {
                return Ok(pairs);
            }
            cursor = region.end_key;
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
        Fut: Future<Output = Result<(Vec<Pair>, Region), ClientError>>,
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
            let wanted = if limit == 0 { 0 } else { limit - pairs.len() };
            let region = loop {
                let (share, region) = scan_region(low.clone(), upper.clone(), wanted).await?;
                if KeyRange::of(&region).reaches(&upper) {
                    pairs.extend(share);
                    break region;
                }
                low = region.end_key;
            };
            if (limit > 0 && pairs.len() >= limit) || region.start_key.as_slice() <= start {
                return Ok(pairs);
            }
            upper = region.start_key;
        }
    }
}
