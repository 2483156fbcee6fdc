//! One cache's entries in one partition, and the SIEVE policy that bounds their bytes.
//!
//! Why SIEVE (Zhang et al., NSDI '24): its whole state is a FIFO order, one "visited" bit per
//! entry and a hand. That state is deterministic (replicas that apply the same log entries
//! evict the same keys), cheap to persist per entry (restart and checkpoints restore it
//! exactly), and it needs only *whether* an entry was read since the hand last passed, which
//! is what batched hit reports through the log can tell. Recency- and frequency-ordered
//! policies (LRU, W-TinyLFU) need every read in order on every replica; SIEVE matches or beats
//! them on skewed web and key-value traces while demoting one-hit wonders quickly.
//!
//! The queue runs from the oldest insertion (tail) to the newest (head). To evict, the hand
//! walks from where it stopped toward the head, wrapping to the tail: a visited entry loses its
//! bit and stays, an unvisited one is evicted and the hand stays at its place. A `Set` of an
//! existing key updates it in place and counts as a visit.

use crate::row;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Bytes counted for an entry beyond its key and value (map slots, queue and expiry nodes).
pub const ENTRY_OVERHEAD: u64 = 96;

/// Bytes an entry with this key and value counts against its cache's capacity.
pub fn entry_size(key_len: usize, value_len: usize) -> u64 {
    key_len as u64 + value_len as u64 + ENTRY_OVERHEAD
}

/// One operation from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheOp {
    /// Stores `value` (`None`: the loader found nothing) until `expires_at` (micros, 0: never).
    Set {
        /// The entry's key.
        key: Bytes,
        /// The value, or `None` for a cached "not found".
        value: Option<Bytes>,
        /// When it expires, in microseconds since the Unix epoch; 0: never.
        expires_at: i64,
    },
    /// Removes the key.
    Del {
        /// The entry's key.
        key: Bytes,
    },
    /// Marks the entries inserted at these stamps as visited (hits reported by replicas).
    Touch {
        /// The stamps of the entries hit.
        stamps: Vec<u64>,
    },
    /// Removes every entry (the cache was dropped).
    Clear,
}

/// A storage change that mirrors one change of the shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Writes the entry row of `key`.
    Entry {
        /// The entry's key.
        key: Bytes,
        /// The row ([`row`](crate::row) encodes it).
        row: Vec<u8>,
    },
    /// Removes the entry row and the visited mark of `key`.
    Remove {
        /// The entry's key.
        key: Bytes,
    },
    /// Sets or clears the visited mark of `key`.
    Visited {
        /// The entry's key.
        key: Bytes,
        /// Whether the entry is marked visited.
        visited: bool,
    },
    /// Writes the shard's header row (next stamp, hand).
    Header {
        /// The row ([`row`](crate::row) encodes it).
        row: Vec<u8>,
    },
    /// Removes every row of the shard.
    Clear,
}

/// What a read finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A live value; `touch` is the entry's stamp when it is not marked visited yet (the reader
    /// reports it so that eviction learns of the hit).
    Hit {
        /// The value.
        value: Bytes,
        /// The entry's stamp, when the hit should be reported.
        touch: Option<u64>,
    },
    /// A cached "not found" from the loader.
    NotFound {
        /// The entry's stamp, when the hit should be reported.
        touch: Option<u64>,
    },
    /// Nothing live.
    Miss,
}

/// Counters every replica reaches identically.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Entries evicted to stay within the capacity.
    pub evictions: u64,
    /// Entries removed because they expired.
    pub expirations: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub value: Option<Bytes>,
    pub expires_at: i64,
    pub stamp: u64,
    pub visited: bool,
}

impl Entry {
    fn size(&self, key: &[u8]) -> u64 {
        entry_size(key.len(), self.value.as_ref().map_or(0, |v| v.len()))
    }

    fn live(&self, now_micros: i64) -> bool {
        self.expires_at == 0 || self.expires_at > now_micros
    }
}

