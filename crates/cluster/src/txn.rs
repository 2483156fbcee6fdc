//! Transactions in a cluster: the sequencer log is a one-partition JetStream log beside the
//! partition logs; one node at a time forwards it (the `txn.forwarder` lease); replicas report
//! finished transactions over NATS to the node that submitted them.
//!
//! Reports use core NATS (at most once): the subject `{name}.txn.done.{origin}` carries
//! [`encode_report`] bytes, and each node subscribes to its own origin tag. A lost report
//! leaves the client to time out with the transaction's id (it may have committed); every
//! replica of every participant reports, so one replica's crash loses nothing.

use async_nats::Client;
use futures::StreamExt;
use notadb_node::{decode_report, encode_report, Finished, Node, Outcome, TxnNotifier};
use notadb_types::PartitionId;
use std::collections::BTreeMap;
use tokio::sync::watch;

use crate::error::{nats, ClusterError};

/// The name of the forwarder's lease.
pub(crate) const FORWARDER_LEASE: &str = "txn.forwarder";

/// Name of the sequencer log's stream prefix for a cluster named `name`.
pub(crate) fn sequencer_name(name: &str) -> String {
    format!("{name}_seq")
}

fn subject(name: &str, origin: u32) -> String {
    format!("{name}.txn.done.{origin:08x}")
}

/// About how many bytes `f` adds to a report.
fn report_size(f: &Finished) -> usize {
    let outcome = match &f.outcome {
        None => 0,
        Some(Outcome::Committed { output }) => output.len(),
        Some(Outcome::Aborted { reason }) => reason.len(),
        Some(Outcome::Restart { key }) => key.key.len() + 4,
    };
    32 + outcome
}

/// Publishes reports of finished transactions, one message per origin and applied batch.
pub(crate) struct NatsNotifier {
    pub client: Client,
    pub name: String,
}

impl TxnNotifier for NatsNotifier {
    fn finished(&self, partition: PartitionId, finished: &[Finished]) {
        let mut by_origin: BTreeMap<u32, Vec<&Finished>> = BTreeMap::new();
        for f in finished {
            by_origin.entry(f.txn.origin()).or_default().push(f);
        }
        // Messages stay well under NATS's payload limit (1 MiB by default): a report holds
        // outputs and abort reasons.
        let limit = (self.client.server_info().max_payload / 2).max(1);
        for (origin, list) in by_origin {
            let mut start = 0;
            while start < list.len() {
                let mut end = start + 1;
                let mut size = report_size(list[start]);
                while end < list.len() && size + report_size(list[end]) <= limit {
                    size += report_size(list[end]);
                    end += 1;
                }
                let client = self.client.clone();
                let subject = subject(&self.name, origin);
                let payload = encode_report(partition, &list[start..end]);
                tokio::spawn(async move {
                    if let Err(e) = client.publish(subject, payload.into()).await {
                        tracing::warn!(error = %e, "publishing a transaction report failed");
                    }
                });
                start = end;
            }
        }
    }
}

/// Passes the reports addressed to this node to it, until `stop`.
pub(crate) async fn subscribe_reports(
    client: &Client,
    name: &str,
    node: Node,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ClusterError> {
    let mut sub = client
        .subscribe(subject(name, node.txn_origin()))
        .await
        .map_err(|e| nats("subscribing to transaction reports", e))?;
    Ok(tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                m = sub.next() => m,
            };
            let Some(message) = message else { return };
            match decode_report(&message.payload) {
                Ok((partition, finished)) => node.txn_reported(partition, &finished),
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed transaction report"),
            }
        }
    }))
}
