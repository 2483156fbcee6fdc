//! A node running as one replica of one shard group of a cluster on NATS JetStream or Kafka.

use crate::checkpoint::{self, Manifest};
use crate::config::ClusterLog;
use crate::control::{JetStreamKv, JetStreamObjects, KvStore, Objects};
use crate::error::{nats, ClusterError};
#[cfg(feature = "kafka")]
use crate::logkv::LogKv;
use crate::members::{self, Candidacies, Routes};
use crate::meta::{self, ClusterDoc, KvSchemas};
#[cfg(feature = "kafka")]
use crate::objects::DirObjects;
use crate::txn;
use crate::ClusterConfig;
use async_nats::jetstream::{self, kv};
use notadb_jetstream::JetStreamLog;
#[cfg(feature = "kafka")]
use notadb_kafka::{KafkaLog, KafkaOptions};
use notadb_log::Log;
use notadb_node::{Node, NodeBuilder, NodeConfig, TxnNotifier};
use notadb_types::{GroupId, PartitionId, Seq};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long connecting to NATS may take at start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the Kafka members and reports topics keep entries: far longer than a member's
/// TTL or a transaction's wait, short enough that a starting node reads little.
#[cfg(feature = "kafka")]
const KAFKA_SHORT_RETENTION: Duration = Duration::from_secs(3600);

/// Where other nodes and clients reach this node.
#[derive(Clone, Debug)]
pub struct Advertised {
    pub grpc_addr: String,
    pub admin_addr: String,
    /// The frame protocol's address, when the node serves it.
    pub frame_addr: Option<String>,
}

/// The broker-specific parts a cluster keeps after start-up.
enum Broker {
    JetStream {
        client: async_nats::Client,
        js: Box<jetstream::Context>,
    },
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    Kafka { reports: Arc<dyn Log> },
}

/// The stores and logs a cluster runs on, opened on its broker.
struct Backend {
    meta: Arc<dyn KvStore>,
    members: Arc<dyn KvStore>,
    objects: Arc<dyn Objects>,
    log: Arc<dyn Log>,
    sequencer: Arc<dyn Log>,
    notifier: Arc<dyn TxnNotifier>,
    broker: Broker,
}

/// A node that joined a cluster: its metadata, membership and checkpoint tasks.
pub struct Cluster {
    node: Node,
    routes: Arc<Routes>,
    log: Arc<dyn Log>,
    config: ClusterConfig,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    broker: Broker,
    candidacies: Candidacies,
}

struct Shared {
    meta: Arc<dyn KvStore>,
    members: Arc<dyn KvStore>,
    objects: Arc<dyn Objects>,
}