/// One cache's entries in one partition.
#[derive(Clone, Debug)]
pub struct CacheShard {
    /// Looked up by key, never iterated.
    entries: HashMap<Bytes, Entry>,
    /// Insertion stamp → key: the SIEVE queue, tail first.
    queue: BTreeMap<u64, Bytes>,
    /// (expires_at, stamp) of entries that expire.
    expiry: BTreeSet<(i64, u64)>,
    /// The stamp the hand examines next (the first entry at or after it).
    hand: u64,
    next_stamp: u64,
    bytes: u64,
    stats: ShardStats,
}

impl Default for CacheShard {
    fn default() -> Self {
        CacheShard::new()
    }
}

impl CacheShard {
    /// An empty shard; stamps start at 1.
    pub fn new() -> CacheShard {
        CacheShard {
            entries: HashMap::new(),
            queue: BTreeMap::new(),
            expiry: BTreeSet::new(),
            hand: 0,
            next_stamp: 1,
            bytes: 0,
            stats: ShardStats::default(),
        }
    }

    /// Entries held (live or expired but not purged yet).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the shard holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes counted against the capacity.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Evictions and expirations so far (since the shard was built or restored).
    pub fn stats(&self) -> ShardStats {
        self.stats
    }

    /// What a read at `now_micros` (the reader's clock) finds for `key`. Reads change nothing.
    pub fn get(&self, key: &[u8], now_micros: i64) -> Lookup {
        match self.entries.get(key) {
            Some(e) if e.live(now_micros) => {
                let touch = (!e.visited).then_some(e.stamp);
                match &e.value {
                    Some(value) => Lookup::Hit {
                        value: value.clone(),
                        touch,
                    },
                    None => Lookup::NotFound { touch },
                }
            }
            _ => Lookup::Miss,
        }
    }

    /// Applies one operation logged at `ts_micros`, keeping the bytes within `capacity`, and
    /// appends the storage changes that mirror it to `out`.
    pub fn apply(&mut self, op: CacheOp, ts_micros: i64, capacity: u64, out: &mut Vec<Change>) {
        let header = (self.next_stamp, self.hand);
        self.purge_expired(ts_micros, out);
        match op {
            CacheOp::Set {
                key,
                value,
                expires_at,
            } => {
                if expires_at != 0 && expires_at <= ts_micros {
                    // Already expired when logged: same as a delete.
                    self.remove(&key, out);
                } else {
                    self.set(key, value, expires_at, out);
                    self.evict(capacity, out);
                }
            }
            CacheOp::Del { key } => {
                self.remove(&key, out);
            }
            CacheOp::Touch { stamps } => {
                for stamp in stamps {
                    if let Some(key) = self.queue.get(&stamp) {
                        let e = self.entries.get_mut(key).expect("queued keys have entries");
                        if !e.visited {
                            e.visited = true;
                            out.push(Change::Visited {
                                key: key.clone(),
                                visited: true,
                            });
                        }
                    }
                }
            }
            CacheOp::Clear => {
                *self = CacheShard {
                    next_stamp: self.next_stamp,
                    stats: self.stats,
                    ..CacheShard::default()
                };
                out.push(Change::Clear);
                // The header row went with the rest; the stamps must not restart.
                out.push(Change::Header {
                    row: row::header(self.next_stamp, self.hand),
                });
                return;
            }
        }
        if (self.next_stamp, self.hand) != header {
            out.push(Change::Header {
                row: row::header(self.next_stamp, self.hand),
            });
        }
    }

