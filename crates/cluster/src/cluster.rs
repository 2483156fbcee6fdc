//! A node running as one replica of one shard group of a cluster on NATS JetStream or Kafka.

use crate::broker::{self, Broker, LeaseContext};
use crate::checkpoint::{self, Manifest};
use crate::control::{KvStore, Objects};
use crate::error::ClusterError;
use crate::members::{self, Candidacies, Routes};
use crate::meta::{self, KvSchemas};
use crate::txn;
use crate::ClusterConfig;
use notadb_log::Log;
use notadb_node::{ClusterMember, Node, NodeBuilder, NodeConfig};
use notadb_types::{GroupId, PartitionId, Seq};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where other nodes and clients reach this node.
#[derive(Clone, Debug)]
pub struct Advertised {
    /// The gRPC address.
    pub grpc_addr: String,
    /// The admin HTTP address.
    pub admin_addr: String,
    /// The frame protocol's address, when the node serves it.
    pub frame_addr: Option<String>,
}

/// A node that joined a cluster: its metadata, membership and checkpoint tasks.
pub struct Cluster {
    node: Node,
    routes: Arc<Routes>,
    log: Arc<dyn Log>,
    config: ClusterConfig,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    broker: Box<dyn Broker>,
    candidacies: Candidacies,
}

struct Shared {
    meta: Arc<dyn KvStore>,
    members: Arc<dyn KvStore>,
    objects: Arc<dyn Objects>,
}

impl Cluster {
    /// Joins the cluster: checks or creates its shape, restores the newest checkpoint of the
    /// group when the data directory is empty, opens the node on the group's partitions of
    /// the log (`customize` adds the service's keyspaces and handlers), installs the
    /// cluster's keyspaces, and starts heartbeats, watches and checkpoints.
    pub async fn start(
        config: ClusterConfig,
        node_config: NodeConfig,
        advertised: Advertised,
        customize: impl FnOnce(NodeBuilder) -> NodeBuilder,
    ) -> Result<Cluster, ClusterError> {
        config.validate().map_err(ClusterError::Config)?;
        let (backend, doc) = broker::open(&config, &node_config).await?;
        let shared = Shared {
            meta: backend.meta,
            members: backend.members,
            objects: backend.objects,
        };
        std::fs::create_dir_all(&node_config.data_dir).map_err(|e| {
            ClusterError::Config(format!("creating {}: {e}", node_config.data_dir.display()))
        })?;
        let restored = checkpoint::restore(
            shared.meta.as_ref(),
            shared.objects.as_ref(),
            config.group,
            &node_config.data_dir.join("db"),
        )
        .await?;
        if let Some(m) = &restored {
            tracing::info!(
                checkpoint = m.id,
                bytes = m.bytes(),
                "restored a checkpoint"
            );
        }
        let log = backend.log;
        let (forwarder_held, forwarder_gate) = watch::channel(false);
        let node_id = node_config.node_id.clone();
        let builder = NodeBuilder::new(node_config).member(ClusterMember {
            log: log.clone(),
            owned: doc.partitions_of(config.group),
            schemas: Arc::new(KvSchemas {
                meta: shared.meta.clone(),
            }),
            sequencer: backend.sequencer,
            forwarder_gate,
            txn_notifier: backend.notifier,
        });
        let node = customize(builder).open().await?;
        if let Err(e) = meta::sync_schemas(shared.meta.as_ref(), &node).await {
            let _ = node.shutdown().await;
            return Err(e);
        }
        let routes = Arc::new(Routes::new(doc, config.member_ttl(), node_id));
        let (stop, _) = watch::channel(false);
        let cluster = Cluster {
            node,
            routes,
            log,
            config,
            stop,
            tasks: Mutex::new(Vec::new()),
            broker: backend.broker,
            candidacies: Candidacies::default(),
        };
        cluster.spawn_tasks(shared, advertised);
        let started = async {
            let reports = cluster
                .broker
                .receive_reports(cluster.node.clone(), cluster.stop.subscribe())
                .await?;
            cluster.tasks.lock().expect("tasks lock").push(reports);
            cluster
                .hold_lease(txn::FORWARDER_LEASE, forwarder_held)
                .await
        };
        if let Err(e) = started.await {
            let _ = cluster.shutdown().await;
            return Err(e);
        }
        Ok(cluster)
    }

    fn spawn_tasks(&self, shared: Shared, advertised: Advertised) {
        let mut tasks = self.tasks.lock().expect("tasks lock");
        tasks.push(tokio::spawn(meta::watch_schemas(
            shared.meta.clone(),
            self.node.clone(),
            self.stop.subscribe(),
        )));
        tasks.push(tokio::spawn(members::watch_members(
            shared.members.clone(),
            self.routes.clone(),
            self.stop.subscribe(),
        )));
        tasks.push(tokio::spawn(members::heartbeat_loop(
            shared.members,
            self.routes.clone(),
            self.node.clone(),
            (self.config.group, advertised),
            self.candidacies.clone(),
            self.config.heartbeat_interval(),
            self.stop.subscribe(),
        )));
        if self.config.checkpoint_interval_secs > 0 {
            let checkpointer = Checkpointer {
                node: self.node.clone(),
                routes: self.routes.clone(),
                log: self.log.clone(),
                meta: shared.meta,
                objects: shared.objects,
                config: self.config.clone(),
            };
            tasks.push(tokio::spawn(checkpointer.run(self.stop.subscribe())));
        }
    }

