//! The node: storage, log, catalog and apply loops wired together, and its write path.

use crate::apply::Applier;
use crate::cache_store::CacheMemory;
use crate::catalog::{Catalog, SchemaStore};
use crate::handler::QueryHandler;
use crate::loader::{CacheLoader, Flights};
use crate::replica::{ApplyTask, PartitionState};
use crate::request::Mutation;
use crate::txn::{TxnNotifier, TxnWaiters};
use crate::write::{keyspace_of, prepare, WriteContext};
use crate::{NodeConfig, NodeError};
use notadb_cache::CacheDef;
use notadb_log::{EmbeddedLog, Log, LogError};
use notadb_record::clock::{Clock, SystemClock};
use notadb_record::KeyspaceDef;
use notadb_record::{Op, Record};
use notadb_storage::RocksStorage;
use notadb_txn::{Procedure, Procedures};
use notadb_types::{KeyspaceId, KeyspaceSchema, PartitionId, Partitioner, Seq, Token};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Builds a node: configuration, optional log, the keyspaces and handlers of the service.
pub struct NodeBuilder {
    config: NodeConfig,
    log: Option<Arc<dyn Log>>,
    clock: Arc<dyn Clock>,
    keyspaces: Vec<KeyspaceSchema>,
    handlers: BTreeMap<String, Arc<dyn QueryHandler>>,
    owned: Option<BTreeSet<PartitionId>>,
    schemas: Option<Arc<dyn SchemaStore>>,
    truncate_log: bool,
    loaders: BTreeMap<String, Arc<dyn CacheLoader>>,
    caches: Vec<CacheDef>,
    procedures: Procedures,
    sequencer: Option<Arc<dyn Log>>,
    forwarder_gate: Option<watch::Receiver<bool>>,
    txn_notifier: Option<Arc<dyn TxnNotifier>>,
}

impl NodeBuilder {
    /// A builder with the given configuration, the embedded log and the system clock.
    pub fn new(config: NodeConfig) -> NodeBuilder {
        NodeBuilder {
            config,
            log: None,
            clock: Arc::new(SystemClock),
            keyspaces: Vec::new(),
            handlers: BTreeMap::new(),
            owned: None,
            schemas: None,
            truncate_log: true,
            loaders: BTreeMap::new(),
            caches: Vec::new(),
            procedures: Procedures::new(),
            sequencer: None,
            forwarder_gate: None,
            txn_notifier: None,
        }
    }

    /// Forwards the sequencer log only while `gate` holds true (a cluster's forwarder lease);
    /// without a gate this node always forwards.
    pub fn forwarder_gate(mut self, gate: watch::Receiver<bool>) -> Self {
        self.forwarder_gate = Some(gate);
        self
    }

    /// Reports finished transactions to the cluster (see [`TxnNotifier`]); with one, this node
    /// accepts transactions on partitions it does not serve.
    pub fn txn_notifier(mut self, notifier: Arc<dyn TxnNotifier>) -> Self {
        self.txn_notifier = Some(notifier);
        self
    }

    /// Registers a deterministic transaction procedure (see `notadb_txn::Procedure`). Every
    /// node of a cluster must register the same procedures.
    pub fn procedure(mut self, name: impl Into<String>, procedure: impl Procedure) -> Self {
        self.procedures.register(name, procedure);
        self
    }

    /// Registers every procedure of `procedures`.
    pub fn procedures(mut self, procedures: &Procedures) -> Self {
        self.procedures.extend(procedures);
        self
    }

    /// The sequencer log of multi-partition transactions (one partition). The default, with the
    /// embedded log, is an embedded sequencer log in `data_dir/sequencer`; with another log and
    /// no sequencer, multi-partition transactions are refused.
    pub fn sequencer(mut self, log: Arc<dyn Log>) -> Self {
        self.sequencer = Some(log);
        self
    }

