//! The node: the parts that own its state, wired together. Each part lives in its own module
//! with its own state: `partitions` (which partitions it serves, their apply progress, the log
//! and appends), `catalog` (keyspace and cache definitions), `cache` (cache entries, loaders,
//! loads in flight), `txn` (procedures, the sequencer, waiting clients) and `read` (handlers).
//! The shared core every part reads is the configuration, the partitioner, the storage and
//! the clock. This module builds the parts, starts the apply loops and housekeeping, and
//! reports the node's status.

use crate::apply::Applier;
use crate::cache::Caches;
use crate::cache_store::CacheMemory;
use crate::catalog::{Catalog, Definitions, SchemaStore};
use crate::coalesce::Coalescer;
use crate::handler::QueryHandler;
use crate::loader::CacheLoader;
use crate::partitions::Partitions;
use crate::read::Reads;
use crate::replica::{ApplyTask, PartitionState};
use crate::txn::{TxnNotifier, TxnWaiters, Txns};
use crate::{NodeConfig, NodeError};
use notadb_cache::CacheDef;
use notadb_log::{EmbeddedLog, Log};
use notadb_record::clock::{Clock, SystemClock};
use notadb_storage::RocksStorage;
use notadb_txn::{Procedure, Procedures};
use notadb_types::{KeyspaceId, KeyspaceSchema, PartitionId, Partitioner, Seq};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a node shares with the other members of its cluster. A node without one stands
/// alone: it serves every partition, decides its own keyspaces, truncates its own log behind
/// its applied positions and, on the embedded log, runs its own sequencer log.
pub struct ClusterMember {
    /// The cluster's log, shared by every member (trimmed by retention and checkpoints, not
    /// by the node).
    pub log: Arc<dyn Log>,
    /// The partitions this node applies and serves (its shard group's). Reads of others fail
    /// with `Unavailable`; writes to any partition are appended.
    pub owned: BTreeSet<PartitionId>,
    /// Where keyspace and cache definitions are decided, in one order for every member.
    pub schemas: Arc<dyn SchemaStore>,
    /// The sequencer log of multi-partition transactions (one partition).
    pub sequencer: Arc<dyn Log>,
    /// This node forwards the sequencer log only while the gate holds true (the cluster's
    /// forwarder lease).
    pub forwarder_gate: watch::Receiver<bool>,
    /// Reports finished transactions to the other members, so this node accepts
    /// transactions on partitions it does not serve.
    pub txn_notifier: Arc<dyn TxnNotifier>,
}

/// Builds a node: configuration, optional log, the keyspaces and handlers of the service.
pub struct NodeBuilder {
    config: NodeConfig,
    log: Option<Arc<dyn Log>>,
    member: Option<ClusterMember>,
    clock: Arc<dyn Clock>,
    keyspaces: Vec<KeyspaceSchema>,
    handlers: BTreeMap<String, Arc<dyn QueryHandler>>,
    loaders: BTreeMap<String, Arc<dyn CacheLoader>>,
    caches: Vec<CacheDef>,
    procedures: Procedures,
}

impl NodeBuilder {
    /// A builder with the given configuration, the embedded log and the system clock.
    pub fn new(config: NodeConfig) -> NodeBuilder {
        NodeBuilder {
            config,
            log: None,
            member: None,
            clock: Arc::new(SystemClock),
            keyspaces: Vec::new(),
            handlers: BTreeMap::new(),
            loaders: BTreeMap::new(),
            caches: Vec::new(),
            procedures: Procedures::new(),
        }
    }

