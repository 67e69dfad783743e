//! Property tests: every operation of [`KeyRange`] against a brute-force model that
//! enumerates the whole of a small key space (keys of length 0..=2 over {a, b, c}). A
//! range of that space is modelled as the set of keys it contains; the random ranges
//! use the same short keys as bounds, with the empty end meaning unbounded. A failing
//! case names the seed and the ranges involved.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::KeyRange;

const SEED: u64 = 0x6b65_7972_616e_6765;
const CASES: usize = 4000;
const ALPHABET: &[u8] = b"abc";

/// Every key of length 0..=2 over the alphabet, in no particular order.
fn key_space() -> Vec<Vec<u8>> {
    let mut keys = vec![Vec::new()];
    for &first in ALPHABET {
        keys.push(vec![first]);
        for &second in ALPHABET {
            keys.push(vec![first, second]);
        }
    }
    keys
}

/// A key of the space's bounds: any key of length 0..=2; as an end, the empty key
/// means unbounded.
fn random_key(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let length = rng.random_range(0..=2);
    (0..length).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())]).collect()
}

fn random_bounds(rng: &mut ChaCha8Rng) -> (Vec<u8>, Vec<u8>) {
    (random_key(rng), random_key(rng))
}

/// The model: the keys of the space in `[start, end)`, by direct comparison.
fn model(range: &KeyRange<'_>) -> Vec<Vec<u8>> {
    let (start, end) = (range.start(), range.end());
    key_space()
        .into_iter()
        .filter(|key| key.as_slice() >= start && (end.is_empty() || key.as_slice() < end))
        .collect()
}

/// Runs `check` on `CASES` pairs of random ranges from the fixed seed.
fn for_random_pairs(check: impl Fn(KeyRange<'_>, KeyRange<'_>, &str)) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    for case in 0..CASES {
        let (a_start, a_end) = random_bounds(&mut rng);
        let (b_start, b_end) = random_bounds(&mut rng);
        let (a, b) = (KeyRange::new(&a_start, &a_end), KeyRange::new(&b_start, &b_end));
        let context = format!("seed {SEED:#x} case {case}: a = {a:?}, b = {b:?}");
        check(a, b, &context);
    }
}

#[test]
fn contains_agrees_with_the_model_for_every_key() {
    for_random_pairs(|a, _, context| {
        let inside = model(&a);
        for key in key_space() {
            assert_eq!(a.contains(&key), inside.contains(&key), "{context}, key {key:?}");
        }
    });
}

#[test]
fn a_range_is_empty_iff_it_contains_no_key_and_inverted_ranges_are_empty() {
    for_random_pairs(|a, _, context| {
        // An empty range such as [b, b) still has bounds in the space, so emptiness in
        // the model is exact for ranges over it.
        assert_eq!(a.is_empty(), model(&a).is_empty(), "{context}");
        if a.is_inverted() {
            assert!(a.is_empty(), "{context}: an inverted range contains no key");
        }
        assert_eq!(a.is_inverted(), !a.end().is_empty() && a.start() > a.end(), "{context}");
    });
}

#[test]
fn ranges_overlap_iff_some_key_is_in_both() {
    for_random_pairs(|a, b, context| {
        let both = model(&a).iter().any(|key| b.contains(key));
        assert_eq!(a.overlaps(&b), both, "{context}");
        assert_eq!(a.overlaps(&b), b.overlaps(&a), "{context}: overlap is symmetric");
    });
}

#[test]
fn an_intersection_contains_exactly_the_keys_in_both() {
    for_random_pairs(|a, b, context| {
        let both: Vec<Vec<u8>> = model(&a).into_iter().filter(|key| b.contains(key)).collect();
        match a.intersect(&b) {
            None => assert!(both.is_empty(), "{context}: no intersection, yet {both:?} are in both"),
            Some(intersection) => assert_eq!(model(&intersection), both, "{context}"),
        }
    });
}

#[test]
fn a_clamped_request_contains_exactly_its_keys_inside_the_region() {
    for_random_pairs(|region, request, context| {
        let inside: Vec<Vec<u8>> = model(&request).into_iter().filter(|key| region.contains(key)).collect();
        let clamped = region.clamp(&request);
        assert_eq!(model(&clamped), inside, "{context}: clamped to {clamped:?}");
    });
}

#[test]
fn a_range_reaches_an_end_iff_no_key_before_that_end_lies_past_it() {
    for_random_pairs(|a, b, context| {
        // Past `a`: keys at or after a's end. Before `b`'s end: keys `b` would take if it
        // started at the beginning of the key space.
        let before_end = KeyRange::new(b"", b.end());
        let past_a = |key: &Vec<u8>| !a.is_before_end(key);
        let model_reaches = !model(&before_end).iter().any(past_a);
        assert_eq!(a.reaches(b.end()), model_reaches, "{context}");
    });
}

#[test]
fn a_range_encloses_another_iff_its_start_is_inside_and_nothing_before_its_end_is_past() {
    for_random_pairs(|region, request, context| {
        let start_inside = model(&region).iter().any(|key| key.as_slice() == request.start());
        let every_key_inside = model(&request).iter().all(|key| region.contains(key));
        let encloses = region.encloses(&request);
        assert_eq!(encloses, start_inside && region.reaches(request.end()), "{context}");
        if encloses {
            assert!(every_key_inside, "{context}: an enclosed request has a key outside");
        }
    });
}

#[test]
fn a_key_is_strictly_inside_iff_it_is_contained_and_is_not_the_start() {
    for_random_pairs(|a, _, context| {
        for key in key_space() {
            let model_inside = model(&a).contains(&key) && key.as_slice() != a.start();
            assert_eq!(a.contains_strictly(&key), model_inside, "{context}, key {key:?}");
        }
    });
}

/// The examples store/ranges.rs checked before its overlap rule moved here.
#[test]
fn ranges_overlap_when_they_share_a_key() {
    let overlap =
        |a: (&[u8], &[u8]), b: (&[u8], &[u8])| KeyRange::new(a.0, a.1).overlaps(&KeyRange::new(b.0, b.1));
    assert!(overlap((b"a", b"m"), (b"l", b"z")));
    assert!(!overlap((b"a", b"m"), (b"m", b"z")), "half-open ranges that touch do not overlap");
    assert!(overlap((b"a", b""), (b"x", b"y")), "an empty end is unbounded");
    assert!(overlap((b"", b""), (b"", b"b")));
    assert!(!overlap((b"n", b""), (b"a", b"m")));
}