/// The cluster's metadata store on JetStream: the bucket `{name}_meta`.
async fn jetstream_meta(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<Arc<dyn KvStore>, ClusterError> {
    let store = meta::bucket(
        js,
        kv::Config {
            bucket: format!("{}_meta", config.jetstream.name),
            description: "notadb cluster metadata: shape, keyspaces, checkpoints".into(),
            history: 5,
            num_replicas: config.jetstream.replicas,
            ..Default::default()
        },
    )
    .await?;
    Ok(Arc::new(JetStreamKv(store)))
}

/// The Kafka topic `{topic}.{suffix}`: one partition, entries kept `retention` (`None`:
/// forever).
#[cfg(feature = "kafka")]
async fn kafka_companion(
    config: &ClusterConfig,
    suffix: &str,
    retention: Option<Duration>,
) -> Result<Arc<KafkaLog>, ClusterError> {
    let options = KafkaOptions {
        retention,
        ..config.kafka.companion(suffix)
    };
    Ok(Arc::new(KafkaLog::connect(options, 1).await?))
}

impl Backend {
    async fn open(
        config: &ClusterConfig,
        node_config: &NodeConfig,
    ) -> Result<(Backend, ClusterDoc), ClusterError> {
        match config.log {
            ClusterLog::JetStream => Backend::jetstream(config, node_config).await,
            #[cfg(feature = "kafka")]
            ClusterLog::Kafka => Backend::kafka(config, node_config).await,
            #[cfg(not(feature = "kafka"))]
            ClusterLog::Kafka => Err(ClusterError::Config(crate::config::NO_KAFKA.into())),
        }
    }

    async fn jetstream(
        config: &ClusterConfig,
        node_config: &NodeConfig,
    ) -> Result<(Backend, ClusterDoc), ClusterError> {
        let name = config.jetstream.name.clone();
        let replicas = config.jetstream.replicas;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(config.jetstream.url.as_str())
            .await
            .map_err(|e| nats(&format!("connecting to {}", config.jetstream.url), e))?;
        let js = jetstream::new(client.clone());
        let meta = jetstream_meta(&js, config).await?;
        let doc = meta::cluster_doc(
            meta.as_ref(),
            ClusterDoc::new(node_config.partitions, config.groups),
        )
        .await?;
        let members = members::members_bucket(&js, &name, config.member_ttl(), replicas).await?;
        let objects = checkpoint::object_store(&js, &name, replicas).await?;
        let log = JetStreamLog::connect(config.jetstream.clone(), doc.partitions).await?;
        let sequencer = JetStreamLog::connect(
            notadb_jetstream::JetStreamOptions {
                name: txn::sequencer_name(&name),
                // The forwarder truncates it; expiring entries it has not copied would
                // lose transactions.
                max_age: None,
                max_bytes: None,
                ..config.jetstream.clone()
            },
            1,
        )
        .await?;
        let backend = Backend {
            meta,
            members: Arc::new(JetStreamKv(members)),
            objects: Arc::new(JetStreamObjects(objects)),
            log: Arc::new(log),
            sequencer: Arc::new(sequencer),
            notifier: Arc::new(txn::NatsNotifier {
                client: client.clone(),
                name,
            }),
            broker: Broker::JetStream {
                client,
                js: Box::new(js),
            },
        };
        Ok((backend, doc))
    }

    #[cfg(feature = "kafka")]
    async fn kafka(
        config: &ClusterConfig,
        node_config: &NodeConfig,
    ) -> Result<(Backend, ClusterDoc), ClusterError> {
        let timeout = config.kafka.request_timeout;
        let meta_log = kafka_companion(config, "meta", None).await?;
        let meta: Arc<dyn KvStore> =
            Arc::new(LogKv::open(meta_log, "cluster metadata", false, timeout));
        let doc = meta::cluster_doc(
            meta.as_ref(),
            ClusterDoc::new(node_config.partitions, config.groups),
        )
        .await?;
        let members_log = kafka_companion(config, "members", Some(KAFKA_SHORT_RETENTION)).await?;
        let members: Arc<dyn KvStore> =
            Arc::new(LogKv::open(members_log, "members", true, timeout));
        let objects: Arc<dyn Objects> = match &config.checkpoint_dir {
            Some(dir) => Arc::new(DirObjects::open(dir)?),
            // Validation allows no directory only when this node takes no checkpoints. A
            // manifest another node stored is not readable here: a restore fails naming the
            // missing file.
            None => Arc::new(DirObjects::open(
                &node_config.data_dir.join("checkpoints.none"),
            )?),
        };
        let log = KafkaLog::connect(config.kafka.clone(), doc.partitions).await?;
        // Kept forever: the forwarder copies every entry, and Kafka drops entries only by
        // retention.
        let sequencer = kafka_companion(config, "seq", None).await?;
        let reports: Arc<dyn Log> =
            kafka_companion(config, "reports", Some(KAFKA_SHORT_RETENTION)).await?;
        let backend = Backend {
            meta,
            members,
            objects,
            log: Arc::new(log),
            sequencer,
            notifier: Arc::new(txn::LogNotifier {
                log: reports.clone(),
                limit: config.kafka.max_entry_bytes,
            }),
            broker: Broker::Kafka { reports },
        };
        Ok((backend, doc))
    }
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
        let (backend, doc) = Backend::open(&config, &node_config).await?;
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
        let builder = NodeBuilder::new(node_config)
            .log(log.clone())
            .sequencer(backend.sequencer)
            .forwarder_gate(forwarder_gate)
            .txn_notifier(backend.notifier)
            .owned(doc.partitions_of(config.group))
            .schemas(Arc::new(KvSchemas {
                meta: shared.meta.clone(),
            }))
            .truncate_log(false);
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
            let reports = match &cluster.broker {
                Broker::JetStream { client, .. } => {
                    txn::subscribe_reports(
                        client,
                        &cluster.config.jetstream.name,
                        cluster.node.clone(),
                        cluster.stop.subscribe(),
                    )
                    .await?
                }
                Broker::Kafka { reports } => {
                    txn::read_reports(
                        reports.clone(),
                        cluster.node.clone(),
                        cluster.stop.subscribe(),
                    )
                    .await?
                }
            };
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
        let partitions = self.node.partitioner().count();
        Ok(match self.config.log {
            ClusterLog::JetStream => {
                Arc::new(JetStreamLog::connect(self.config.jetstream.clone(), partitions).await?)
            }
            #[cfg(feature = "kafka")]
            ClusterLog::Kafka => {
                Arc::new(KafkaLog::connect(self.config.kafka.clone(), partitions).await?)
            }
            #[cfg(not(feature = "kafka"))]
            ClusterLog::Kafka => return Err(ClusterError::Config(crate::config::NO_KAFKA.into())),
        })
    }

    /// Competes for the lease `key` (one holder in the cluster at a time) until shutdown;
    /// the receiver says whether this node holds it. See `lease.rs`.
    pub async fn lease(&self, key: &str) -> Result<watch::Receiver<bool>, ClusterError> {
        let (held, rx) = watch::channel(false);
        self.hold_lease(key, held).await?;
        Ok(rx)
    }

    async fn hold_lease(&self, key: &str, held: watch::Sender<bool>) -> Result<(), ClusterError> {
        let task = match &self.broker {
            Broker::JetStream { js, .. } => {
                let store = crate::lease::lease_bucket(
                    js,
                    &self.config.jetstream.name,
                    self.config.member_ttl(),
                    self.config.jetstream.replicas,
                )
                .await?;
                tokio::spawn(crate::lease::hold_lease(
                    store,
                    key.to_string(),
                    self.routes.self_id().to_string(),
                    self.config.member_ttl(),
                    held,
                    self.stop.subscribe(),
                ))
            }
            Broker::Kafka { .. } => tokio::spawn(crate::lease::hold_candidacy(
                self.routes.clone(),
                self.candidacies.clone(),
                key.to_string(),
                self.config.heartbeat_interval(),
                held,
                self.stop.subscribe(),
            )),
        };
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