    /// Makes the node one member of a cluster (see [`ClusterMember`]); its log replaces
    /// the one of [`NodeBuilder::log`].
    pub fn member(mut self, member: ClusterMember) -> Self {
        self.member = Some(member);
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

    /// A node standing alone uses this log instead of the embedded one. Multi-partition
    /// transactions then need a sequencer log, which only the embedded log and a cluster
    /// provide: they are refused.
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

/// A node's state: the shared core, then the parts, each owning its own state.
pub(crate) struct NodeInner {
    pub config: NodeConfig,
    pub partitioner: Partitioner,
    pub storage: Arc<RocksStorage>,
    pub clock: Arc<dyn Clock>,
    pub partitions: Partitions,
    pub catalog: Arc<Definitions>,
    pub caches: Caches,
    pub txns: Txns,
    pub reads: Reads,
    pub(crate) shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
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

/// The log a node applies from and, when it has one, its sequencer log.
type Logs = (Arc<dyn Log>, Option<Arc<dyn Log>>);

/// The log and sequencer of a node standing alone: `log` when given (then no sequencer), else
/// the embedded log and an embedded sequencer log in the data directory.
fn standalone_logs(log: Option<Arc<dyn Log>>, config: &NodeConfig) -> Result<Logs, NodeError> {
    if let Some(log) = log {
        return Ok((log, None));
    }
    let options = config.log_options().map_err(NodeError::InvalidArgument)?;
    let sequencer = EmbeddedLog::open(&config.data_dir.join("sequencer"), 1, options.clone())
        .map_err(|e| NodeError::Unavailable(format!("opening the sequencer log: {e}")))?;
    let log = EmbeddedLog::open(&config.data_dir.join("log"), config.partitions, options)
        .map_err(|e| NodeError::Unavailable(format!("opening the log: {e}")))?;
    Ok((Arc::new(log), Some(Arc::new(sequencer))))
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
        let member = b.member;
        let (log, sequencer) = match &member {
            Some(m) => (m.log.clone(), Some(m.sequencer.clone())),
            None => standalone_logs(b.log, &config)?,
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
        let owned_set = member.as_ref().map(|m| &m.owned);
        let owned: Vec<bool> = partitioner
            .all()
            .map(|p| owned_set.is_none_or(|o| o.contains(&p)))
            .collect();
        if let Some(p) = owned_set
            .into_iter()
            .flatten()
            .find(|p| p.0 >= config.partitions)
        {
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
            if storage.created() && bounds.last > Seq(0) && member.is_none() {
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
        let coalescer = Coalescer::new(
            config.partitions,
            if log.groups_appends() {
                0
            } else {
                config.append_coalesce_kb << 10
            },
            config.append_in_flight,
        );
        let node = Node {
            inner: Arc::new(NodeInner {
                partitioner,
                partitions: Partitions::new(partitions, owned, log, coalescer),
                catalog: Arc::new(Definitions::new(
                    catalog,
                    member.as_ref().map(|m| m.schemas.clone()),
                    storage.clone(),
                )),
                caches: Caches::new(caches, b.loaders),
                txns: Txns {
                    procedures: b.procedures,
                    sequencer,
                    forwarder_gate: member.as_ref().map(|m| m.forwarder_gate.clone()),
                    waiters: Arc::new(TxnWaiters::new(
                        member.as_ref().map(|m| m.txn_notifier.clone()),
                    )),
                },
                reads: Reads::new(b.handlers),
                storage,
                clock: b.clock,
                shutdown,
                tasks: Mutex::new(Vec::new()),
                config,
            }),
        };
        for applier in appliers {
            let inner = &node.inner;
            let task = ApplyTask {
                storage: inner.storage.clone(),
                log: inner.partitions.log().clone(),
                state: inner.partitions.get(applier.partition()).clone(),
                applier: Some(applier),
                clock: inner.clock.clone(),
                batch: inner.config.apply_batch.max(1),
                shutdown: inner.shutdown.subscribe(),
                waiters: inner.txns.waiters.clone(),
            };
            node.spawn(task.run());
        }
        node.spawn(crate::txn::forward_loop(node.clone()));
        // A member's log is shared: checkpoints and retention trim it, not the node.
        if member.is_none() {
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

    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        self.inner
            .tasks
            .lock()
            .expect("task list lock")
            .push(handle);
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

    /// Progress of every partition.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            node_id: self.inner.config.node_id.clone(),
            ready: self.is_ready(),
            partitions: self.inner.partitions.statuses(),
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
            && self
                .inner
                .partitions
                .caught_up(config.ready_max_lag_records, config.ready_max_lag_secs)
    }

    /// Whether the log works and no partition's apply stopped on an error.
    pub fn is_healthy(&self) -> bool {
        self.inner.partitions.healthy()
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
        self.inner.txns.waiters.close();
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.inner.tasks.lock().expect("task list lock"));
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        self.inner.partitions.log().flush().await?;
        let storage = self.inner.storage.clone();
        tokio::task::spawn_blocking(move || storage.sync()).await??;
        Ok(())
    }
}