    fn set(&mut self, key: Bytes, value: Option<Bytes>, expires_at: i64, out: &mut Vec<Change>) {
        let stamp = match self.entries.get_mut(&key) {
            Some(e) => {
                self.bytes -= e.size(&key);
                if e.expires_at != 0 {
                    self.expiry.remove(&(e.expires_at, e.stamp));
                }
                if !e.visited {
                    out.push(Change::Visited {
                        key: key.clone(),
                        visited: true,
                    });
                }
                e.value = value;
                e.expires_at = expires_at;
                e.visited = true;
                e.stamp
            }
            None => {
                let stamp = self.next_stamp;
                self.next_stamp += 1;
                self.queue.insert(stamp, key.clone());
                self.entries.insert(
                    key.clone(),
                    Entry {
                        value,
                        expires_at,
                        stamp,
                        visited: false,
                    },
                );
                stamp
            }
        };
        let e = &self.entries[&key];
        self.bytes += e.size(&key);
        if expires_at != 0 {
            self.expiry.insert((expires_at, stamp));
        }
        out.push(Change::Entry {
            row: row::entry(e),
            key,
        });
    }

    /// Removes `key` if present; returns whether it was.
    fn remove(&mut self, key: &[u8], out: &mut Vec<Change>) -> bool {
        let Some((key, e)) = self.entries.remove_entry(key) else {
            return false;
        };
        self.bytes -= e.size(&key);
        self.queue.remove(&e.stamp);
        if e.expires_at != 0 {
            self.expiry.remove(&(e.expires_at, e.stamp));
        }
        out.push(Change::Remove { key });
        true
    }

    fn purge_expired(&mut self, ts_micros: i64, out: &mut Vec<Change>) {
        while let Some(&(at, stamp)) = self.expiry.first() {
            if at > ts_micros {
                break;
            }
            let key = self.queue[&stamp].clone();
            self.remove(&key, out);
            self.stats.expirations += 1;
        }
    }

    /// Evicts until the bytes fit `capacity`.
    fn evict(&mut self, capacity: u64, out: &mut Vec<Change>) {
        while self.bytes > capacity && !self.queue.is_empty() {
            let (stamp, key) = match self.queue.range(self.hand..).next() {
                Some((s, k)) => (*s, k.clone()),
                None => {
                    let (s, k) = self.queue.first_key_value().expect("queue is not empty");
                    (*s, k.clone())
                }
            };
            self.hand = stamp + 1;
            let e = self
                .entries
                .get_mut(&key)
                .expect("queued keys have entries");
            if e.visited {
                e.visited = false;
                out.push(Change::Visited {
                    key,
                    visited: false,
                });
            } else {
                self.remove(&key, out);
                self.stats.evictions += 1;
            }
        }
    }

    /// Rebuilds a shard from its stored rows (see [`row`]); rows that do not parse are errors.
    pub fn restore<'a>(
        rows: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<CacheShard, String> {
        let mut shard = CacheShard::new();
        let mut visited = Vec::new();
        for (key, value) in rows {
            match row::parse(key, value)? {
                row::Row::Header { next_stamp, hand } => {
                    shard.next_stamp = next_stamp;
                    shard.hand = hand;
                }
                row::Row::Visited { key } => visited.push(key),
                row::Row::Entry { key, entry } => {
                    shard.bytes += entry.size(&key);
                    if entry.expires_at != 0 {
                        shard.expiry.insert((entry.expires_at, entry.stamp));
                    }
                    if shard.queue.insert(entry.stamp, key.clone()).is_some() {
                        return Err(format!("two cache entries share stamp {}", entry.stamp));
                    }
                    shard.entries.insert(key, entry);
                }
            }
        }
        for key in visited {
            if let Some(e) = shard.entries.get_mut(&key) {
                e.visited = true;
            }
        }
        Ok(shard)
    }

    /// Every entry as (key, value, expires_at, stamp, visited), in queue order.
    #[cfg(test)]
    pub(crate) fn dump(&self) -> Vec<(Bytes, Option<Bytes>, i64, u64, bool)> {
        self.queue
            .values()
            .map(|k| {
                let e = &self.entries[k];
                (k.clone(), e.value.clone(), e.expires_at, e.stamp, e.visited)
            })
            .collect()
    }

    /// (next stamp, hand): with `dump`, the whole state.
    #[cfg(test)]
    pub(crate) fn cursor(&self) -> (u64, u64) {
        (self.next_stamp, self.hand)
    }
}

#[cfg(test)]
mod tests;
