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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Lock stripes: a write and a read of different keys rarely wait for each other.
const STRIPES: usize = 64;
/// Bytes an entry costs besides its key and value: its table slots (a table is at most half
/// full), its place in the eviction queue, the allocation's reference counts and the
/// allocator's header.
const ENTRY_OVERHEAD: usize = 112;

/// One key's hash (xxh3: it picks the stripe and the table slot) and its key and stored
/// value in one allocation, so a hit follows one pointer and its 64-bit hash is compared
/// before the key. Shared, so a reader of a large value (a group of rows, see
/// `group_cache`) can keep it without copying it or holding the lock.
struct Entry {
    hash: u64,
    key_len: u32,
    data: Arc<[u8]>,
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

/// Asks the CPU to start loading the cache line at `p` (a hint: no fault, no effect on
/// what the program computes, whatever the address).
#[inline(always)]
#[allow(unsafe_code)] // The one unsafe call in the workspace: the intrinsic is unsafe to call.
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A stripe's entries: an open-addressed table probed linearly from the slot the hash's low
/// bits pick, at most half full, emptied slots refilled by shifting later entries back (no
/// tombstones). Our own table rather than a library's because a lookup of many keys starts
/// loading every key's slot before it reads any (`PointCache::prefetch`), which needs the
/// slot's address from the hash.
#[derive(Default)]
struct Table {
    /// A power of two of slots, or none before the first insert.
    slots: Box<[Option<Entry>]>,
    len: usize,
}

impl Table {
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Where the entry with `hash` that `eq` accepts sits.
    fn position(&self, hash: u64, mut eq: impl FnMut(&Entry) -> bool) -> Option<usize> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        // At most half full: the probe meets an empty slot.
        loop {
            match self.slots.get(i)? {
                None => return None,
                Some(e) if e.hash == hash && eq(e) => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    fn find(&self, hash: u64, eq: impl FnMut(&Entry) -> bool) -> Option<&Entry> {
        self.position(hash, eq).and_then(|i| self.slots[i].as_ref())
    }

    /// Adds an entry (the caller removed any other of the same key).
    fn insert(&mut self, entry: Entry) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.mask();
        let mut i = entry.hash as usize & mask;
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i] = Some(entry);
        self.len += 1;
    }

    fn grow(&mut self) {
        let slots = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, (0..slots).map(|_| None).collect());
        self.len = 0;
        for entry in old.into_vec().into_iter().flatten() {
            self.insert(entry);
        }
    }

    /// Takes out the entry at `i`, moving later entries of its probe run back so every
    /// entry stays reachable from its home slot.
    fn remove_at(&mut self, i: usize) -> Option<Entry> {
        let removed = self.slots[i].take()?;
        self.len -= 1;
        let mask = self.mask();
        let (mut hole, mut j) = (i, (i + 1) & mask);
        while let Some(e) = &self.slots[j] {
            let home = e.hash as usize & mask;
            // The entry may fill the hole if the hole lies on its probe path (from its home
            // to where it sits).
            if j.wrapping_sub(hole) & mask <= j.wrapping_sub(home) & mask {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
            j = (j + 1) & mask;
        }
        Some(removed)
    }

    fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
        self.len = 0;
    }
}