    /// Serves only these partitions (the node's shard group); the default is all of them.
    /// Reads of other partitions fail with `Unavailable`; writes to any partition are appended.
    pub fn owned(mut self, partitions: BTreeSet<PartitionId>) -> Self {
        self.owned = Some(partitions);
        self
    }

    /// Takes keyspace definitions from a cluster-wide store instead of deciding them locally.
    pub fn schemas(mut self, store: Arc<dyn SchemaStore>) -> Self {
        self.schemas = Some(store);
        self
    }

    /// Whether the node truncates its log behind its own applied positions (the default, right
    /// for a log only this node reads). A shared log is trimmed by retention and checkpoints.
    pub fn truncate_log(mut self, truncate: bool) -> Self {
        self.truncate_log = truncate;
        self
    }

    /// Uses this log instead of the embedded one.
    pub fn log(mut self, log: Arc<dyn Log>) -> Self {
        self.log = Some(log);
        self
    }

    /// Uses this clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A keyspace the service needs: created at open unless an identical one exists.
    pub fn keyspace(mut self, schema: KeyspaceSchema) -> Self {
        self.keyspaces.push(schema);
        self
    }

    /// A named query handler, called with `Query(name, args)`.
    pub fn handler(mut self, name: impl Into<String>, handler: impl QueryHandler) -> Self {
        self.handlers.insert(name.into(), Arc::new(handler));
        self
    }

    /// A named cache loader, for caches that name it.
    pub fn loader(mut self, name: impl Into<String>, loader: Arc<dyn CacheLoader>) -> Self {
        self.loaders.insert(name.into(), loader);
        self
    }

    /// A cache the service needs: created at open unless an identical one exists.
    pub fn cache(mut self, def: CacheDef) -> Self {
        self.caches.push(def);
        self
    }

    /// Opens storage and log, replays the log tail and starts the apply loops.
    pub async fn open(self) -> Result<Node, NodeError> {
        Node::open(self).await
    }
}

pub(crate) struct NodeInner {
    pub config: NodeConfig,
    pub partitioner: Partitioner,
    pub storage: Arc<RocksStorage>,
    pub log: Arc<dyn Log>,
    pub catalog: RwLock<Catalog>,
    pub partitions: Vec<Arc<PartitionState>>,
    /// `owned[p]`: whether this node applies and serves partition `p`.
    pub owned: Vec<bool>,
    pub schemas: Option<Arc<dyn SchemaStore>>,
    pub handlers: BTreeMap<String, Arc<dyn QueryHandler>>,
    pub clock: Arc<dyn Clock>,
    pub(crate) shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Serialises catalog changes (create, drop), which commit outside the catalog lock.
    ddl: tokio::sync::Mutex<()>,
    /// The log failed in a way retries will not fix (its writer stopped).
    log_failed: AtomicBool,
    /// Per reader outside the apply loops (the transmitter) and partition: the oldest seq it
    /// still needs. Truncation keeps those entries.
    log_holds: Mutex<BTreeMap<(String, PartitionId), Seq>>,
    /// The caches' entries of the owned partitions.
    pub caches: Arc<CacheMemory>,
    pub loaders: BTreeMap<String, Arc<dyn CacheLoader>>,
    /// Cache loads in flight on this node.
    pub flights: Flights,
    pub cache_counters: RwLock<BTreeMap<notadb_cache::CacheId, Arc<crate::cache::CacheCounters>>>,
    pub procedures: Procedures,
    /// The log multi-partition transactions are appended to, if this node has one.
    pub sequencer: Option<Arc<dyn Log>>,
    pub forwarder_gate: Option<watch::Receiver<bool>>,
    pub txn_waiters: Arc<TxnWaiters>,
    /// Counters of reads by where they ran, registered once.
    pub read_metrics: ReadMetrics,
    /// Concurrent writes to a partition waiting to be appended as one entry.
    pub(crate) coalescer: crate::coalesce::Coalescer,
    /// Appends this node asked of the log (retries inside the log not counted again).
    appends: metrics::Counter,
}

