use super::*;
use crate::proto::{
    command::{CompareAndSwap, Delete, DeleteRange, Put},
    metadata::RegionEpoch,
};
use crate::storage::ApplyBatch;
use crate::storage::{Cf, Engine, keys};
use crate::timestamp::Timestamp;

fn region(start: &[u8], end: &[u8]) -> Region {
    Region {
        id: 1,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        epoch: Some(RegionEpoch { conf_version: 1, version: 1 }),
        peers: Vec::new(),
    }
}

fn put(key: &[u8], value: &[u8]) -> Write {
    Write { kind: Some(write::Kind::Put(Put { key: key.to_vec(), value: value.to_vec() })) }
}

fn cas(key: &[u8], expected: Option<&[u8]>, new_value: Option<&[u8]>) -> Write {
    Write {
        kind: Some(write::Kind::CompareAndSwap(CompareAndSwap {
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new_value: new_value.map(<[u8]>::to_vec),
        })),
    }
}

fn get(engine: &Engine, key: &[u8]) -> Option<Vec<u8>> {
    engine.get(Cf::Data, &keys::data_key(key)).unwrap()
}

#[test]
fn bad_writes_get_typed_errors() {
    let bounded = region(b"b", b"m");
    assert_eq!(check_write(&bounded, &put(b"", b"v")), Err(KvError::EmptyKey));
    let long_key = vec![b'c'; MAX_KEY_BYTES + 1];
    assert!(matches!(check_write(&bounded, &put(&long_key, b"v")), Err(KvError::KeyTooLarge { .. })));
    let big_value = vec![0; MAX_VALUE_BYTES + 1];
    assert!(matches!(check_write(&bounded, &put(b"c", &big_value)), Err(KvError::ValueTooLarge { .. })));
    assert!(matches!(check_write(&bounded, &put(b"z", b"v")), Err(KvError::Region(_))));
    let inverted = Write {
        kind: Some(write::Kind::DeleteRange(DeleteRange {
            start_key: b"k".to_vec(),
            end_key: b"c".to_vec(),
        })),
    };
    assert!(matches!(
        check_write(&bounded, &inverted),
        Err(KvError::Region(RegionError::InvertedRange { .. }))
    ));
    assert_eq!(check_write(&bounded, &Write { kind: None }), Err(KvError::EmptyRequest));
    assert_eq!(check_write(&bounded, &put(b"c", b"v")), Ok(()));
}

#[test]
fn compare_and_swap_sees_earlier_writes_of_the_same_batch() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let whole = region(b"", b"");
    let mut batch = ApplyBatch::default();
    let responses = apply_writes(
        &engine,
        &whole,
        &mut Timestamp::from_u64(0),
        &[
            cas(b"k", None, Some(b"1")),
            cas(b"k", None, Some(b"2")),
            cas(b"k", Some(b"1"), Some(b"3")),
            put(b"j", b"x"),
            Write { kind: Some(write::Kind::Delete(Delete { key: b"j".to_vec() })) },
            cas(b"j", None, Some(b"y")),
        ],
        &mut batch,
    )
    .unwrap();
    let outcomes: Vec<(bool, Option<Vec<u8>>)> =
        responses.into_iter().map(|r| (r.succeeded, r.previous)).collect();
    assert_eq!(
        outcomes,
        vec![
            (true, None),
            (false, Some(b"1".to_vec())),
            (true, Some(b"1".to_vec())),
            (true, None),
            (true, None),
            (true, None),
        ]
    );
    assert_eq!(get(&engine, b"k"), None, "nothing is visible before the batch is written");
    engine.write(batch.take(), false).unwrap();
    assert_eq!(get(&engine, b"k"), Some(b"3".to_vec()));
    assert_eq!(get(&engine, b"j"), Some(b"y".to_vec()));
}

#[test]
fn delete_range_stays_inside_the_region_and_hides_earlier_batch_writes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let mut batch = ApplyBatch::default();
    let whole = region(b"", b"");
    apply_writes(
        &engine,
        &whole,
        &mut Timestamp::from_u64(0),
        &[put(b"a", b"1"), put(b"c", b"1"), put(b"n", b"1")],
        &mut batch,
    )
    .unwrap();
    engine.write(batch.take(), false).unwrap();

    let bounded = region(b"b", b"m");
    let delete_all = Write {
        kind: Some(write::Kind::DeleteRange(DeleteRange { start_key: b"b".to_vec(), end_key: Vec::new() })),
    };
    let responses = apply_writes(
        &engine,
        &bounded,
        &mut Timestamp::from_u64(0),
        &[put(b"d", b"1"), delete_all, cas(b"d", None, Some(b"2")), cas(b"c", None, Some(b"2"))],
        &mut batch,
    )
    .unwrap();
    assert!(responses.iter().all(|r| r.succeeded), "{responses:?}");
    engine.write(batch.take(), false).unwrap();
    assert_eq!(get(&engine, b"a"), Some(b"1".to_vec()), "left of the region");
    assert_eq!(
        get(&engine, b"n"),
        Some(b"1".to_vec()),
        "right of the region: an open end is the region's end"
    );
    assert_eq!(get(&engine, b"c"), Some(b"2".to_vec()));
    assert_eq!(get(&engine, b"d"), Some(b"2".to_vec()));
}

#[test]
fn a_scan_page_is_cut_only_when_it_reached_the_byte_budget_before_its_limit() {
    let budget = MAX_SCAN_RESPONSE_BYTES;
    assert!(scan_page_is_cut(3, budget, 0), "no limit, budget reached");
    assert!(scan_page_is_cut(3, budget + 10, 5), "below its limit");
    assert!(!scan_page_is_cut(5, budget, 5), "the limit was reached as well: nothing more was asked");
    assert!(!scan_page_is_cut(3, budget - 1, 0), "the range ended first");
    assert_eq!(scanned_bytes(b"key", b"value"), 8);
}
