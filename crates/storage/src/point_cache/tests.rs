use super::*;

#[test]
fn fills_hit_until_a_write_to_the_key() {
    let cache = PointCache::new(1 << 20).expect("a cache");
    let e = cache.epoch();
    cache.fill(b"k", b"v1", e);
    assert_eq!(cache.get(b"k"), Some(b"v1".to_vec()));
    cache.begin_write(&[b"k".to_vec()], false);
    assert_eq!(cache.get(b"k"), None, "gone while the write is under way");
    cache.fill(b"k", b"v1", e);
    assert_eq!(
        cache.get(b"k"),
        None,
        "no fills while the write is under way"
    );
    cache.end_write(&[b"k".to_vec()], false);
    cache.fill(b"k", b"v1", e);
    assert_eq!(
        cache.get(b"k"),
        None,
        "a read from before the write may not fill"
    );
    cache.fill(b"k", b"v2", cache.epoch());
    assert_eq!(cache.get(b"k"), Some(b"v2".to_vec()));
}

#[test]
fn quiet_until_a_write_begins() {
    let cache = PointCache::new(1 << 20).expect("a cache");
    let e = cache.epoch();
    assert!(cache.quiet_since(e));
    cache.begin_write(&[b"k".to_vec()], false);
    assert!(!cache.quiet_since(e), "a write under way");
    assert!(!cache.quiet_since(cache.epoch()), "still under way");
    cache.end_write(&[b"k".to_vec()], false);
    assert!(!cache.quiet_since(e), "a write finished since");
    assert!(cache.quiet_since(cache.epoch()));
}

#[test]
fn a_stripe_keeps_its_newest_write() {
    let mut stripe = Stripe {
        writing: 2,
        ..Stripe::default()
    };
    // Two writes to the stripe finish out of their epochs' order.
    stripe.finish_write(6);
    stripe.finish_write(5);
    assert_eq!(stripe.last_write, 6);
    assert_eq!(stripe.writing, 0);
}

#[test]
fn a_read_between_two_writes_does_not_fill() {
    let cache = PointCache::new(1 << 20).expect("a cache");
    let k = b"k".to_vec();
    // Writes A and B to `k` both begin; A finishes (epoch 1), a read notes epoch 1 and
    // reads before B commits, B finishes (epoch 2): the read's value is older than B.
    cache.begin_write(std::slice::from_ref(&k), false);
    cache.begin_write(std::slice::from_ref(&k), false);
    cache.end_write(std::slice::from_ref(&k), false);
    let read_epoch = cache.epoch();
    cache.end_write(std::slice::from_ref(&k), false);
    cache.fill(&k, b"before B", read_epoch);
    assert_eq!(cache.get(&k), None);
}

#[test]
fn the_eviction_queue_stays_near_the_entries() {
    let cache = PointCache::new(1 << 20).expect("a cache");
    let k = b"hot".to_vec();
    for _ in 0..10_000 {
        cache.fill(&k, b"v", cache.epoch());
        cache.begin_write(std::slice::from_ref(&k), false);
        cache.end_write(std::slice::from_ref(&k), false);
    }
    let queued: usize = cache
        .stripes
        .iter()
        .map(|s| s.lock.lock().expect("lock").order.len())
        .sum();
    assert!(queued <= 17, "{queued} hashes queued for no entries");
    assert_eq!(cache.bytes(), 0);
}

#[test]
fn range_writes_empty_every_stripe() {
    let cache = PointCache::new(1 << 20).expect("a cache");
    let keys: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
    for k in &keys {
        cache.fill(k, b"v", cache.epoch());
    }
    assert!(keys.iter().all(|k| cache.get(k).is_some()));
    cache.begin_write(&[] as &[&[u8]], true);
    cache.end_write(&[] as &[&[u8]], true);
    assert!(keys.iter().all(|k| cache.get(k).is_none()));
    assert_eq!(cache.bytes(), 0);
}

#[test]
fn stays_within_its_capacity() {
    let cache = PointCache::new(64 * 1024).expect("a cache");
    for i in 0..10_000u32 {
        cache.fill(&i.to_be_bytes(), &[7u8; 100], cache.epoch());
    }
    assert!(cache.bytes() <= 64 * 1024, "{}", cache.bytes());
    assert!(cache.bytes() > 32 * 1024, "{}", cache.bytes());
    assert!(PointCache::new(0).is_none());
}

#[test]
fn the_table_finds_what_it_holds_through_removals() {
    // Few distinct hashes, some of them shared by several keys, with home slots at both
    // ends of the table (so probe runs wrap around), against a model.
    let hash_of = |k: u32| {
        let h = u64::from(k % 37);
        if k.is_multiple_of(2) {
            h
        } else {
            u64::MAX - h
        }
    };
    let mut table = Table::default();
    let mut model = std::collections::BTreeMap::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for step in 0..20_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = (x % 300) as u32;
        let hash = hash_of(k);
        let key = k.to_be_bytes();
        if let Some(i) = table.position(hash, |e| e.key() == key) {
            table.remove_at(i).expect("an entry");
            model.remove(&k);
        }
        if !x.is_multiple_of(3) {
            let mut data = key.to_vec();
            data.extend_from_slice(&step.to_be_bytes());
            table.insert(Entry {
                hash,
                key_len: 4,
                data: data.into(),
            });
            model.insert(k, step);
        }
        assert_eq!(table.len, model.len());
        if step.is_multiple_of(97) {
            for k in 0..300u32 {
                let found = table
                    .find(hash_of(k), |e| e.key() == k.to_be_bytes())
                    .map(|e| u32::from_be_bytes(e.value().try_into().expect("4 bytes")));
                assert_eq!(found, model.get(&k).copied(), "key {k} at step {step}");
            }
        }
    }
    assert!(table.slots.len() >= 2 * table.len);
}

#[test]
fn prefetching_changes_no_answer() {
    let cache = PointCache::new(1 << 20).expect("a cache");
    let keys: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_be_bytes().to_vec()).collect();
    for k in &keys[..50] {
        cache.fill(k, &[1u8; 100], cache.epoch());
    }
    let hashes: Vec<u64> = keys.iter().map(|k| PointCache::hash(k)).collect();
    cache.prefetch(&hashes);
    let hits = keys.iter().filter(|k| cache.get(k).is_some()).count();
    assert_eq!(hits, 50);
    PointCache::new(1 << 20).expect("a cache").prefetch(&hashes);
}