#[derive(Default)]
struct Stripe {
    entries: Table,
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
        self.entries.find(hash, |e| e.key() == key)
    }

    fn remove(&mut self, hash: u64, key: &[u8]) {
        self.remove_where(hash, |e| e.key() == key);
        self.tidy_queue();
    }

    fn remove_where(&mut self, hash: u64, eq: impl FnMut(&Entry) -> bool) {
        if let Some(entry) = self
            .entries
            .position(hash, eq)
            .and_then(|i| self.entries.remove_at(i))
        {
            self.bytes -= entry.cost();
        }
    }

    fn insert(&mut self, entry: Entry) {
        self.order.push_back(entry.hash);
        self.bytes += entry.cost();
        self.entries.insert(entry);
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
            self.remove_where(oldest, |_| true);
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
        if self.order.len() <= 2 * self.entries.len + 16 {
            return;
        }
        let entries = &self.entries;
        let mut kept = std::collections::HashSet::with_capacity(entries.len);
        self.order
            .retain(|&h| entries.position(h, |_| true).is_some() && kept.insert(h));
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

/// A stripe, and where its table's slots lie, published for `PointCache::prefetch` to read
/// without the lock: a hint, possibly stale (then a prefetch loads a useless line).
#[derive(Default)]
struct StripeCell {
    lock: Mutex<Stripe>,
    slots: AtomicPtr<Option<Entry>>,
    mask: AtomicUsize,
}

impl StripeCell {
    /// Publishes the table's slots after they may have moved (the stripe locked).
    fn publish(&self, table: &Table) {
        self.slots
            .store(table.slots.as_ptr().cast_mut(), Ordering::Relaxed);
        self.mask.store(table.mask(), Ordering::Relaxed);
    }

    /// Where the slot a probe for `hash` starts at lay when last published.
    fn home_hint(&self, hash: u64) -> *const Option<Entry> {
        let mask = self.mask.load(Ordering::Relaxed);
        self.slots
            .load(Ordering::Relaxed)
            .wrapping_add(hash as usize & mask)
    }
}

/// What `PointCache::lookup` found.
pub enum Lookup {
    /// The entry: its key, then its value, in one shared buffer.
    Hit(Arc<[u8]>),
    /// No entry the read may use; `fillable` when a fill from the read's snapshot would be
    /// kept (as of the lookup).
    Miss { fillable: bool },
}

/// See the module documentation.
pub struct PointCache {
    stripes: Box<[StripeCell]>,
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
            stripes: (0..STRIPES).map(|_| StripeCell::default()).collect(),
            epoch: AtomicU64::new(0),
            begun: AtomicU64::new(0),
            stripe_capacity: capacity_bytes / STRIPES,
        })
    }

    /// A key's hash (xxh3): it picks the key's stripe and its slot.
    pub fn hash(key: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(key)
    }

    /// The stripe of a key's hash, locked. The stripe comes from bits 32 and up, which the
    /// table's slot (low bits) does not use.
    fn lock(&self, hash: u64) -> std::sync::MutexGuard<'_, Stripe> {
        self.cell(hash)
            .lock
            .lock()
            .expect("point cache stripe lock")
    }

    fn cell(&self, hash: u64) -> &StripeCell {
        &self.stripes[(hash >> 32) as usize % STRIPES]
    }

    /// The key's hash and its stripe, locked.
    fn stripe(&self, key: &[u8]) -> (u64, std::sync::MutexGuard<'_, Stripe>) {
        let hash = Self::hash(key);
        (hash, self.lock(hash))
    }

    /// Starts loading what lookups of keys with these hashes will read, so that their cache
    /// misses overlap instead of following one another: first every key's home slot (from
    /// the published hints, without locks: a lock's atomic instruction would wait for the
    /// loads before it), then the entry each slot leads to (by hash alone; the lookup
    /// compares the key). A hint: it changes no answer and no entry.
    pub fn prefetch(&self, hashes: &[u64]) {
        for &hash in hashes {
            prefetch(self.cell(hash).home_hint(hash));
        }
        for &hash in hashes {
            if let Some(e) = self.lock(hash).entries.find(hash, |_| true) {
                let data = e.data.as_ptr();
                prefetch(data);
                if e.data.len() > 64 {
                    prefetch(data.wrapping_add(64));
                }
            }
        }
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
        self.get_into(Self::hash(key), key, &mut value)
            .then_some(value)
    }

    /// Appends the newest committed stored value of `key` to `out`; false when the cache
    /// does not hold it. `hash` is the key's (`hash`).
    pub fn get_into(&self, hash: u64, key: &[u8], out: &mut Vec<u8>) -> bool {
        let stripe = self.lock(hash);
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

    /// The newest committed key and stored value of `key` in one shared buffer (the value
    /// starts at `key.len()`), for a read whose view noted `read_epoch`: with `newest`, any
    /// entry the cache holds; without, only one that is also the view's snapshot's (no write
    /// to the key's stripe finished since the epoch or is under way). `hash` is the key's.
    pub fn lookup(&self, hash: u64, key: &[u8], read_epoch: u64, newest: bool) -> Lookup {
        let stripe = self.lock(hash);
        if stripe.writing > 0 {
            return Lookup::Miss { fillable: false };
        }
        let quiet = stripe.last_write <= read_epoch;
        match stripe.find(hash, key) {
            Some(e) if newest || quiet => Lookup::Hit(e.data.clone()),
            _ => Lookup::Miss { fillable: quiet },
        }
    }

    /// Keeps `value`, read at a snapshot taken after the epoch was `read_epoch`, unless a
    /// write to the stripe is under way or finished since.
    pub fn fill(&self, key: &[u8], value: &[u8], read_epoch: u64) {
        if Entry::cost_of(key.len() + value.len()) > self.stripe_capacity {
            return;
        }
        let data: Arc<[u8]> = key.iter().chain(value).copied().collect();
        self.fill_shared(Self::hash(key), key.len(), data, read_epoch);
    }

    /// `fill` of a key (its first `key_len` bytes) and value already in one shared buffer,
    /// which the caller may keep reading. `hash` is the key's.
    pub fn fill_shared(&self, hash: u64, key_len: usize, data: Arc<[u8]>, read_epoch: u64) {
        if Entry::cost_of(data.len()) > self.stripe_capacity {
            return;
        }
        let cell = self.cell(hash);
        let mut stripe = cell.lock.lock().expect("point cache stripe lock");
        if stripe.writing > 0 || stripe.last_write > read_epoch {
            return;
        }
        stripe.remove(hash, &data[..key_len]);
        stripe.insert(Entry {
            hash,
            key_len: key_len as u32,
            data,
        });
        stripe.evict_to(self.stripe_capacity);
        cell.publish(&stripe.entries);
    }

    /// Runs `commit`, a write of a batch touching `keys` (every key with `everything`),
    /// between `begin_write` and `end_write`.
    pub fn write<R>(
        &self,
        keys: &[impl AsRef<[u8]>],
        everything: bool,
        commit: impl FnOnce() -> R,
    ) -> R {
        self.begin_write(keys, everything);
        let done = commit();
        self.end_write(keys, everything);
        done
    }

    /// Before a batch commits: its keys' entries go and their stripes stop filling. With
    /// `everything` (a range delete), every stripe.
    pub fn begin_write(&self, keys: &[impl AsRef<[u8]>], everything: bool) {
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
    pub fn end_write(&self, keys: &[impl AsRef<[u8]>], everything: bool) {
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
        keys: &[impl AsRef<[u8]>],
        everything: bool,
        f: impl Fn(&mut Stripe, Option<(u64, &[u8])>),
    ) {
        if everything {
            for stripe in self.stripes.iter() {
                f(
                    &mut stripe.lock.lock().expect("point cache stripe lock"),
                    None,
                );
            }
        } else {
            for key in keys {
                let key = key.as_ref();
                let (hash, mut stripe) = self.stripe(key);
                f(&mut stripe, Some((hash, key)));
            }
        }
    }

    /// Bytes the entries take (approximate).
    pub fn bytes(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock.lock().expect("point cache stripe lock").bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests;
