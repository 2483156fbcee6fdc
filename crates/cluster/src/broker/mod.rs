//! What a cluster runs on, opened on its broker. [`open`] is the one place that tells the
//! brokers apart: it returns a [`Backend`] (the stores, the logs and the transaction notifier,
//! as traits) and a [`Broker`] for what the cluster asks of it later (a second log connection,
//! the reports addressed to this node, leases). The rest of the crate reads the same for every
//! broker.
//!
//! - [`jetstream`]: key-value buckets, the object store, core NATS for reports, leases as
//!   bucket entries that expire.
//! - `kafka`: [`LogKv`](crate::LogKv) state machines over one-partition topics, a shared
//!   checkpoint directory ([`DirObjects`](crate::DirObjects)), a reports topic, leases named
//!   in heartbeats.

pub(crate) mod jetstream;
#[cfg(feature = "kafka")]
pub(crate) mod kafka;

use crate::config::ClusterLog;
use crate::control::{KvStore, Objects};
use crate::error::ClusterError;
use crate::members::{Candidacies, Routes};
use crate::meta::ClusterDoc;
use crate::ClusterConfig;
use notadb_log::Log;
use notadb_node::{Node, NodeConfig, TxnNotifier};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The stores and logs a cluster runs on.
pub(crate) struct Backend {
    /// The metadata store: shape, keyspaces, caches, checkpoint manifests.
    pub meta: Arc<dyn KvStore>,
    /// The members' heartbeats.
    pub members: Arc<dyn KvStore>,
    /// Checkpoint files.
    pub objects: Arc<dyn Objects>,
    /// The partition log.
    pub log: Arc<dyn Log>,
    /// The transaction sequencer's one-partition log.
    pub sequencer: Arc<dyn Log>,
    /// Sends reports of finished transactions to the nodes that submitted them.
    pub notifier: Arc<dyn TxnNotifier>,
    /// The rest of what the cluster asks of the broker.
    pub broker: Box<dyn Broker>,
}

/// What a lease holder needs of the cluster: its routing table (the holder's id; on Kafka,
/// the other candidates), the candidacies its heartbeats carry, and its timing.
pub(crate) struct LeaseContext {
    pub routes: Arc<Routes>,
    pub candidacies: Candidacies,
    pub config: ClusterConfig,
}

/// What a running cluster asks of its broker.
#[async_trait::async_trait]
pub(crate) trait Broker: Send + Sync + 'static {
    /// A second connection to the partition log (`partitions` partitions), for a reader
    /// outside the apply loops.
    async fn open_log(&self, partitions: u16) -> Result<Arc<dyn Log>, ClusterError>;

    /// Passes the reports of finished transactions addressed to `node` to it, until `stop`.
    async fn receive_reports(
        &self,
        node: Node,
        stop: watch::Receiver<bool>,
    ) -> Result<JoinHandle<()>, ClusterError>;

    /// Competes for the lease `key` (at most one holder in the cluster at a time, see
    /// `lease.rs`) until `stop`; `held` says whether this node holds it.
    async fn hold_lease(
        &self,
        key: &str,
        context: LeaseContext,
        held: watch::Sender<bool>,
        stop: watch::Receiver<bool>,
    ) -> Result<JoinHandle<()>, ClusterError>;
}

/// Connects to the broker `config` names, opens the cluster's stores and logs, and writes or
/// checks the cluster's shape.
pub(crate) async fn open(
    config: &ClusterConfig,
    node_config: &NodeConfig,
) -> Result<(Backend, ClusterDoc), ClusterError> {
    match config.log {
        ClusterLog::JetStream => jetstream::open(config, node_config).await,
        #[cfg(feature = "kafka")]
        ClusterLog::Kafka => kafka::open(config, node_config).await,
        #[cfg(not(feature = "kafka"))]
        ClusterLog::Kafka => Err(ClusterError::Config(crate::config::NO_KAFKA.into())),
    }
}