/// Reads by where they ran: on the serving thread from memory, or on the blocking pool.
pub(crate) struct ReadMetrics {
    pub memory: metrics::Counter,
    pub blocking: metrics::Counter,
}

impl ReadMetrics {
    fn new() -> ReadMetrics {
        ReadMetrics {
            memory: metrics::counter!("notadb_reads_total", "path" => "memory"),
            blocking: metrics::counter!("notadb_reads_total", "path" => "blocking"),
        }
    }
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

/// A keyspace and its size.
#[derive(Clone, Debug)]
pub struct KeyspaceInfo {
    /// The keyspace's definition.
    pub def: Arc<KeyspaceDef>,
    /// RocksDB's estimate of the keyspace's bytes on disk, over all partitions.
    pub approximate_bytes: u64,
}

/// One partition's progress.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionStatus {
    /// The partition.
    pub partition: PartitionId,
    /// The partition's applied seq.
    pub applied: Seq,
    /// Highest seq known in the partition's log.
    pub last: Seq,
    /// Log entries not applied yet.
    pub lag_records: u64,
    /// Age of the oldest entry being applied, in seconds; 0 when nothing is behind.
    pub lag_seconds: f64,
    /// Whether apply stopped on an error.
    pub failed: bool,
}

/// The node's state for `/readyz`, `/metrics` and `Status`.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// The node's configured id.
    pub node_id: String,
    /// `Node::is_ready` when the status was taken.
    pub ready: bool,
    /// The partitions this node owns.
    pub partitions: Vec<PartitionStatus>,
}

fn io_error(what: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::Internal(format!("{what}: {e}"))
}

