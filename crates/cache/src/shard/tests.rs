use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn set(key: &str, value: &str) -> CacheOp {
    CacheOp::Set {
        key: b(key),
        value: Some(b(value)),
        expires_at: 0,
    }
}

/// A shard and the storage rows its changes produced, side by side.
struct Mirror {
    shard: CacheShard,
    rows: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Mirror {
    fn new() -> Mirror {
        Mirror {
            shard: CacheShard::new(),
            rows: BTreeMap::new(),
        }
    }

    fn apply(&mut self, op: CacheOp, ts: i64, capacity: u64) {
        let mut out = Vec::new();
        self.shard.apply(op, ts, capacity, &mut out);
        for change in out {
            match change {
                Change::Entry { key, row } => {
                    self.rows.insert(row::entry_key(&key), row);
                }
                Change::Remove { key } => {
                    self.rows.remove(&row::entry_key(&key));
                    self.rows.remove(&row::visited_key(&key));
                }
                Change::Visited { key, visited } => {
                    if visited {
                        self.rows.insert(row::visited_key(&key), Vec::new());
                    } else {
                        self.rows.remove(&row::visited_key(&key));
                    }
                }
                Change::Header { row } => {
                    self.rows.insert(row::header_key(), row);
                }
                Change::Clear => self.rows.clear(),
            }
        }
    }

    fn restored(&self) -> CacheShard {
        CacheShard::restore(self.rows.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
            .expect("rows parse")
    }
}

fn keys(shard: &CacheShard) -> Vec<String> {
    shard
        .dump()
        .into_iter()
        .map(|(k, ..)| String::from_utf8(k.to_vec()).expect("utf8"))
        .collect()
}

#[test]
fn set_get_delete_and_byte_accounting() {
    let mut m = Mirror::new();
    m.apply(set("a", "1"), 1, 1 << 20);
    m.apply(set("b", "22"), 2, 1 << 20);
    assert_eq!(m.shard.bytes(), entry_size(1, 1) + entry_size(1, 2));
    assert!(matches!(m.shard.get(b"a", 3), Lookup::Hit { value, .. } if value == "1"));
    m.apply(set("a", "333"), 3, 1 << 20);
    assert_eq!(m.shard.bytes(), entry_size(1, 3) + entry_size(1, 2));
    m.apply(CacheOp::Del { key: b("b") }, 4, 1 << 20);
    assert_eq!(m.shard.get(b"b", 5), Lookup::Miss);
    assert_eq!(m.shard.bytes(), entry_size(1, 3));
    assert_eq!(keys(&m.shard), ["a"]);
}

#[test]
fn sieve_keeps_visited_entries_and_evicts_the_unvisited() {
    let size = entry_size(1, 1);
    let capacity = 3 * size;
    let mut m = Mirror::new();
    for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
        m.apply(set(k, "x"), i as i64, capacity);
    }
    // A read of `a` reports its stamp; the touch marks it visited.
    let Lookup::Hit {
        touch: Some(stamp), ..
    } = m.shard.get(b"a", 5)
    else {
        panic!("a is a hit that needs a touch");
    };
    m.apply(
        CacheOp::Touch {
            stamps: vec![stamp],
        },
        5,
        capacity,
    );
    assert!(matches!(
        m.shard.get(b"a", 5),
        Lookup::Hit { touch: None, .. }
    ));
    m.apply(set("d", "x"), 6, capacity);
    // The hand passed `a` (clearing its bit) and evicted `b`.
    assert_eq!(keys(&m.shard), ["a", "c", "d"]);
    assert_eq!(m.shard.stats().evictions, 1);
    m.apply(set("e", "x"), 7, capacity);
    // The hand continues from where it stopped: `c` goes next, `a` stays until passed again.
    assert_eq!(keys(&m.shard), ["a", "d", "e"]);
    m.apply(set("f", "x"), 8, capacity);
    assert_eq!(keys(&m.shard), ["a", "e", "f"]);
    m.apply(set("g", "x"), 9, capacity);
    // The hand has not wrapped yet: `e`, ahead of it, goes.
    assert_eq!(keys(&m.shard), ["a", "f", "g"]);
    // `a` sits behind the hand: new, unread entries go first (quick demotion).
    m.apply(set("h", "x"), 10, capacity);
    assert_eq!(keys(&m.shard), ["a", "g", "h"]);
    // The hand keeps walking toward the head; `a`, behind it, stays until it wraps.
    m.apply(set("i", "x"), 11, capacity);
    m.apply(CacheOp::Del { key: b("g") }, 12, capacity);
    m.apply(CacheOp::Del { key: b("i") }, 12, capacity);
    m.apply(set("j", "x"), 13, capacity);
    m.apply(set("k", "x"), 14, capacity);
    assert_eq!(keys(&m.shard), ["a", "j", "k"]);
    m.apply(set("l", "x"), 15, capacity);
    assert_eq!(keys(&m.shard), ["a", "k", "l"]);
    assert!(m.shard.bytes() <= capacity);
}

#[test]
fn ttl_is_decided_by_log_time_and_reads_hide_expired_entries() {
    let mut m = Mirror::new();
    m.apply(
        CacheOp::Set {
            key: b("t"),
            value: Some(b("v")),
            expires_at: 100,
        },
        10,
        1 << 20,
    );
    m.apply(
        CacheOp::Set {
            key: b("n"),
            value: None,
            expires_at: 50,
        },
        10,
        1 << 20,
    );
    assert_eq!(m.shard.get(b"n", 20), Lookup::NotFound { touch: Some(2) });
    assert_eq!(m.shard.get(b"n", 50), Lookup::Miss);
    assert!(matches!(m.shard.get(b"t", 99), Lookup::Hit { .. }));
    assert_eq!(m.shard.get(b"t", 100), Lookup::Miss);
    assert_eq!(m.shard.len(), 2, "reads do not purge");
    m.apply(set("other", "x"), 60, 1 << 20);
    assert_eq!(keys(&m.shard), ["t", "other"], "log time 60 purged `n`");
    m.apply(set("other", "y"), 100, 1 << 20);
    assert_eq!(keys(&m.shard), ["other"]);
    assert_eq!(m.shard.stats().expirations, 2);
    // A set that is already expired when logged removes the key.
    m.apply(
        CacheOp::Set {
            key: b("other"),
            value: Some(b("z")),
            expires_at: 100,
        },
        100,
        1 << 20,
    );
    assert!(m.shard.is_empty());
}

#[test]
fn clear_removes_everything_and_keeps_stamps_increasing() {
    let mut m = Mirror::new();
    m.apply(set("a", "1"), 1, 1 << 20);
    m.apply(CacheOp::Clear, 2, 1 << 20);
    assert!(m.shard.is_empty());
    assert_eq!(m.shard.bytes(), 0);
    m.apply(set("b", "1"), 3, 1 << 20);
    assert_eq!(m.shard.dump()[0].3, 2, "stamps are never reused");
}

#[test]
fn malformed_rows_are_errors() {
    assert!(CacheShard::restore([(&[0u8, b'k'][..], &[1u8, 2][..])]).is_err());
    assert!(CacheShard::restore([(&[9u8][..], &[][..])]).is_err());
    assert!(CacheShard::restore([(&[2u8][..], &[0u8; 3][..])]).is_err());
}

fn op_strategy() -> impl Strategy<Value = (u8, u8, u8, u8)> {
    (0u8..4, 0u8..40, 0u8..200, 0u8..4)
}

fn to_op(shard: &CacheShard, (kind, key, len, ttl): (u8, u8, u8, u8), ts: i64) -> CacheOp {
    let key = Bytes::from(format!("k{key}"));
    match kind {
        0 | 1 => CacheOp::Set {
            value: (len % 7 != 0).then(|| Bytes::from(vec![len; len as usize])),
            expires_at: if ttl == 0 { 0 } else { ts + i64::from(ttl) * 3 },
            key,
        },
        2 => CacheOp::Del { key },
        _ => CacheOp::Touch {
            stamps: shard.dump().iter().step_by(2).map(|e| e.3).collect(),
        },
    }
}

proptest! {
    /// Any sequence of operations: bytes stay within the capacity, two shards fed the same
    /// operations agree, and the stored rows restore exactly the state.
    #[test]
    fn shards_agree_stay_bounded_and_restore_exactly(
        ops in proptest::collection::vec(op_strategy(), 1..300),
    ) {
        let capacity = 8 * entry_size(4, 100);
        let (mut a, mut b) = (Mirror::new(), Mirror::new());
        for (i, raw) in ops.into_iter().enumerate() {
            let ts = i as i64;
            let op = to_op(&a.shard, raw, ts);
            a.apply(op.clone(), ts, capacity);
            b.apply(op, ts, capacity);
            prop_assert!(a.shard.bytes() <= capacity);
        }
        prop_assert_eq!(a.shard.dump(), b.shard.dump());
        prop_assert_eq!(a.shard.cursor(), b.shard.cursor());
        prop_assert_eq!(&a.rows, &b.rows);
        let restored = a.restored();
        prop_assert_eq!(restored.dump(), a.shard.dump());
        prop_assert_eq!(restored.cursor(), a.shard.cursor());
        prop_assert_eq!(restored.bytes(), a.shard.bytes());
    }
}