    /// The node serving this replica's partitions.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The routing table.
    pub fn routes(&self) -> &Arc<Routes> {
        &self.routes
    }

    /// This node's shard group.
    pub fn group(&self) -> GroupId {
        self.config.group
    }

    /// The cluster configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// A second connection to the cluster's log, for a reader outside the apply loops (the
    /// transmitter), so it does not disturb their cached consumers.
    pub async fn open_log(&self) -> Result<Arc<dyn Log>, ClusterError> {
        self.broker.open_log(self.node.partitioner().count()).await
    }

    /// Competes for the lease `key` (one holder in the cluster at a time) until shutdown;
    /// the receiver says whether this node holds it. See `lease.rs`.
    pub async fn lease(&self, key: &str) -> Result<watch::Receiver<bool>, ClusterError> {
        let (held, rx) = watch::channel(false);
        self.hold_lease(key, held).await?;
        Ok(rx)
    }

    async fn hold_lease(&self, key: &str, held: watch::Sender<bool>) -> Result<(), ClusterError> {
        let context = LeaseContext {
            routes: self.routes.clone(),
            candidacies: self.candidacies.clone(),
            config: self.config.clone(),
        };
        let task = self
            .broker
            .hold_lease(key, context, held, self.stop.subscribe())
            .await?;
        self.tasks.lock().expect("tasks lock").push(task);
        Ok(())
    }

    /// Stops heartbeats (removing this node from the members), watches and checkpoints, then
    /// the node.
    pub async fn shutdown(&self) -> Result<(), ClusterError> {
        self.stop.send_replace(true);
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for task in tasks {
            // Each task returns promptly on stop; the heartbeat deletes its entry first.
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("a cluster task did not stop within 5 s");
            }
        }
        self.node.shutdown().await?;
        Ok(())
    }
}

/// Takes the group's checkpoints: the ready replica of the group with the smallest node id
/// does, every `checkpoint_interval_secs`.
struct Checkpointer {
    node: Node,
    routes: Arc<Routes>,
    log: Arc<dyn Log>,
    meta: Arc<dyn KvStore>,
    objects: Arc<dyn Objects>,
    config: ClusterConfig,
}

impl Checkpointer {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let interval = Duration::from_secs(self.config.checkpoint_interval_secs);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if !self.node.is_ready() || !self.is_checkpointer() {
                continue;
            }
            match checkpoint::take(
                &self.node,
                self.meta.as_ref(),
                self.objects.as_ref(),
                self.config.group,
                self.config.checkpoints_kept,
            )
            .await
            {
                Ok(manifest) => {
                    tracing::info!(
                        checkpoint = manifest.id,
                        bytes = manifest.bytes(),
                        "stored a checkpoint"
                    );
                    metrics_checkpoint(&manifest);
                    self.truncate(&manifest).await;
                }
                Err(e) => tracing::warn!(error = %e, "checkpoint failed"),
            }
        }
    }

    fn is_checkpointer(&self) -> bool {
        let me = self.routes.self_id();
        self.routes
            .live()
            .iter()
            .filter(|s| s.member.group == self.config.group && s.member.ready)
            .map(|s| s.member.node_id.as_str())
            .min()
            == Some(me)
    }

    /// Drops log entries the checkpoint and every live replica of the group have applied,
    /// keeping `log_retain_entries` more and whatever this node's log holds keep.
    async fn truncate(&self, manifest: &Manifest) {
        let retain = self.config.log_retain_entries;
        if retain == 0 {
            return;
        }
        let live = self.routes.live();
        for &(p, applied) in &manifest.applied {
            let p = PartitionId(p);
            let floor = live
                .iter()
                .filter(|s| s.member.group == self.config.group)
                .map(|s| s.member.applied(p).0)
                .fold(applied, u64::min);
            let mut before = floor.saturating_sub(retain) + 1;
            if let Some(hold) = self.node.log_hold(p) {
                // Another reader (the transmitter) still needs these entries.
                before = before.min(hold.0);
            }
            if before > 1 {
                if let Err(e) = self.log.truncate_before(p, Seq(before)).await {
                    tracing::warn!(partition = %p, error = %e, "log truncation failed");
                }
            }
        }
    }
}

fn metrics_checkpoint(manifest: &Manifest) {
    metrics::counter!("notadb_checkpoints_stored_total").increment(1);
    metrics::gauge!("notadb_checkpoint_bytes").set(manifest.bytes() as f64);
}
