//! A transaction's scans: its own buffered writes laid over the stored pairs.

use super::*;

fn pair(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: value.into() }
}

fn keys(pairs: &[KeyValue]) -> Vec<String> {
    pairs.iter().map(|pair| String::from_utf8_lossy(&pair.key).into_owned()).collect()
}

#[test]
fn own_writes_replace_add_and_hide_stored_pairs() {
    let stored = vec![pair("a", "1"), pair("c", "3"), pair("e", "5")];
    let (c, d, e) = (b"c".to_vec(), b"d".to_vec(), b"e".to_vec());
    let (put_c, put_d) = (Buffered::Put(b"33".to_vec()), Buffered::Put(b"4".to_vec()));
    let own = vec![(&c, &put_c), (&d, &put_d), (&e, &Buffered::Delete)];
    let merged = overlay(stored, own, 0, 0, false);
    assert_eq!(merged, vec![pair("a", "1"), pair("c", "33"), pair("d", "4")]);
}

#[test]
fn a_cut_short_scan_leaves_out_own_writes_past_what_it_read() {
    // Asked for 2 and got 2: nothing is known past "c", where a stored "d" may hide.
    let stored = vec![pair("a", "1"), pair("c", "3")];
    let (b, z) = (b"b".to_vec(), b"z".to_vec());
    let (put_b, put_z) = (Buffered::Put(b"2".to_vec()), Buffered::Put(b"26".to_vec()));
    let merged = overlay(stored.clone(), vec![(&b, &put_b), (&z, &put_z)], 2, 1, false);
    assert_eq!(keys(&merged), vec!["a"], "the limit cuts the merged pairs");
    let merged = overlay(stored, vec![(&b, &put_b), (&z, &put_z)], 2, 0, false);
    assert_eq!(keys(&merged), vec!["a", "b", "c"]);
}

#[test]
fn a_reverse_scan_merges_from_the_top() {
    let stored = vec![pair("e", "5"), pair("c", "3")];
    let (a, d) = (b"a".to_vec(), b"d".to_vec());
    let (put_a, put_d) = (Buffered::Put(b"1".to_vec()), Buffered::Put(b"4".to_vec()));
    // Cut short at "c": "a" lies past what was read.
    let merged = overlay(stored, vec![(&a, &put_a), (&d, &put_d)], 2, 0, true);
    assert_eq!(keys(&merged), vec!["e", "d", "c"]);
}

#[test]
fn a_locked_key_changes_nothing_a_scan_returns() {
    let stored = vec![pair("a", "1")];
    let a = b"a".to_vec();
    assert_eq!(overlay(stored, vec![(&a, &Buffered::Lock)], 0, 0, false), vec![pair("a", "1")]);
}
