//! A cluster on Kafka: the metadata and members stores are [`LogKv`] state machines over the
//! one-partition topics `{topic}.meta` and `{topic}.members`, checkpoints go to the shared
//! directory `checkpoint_dir` ([`DirObjects`]), the partition log is a [`KafkaLog`] on
//! `{topic}` and the sequencer one on `{topic}.seq`, and reports of finished transactions are
//! appended to `{topic}.reports` ([`txn::LogNotifier`], read by [`txn::read_reports`]).
//! Leases are candidacies named in heartbeats ([`hold_candidacy`](crate::lease::hold_candidacy)).

use super::{Backend, Broker, LeaseContext};
use crate::control::{KvStore, Objects};
use crate::error::ClusterError;
use crate::logkv::LogKv;
use crate::meta::{self, ClusterDoc};
use crate::objects::DirObjects;
use crate::{txn, ClusterConfig};
use notadb_kafka::{KafkaLog, KafkaOptions};
use notadb_log::Log;
use notadb_node::{Node, NodeConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the members and reports topics keep entries: far longer than a member's TTL or a
/// transaction's wait, short enough that a starting node reads little.
const SHORT_RETENTION: Duration = Duration::from_secs(3600);

/// Opens the cluster's topics and checkpoint directory.
pub(crate) async fn open(
    config: &ClusterConfig,
    node_config: &NodeConfig,
) -> Result<(Backend, ClusterDoc), ClusterError> {
    let timeout = config.kafka.request_timeout;
    let meta_log = companion(config, "meta", None).await?;
    let meta: Arc<dyn KvStore> =
        Arc::new(LogKv::open(meta_log, "cluster metadata", false, timeout));
    let doc = meta::cluster_doc(
        meta.as_ref(),
        ClusterDoc::new(node_config.partitions, config.groups),
    )
    .await?;
    let members_log = companion(config, "members", Some(SHORT_RETENTION)).await?;
    let members: Arc<dyn KvStore> = Arc::new(LogKv::open(members_log, "members", true, timeout));
    let objects: Arc<dyn Objects> = match &config.checkpoint_dir {
        Some(dir) => Arc::new(DirObjects::open(dir)?),
        // Validation allows no directory only when this node takes no checkpoints. A manifest
        // another node stored is not readable here: a restore fails naming the missing file.
        None => Arc::new(DirObjects::open(
            &node_config.data_dir.join("checkpoints.none"),
        )?),
    };
    let log = KafkaLog::connect(config.kafka.clone(), doc.partitions).await?;
    // Kept forever: the forwarder copies every entry, and Kafka drops entries only by
    // retention.
    let sequencer = companion(config, "seq", None).await?;
    let reports: Arc<dyn Log> = companion(config, "reports", Some(SHORT_RETENTION)).await?;
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
        broker: Box::new(KafkaBroker {
            options: config.kafka.clone(),
            reports,
        }),
    };
    Ok((backend, doc))
}

/// The topic `{topic}.{suffix}`: one partition, entries kept `retention` (`None`: forever).
async fn companion(
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

/// What a running cluster asks of Kafka.
struct KafkaBroker {
    options: KafkaOptions,
    reports: Arc<dyn Log>,
}

#[async_trait::async_trait]
impl Broker for KafkaBroker {
    async fn open_log(&self, partitions: u16) -> Result<Arc<dyn Log>, ClusterError> {
        Ok(Arc::new(
            KafkaLog::connect(self.options.clone(), partitions).await?,
        ))
    }

    async fn receive_reports(
        &self,
        node: Node,
        stop: watch::Receiver<bool>,
    ) -> Result<JoinHandle<()>, ClusterError> {
        txn::read_reports(self.reports.clone(), node, stop).await
    }

    async fn hold_lease(
        &self,
        key: &str,
        context: LeaseContext,
        held: watch::Sender<bool>,
        stop: watch::Receiver<bool>,
    ) -> Result<JoinHandle<()>, ClusterError> {
        Ok(tokio::spawn(crate::lease::hold_candidacy(
            context.routes,
            context.candidacies,
            key.to_string(),
            context.config.heartbeat_interval(),
            held,
            stop,
        )))
    }
}
