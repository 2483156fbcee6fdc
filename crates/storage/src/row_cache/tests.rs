use super::*;
use crate::{Freshness, RocksStorage, StorageOptions};
use notadb_record::value;
use notadb_types::{Element, ElementType, KeyElement, Order, PartitionId, ValueFormat};

const P: PartitionId = PartitionId(0);
const KS: KeyspaceId = KeyspaceId(1);

/// `store i64, item string desc`, partitioned by the store.
fn schema() -> KeyspaceSchema {
    KeyspaceSchema {
        name: "items".into(),
        key: vec![
            KeyElement::new("store", ElementType::I64, Order::Asc),
            KeyElement::new("item", ElementType::String, Order::Desc),
        ],
        partition_by: 1,
        value_format: ValueFormat::Bytes,
        ttl: None,
    }
}

fn key(store: i64, item: &str) -> Vec<u8> {
    schema()
        .encode_key(&[Element::I64(store), Element::String(item.into())])
        .expect("a key")
        .bytes
}

fn store(store: i64) -> Vec<u8> {
    schema()
        .encode_prefix(&[Element::I64(store)])
        .expect("a prefix")
}

fn open(dir: &std::path::Path, max_group_bytes: usize) -> RocksStorage {
    let options = StorageOptions {
        max_group_bytes,
        ..StorageOptions::default()
    };
    RocksStorage::open(dir, 1, &options).expect("open")
}

fn put(s: &RocksStorage, k: &[u8], v: &[u8]) {
    let mut b = s.batch();
    b.put(P, KS, k, &value::encode(None, v));
    s.commit(b, false).expect("commit");
}

type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Every row of `[lower, upper)`, forward then backward, through `group_cursor` (`true`,
/// with `Freshness::Newest`) or `cursor`, and whether the group cursor answered from the
/// cache.
fn read(
    view: &crate::ReadView<'_>,
    grouped: bool,
    lower: &[u8],
    upper: Option<&[u8]>,
) -> (Rows, Rows, bool) {
    read_as(view, grouped, lower, upper, Freshness::Newest)
}

fn read_as(
    view: &crate::ReadView<'_>,
    grouped: bool,
    lower: &[u8],
    upper: Option<&[u8]>,
    freshness: Freshness,
) -> (Rows, Rows, bool) {
    let mut c = if grouped {
        view.group_cursor(P, KS, &schema(), (lower, upper), freshness)
    } else {
        view.cursor(P, KS, lower, upper)
    };
    let cached = matches!(c.source, crate::view::Source::Group { .. });
    let mut forward = Vec::new();
    c.seek_to_first();
    while let Some((k, v)) = c.entry() {
        forward.push((k.to_vec(), v.to_vec()));
        c.next();
    }
    let mut backward = Vec::new();
    c.seek_to_last();
    while let Some((k, v)) = c.entry() {
        backward.push((k.to_vec(), v.to_vec()));
        c.prev();
    }
    c.status().expect("status");
    (forward, backward, cached)
}

#[test]
fn rows_round_trip_and_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), 1 << 16);
    let groups = s.rows.as_ref().expect("a row cache");
    let mut rows = groups.builder();
    for k in ["b", "d", "f"] {
        assert!(rows.push(k.as_bytes(), format!("v{k}").as_bytes()));
    }
    let rows = groups.fill(b"g", rows, groups.epoch()).expect("kept");
    assert_eq!(rows.len, 3);
    assert_eq!(rows.get(1), (&b"d"[..], &b"vd"[..]));
    let bounds: Vec<usize> = ["a", "b", "c", "f", "g"]
        .iter()
        .map(|k| rows.lower_bound(k.as_bytes()))
        .collect();
    assert_eq!(bounds, [0, 0, 1, 2, 3]);
    let Cached::Rows(cached) = groups.get(b"g", groups.epoch(), true) else {
        panic!("cached");
    };
    assert_eq!(cached.get(2), (&b"f"[..], &b"vf"[..]));
    let mut small = groups.builder();
    small.max_bytes = 5;
    assert!(small.push(b"ab", b"cd"));
    assert!(!small.push(b"ef", b"gh"), "over the size");
    assert!(groups.fill(b"h", small, groups.epoch()).is_none());
    assert!(
        matches!(groups.get(b"h", groups.epoch(), true), Cached::TooLarge),
        "a marker"
    );
}

