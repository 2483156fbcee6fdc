//! The caches' entries in this replica's memory: one `CacheShard` per cache and owned
//! partition, changed only by the apply loops (`apply`), persisted in the same write batch as
//! the partition's applied seq, and rebuilt from storage at start (`restore`).
//!
//! Reads look entries up under a short lock and note the hits the shards asked to hear of;
//! the node appends those as touch entries (`take_touches`) so that every replica's eviction
//! learns of them in log order.

use bytes::Bytes;
use notadb_cache::{row, CacheId, CacheOp, CacheShard, Change, Lookup, ShardStats, CACHE_ID_BASE};
use notadb_record::value;
use notadb_record::Op;
use notadb_storage::{RocksStorage, StorageBatch, StorageError};
use notadb_types::{KeyspaceId, PartitionId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// Most hits one partition remembers between two touch entries; past it, hits go unreported
/// until the next one (eviction then sees those entries as not visited).
const MAX_PENDING_TOUCHES: usize = 16_384;

/// A stored row: key and value.
type Row = (Vec<u8>, Vec<u8>);

#[derive(Default)]
struct PartitionCaches {
    shards: BTreeMap<CacheId, CacheShard>,
    /// Stamps of hits not reported yet, per cache. Not replicated state: reads fill it.
    touches: BTreeMap<CacheId, BTreeSet<u64>>,
    pending: usize,
}

/// Every cache shard of the node, by partition.
pub(crate) struct CacheMemory {
    partitions: Vec<Mutex<PartitionCaches>>,
}

/// One cache's size on this replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheUsage {
    /// Entries held.
    pub entries: u64,
    /// Bytes counted against the capacity (keys, values and per-entry overhead).
    pub bytes: u64,
    /// Evictions and expirations, summed over the shards.
    pub stats: ShardStats,
}

fn keyspace(cache: CacheId) -> KeyspaceId {
    KeyspaceId(cache.0)
}

impl CacheMemory {
    /// Empty shards for `partitions` partitions.
    pub fn new(partitions: u16) -> CacheMemory {
        CacheMemory {
            partitions: (0..partitions).map(|_| Mutex::default()).collect(),
        }
    }

    fn lock(&self, p: PartitionId) -> std::sync::MutexGuard<'_, PartitionCaches> {
        self.partitions[p.0 as usize]
            .lock()
            .expect("cache partition lock")
    }

    /// Rebuilds partition `p`'s shards from storage (at start, before its apply loop runs).
    pub fn restore(&self, storage: &RocksStorage, p: PartitionId) -> Result<(), StorageError> {
        let mut rows: BTreeMap<CacheId, Vec<Row>> = BTreeMap::new();
        storage.scan_partition_from(p, KeyspaceId(CACHE_ID_BASE), |ks, key, stored| {
            let (_, row) = value::decode(stored)
                .ok_or_else(|| format!("cache row in partition {p} has no value header"))?;
            rows.entry(CacheId(ks.0))
                .or_default()
                .push((key.to_vec(), row.to_vec()));
            Ok(())
        })?;
        let mut shards = BTreeMap::new();
        for (cache, rows) in rows {
            let shard = CacheShard::restore(rows.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
                .map_err(|e| {
                    StorageError::Corrupt(format!("cache {cache} in partition {p}: {e}"))
                })?;
            shards.insert(cache, shard);
        }
        self.lock(p).shards = shards;
        Ok(())
    }

    /// Applies one cache op of an entry logged at `ts_micros` to `p`'s shard, adding the rows
    /// that mirror it to `batch`. Returns false for an op that is not a cache op.
    pub fn apply(
        &self,
        p: PartitionId,
        op: &Op,
        ts_micros: i64,
        batch: &mut StorageBatch<'_>,
    ) -> bool {
        let (cache, op, capacity) = match op {
            Op::CacheSet {
                cache,
                key,
                capacity,
                expires_at,
                value,
            } => (
                *cache,
                CacheOp::Set {
                    key: Bytes::copy_from_slice(key),
                    value: value.as_deref().map(Bytes::copy_from_slice),
                    expires_at: *expires_at,
                },
                *capacity,
            ),
            Op::CacheDelete { cache, key } => (
                *cache,
                CacheOp::Del {
                    key: Bytes::copy_from_slice(key),
                },
                u64::MAX,
            ),
            Op::CacheTouch { cache, stamps } => (
                *cache,
                CacheOp::Touch {
                    stamps: stamps.clone(),
                },
                u64::MAX,
            ),
            Op::CacheClear { cache } => (*cache, CacheOp::Clear, u64::MAX),
            Op::Put { .. } | Op::Delete { .. } | Op::DeleteRange { .. } => return false,
        };
        let mut changes = Vec::new();
        {
            let mut caches = self.lock(p);
            let shard = caches.shards.entry(cache).or_default();
            shard.apply(op, ts_micros, capacity, &mut changes);
        }
        let ks = keyspace(cache);
        for change in changes {
            match change {
                Change::Entry { key, row } => {
                    batch.put(p, ks, &row::entry_key(&key), &value::encode(None, &row))
                }
                Change::Remove { key } => {
                    batch.delete(p, ks, &row::entry_key(&key));
                    batch.delete(p, ks, &row::visited_key(&key));
                }
                Change::Visited { key, visited: true } => {
                    batch.put(p, ks, &row::visited_key(&key), &value::encode(None, &[]))
                }
                Change::Visited {
                    key,
                    visited: false,
                } => batch.delete(p, ks, &row::visited_key(&key)),
                Change::Header { row } => {
                    batch.put(p, ks, &row::header_key(), &value::encode(None, &row))
                }
                Change::Clear => batch.delete_range(p, ks, &[], &row::end_key()),
            }
        }
        true
    }

    /// What `key` holds in `cache` on `p` at the reader's `now_micros`; notes a hit the shard
    /// wants reported.
    pub fn get(&self, p: PartitionId, cache: CacheId, key: &[u8], now_micros: i64) -> Lookup {
        let mut caches = self.lock(p);
        let lookup = caches
            .shards
            .get(&cache)
            .map_or(Lookup::Miss, |s| s.get(key, now_micros));
        if let Lookup::Hit {
            touch: Some(stamp), ..
        }
        | Lookup::NotFound { touch: Some(stamp) } = lookup
        {
            if caches.pending < MAX_PENDING_TOUCHES
                && caches.touches.entry(cache).or_default().insert(stamp)
            {
                caches.pending += 1;
            }
        }
        lookup
    }

    /// The hits noted on `p` since the last call, as touch ops.
    pub fn take_touches(&self, p: PartitionId) -> Vec<Op> {
        let mut caches = self.lock(p);
        caches.pending = 0;
        std::mem::take(&mut caches.touches)
            .into_iter()
            .filter(|(_, stamps)| !stamps.is_empty())
            .map(|(cache, stamps)| Op::CacheTouch {
                cache,
                stamps: stamps.into_iter().collect(),
            })
            .collect()
    }

    /// A cache's entries, bytes and counters over the partitions in `owned`.
    pub fn usage(&self, cache: CacheId, owned: impl Iterator<Item = PartitionId>) -> CacheUsage {
        let mut usage = CacheUsage::default();
        for p in owned {
            if let Some(shard) = self.lock(p).shards.get(&cache) {
                usage.entries += shard.len() as u64;
                usage.bytes += shard.bytes();
                usage.stats.evictions += shard.stats().evictions;
                usage.stats.expirations += shard.stats().expirations;
            }
        }
        usage
    }
}
