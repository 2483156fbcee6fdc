//! A cache of stored values for single-key reads, in front of RocksDB: data key -> stored
//! value (header included). A hit is one hash probe instead of RocksDB's filter, index and
//! data block searches (about 3 µs over a million keys, most of it cache misses).
//!
//! It must never answer with a value older than a write that finished before the read began.
//! Every write to the data column family goes through `RocksStorage::commit`, which calls
//! `begin_write` before it commits (the keys' entries go, and their stripes take no fills)
//! and `end_write` after (the entries go again, and the stripes remember the write's epoch).
//! A read notes the epoch before it takes its snapshot, and fills an entry only when no write
//! to the key's stripe is under way and none finished after that epoch: so an entry always
//! holds the key's newest committed value, and a hit answers as a read of the newest state
//! would. Range deletes (and keyspace drops) empty the whole cache.
//!
//! A hit may be newer than the reading view's snapshot. That is right for a view that reads
//! one key (`ReadView::get_one`). A view that reads several (`ReadView::multi_get`) uses hits
//! only when it can show they are its snapshot's values too: no write began since the epoch
//! it noted (`quiet_since`, checked before its first read and after its last), so the newest
//! committed values are the snapshot's. Otherwise it reads every key again at its snapshot.
//!
//! The cache holds what reads put in it, so it changes nothing the apply path computes.

use hashbrown::HashTable;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Lock stripes: a write and a read of different keys rarely wait for each other.
const STRIPES: usize = 64;
/// Bytes an entry costs besides its key and value: its table slot, its place in the
/// eviction queue, the allocator's header.
const ENTRY_OVERHEAD: usize = 64;

/// One key's hash (xxh3: it picks the stripe and the table slot) and its key and stored
/// value in one allocation, so a hit follows one pointer and its 64-bit hash is compared
/// before the key.
struct Entry {
    hash: u64,
    key_len: u32,
    data: Box<[u8]>,
}

impl Entry {
    /// What an entry of `len` key and value bytes counts against its stripe's capacity.
    fn cost_of(len: usize) -> usize {
        len + ENTRY_OVERHEAD
    }

    fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    fn value(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }

    fn cost(&self) -> usize {
        Self::cost_of(self.data.len())
    }
}

#[derive(Default)]
struct Stripe {
    entries: HashTable<Entry>,
    /// Hashes of the entries in the order they were filled, the oldest evicted first.
    /// Hashes of entries removed since are skipped when they come up (or evict an entry
    /// filled again since, or one whose key shares the hash: early, never wrong).
    order: VecDeque<u64>,
    bytes: usize,
    /// Writes to keys of this stripe begun and not finished: no fills meanwhile.
    writing: u32,
    /// Epoch of the last write to a key of this stripe that finished.
    last_write: u64,
}

impl Stripe {
    fn find(&self, hash: u64, key: &[u8]) -> Option<&Entry> {
        self.entries
            .find(hash, |e| e.hash == hash && e.key() == key)
    }

    fn remove(&mut self, hash: u64, key: &[u8]) {
        self.remove_where(hash, |e| e.hash == hash && e.key() == key);
        self.tidy_queue();
    }

    fn remove_where(&mut self, hash: u64, eq: impl FnMut(&Entry) -> bool) {
        if let Ok(found) = self.entries.find_entry(hash, eq) {
            let (entry, _) = found.remove();
            self.bytes -= entry.cost();
        }
    }

    fn insert(&mut self, entry: Entry) {
        self.order.push_back(entry.hash);
        self.bytes += entry.cost();
        self.entries.insert_unique(entry.hash, entry, |e| e.hash);
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.bytes = 0;
    }

    fn evict_to(&mut self, capacity: usize) {
        while self.bytes > capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.remove_where(oldest, |e| e.hash == oldest);
        }
        self.tidy_queue();
    }

    /// Hashes of removed entries, and second copies of a hash filled again, still sit in the
    /// queue: once they are most of it, keep the first copy of each hash an entry has. Each
    /// tidy drops over half the queue, so its cost spreads over the pushes that grew it, and
    /// the queue stays within about twice the entries whether reads or writes remove them.
    /// (Two keys of one stripe sharing a 64-bit hash keep one copy: the stripe may then stay
    /// over its capacity by one entry until it is evicted or cleared.)
    fn tidy_queue(&mut self) {
        if self.order.len() <= 2 * self.entries.len() + 16 {
            return;
        }
        let entries = &self.entries;
        let mut kept = std::collections::HashSet::with_capacity(entries.len());
        self.order
            .retain(|&h| entries.find(h, |e| e.hash == h).is_some() && kept.insert(h));
    }

    /// After a write to a key of this stripe finished with `epoch`. Writes commit at once
    /// (one apply task per partition) and take their epochs before they lock their stripes,
    /// so a write with an older epoch may come here after a newer one: `last_write` keeps
    /// the newest, or a read from between the two could fill a value older than the newer.
    fn finish_write(&mut self, epoch: u64) {
        self.writing -= 1;
        self.last_write = self.last_write.max(epoch);
    }
}