#[test]
fn a_range_reads_the_narrowest_group_holding_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), 1 << 16);
    let groups = s.rows.as_ref().expect("a row cache");
    let seven = store(7);
    let end = notadb_types::prefix_successor(&seven);
    let of =
        |lower: &[u8], upper: Option<&[u8]>| groups.group_of_range(P, KS, &schema(), lower, upper);
    let group = Some(crate::layout::data_key(P, KS, &seven));
    assert_eq!(of(&seven, end.as_deref()), group);
    assert_eq!(of(&key(7, "x"), Some(&key(7, "a"))), group);
    assert_eq!(of(&seven, None), None, "to the end of the keyspace");
    assert_eq!(of(&seven, Some(&store(8))), group, "the successor of 7");
    assert_eq!(of(&seven, Some(&key(8, "a"))), None, "into store 8");
    assert_eq!(of(b"", end.as_deref()), None, "no leading element");
    let x = key(7, "x");
    assert_eq!(
        of(&x, notadb_types::prefix_successor(&x).as_deref()),
        Some(crate::layout::data_key(P, KS, &x)),
        "one key: a group of both elements"
    );
}

#[test]
fn a_group_is_read_once_and_follows_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), 1 << 16);
    for item in ["a", "b", "c"] {
        put(&s, &key(1, item), item.as_bytes());
        put(&s, &key(2, item), item.as_bytes());
    }
    let one = store(1);
    let end = notadb_types::prefix_successor(&one);
    let check = |expect_cached: bool| {
        let view = s.view();
        let (f, b, cached) = read(&view, true, &one, end.as_deref());
        let (rf, rb, _) = read(&view, false, &one, end.as_deref());
        assert_eq!((&f, &b), (&rf, &rb));
        assert_eq!(cached, expect_cached);
        f
    };
    assert_eq!(
        check(false).len(),
        3,
        "the first read learns the keyspace's group size, and a write to any of them \
         between its snapshot and now would have dropped no group: it fills none"
    );
    assert_eq!(check(true).len(), 3, "filled");
    assert!(s.memory_usage().row_cache > 0);
    put(&s, &key(1, "d"), b"d");
    assert_eq!(check(true).len(), 4, "the write dropped the group");
    let mut b = s.batch();
    b.delete(P, KS, &key(1, "a"));
    s.commit(b, false).expect("commit");
    assert_eq!(check(true).len(), 3);
    let mut b = s.batch();
    b.delete_range(P, KS, &key(1, "c"), &key(1, "a"));
    s.commit(b, false).expect("commit");
    assert_eq!(check(true).len(), 1, "descending items: c and b went");
    let two = store(2);
    let (f, _, _) = read(
        &s.view(),
        true,
        &two,
        notadb_types::prefix_successor(&two).as_deref(),
    );
    assert_eq!(f.len(), 3, "the other group is untouched");
}

#[test]
fn a_large_group_is_read_from_rocksdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), 64);
    for i in 0..10 {
        put(&s, &key(1, &format!("item{i}")), &[7u8; 20]);
    }
    let one = store(1);
    let end = notadb_types::prefix_successor(&one);
    for _ in 0..2 {
        let view = s.view();
        let (f, b, cached) = read(&view, true, &one, end.as_deref());
        assert!(!cached);
        assert_eq!((f.len(), b.len()), (10, 10));
    }
}