impl Node {
    async fn open(b: NodeBuilder) -> Result<Node, NodeError> {
        let config = b.config;
        let partitioner = Partitioner::new(config.partitions)?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| io_error(&format!("creating {}", config.data_dir.display()), e))?;
        let storage = Arc::new(
            RocksStorage::open(
                &config.data_dir.join("db"),
                config.partitions,
                &config.storage_options(),
            )
            .map_err(|e| NodeError::Unavailable(format!("opening storage: {e}")))?,
        );
        let mut sequencer = b.sequencer;
        let log: Arc<dyn Log> = match b.log {
            Some(log) => log,
            None => {
                let options = config.log_options().map_err(NodeError::InvalidArgument)?;
                if sequencer.is_none() {
                    let log = EmbeddedLog::open(
                        &config.data_dir.join("sequencer"),
                        1,
                        config.log_options().map_err(NodeError::InvalidArgument)?,
                    )
                    .map_err(|e| {
                        NodeError::Unavailable(format!("opening the sequencer log: {e}"))
                    })?;
                    sequencer = Some(Arc::new(log));
                }
                Arc::new(
                    EmbeddedLog::open(&config.data_dir.join("log"), config.partitions, options)
                        .map_err(|e| NodeError::Unavailable(format!("opening the log: {e}")))?,
                )
            }
        };
        if log.partitions() != config.partitions {
            return Err(NodeError::InvalidArgument(format!(
                "the log has {} partitions, the node is configured for {}",
                log.partitions(),
                config.partitions
            )));
        }
        let catalog = Catalog::load(&storage)?;
        let mut dropped: BTreeMap<PartitionId, BTreeSet<KeyspaceId>> = BTreeMap::new();
        for (p, ks) in storage.dropped()? {
            dropped.entry(p).or_default().insert(ks);
        }
        let (shutdown, _) = watch::channel(false);
        let owned: Vec<bool> = partitioner
            .all()
            .map(|p| b.owned.as_ref().is_none_or(|o| o.contains(&p)))
            .collect();
        if let Some(p) = b.owned.iter().flatten().find(|p| p.0 >= config.partitions) {
            return Err(NodeError::InvalidArgument(format!(
                "owned partition {p} does not exist: expected partitions below {}",
                config.partitions
            )));
        }
        let caches = Arc::new(CacheMemory::new(config.partitions));
        let mut partitions = Vec::new();
        let mut appliers = Vec::new();
        for p in partitioner.all() {
            let applied = storage.applied(p)?;
            if !owned[p.0 as usize] {
                partitions.push(Arc::new(PartitionState::new(p, applied, applied)));
                continue;
            }
            let bounds = log.bounds(p).await?;
            if storage.created() && bounds.last > Seq(0) && b.schemas.is_none() {
                // Log entries name keyspaces by the ids of the catalog that wrote them; a new,
                // empty catalog would hand those ids to other keyspaces.
                return Err(NodeError::FailedPrecondition(format!(
                    "storage in {} is new but partition {p}'s log already holds {} entries; restore the data directory that goes with this log, or start with an empty log",
                    config.data_dir.display(),
                    bounds.last
                )));
            }
            if bounds.first > applied.next() {
                return Err(NodeError::FailedPrecondition(format!(
                    "partition {p}: storage has applied seq {applied} but the log starts at seq {}; the entries in between are gone",
                    bounds.first
                )));
            }
            if applied > bounds.last {
                return Err(NodeError::FailedPrecondition(format!(
                    "partition {p}: storage has applied seq {applied} but the log ends at seq {}; the log lost acknowledged entries",
                    bounds.last
                )));
            }
            partitions.push(Arc::new(PartitionState::new(p, applied, bounds.last)));
            appliers.push(Applier::new(
                p,
                dropped.remove(&p).unwrap_or_default(),
                caches.clone(),
                b.procedures.clone(),
                config.executor_config(),
                crate::txn_store::load_resume(&storage, p)?,
            ));
        }
        {
            let (caches, storage) = (caches.clone(), storage.clone());
            let restore: Vec<PartitionId> = appliers.iter().map(Applier::partition).collect();
            tokio::task::spawn_blocking(move || {
                restore
                    .into_iter()
                    .try_for_each(|p| caches.restore(&storage, p))
            })
            .await??;
        }
        let groups_appends = log.groups_appends();
        let node = Node {
            inner: Arc::new(NodeInner {
                partitioner,
                storage,
                log,
                catalog: RwLock::new(catalog),
                partitions,
                owned,
                schemas: b.schemas,
                handlers: b.handlers,
                clock: b.clock,
                shutdown,
                tasks: Mutex::new(Vec::new()),
                ddl: tokio::sync::Mutex::new(()),
                log_failed: AtomicBool::new(false),
                log_holds: Mutex::new(BTreeMap::new()),
                caches,
                loaders: b.loaders,
                flights: Flights::default(),
                cache_counters: RwLock::new(BTreeMap::new()),
                procedures: b.procedures,
                sequencer,
                forwarder_gate: b.forwarder_gate,
                txn_waiters: Arc::new(TxnWaiters::new(b.txn_notifier)),
                read_metrics: ReadMetrics::new(),
                coalescer: crate::coalesce::Coalescer::new(
                    config.partitions,
                    if groups_appends {
                        0
                    } else {
                        config.append_coalesce_kb << 10
                    },
                    config.append_in_flight,
                ),
                appends: metrics::counter!("notadb_log_appends_total"),
                config,
            }),
        };
        for applier in appliers {
            let inner = &node.inner;
            let task = ApplyTask {
                storage: inner.storage.clone(),
                log: inner.log.clone(),
                state: inner.partitions[applier.partition().0 as usize].clone(),
                applier: Some(applier),
                clock: inner.clock.clone(),
                batch: inner.config.apply_batch.max(1),
                shutdown: inner.shutdown.subscribe(),
                waiters: inner.txn_waiters.clone(),
            };
            node.spawn(task.run());
        }
        node.spawn(crate::txn::forward_loop(node.clone()));
        if b.truncate_log {
            node.spawn(crate::maintenance::truncate_loop(node.clone()));
        }
        node.spawn(crate::maintenance::idle_flush_loop(node.clone()));
        node.spawn(crate::maintenance::touch_loop(node.clone()));
        match node.finish_open(b.keyspaces, b.caches).await {
            Ok(()) => Ok(node),
            Err(e) => {
                // Stop the loops started above so a retry can open the same directory.
                let _ = node.shutdown().await;
                Err(e)
            }
        }
    }

    async fn finish_open(
        &self,
        keyspaces: Vec<KeyspaceSchema>,
        caches: Vec<CacheDef>,
    ) -> Result<(), NodeError> {
        for schema in keyspaces {
            self.create_keyspace(schema, true).await?;
        }
        for def in caches {
            self.create_cache(def, true).await?;
        }
        self.resume_drops().await
    }

    /// Applies a catalog change on a blocking thread (it fsyncs), one change at a time, and
    /// publishes the new catalog only once it is durable.
    pub(crate) async fn change_catalog<R, F>(&self, change: F) -> Result<R, NodeError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Catalog, &RocksStorage) -> Result<R, NodeError> + Send + 'static,
    {
        let _ddl = self.inner.ddl.lock().await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut next = inner.catalog.read().expect("catalog lock").clone();
            let result = change(&mut next, &inner.storage)?;
            *inner.catalog.write().expect("catalog lock") = next;
            Ok(result)
        })
        .await?
    }

    /// Appends to the log, noting failures that retries will not fix.
    pub(crate) async fn append(&self, p: PartitionId, payload: Vec<u8>) -> Result<Seq, NodeError> {
        self.inner.appends.increment(1);
        match self.inner.log.append(p, payload.into()).await {
            Ok(seq) => {
                self.partition(p).appended(seq);
                Ok(seq)
            }
            Err(e) => {
                if matches!(e, LogError::Io(_) | LogError::Closed) {
                    tracing::error!(error = %e, "the log failed; the node is unhealthy");
                    self.inner.log_failed.store(true, Ordering::Release);
                }
                Err(e.into())
            }
        }
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        self.inner
            .tasks
            .lock()
            .expect("task list lock")
            .push(handle);
    }

    pub(crate) fn partition(&self, p: PartitionId) -> &Arc<PartitionState> {
        &self.inner.partitions[p.0 as usize]
    }

    /// Whether this node applies and serves partition `p`.
    pub fn owns(&self, p: PartitionId) -> bool {
        self.inner.owned.get(p.0 as usize).copied().unwrap_or(false)
    }

    /// The partitions this node applies and serves.
    pub fn owned_partitions(&self) -> Vec<PartitionId> {
        self.inner
            .partitioner
            .all()
            .filter(|p| self.owns(*p))
            .collect()
    }

    /// Fails with `Unavailable` unless this node serves `p`.
    pub(crate) fn check_owned(&self, p: PartitionId) -> Result<(), NodeError> {
        if self.owns(p) {
            Ok(())
        } else {
            Err(NodeError::Unavailable(format!(
                "partition {p} is not served by node `{}`; send the request to a replica of its shard group",
                self.inner.config.node_id
            )))
        }
    }

    /// Asks the log where each owned partition ends, so lag and readiness count entries that
    /// other nodes appended.
    pub async fn refresh_log_positions(&self) -> Result<(), NodeError> {
        for p in self.owned_partitions() {
            let last = self.inner.log.bounds(p).await?.last;
            self.partition(p).appended(last);
        }
        Ok(())
    }

    /// The partitioner (partition count and hash).
    pub fn partitioner(&self) -> Partitioner {
        self.inner.partitioner
    }

    /// The node's storage (digests, tests).
    pub fn storage(&self) -> &RocksStorage {
        &self.inner.storage
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The log this node applies from.
    pub fn log(&self) -> Arc<dyn Log> {
        self.inner.log.clone()
    }

    /// Keeps entries of `p` from `from` on in the log for `holder`, a reader outside the apply
    /// loops (e.g. the transmitter); replaces the holder's previous hold on `p`.
    pub fn hold_log(&self, holder: &str, p: PartitionId, from: Seq) {
        self.inner
            .log_holds
            .lock()
            .expect("log holds lock")
            .insert((holder.to_string(), p), from);
    }

    /// The oldest seq of `p` any holder still needs.
    pub fn log_hold(&self, p: PartitionId) -> Option<Seq> {
        self.inner
            .log_holds
            .lock()
            .expect("log holds lock")
            .iter()
            .filter(|((_, q), _)| *q == p)
            .map(|(_, seq)| *seq)
            .min()
    }

    /// Names of the registered query handlers.
    pub fn handler_names(&self) -> Vec<String> {
        self.inner.handlers.keys().cloned().collect()
    }

    /// Creates a keyspace; returns it and whether it was created (vs. already there).
    pub async fn create_keyspace(
        &self,
        schema: KeyspaceSchema,
        if_not_exists: bool,
    ) -> Result<(KeyspaceInfo, bool), NodeError> {
        if let Some(store) = self.inner.schemas.clone() {
            schema.validate()?;
            let (def, created) = store.create(schema, if_not_exists).await?;
            let name = def.schema.name.clone();
            self.install_keyspace(def).await?;
            return Ok((self.describe_keyspace(&name)?, created));
        }
        let (def, created) = self
            .change_catalog(move |catalog, storage| catalog.create(storage, schema, if_not_exists))
            .await?;
        Ok((self.info(def), created))
    }

    /// Installs a keyspace decided by the cluster's schema store (called in the store's order).
    pub async fn install_keyspace(&self, def: KeyspaceDef) -> Result<(), NodeError> {
        self.change_catalog(move |catalog, storage| catalog.install(storage, def))
            .await?;
        Ok(())
    }

    /// Removes a keyspace another node dropped (that node appends the drop entries).
    pub async fn forget_keyspace(&self, name: &str) -> Result<(), NodeError> {
        let name = name.to_string();
        self.change_catalog(move |catalog, storage| catalog.forget(storage, &name))
            .await?;
        Ok(())
    }

    fn info(&self, def: Arc<KeyspaceDef>) -> KeyspaceInfo {
        let approximate_bytes = self
            .inner
            .storage
            .approximate_bytes(def.id, self.inner.config.partitions);
        KeyspaceInfo {
            def,
            approximate_bytes,
        }
    }

    /// Every keyspace.
    pub fn list_keyspaces(&self) -> Vec<KeyspaceInfo> {
        let defs = self.inner.catalog.read().expect("catalog lock").list();
        defs.into_iter().map(|d| self.info(d)).collect()
    }

    /// One keyspace.
    pub fn describe_keyspace(&self, name: &str) -> Result<KeyspaceInfo, NodeError> {
        let def = self.inner.catalog.read().expect("catalog lock").get(name)?;
        Ok(self.info(def))
    }

    /// The definition of the keyspace `name` (its id and schema).
    pub fn keyspace(&self, name: &str) -> Result<Arc<KeyspaceDef>, NodeError> {
        self.inner.catalog.read().expect("catalog lock").get(name)
    }

    /// Drops a keyspace: it disappears from the catalog at once, and a drop entry in every
    /// partition's log deletes its data in log order.
    pub async fn drop_keyspace(&self, name: &str) -> Result<(), NodeError> {
        if let Some(store) = self.inner.schemas.clone() {
            store.remove(name).await?;
        }
        let name = name.to_string();
        let id = self
            .change_catalog(move |catalog, storage| catalog.remove(storage, &name))
            .await?;
        self.append_drops(id, self.inner.partitioner.all().collect())
            .await
    }

    async fn append_drops(
        &self,
        id: KeyspaceId,
        partitions: Vec<PartitionId>,
    ) -> Result<(), NodeError> {
        let ts_micros = self.inner.clock.now_micros();
        let payload = Record::DropKeyspace {
            ts_micros,
            keyspace: id,
        }
        .encode();
        let mut waits = Vec::new();
        for p in partitions {
            let seq = self.append(p, payload.clone()).await?;
            if self.owns(p) {
                waits.push((p, seq));
            }
        }
        let node = self.clone();
        self.spawn(async move {
            for (p, seq) in waits {
                node.partition(p).wait_applied(seq).await;
            }
            let finished = node
                .change_catalog(move |catalog, storage| catalog.finish_drop(storage, id))
                .await;
            if let Err(e) = finished {
                tracing::error!(error = %e, keyspace = %id, "could not finish a drop");
            }
        });
        Ok(())
    }

    async fn resume_drops(&self) -> Result<(), NodeError> {
        let dropping = self.inner.catalog.read().expect("catalog lock").dropping();
        if dropping.is_empty() {
            return Ok(());
        }
        let done: BTreeSet<(PartitionId, KeyspaceId)> =
            self.inner.storage.dropped()?.into_iter().collect();
        for id in dropping {
            let missing = self
                .inner
                .partitioner
                .all()
                .filter(|p| !done.contains(&(*p, id)))
                .collect();
            self.append_drops(id, missing).await?;
        }
        Ok(())
    }

    /// Validates a batch of mutations, appends it to its partition's log as one entry and
    /// returns its token. All mutations must fall in one partition; nothing is appended when
    /// any of them is invalid. Errors name fields as in a single `Put` (`key: ...`) when there
    /// is one mutation, and as `mutations[i].key: ...` otherwise.
    pub async fn write(&self, mutations: Vec<Mutation>) -> Result<Token, NodeError> {
        let indexed = mutations.len() > 1;
        self.write_named(mutations, indexed).await
    }

    /// `write` for a client's batch: errors always name `mutations[i]`, even for one mutation.
    pub async fn write_batch(&self, mutations: Vec<Mutation>) -> Result<Token, NodeError> {
        self.write_named(mutations, true).await
    }

    async fn write_named(
        &self,
        mutations: Vec<Mutation>,
        indexed: bool,
    ) -> Result<Token, NodeError> {
        let limits = &self.inner.config.limits;
        if mutations.is_empty() {
            return Err(NodeError::invalid(
                "mutations: a write needs at least one mutation",
            ));
        }
        if mutations.len() > limits.max_batch_mutations {
            return Err(NodeError::invalid(format!(
                "mutations: {} mutations, the limit is {} (max_batch_mutations)",
                mutations.len(),
                limits.max_batch_mutations
            )));
        }
        let ts_micros = self.inner.clock.now_micros();
        let (keyspaces, caches) = {
            let catalog = self.inner.catalog.read().expect("catalog lock");
            (catalog.snapshot(), catalog.cache_snapshot())
        };
        let ctx = WriteContext {
            partitioner: &self.inner.partitioner,
            limits,
            ts_micros,
        };
        let mut partition: Option<(usize, PartitionId)> = None;
        let mut ops: Vec<Op> = Vec::with_capacity(mutations.len());
        for (i, mutation) in mutations.into_iter().enumerate() {
            let field = if indexed {
                format!("mutations[{i}].")
            } else {
                String::new()
            };
            let name = keyspace_of(&mutation);
            let def = keyspaces.get(name).ok_or_else(|| {
                NodeError::NotFound(format!("{field}keyspace: keyspace `{name}` does not exist"))
            })?;
            // Caches derived from the keyspace: the write drops their entry (no allocation
            // when there are none).
            let derived: Vec<notadb_cache::CacheId> = caches
                .values()
                .filter(|c| c.derived_from.as_deref() == Some(name))
                .map(|c| c.id())
                .collect();
            let prepared = prepare(def, mutation, &ctx, &field)?;
            match partition {
                None => partition = Some((i, prepared.partition)),
                Some((first, p)) if p != prepared.partition => {
                    return Err(NodeError::invalid(format!(
                        "mutations[{first}] and mutations[{i}] fall in partitions {p} and {}; a write must fall in one partition (group mutations by partition key)",
                        prepared.partition
                    )));
                }
                Some(_) => {}
            }
            if let Some(op) = prepared.op {
                for cache in derived {
                    ops.push(match &op {
                        Op::Put { key, .. } | Op::Delete { key, .. } => Op::CacheDelete {
                            cache,
                            key: key.clone(),
                        },
                        // A range's keys are unknown here: the cache's partition is cleared.
                        _ => Op::CacheClear { cache },
                    });
                }
                ops.push(op);
            }
        }
        let (_, partition) = partition.expect("at least one mutation");
        let payload = Record::Batch { ts_micros, ops }.encode();
        if payload.len() > limits.max_batch_bytes {
            return Err(NodeError::invalid(format!(
                "mutations: the write is {} bytes, the limit is {} (max_batch_bytes)",
                payload.len(),
                limits.max_batch_bytes
            )));
        }
        let seq = self.append_batch(partition, payload).await?;
        Ok(Token { partition, seq })
    }

    /// Progress of every partition.
    pub fn status(&self) -> NodeStatus {
        let partitions: Vec<PartitionStatus> = self
            .inner
            .partitions
            .iter()
            .filter(|s| self.owns(s.id))
            .map(|s| PartitionStatus {
                partition: s.id,
                applied: s.applied(),
                last: s.last_seq(),
                lag_records: s.lag_records(),
                lag_seconds: s.lag_seconds(),
                failed: s.is_failed(),
            })
            .collect();
        NodeStatus {
            node_id: self.inner.config.node_id.clone(),
            ready: self.is_ready(),
            partitions,
        }
    }

    /// Per owned partition: its applied seq and the digest of its state (replicas at equal
    /// applied positions have equal digests).
    pub async fn digests(&self) -> Result<Vec<(PartitionId, Seq, u64)>, NodeError> {
        let inner = self.inner.clone();
        let owned = self.owned_partitions();
        tokio::task::spawn_blocking(move || {
            let now = inner.clock.now_micros();
            owned
                .into_iter()
                .map(|p| {
                    let (applied, digest) = inner.storage.applied_and_digest(p, now)?;
                    Ok((p, applied, digest))
                })
                .collect()
        })
        .await?
    }

    /// Whether every owned partition is within the configured lag bounds and none stopped.
    pub fn is_ready(&self) -> bool {
        let config = &self.inner.config;
        self.is_healthy()
            && self.inner.partitions.iter().all(|s| {
                !self.owns(s.id)
                    || s.is_ready(config.ready_max_lag_records, config.ready_max_lag_secs)
            })
    }

    /// Whether no partition's apply stopped on an error.
    pub fn is_healthy(&self) -> bool {
        !self.inner.log_failed.load(Ordering::Acquire)
            && self.inner.partitions.iter().all(|s| !s.is_failed())
    }

    /// Writes the memtables out to table files and waits for it (what the node does by itself
    /// once writes go quiet, see `flush_idle_secs`). Nothing visible changes.
    pub async fn flush_memtables(&self) -> Result<(), NodeError> {
        let storage = self.inner.storage.clone();
        tokio::task::spawn_blocking(move || storage.flush()).await??;
        Ok(())
    }

    /// Flushes the memtables and compacts the overlapping table files of level 0 into the
    /// levels below (what the node does by itself once writes go quiet): a range read then
    /// seeks one table file per level instead of one per level-0 file. Nothing visible
    /// changes.
    pub async fn settle_storage(&self) -> Result<(), NodeError> {
        self.flush_memtables().await?;
        let storage = self.inner.storage.clone();
        if storage.level0_files() > 1 {
            tokio::task::spawn_blocking(move || storage.compact_level0()).await?;
        }
        Ok(())
    }

    /// Stops the apply loops and makes the log and storage durable.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.inner.shutdown.send_replace(true);
        self.inner.txn_waiters.close();
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.inner.tasks.lock().expect("task list lock"));
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        self.inner.log.flush().await?;
        let storage = self.inner.storage.clone();
        tokio::task::spawn_blocking(move || storage.sync()).await??;
        Ok(())
    }
}
