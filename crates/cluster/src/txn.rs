//! Transactions in a cluster: the sequencer log is a one-partition log beside the partition
//! logs; one node at a time forwards it (the `txn.forwarder` lease); replicas report finished
//! transactions to the node that submitted them.
//!
//! How a report travels is the broker's (`broker/`): core NATS on JetStream, a topic on Kafka
//! ([`LogNotifier`] and [`read_reports`], over any one-partition [`Log`]). A lost report
//! leaves the client to time out with the transaction's id (it may have committed); every
//! replica of every participant reports, so one replica's crash loses nothing.

use bytes::{BufMut, Bytes, BytesMut};
use notadb_log::Log;
use notadb_node::{decode_report, encode_report, Finished, Node, Outcome, TxnNotifier};
use notadb_types::{PartitionId, Seq};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::error::ClusterError;

/// The name of the forwarder's lease.
pub(crate) const FORWARDER_LEASE: &str = "txn.forwarder";

/// Name of the sequencer log's stream prefix for a cluster named `name`.
pub(crate) fn sequencer_name(name: &str) -> String {
    format!("{name}_seq")
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

/// Reports of `finished`, one per origin and at most about `limit` bytes each:
/// `(origin, encoded report)`.
pub(crate) fn reports(
    partition: PartitionId,
    finished: &[Finished],
    limit: usize,
) -> Vec<(u32, Vec<u8>)> {
    let mut by_origin: BTreeMap<u32, Vec<&Finished>> = BTreeMap::new();
    for f in finished {
        by_origin.entry(f.txn.origin()).or_default().push(f);
    }
    let limit = limit.max(1);
    let mut out = Vec::new();
    for (origin, list) in by_origin {
        let mut start = 0;
        while start < list.len() {
            let mut end = start + 1;
            let mut size = report_size(list[start]);
            while end < list.len() && size + report_size(list[end]) <= limit {
                size += report_size(list[end]);
                end += 1;
            }
            out.push((origin, encode_report(partition, &list[start..end])));
            start = end;
        }
    }
    out
}

/// Appends reports of finished transactions to a one-partition log, each behind its
/// origin tag (4 bytes, big-endian).
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub(crate) struct LogNotifier {
    pub log: Arc<dyn Log>,
    /// Largest report payload.
    pub limit: usize,
}

impl TxnNotifier for LogNotifier {
    fn finished(&self, partition: PartitionId, finished: &[Finished]) {
        for (origin, report) in reports(partition, finished, self.limit / 2) {
            let mut payload = BytesMut::with_capacity(4 + report.len());
            payload.put_u32(origin);
            payload.put_slice(&report);
            let log = self.log.clone();
            tokio::spawn(async move {
                if let Err(e) = log.append(PartitionId(0), payload.freeze()).await {
                    tracing::warn!(error = %e, "appending a transaction report failed");
                }
            });
        }
    }
}

/// Passes the reports in `log` addressed to this node to it, from the log's end at the call
/// until `stop`.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub(crate) async fn read_reports(
    log: Arc<dyn Log>,
    node: Node,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ClusterError> {
    let mut next = Seq(log.bounds(PartitionId(0)).await?.last.0 + 1);
    let origin = node.txn_origin();
    Ok(tokio::spawn(async move {
        loop {
            let read = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                read = log.read(PartitionId(0), next, 1024, Duration::from_millis(500)) => read,
            };
            let entries = match read {
                Ok(entries) => entries,
                Err(notadb_log::LogError::Truncated { first, .. }) => {
                    next = first;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading transaction reports failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            for entry in entries {
                next = Seq(entry.seq.0 + 1);
                let payload: Bytes = entry.payload;
                if payload.len() < 4 || payload[..4] != origin.to_be_bytes() {
                    continue;
                }
                match decode_report(&payload[4..]) {
                    Ok((partition, finished)) => node.txn_reported(partition, &finished),
                    Err(e) => tracing::warn!(error = %e, "ignoring a malformed transaction report"),
                }
            }
        }
    }))
}
