use super::*;
use crate::{RocksStorage, StorageOptions};
use notadb_record::value;
use notadb_types::Seq;

const P: PartitionId = PartitionId(0);
const KS: KeyspaceId = KeyspaceId(1);

fn write(s: &RocksStorage, keys: u32) {
    let mut b = s.batch();
    for i in 0..keys {
        b.put(P, KS, &i.to_be_bytes(), &value::encode(None, b"v"));
    }
    b.set_applied(P, Seq(1));
    s.commit(b, false).expect("commit");
}

fn count(view: &ReadView<'_>) -> (u32, Result<(), StorageError>) {
    let mut c = view.cursor(P, KS, b"", None);
    c.seek_to_first();
    let mut n = 0;
    while c.entry().is_some() {
        n += 1;
        c.next();
    }
    (n, c.status())
}

#[test]
fn memory_view_reads_what_is_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = RocksStorage::open(dir.path(), 4, &StorageOptions::default()).expect("open");
    write(&s, 10);
    let view = s.memory_view();
    assert!(view.get(P, KS, &3u32.to_be_bytes()).expect("get").is_some());
    assert!(view
        .get(P, KS, &99u32.to_be_bytes())
        .expect("get")
        .is_none());
    let (n, status) = count(&view);
    assert_eq!(n, 10);
    status.expect("status");
    assert!(!view.would_block());
}

#[test]
fn memory_view_refuses_a_read_longer_than_its_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = RocksStorage::open(dir.path(), 4, &StorageOptions::default()).expect("open");
    write(&s, MEMORY_VIEW_BUDGET + 10);
    let view = s.memory_view();
    let (n, status) = count(&view);
    assert!(n <= MEMORY_VIEW_BUDGET, "{n}");
    assert!(matches!(status, Err(StorageError::WouldBlock)));
    assert!(view.would_block());
    // Spent: even a get is refused now.
    assert!(matches!(
        view.get(P, KS, &1u32.to_be_bytes()),
        Err(StorageError::WouldBlock)
    ));
    let (n, status) = count(&s.view());
    assert_eq!(n, MEMORY_VIEW_BUDGET + 10);
    status.expect("an ordinary view has no budget");
}

#[test]
fn memory_view_refuses_data_only_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = RocksStorage::open(dir.path(), 4, &StorageOptions::default()).expect("open");
        write(&s, 100);
        s.compact();
    }
    // Reopened: the rows are in a table file, not in a memtable or the block cache.
    let s = RocksStorage::open(dir.path(), 4, &StorageOptions::default()).expect("reopen");
    let view = s.memory_view();
    assert!(matches!(
        view.get(P, KS, &3u32.to_be_bytes()),
        Err(StorageError::WouldBlock)
    ));
    assert!(view.would_block());
    let (k1, k2) = (4u32.to_be_bytes(), 5u32.to_be_bytes());
    assert!(matches!(
        s.memory_view().multi_get(KS, &[(P, &k1[..]), (P, &k2[..])]),
        Err(StorageError::WouldBlock)
    ));
    let ordinary = s.view();
    let both = ordinary
        .multi_get(KS, &[(P, &k1[..]), (P, &500u32.to_be_bytes()[..])])
        .expect("multi_get");
    assert!(both.get(0).is_some() && both.get(1).is_none());
    assert!(ordinary
        .get(P, KS, &3u32.to_be_bytes())
        .expect("get")
        .is_some());
    assert!(!ordinary.would_block());
}

#[test]
fn multi_get_answers_from_its_snapshot_when_the_cache_is_newer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = RocksStorage::open(dir.path(), 4, &StorageOptions::default()).expect("open");
    let put = |v: &[u8]| {
        let mut b = s.batch();
        b.put(P, KS, &1u32.to_be_bytes(), &value::encode(None, v));
        s.commit(b, false).expect("commit");
    };
    let (k1, k2) = (1u32.to_be_bytes(), 2u32.to_be_bytes());
    put(b"old");
    let old = s.view();
    put(b"new");
    // A later view fills the cache with the new value; the old view must not use it.
    assert_eq!(
        s.view().get_one(P, KS, &k1).expect("get"),
        Some(value::encode(None, b"new"))
    );
    let got = old
        .multi_get(KS, &[(P, &k1[..]), (P, &k2[..])])
        .expect("multi_get");
    let old_value = value::encode(None, b"old");
    assert_eq!(
        got.iter().collect::<Vec<_>>(),
        vec![Some(&old_value[..]), None]
    );
    // A view taken now may, and answers the new value.
    let got = s.view().multi_get(KS, &[(P, &k1[..])]).expect("multi_get");
    let new_value = value::encode(None, b"new");
    assert_eq!(got.iter().collect::<Vec<_>>(), vec![Some(&new_value[..])]);
}
