//! Runs the node's transmitter: always active on a single node; in a cluster, active on the
//! replica of each shard group that holds the group's lease, standing by on the others.

use crate::ServerError;
use async_trait::async_trait;
use notadb_cluster::Cluster;
use notadb_log::Log;
use notadb_node::Node;
use notadb_proto::v1;
use notadb_record::{KeyspaceDef, Record};
use notadb_transmitter::{Host, HostError, Transmitter, TransmitterConfig};
use notadb_types::{PartitionId, Seq};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The node a transmitter runs beside.
struct NodeHost(Node);

#[async_trait]
impl Host for NodeHost {
    fn hold_log(&self, holder: &str, partition: PartitionId, from: Seq) {
        self.0.hold_log(holder, partition, from);
    }

    fn keyspaces(&self) -> Vec<KeyspaceDef> {
        let infos = self.0.list_keyspaces();
        infos
            .into_iter()
            .map(|i| KeyspaceDef::clone(&i.def))
            .collect()
    }

    async fn txn_effects(
        &self,
        partition: PartitionId,
        seq: Seq,
        record: &Record,
    ) -> Result<Option<Record>, HostError> {
        Ok(self.0.txn_effects(partition, seq, record).await?)
    }
}

/// Starts the transmitter for the node's partitions; the task ends when `stop` fires.
pub async fn start(
    config: TransmitterConfig,
    node: &Node,
    cluster: Option<&Arc<Cluster>>,
    stop: watch::Receiver<bool>,
) -> Result<(Transmitter, JoinHandle<()>), ServerError> {
    let partitions = node.owned_partitions();
    let (log, lease): (Arc<dyn Log>, _) = match cluster {
        None => (node.log(), None),
        Some(c) => (
            c.open_log().await?,
            Some(c.lease(&format!("transmitter.group{}", c.group())).await?),
        ),
    };
    let t = Transmitter::new(config, log, Arc::new(NodeHost(node.clone())), partitions)
        .map_err(|e| ServerError::Transmitter(e.to_string()))?;
    let task = tokio::spawn({
        let t = t.clone();
        async move {
            match lease {
                // A single node always writes.
                None => t.run_active(stop).await,
                Some(held) => drive(t, held, stop).await,
            }
        }
    });
    Ok((t, task))
}

/// In a cluster: stands by while the lease is held elsewhere and writes while it is held
/// here.
async fn drive(t: Transmitter, mut held: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
    loop {
        for active in [false, true] {
            let (quit, quit_rx) = watch::channel(false);
            let run = {
                let t = t.clone();
                tokio::spawn(async move {
                    if active {
                        t.run_active(quit_rx).await
                    } else {
                        t.run_standby(quit_rx).await
                    }
                })
            };
            let stopped = tokio::select! {
                _ = stop.wait_for(|s| *s) => true,
                r = held.wait_for(|h| *h != active) => r.is_err(),
            };
            quit.send_replace(true);
            let _ = run.await;
            if stopped {
                return;
            }
        }
    }
}

/// The transmitter's status for the `Status` RPC.
pub fn status_to_proto(t: &Transmitter) -> v1::TransmitterStatus {
    let s = t.status();
    v1::TransmitterStatus {
        active: s.active,
        partitions: s
            .partitions
            .iter()
            .map(|p| v1::TransmitterPartition {
                partition: u32::from(p.partition.0),
                transmitted_seq: p.transmitted.0,
                last_seq: p.last.0,
                lag_records: p.lag_records,
                lag_seconds: p.lag_seconds,
            })
            .collect(),
        rows: s.rows,
        dead_letters: s.dead_letters,
        retries: s.retries,
        last_error: s.last_error.unwrap_or_default(),
    }
}