/// See the module documentation.
pub struct PointCache {
    stripes: Box<[Mutex<Stripe>]>,
    /// Finished writes so far.
    epoch: AtomicU64,
    /// Begun writes so far (finished or not): `begun - epoch` are under way.
    begun: AtomicU64,
    stripe_capacity: usize,
}

impl PointCache {
    /// A cache of at most about `capacity_bytes`; `None` for 0 (no cache).
    pub fn new(capacity_bytes: usize) -> Option<PointCache> {
        (capacity_bytes > 0).then(|| PointCache {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            epoch: AtomicU64::new(0),
            begun: AtomicU64::new(0),
            stripe_capacity: capacity_bytes / STRIPES,
        })
    }

    /// The key's hash and its stripe, locked. The stripe comes from bits 32 and up, which
    /// the table's slot (low bits) and tag (top 7 bits) do not use.
    fn stripe(&self, key: &[u8]) -> (u64, std::sync::MutexGuard<'_, Stripe>) {
        let hash = xxhash_rust::xxh3::xxh3_64(key);
        let i = (hash >> 32) as usize % STRIPES;
        (
            hash,
            self.stripes[i].lock().expect("point cache stripe lock"),
        )
    }

    /// The epoch a read notes before it takes its snapshot.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// True when no write has begun since the epoch was `epoch` (so none is under way and
    /// the newest committed values are those of a snapshot taken after `epoch` was noted).
    pub fn quiet_since(&self, epoch: u64) -> bool {
        self.begun.load(Ordering::SeqCst) == epoch
    }

    /// The newest committed stored value of `key`, if the cache holds it.
    #[cfg(test)]
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut value = Vec::new();
        self.get_into(key, &mut value).then_some(value)
    }

    /// Appends the newest committed stored value of `key` to `out`; false when the cache
    /// does not hold it.
    pub fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> bool {
        let (hash, stripe) = self.stripe(key);
        if stripe.writing > 0 {
            return false;
        }
        match stripe.find(hash, key) {
            Some(e) => {
                out.extend_from_slice(e.value());
                true
            }
            None => false,
        }
    }

    /// Keeps `value`, read at a snapshot taken after the epoch was `read_epoch`, unless a
    /// write to the stripe is under way or finished since.
    pub fn fill(&self, key: &[u8], value: &[u8], read_epoch: u64) {
        if Entry::cost_of(key.len() + value.len()) > self.stripe_capacity {
            return;
        }
        let (hash, mut stripe) = self.stripe(key);
        if stripe.writing > 0 || stripe.last_write > read_epoch {
            return;
        }
        stripe.remove(hash, key);
        let mut data = Vec::with_capacity(key.len() + value.len());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        stripe.insert(Entry {
            hash,
            key_len: key.len() as u32,
            data: data.into_boxed_slice(),
        });
        stripe.evict_to(self.stripe_capacity);
    }

    /// Before a batch commits: its keys' entries go and their stripes stop filling. With
    /// `everything` (a range delete), every stripe.
    pub fn begin_write(&self, keys: &[Vec<u8>], everything: bool) {
        self.begun.fetch_add(1, Ordering::SeqCst);
        self.each(keys, everything, |stripe, key| {
            stripe.writing += 1;
            match key {
                Some((hash, key)) => stripe.remove(hash, key),
                None => stripe.clear(),
            }
        });
    }

    /// After the batch committed (or failed): the entries go again (a fill may not have
    /// seen the write begin), the stripes fill again from reads that start from now on.
    pub fn end_write(&self, keys: &[Vec<u8>], everything: bool) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.each(keys, everything, |stripe, key| {
            stripe.finish_write(epoch);
            match key {
                Some((hash, key)) => stripe.remove(hash, key),
                None => stripe.clear(),
            }
        });
    }

    fn each(
        &self,
        keys: &[Vec<u8>],
        everything: bool,
        f: impl Fn(&mut Stripe, Option<(u64, &[u8])>),
    ) {
        if everything {
            for stripe in self.stripes.iter() {
                f(&mut stripe.lock().expect("point cache stripe lock"), None);
            }
        } else {
            for key in keys {
                let (hash, mut stripe) = self.stripe(key);
                f(&mut stripe, Some((hash, key)));
            }
        }
    }

    /// Bytes the entries take (approximate).
    pub fn bytes(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock().expect("point cache stripe lock").bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
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
            .map(|s| s.lock().expect("lock").order.len())
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
        cache.begin_write(&[], true);
        cache.end_write(&[], true);
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
}
