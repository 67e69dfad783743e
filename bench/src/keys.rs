//! Which keys a run touches.
//!
//! Keys are `user` followed by a 12-digit number, so that they sort by number and the
//! load phase fills the key space in order. Inserts take the next numbers.
//!
//! - uniform: every existing key equally likely;
//! - zipfian: a few keys hot (exponent 0.99, YCSB's), their ranks scattered over the key
//!   space by a hash as YCSB's scrambled zipfian does, so that the hot keys do not all
//!   sit in one region;
//! - latest: zipfian over recency: the newest keys are the hottest (YCSB's D).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use rand_distr::Zipf;

/// YCSB's zipfian constant.
const ZIPF_EXPONENT: f64 = 0.99;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Uniform,
    Zipfian,
    Latest,
}

impl FromStr for Distribution {
    type Err = String;

    fn from_str(text: &str) -> Result<Distribution, String> {
        match text {
            "uniform" => Ok(Distribution::Uniform),
            "zipfian" => Ok(Distribution::Zipfian),
            "latest" => Ok(Distribution::Latest),
            other => Err(format!("unknown distribution {other:?}: uniform, zipfian or latest")),
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
            Distribution::Latest => "latest",
        })
    }
}

pub fn key(number: u64) -> Vec<u8> {
    format!("user{number:012}").into_bytes()
}

/// FNV-1a of the number's bytes: spreads zipfian ranks over the key space.
fn scramble(rank: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in rank.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Picks keys for one run; shared by every request task (inserts move the end).
pub struct KeyChooser {
    distribution: Distribution,
    /// Keys that exist: `0..inserted`.
    inserted: Arc<AtomicU64>,
    /// Over the initial key count (YCSB keeps the zipfian domain fixed).
    zipf: Zipf<f64>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot draw keys: {0}")]
pub struct KeyError(String);

impl KeyChooser {
    /// Keys `0..keys` exist when the run starts.
    pub fn new(distribution: Distribution, keys: u64) -> Result<KeyChooser, KeyError> {
        if keys == 0 {
            return Err(KeyError("a run needs at least one key".into()));
        }
        let zipf = Zipf::new(keys as f64, ZIPF_EXPONENT).map_err(|e| KeyError(e.to_string()))?;
        Ok(KeyChooser { distribution, inserted: Arc::new(AtomicU64::new(keys)), zipf })
    }

    /// An existing key's number.
    pub fn existing(&self, rng: &mut impl Rng) -> u64 {
        let count = self.inserted.load(Ordering::Relaxed).max(1);
        match self.distribution {
            Distribution::Uniform => rng.random_range(0..count),
            Distribution::Zipfian => {
                // Zipf draws ranks 1..=n.
                let rank = rng.sample(self.zipf) as u64;
                scramble(rank) % count
            }
            Distribution::Latest => {
                let back = (rng.sample(self.zipf) as u64).saturating_sub(1);
                count - 1 - back.min(count - 1)
            }
        }
    }

    /// The key half the key space away from `number`: with the key space split into
    /// regions, almost always in another region.
    pub fn far_from(&self, number: u64) -> u64 {
        let count = self.inserted.load(Ordering::Relaxed).max(2);
        (number + count / 2) % count
    }

    /// The number of a key to insert (never handed out twice).
    pub fn next_insert(&self) -> u64 {
        self.inserted.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn draws(distribution: Distribution) -> Vec<u64> {
        let chooser = KeyChooser::new(distribution, 1000).expect("keys");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        (0..20_000).map(|_| chooser.existing(&mut rng)).collect()
    }

    fn hottest_share(draws: &[u64]) -> f64 {
        let mut counts = std::collections::HashMap::new();
        for &d in draws {
            *counts.entry(d).or_insert(0u64) += 1;
        }
        *counts.values().max().unwrap_or(&0) as f64 / draws.len() as f64
    }

    #[test]
    fn every_distribution_stays_in_the_key_space() {
        for distribution in [Distribution::Uniform, Distribution::Zipfian, Distribution::Latest] {
            assert!(draws(distribution).iter().all(|&k| k < 1000), "{distribution}");
        }
    }

    #[test]
    fn zipfian_has_hot_keys_and_uniform_does_not() {
        assert!(hottest_share(&draws(Distribution::Uniform)) < 0.01);
        assert!(hottest_share(&draws(Distribution::Zipfian)) > 0.05);
    }

    #[test]
    fn latest_favours_the_newest_keys_and_inserts_move_the_end() {
        let newest = draws(Distribution::Latest).iter().filter(|&&k| k >= 990).count();
        assert!(newest > 20_000 / 4, "the ten newest keys are hot: {newest}");
        let chooser = KeyChooser::new(Distribution::Latest, 10).expect("keys");
        assert_eq!((chooser.next_insert(), chooser.next_insert()), (10, 11));
        assert_eq!(key(42), b"user000000000042".to_vec());
    }
}