#[test]
fn a_view_older_than_a_learnt_group_size_does_not_fill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), 1 << 16);
    put(&s, &key(1, "a"), b"old");
    let old = s.view();
    // Written before any read taught the cache the keyspace's group size: it drops no
    // group.
    put(&s, &key(1, "a"), b"new");
    let one = store(1);
    let end = notadb_types::prefix_successor(&one);
    let (f, _, _) = read(&old, true, &one, end.as_deref());
    assert_eq!(f[0].1, value::encode(None, b"old"), "its snapshot");
    let (f, _, _) = read(&s.view(), true, &one, end.as_deref());
    assert_eq!(
        f[0].1,
        value::encode(None, b"new"),
        "not the old view's rows"
    );
}

#[test]
fn a_view_of_many_reads_answers_from_its_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), 1 << 16);
    put(&s, &key(1, "a"), b"old");
    put(&s, &key(2, "a"), b"other");
    let one = store(1);
    let end = notadb_types::prefix_successor(&one);
    // The group size learnt, the group cached.
    read(&s.view(), true, &one, end.as_deref());
    assert!(read(&s.view(), true, &one, end.as_deref()).2);
    let old = s.view();
    put(&s, &key(1, "a"), b"new");
    // A later view caches the new rows.
    let (f, _, cached) = read(&s.view(), true, &one, end.as_deref());
    assert!(cached);
    assert_eq!(f[0].1, value::encode(None, b"new"));
    let (f, _, _) = read_as(&old, true, &one, end.as_deref(), Freshness::Snapshot);
    assert_eq!(f[0].1, value::encode(None, b"old"), "its snapshot's rows");
    let (f, _, _) = read_as(&old, true, &one, end.as_deref(), Freshness::Newest);
    assert_eq!(f[0].1, value::encode(None, b"new"), "the newest rows");
    // A group no write touched since: the cache answers the snapshot's rows.
    let two = store(2);
    let end = notadb_types::prefix_successor(&two);
    assert!(read(&old, true, &two, end.as_deref()).2);
    let snapshot = read_as(&old, true, &two, end.as_deref(), Freshness::Snapshot);
    assert_eq!(snapshot.0[0].1, value::encode(None, b"other"));
}

#[test]
fn group_cursors_answer_as_rocksdb_cursors_through_random_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), 1_024);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut cached = 0;
    for step in 0..3_000 {
        let st = next(4) as i64;
        let item = format!("i{}", next(40));
        let mut b = s.batch();
        match next(10) {
            0 => b.delete(P, KS, &key(st, &item)),
            1 => {
                let (a, z) = (key(st, &item), key(st, &format!("i{}", next(40))));
                b.delete_range(P, KS, a.clone().min(z.clone()).as_slice(), &a.max(z));
            }
            _ => b.put(
                P,
                KS,
                &key(st, &item),
                &value::encode(None, &vec![step as u8; next(60) as usize]),
            ),
        }
        s.commit(b, false).expect("commit");
        let st = next(4) as i64;
        let (lower, upper) = match next(4) {
            0 => (store(st), notadb_types::prefix_successor(&store(st))),
            3 => {
                let one = key(st, &format!("i{}", next(40)));
                let end = notadb_types::prefix_successor(&one);
                (one, end)
            }
            1 => (key(st, &format!("i{}", next(40))), Some(store(st + 1))),
            _ => (
                key(st, &format!("i{}", next(40))),
                Some(key(st, &format!("i{}", next(40)))),
            ),
        };
        let view = s.view();
        let grouped = read(&view, true, &lower, upper.as_deref());
        let plain = read(&view, false, &lower, upper.as_deref());
        cached += usize::from(grouped.2);
        assert_eq!((grouped.0, grouped.1), (plain.0, plain.1), "step {step}");
    }
    // Both ways taken: groups come and go over the 1 KiB the cache keeps.
    assert!(
        (1_000..3_000).contains(&cached),
        "{cached} of 3000 reads through the cache"
    );
}
