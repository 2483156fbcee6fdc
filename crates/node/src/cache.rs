//! The node's cache API: named caches, `get`/`set`/`delete` over their partitions, loads on a
//! miss (one per key at a time on this node), and the touch entries that report hits.
//!
//! A cache entry lives in partition `xxh3_64(key) mod P` (for a cache derived from a keyspace,
//! the key's store partition). `set` and `delete` are log entries like store writes, so every
//! replica of the group applies them in order; a read with their tokens sees them.

use crate::cache_store::{CacheMemory, CacheUsage};
use crate::loader::{CacheLoader, Flights, LoadKey};
use crate::{Consistency, Node, NodeError};
use bytes::Bytes;
use notadb_cache::{entry_size, CacheDef, CacheId, Lookup};
use notadb_record::KeyspaceDef;
use notadb_record::{Op, Record};
use notadb_types::{Element, PartitionId, Token};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How often a node reports the hits its reads noted (one touch entry per partition that had
/// some), and refreshes the cache gauges.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(1);

/// What a cache holds for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheValue {
    /// A live value.
    Hit(Bytes),
    /// The loader found nothing, and that is cached (the negative TTL).
    NotFound,
    /// Nothing live.
    Miss,
}

/// A cache and its size on this node.
#[derive(Clone, Debug)]
pub struct CacheInfo {
    /// The cache's definition.
    pub def: Arc<CacheDef>,
    /// Its entries, bytes and counters over the partitions this node owns.
    pub usage: CacheUsage,
}

fn label(def: &CacheDef) -> [(&'static str, String); 1] {
    [("cache", def.name.clone())]
}

/// A cache's hit and miss counters, registered once: the hit path does not build labels.
pub(crate) struct CacheCounters {
    hits: metrics::Counter,
    misses: metrics::Counter,
}

/// The node's cache part: the entries of the partitions it serves, the registered loaders,
/// the loads in flight and each cache's counters. Definitions live in the catalog.
pub(crate) struct Caches {
    /// The caches' entries of the owned partitions.
    pub memory: Arc<CacheMemory>,
    pub loaders: BTreeMap<String, Arc<dyn CacheLoader>>,
    /// Cache loads in flight on this node.
    pub flights: Flights,
    counters: RwLock<BTreeMap<CacheId, Arc<CacheCounters>>>,
}

impl Caches {
    /// The part over `memory`, loading misses with `loaders`.
    pub fn new(
        memory: Arc<CacheMemory>,
        loaders: BTreeMap<String, Arc<dyn CacheLoader>>,
    ) -> Caches {
        Caches {
            memory,
            loaders,
            flights: Flights::default(),
            counters: RwLock::new(BTreeMap::new()),
        }
    }

    fn counters(&self, def: &CacheDef) -> Arc<CacheCounters> {
        let id = def.id();
        if let Some(c) = self.counters.read().expect("counters lock").get(&id) {
            return c.clone();
        }
        let counters = Arc::new(CacheCounters {
            hits: metrics::counter!("notadb_cache_hits_total", &label(def)),
            misses: metrics::counter!("notadb_cache_misses_total", &label(def)),
        });
        self.counters
            .write()
            .expect("counters lock")
            .insert(id, counters.clone());
        counters
    }
}

impl Node {
    /// The cache named `name`.
    pub fn cache(&self, name: &str) -> Result<Arc<CacheDef>, NodeError> {
        self.inner.catalog.read().cache(name)
    }

    /// Every cache with its size on this node.
    pub fn list_caches(&self) -> Vec<CacheInfo> {
        let defs = self.inner.catalog.read().caches();
        let owned = self.owned_partitions();
        defs.into_iter()
            .map(|def| CacheInfo {
                usage: self
                    .inner
                    .caches
                    .memory
                    .usage(def.id(), owned.iter().copied()),
                def,
            })
            .collect()
    }

    /// Names of the registered loaders.
    pub fn loader_names(&self) -> Vec<String> {
        self.inner.caches.loaders.keys().cloned().collect()
    }

    fn check_cache_def(&self, def: &CacheDef) -> Result<(), NodeError> {
        def.validate().map_err(|e| NodeError::invalid(e.0))?;
        if let Some(loader) = &def.loader {
            if !self.inner.caches.loaders.contains_key(loader) {
                return Err(NodeError::invalid(format!(
                    "loader: no loader `{loader}` is registered on node `{}` (registered: {})",
                    self.inner.config.node_id,
                    self.loader_names().join(", ")
                )));
            }
        }
        if let Some(ks) = &def.derived_from {
            self.keyspace(ks).map_err(|_| {
                NodeError::invalid(format!("derived_from: keyspace `{ks}` does not exist"))
            })?;
        }
        let limits = &self.inner.config.limits;
        let caches = self.inner.catalog.read().cache_snapshot();
        if !caches.contains_key(&def.name) {
            if caches.len() >= limits.max_caches {
                return Err(NodeError::ResourceExhausted(format!(
                    "there are {} caches, the limit is {} (max_caches); drop one or raise the limit",
                    caches.len(),
                    limits.max_caches
                )));
            }
            let taken: u64 = caches.values().map(|c| c.capacity_bytes).sum();
            if taken.saturating_add(def.capacity_bytes) > limits.max_cache_bytes_total {
                return Err(NodeError::ResourceExhausted(format!(
                    "capacity_bytes: {} more would take the caches to {} bytes, the limit is {} (max_cache_bytes_total)",
                    def.capacity_bytes,
                    taken.saturating_add(def.capacity_bytes),
                    limits.max_cache_bytes_total
                )));
            }
        }
        let smallest = entry_size(1, 0);
        if def.partition_capacity(self.inner.partitioner.count()) < smallest {
            return Err(NodeError::invalid(format!(
                "capacity_bytes: {} over {} partitions leaves less than one entry per partition",
                def.capacity_bytes,
                self.inner.partitioner.count()
            )));
        }
        Ok(())
    }

    /// Creates a cache; returns it and whether it was created (vs. already there).
    pub async fn create_cache(
        &self,
        def: CacheDef,
        if_not_exists: bool,
    ) -> Result<(Arc<CacheDef>, bool), NodeError> {
        self.check_cache_def(&def)?;
        if let Some(store) = self.inner.catalog.store() {
            let created = store.create_cache(def.clone(), if_not_exists).await?;
            self.install_cache(def.clone()).await?;
            return Ok((self.cache(&def.name)?, created));
        }
        self.inner
            .catalog
            .change(move |catalog, storage| catalog.put_cache(storage, def, if_not_exists, false))
            .await
    }

    /// Installs a cache decided by the cluster's metadata store.
    pub async fn install_cache(&self, def: CacheDef) -> Result<(), NodeError> {
        self.inner
            .catalog
            .change(move |catalog, storage| catalog.put_cache(storage, def, true, true))
            .await?;
        Ok(())
    }

    /// Removes a cache another node dropped (that node appends the clear entries).
    pub async fn forget_cache(&self, name: &str) -> Result<(), NodeError> {
        let name = name.to_string();
        self.inner
            .catalog
            .change(move |catalog, storage| catalog.remove_cache(storage, &name))
            .await?;
        Ok(())
    }

    /// Drops a cache: it disappears from the catalog at once, and a clear entry in every
    /// partition's log removes its entries in log order.
    pub async fn drop_cache(&self, name: &str) -> Result<(), NodeError> {
        let def = self.cache(name)?;
        if let Some(store) = self.inner.catalog.store() {
            store.remove_cache(name).await?;
        }
        self.forget_cache(name).await?;
        let payload = Record::Batch {
            ts_micros: self.inner.clock.now_micros(),
            ops: vec![Op::CacheClear { cache: def.id() }],
        }
        .encode();
        for p in self.inner.partitioner.all() {
            self.append(p, payload.clone()).await?;
        }
        Ok(())
    }

    /// The keyspace a derived cache's keys belong to.
    fn derived_keyspace(&self, def: &CacheDef) -> Result<Option<Arc<KeyspaceDef>>, NodeError> {
        match &def.derived_from {
            None => Ok(None),
            Some(ks) => self.keyspace(ks).map(Some).map_err(|_| {
                NodeError::FailedPrecondition(format!(
                    "cache `{}` is derived from keyspace `{ks}`, which does not exist any more",
                    def.name
                ))
            }),
        }
    }

    /// Checks a key of `def` and returns its partition; `field` names it in errors.
    fn cache_key_partition(
        &self,
        def: &CacheDef,
        derived: Option<&KeyspaceDef>,
        key: &[u8],
        field: &dyn Fn() -> String,
    ) -> Result<PartitionId, NodeError> {
        let limit = self.inner.config.limits.max_key_bytes;
        if key.is_empty() || key.len() > limit {
            return Err(NodeError::invalid(format!(
                "{}: a cache key takes 1 to {limit} bytes (max_key_bytes), found {}",
                field(),
                key.len()
            )));
        }
        let partitioner = &self.inner.partitioner;
        match derived {
            None => Ok(partitioner.partition_of(key)),
            Some(ks) => {
                let n = ks.schema.partition_key_len(key).map_err(|e| {
                    NodeError::invalid(format!(
                        "{}: cache `{}` takes keys of keyspace `{}`: {e}",
                        field(),
                        def.name,
                        ks.schema.name
                    ))
                })?;
                ks.schema.decode_key(key).map_err(|e| {
                    NodeError::invalid(format!(
                        "{}: not a key of keyspace `{}`: {e}",
                        field(),
                        ks.schema.name
                    ))
                })?;
                Ok(partitioner.partition_of(&key[..n]))
            }
        }
    }

    /// Encodes a typed key for a cache derived from a keyspace.
    pub fn cache_key_of(&self, cache: &str, key: &[Element]) -> Result<Vec<u8>, NodeError> {
        let def = self.cache(cache)?;
        let ks = self.derived_keyspace(&def)?.ok_or_else(|| {
            NodeError::invalid(format!(
                "key: cache `{cache}` is not derived from a keyspace; send its keys as bytes"
            ))
        })?;
        Ok(ks
            .schema
            .encode_key(key)
            .map_err(|e| NodeError::invalid(format!("key: {e}")))?
            .bytes)
    }

    /// The partition of each key of cache `def` (checked), in order; errors name `keys[i]`.
    pub fn cache_partitions(
        &self,
        def: &CacheDef,
        keys: &[Bytes],
    ) -> Result<Vec<PartitionId>, NodeError> {
        self.cache_partitions_named(def, keys, |i| format!("keys[{i}]"))
    }

    fn cache_partitions_named(
        &self,
        def: &CacheDef,
        keys: &[Bytes],
        field: impl Fn(usize) -> String,
    ) -> Result<Vec<PartitionId>, NodeError> {
        let derived = self.derived_keyspace(def)?;
        self.check_key_count(keys.len())?;
        keys.iter()
            .enumerate()
            .map(|(i, k)| self.cache_key_partition(def, derived.as_deref(), k, &|| field(i)))
            .collect()
    }

    fn check_key_count(&self, n: usize) -> Result<(), NodeError> {
        let limit = self.inner.config.limits.max_multi_get_keys;
        if n == 0 || n > limit {
            return Err(NodeError::invalid(format!(
                "keys: a cache request takes 1 to {limit} keys (max_multi_get_keys), found {n}"
            )));
        }
        Ok(())
    }

    /// What the cache holds for each key (all in partitions this node serves), after the
    /// consistency's tokens are applied. Counts hits and misses.
    pub async fn cache_get(
        &self,
        cache: &str,
        keys: &[Bytes],
        consistency: &Consistency,
    ) -> Result<Vec<CacheValue>, NodeError> {
        let def = self.cache(cache)?;
        let partitions = self.cache_partitions(&def, keys)?;
        self.cache_lookup(&def, keys, &partitions, consistency)
            .await
    }

    /// `cache_get` for keys whose partitions `cache_partitions` gave.
    pub async fn cache_lookup(
        &self,
        def: &CacheDef,
        keys: &[Bytes],
        partitions: &[PartitionId],
        consistency: &Consistency,
    ) -> Result<Vec<CacheValue>, NodeError> {
        for p in partitions {
            self.check_owned(*p)?;
        }
        self.wait_for(consistency).await?;
        let now = self.inner.clock.now_micros();
        let id = def.id();
        let mut hits = 0u64;
        let values: Vec<CacheValue> = keys
            .iter()
            .zip(partitions)
            .map(
                |(key, &p)| match self.inner.caches.memory.get(p, id, key, now) {
                    Lookup::Hit { value, .. } => {
                        hits += 1;
                        CacheValue::Hit(value)
                    }
                    Lookup::NotFound { .. } => {
                        hits += 1;
                        CacheValue::NotFound
                    }
                    Lookup::Miss => CacheValue::Miss,
                },
            )
            .collect();
        let counters = self.inner.caches.counters(def);
        counters.hits.increment(hits);
        counters.misses.increment(values.len() as u64 - hits);
        Ok(values)
    }

    /// The expiry of an entry logged at `ts_micros` with a TTL of `ttl_ms` (0: none).
    fn expiry(ts_micros: i64, ttl_ms: u64) -> i64 {
        if ttl_ms == 0 {
            0
        } else {
            ts_micros.saturating_add(ttl_ms.saturating_mul(1000) as i64)
        }
    }

    /// Stores entries with `ttl_ms` (`None`: the cache's default TTL; 0: no expiry). Entries
    /// are grouped by partition, one log entry each; returns a token per partition. Nothing
    /// is appended when any entry is invalid.
    pub async fn cache_set(
        &self,
        cache: &str,
        entries: Vec<(Bytes, Bytes)>,
        ttl_ms: Option<i64>,
    ) -> Result<Vec<Token>, NodeError> {
        let def = self.cache(cache)?;
        let ttl = match ttl_ms {
            None => def.default_ttl_ms,
            Some(t) if t < 0 => {
                return Err(NodeError::invalid(format!(
                    "ttl_ms: {t} is negative; give 0 for no expiry or leave it out for the cache's default"
                )))
            }
            Some(t) if t as u64 > notadb_cache::MAX_TTL_MS => {
                return Err(NodeError::invalid(format!(
                    "ttl_ms: {t} is above the maximum of {}",
                    notadb_cache::MAX_TTL_MS
                )))
            }
            Some(t) => t as u64,
        };
        let keys: Vec<Bytes> = entries.iter().map(|(k, _)| k.clone()).collect();
        let partitions =
            self.cache_partitions_named(&def, &keys, |i| format!("entries[{i}].key"))?;
        let capacity = def.partition_capacity(self.inner.partitioner.count());
        let max_value = self.inner.config.limits.max_value_bytes;
        for (i, (key, value)) in entries.iter().enumerate() {
            if value.len() > max_value {
                return Err(NodeError::invalid(format!(
                    "entries[{i}].value: {} bytes, the limit is {max_value} (max_value_bytes)",
                    value.len()
                )));
            }
            if entry_size(key.len(), value.len()) > capacity {
                return Err(NodeError::invalid(format!(
                    "entries[{i}]: the entry takes {} bytes, more than a partition's share of cache `{cache}` ({capacity} bytes)",
                    entry_size(key.len(), value.len())
                )));
            }
        }
        let ts_micros = self.inner.clock.now_micros();
        let expires_at = Self::expiry(ts_micros, ttl);
        let mut by_partition: BTreeMap<PartitionId, Vec<Op>> = BTreeMap::new();
        for ((key, value), p) in entries.into_iter().zip(partitions) {
            by_partition.entry(p).or_default().push(Op::CacheSet {
                cache: def.id(),
                key: key.to_vec(),
                capacity,
                expires_at,
                value: Some(value.to_vec()),
            });
        }
        self.append_cache_ops(ts_micros, by_partition).await
    }

    /// Removes keys; returns a token per partition.
    pub async fn cache_delete(
        &self,
        cache: &str,
        keys: Vec<Bytes>,
    ) -> Result<Vec<Token>, NodeError> {
        let def = self.cache(cache)?;
        let partitions = self.cache_partitions(&def, &keys)?;
        let mut by_partition: BTreeMap<PartitionId, Vec<Op>> = BTreeMap::new();
        for (key, p) in keys.into_iter().zip(partitions) {
            by_partition.entry(p).or_default().push(Op::CacheDelete {
                cache: def.id(),
                key: key.to_vec(),
            });
        }
        self.append_cache_ops(self.inner.clock.now_micros(), by_partition)
            .await
    }

    async fn append_cache_ops(
        &self,
        ts_micros: i64,
        by_partition: BTreeMap<PartitionId, Vec<Op>>,
    ) -> Result<Vec<Token>, NodeError> {
        let limit = self.inner.config.limits.max_batch_bytes;
        let mut payloads = Vec::with_capacity(by_partition.len());
        for (p, ops) in by_partition {
            let payload = Record::Batch { ts_micros, ops }.encode();
            if payload.len() > limit {
                return Err(NodeError::invalid(format!(
                    "entries: partition {p}'s share of the request is {} bytes, the limit is {limit} (max_batch_bytes)",
                    payload.len()
                )));
            }
            payloads.push((p, payload));
        }
        let appends = payloads.into_iter().map(|(p, payload)| async move {
            let seq = self.append_batch(p, payload).await?;
            Ok::<_, NodeError>(Token { partition: p, seq })
        });
        futures::future::try_join_all(appends).await
    }

    /// Loads `key` of `cache` through its loader, on this node (which must serve the key's
    /// partition): concurrent loads of one key share one call. The value (or a "not found",
    /// when the cache has a negative TTL) is appended like a `set`, and returned once this
    /// node has applied it, so a read that follows finds it.
    pub async fn cache_load(&self, cache: &str, key: Bytes) -> Result<CacheValue, NodeError> {
        let def = self.cache(cache)?;
        let derived = self.derived_keyspace(&def)?;
        let p = self.cache_key_partition(&def, derived.as_deref(), &key, &|| "key".into())?;
        self.check_owned(p)?;
        let Some(loader_name) = def.loader.clone() else {
            return Ok(CacheValue::Miss);
        };
        let loader = self
            .inner
            .caches
            .loaders
            .get(&loader_name)
            .cloned()
            .ok_or_else(|| {
                NodeError::FailedPrecondition(format!(
                "cache `{cache}` loads with `{loader_name}`, which is not registered on node `{}`",
                self.inner.config.node_id
            ))
            })?;
        let elements = match &derived {
            Some(ks) => ks.schema.decode_key(&key)?,
            None => Vec::new(),
        };
        let now = self.inner.clock.now_micros();
        match self.inner.caches.memory.get(p, def.id(), &key, now) {
            Lookup::Hit { value, .. } => return Ok(CacheValue::Hit(value)),
            Lookup::NotFound { .. } => return Ok(CacheValue::NotFound),
            Lookup::Miss => {}
        }
        let flight_key = key.clone();
        let outcome = self
            .inner
            .caches
            .flights
            .run(def.id(), flight_key, || {
                self.load_and_publish(&def, loader, p, key, elements)
            })
            .await?;
        Ok(match outcome {
            Some(value) => CacheValue::Hit(value),
            None => CacheValue::NotFound,
        })
    }

    async fn load_and_publish(
        &self,
        def: &CacheDef,
        loader: Arc<dyn CacheLoader>,
        p: PartitionId,
        key: Bytes,
        elements: Vec<Element>,
    ) -> Result<Option<Bytes>, NodeError> {
        let started = Instant::now();
        let timeout = Duration::from_millis(def.load_timeout_ms);
        let request = LoadKey {
            cache: &def.name,
            key: &key,
            elements: &elements,
        };
        metrics::counter!("notadb_cache_loads_total", &label(def)).increment(1);
        let loaded = tokio::time::timeout(timeout, loader.load(request)).await;
        metrics::histogram!("notadb_cache_load_seconds", &label(def))
            .record(started.elapsed().as_secs_f64());
        let value = match loaded {
            Ok(Ok(value)) => value,
            Ok(Err(message)) => {
                metrics::counter!("notadb_cache_load_errors_total", &label(def)).increment(1);
                return Err(NodeError::Unavailable(format!(
                    "loading key of cache `{}` failed: {message}",
                    def.name
                )));
            }
            Err(_) => {
                metrics::counter!("notadb_cache_load_errors_total", &label(def)).increment(1);
                return Err(NodeError::DeadlineExceeded(format!(
                    "loading key of cache `{}` took longer than its load timeout ({} ms)",
                    def.name, def.load_timeout_ms
                )));
            }
        };
        let capacity = def.partition_capacity(self.inner.partitioner.count());
        let ttl = if value.is_some() {
            def.default_ttl_ms
        } else {
            def.negative_ttl_ms
        };
        let fits = entry_size(key.len(), value.as_ref().map_or(0, |v| v.len())) <= capacity
            && value
                .as_ref()
                .is_none_or(|v| v.len() <= self.inner.config.limits.max_value_bytes);
        if value.is_none() && def.negative_ttl_ms == 0 || !fits {
            // Nothing to cache: the caller gets the value, the next miss loads again.
            return Ok(value);
        }
        let ts_micros = self.inner.clock.now_micros();
        let op = Op::CacheSet {
            cache: def.id(),
            key: key.to_vec(),
            capacity,
            expires_at: Self::expiry(ts_micros, ttl),
            value: value.as_ref().map(|v| v.to_vec()),
        };
        let payload = Record::Batch {
            ts_micros,
            ops: vec![op],
        }
        .encode();
        let seq = self.append_batch(p, payload).await?;
        // The flight ends once this node serves the value, so no second load starts here.
        self.partition(p).wait_applied(seq).await;
        Ok(value)
    }

    /// Appends the hits reads noted, one touch entry per partition that had some, and
    /// refreshes the cache gauges. Runs every `TOUCH_INTERVAL`.
    pub(crate) async fn report_touches(&self) {
        for p in self.owned_partitions() {
            let ops = self.inner.caches.memory.take_touches(p);
            if ops.is_empty() {
                continue;
            }
            let payload = Record::Batch {
                ts_micros: self.inner.clock.now_micros(),
                ops,
            }
            .encode();
            if let Err(e) = self.append(p, payload).await {
                tracing::warn!(partition = %p, error = %e, "could not report cache hits");
            }
        }
        for info in self.list_caches() {
            let l = label(&info.def);
            metrics::gauge!("notadb_cache_entries", &l).set(info.usage.entries as f64);
            metrics::gauge!("notadb_cache_bytes", &l).set(info.usage.bytes as f64);
            metrics::gauge!("notadb_cache_evictions", &l).set(info.usage.stats.evictions as f64);
            metrics::gauge!("notadb_cache_expirations", &l)
                .set(info.usage.stats.expirations as f64);
        }
    }
}
