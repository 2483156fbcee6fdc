//! The node's partitions: which ones it serves, each one's apply progress, the log they are
//! appended to, and the holds that keep log entries for readers outside the apply loops.

use crate::coalesce::Coalescer;
use crate::replica::PartitionState;
use crate::{Node, NodeError, PartitionStatus};
use notadb_log::{Log, LogError};
use notadb_types::{PartitionId, Seq};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Every partition's state (served or not), the log and the appends this node makes to it.
pub(crate) struct Partitions {
    states: Vec<Arc<PartitionState>>,
    /// `owned[p]`: whether this node applies and serves partition `p`.
    owned: Vec<bool>,
    log: Arc<dyn Log>,
    /// The log failed in a way retries will not fix (its writer stopped).
    log_failed: AtomicBool,
    /// Per reader outside the apply loops (the transmitter) and partition: the oldest seq it
    /// still needs. Truncation keeps those entries.
    holds: Mutex<BTreeMap<(String, PartitionId), Seq>>,
    /// Concurrent writes to a partition waiting to be appended as one entry.
    pub coalescer: Coalescer,
    /// Appends this node asked of the log (retries inside the log not counted again).
    appends: metrics::Counter,
}

impl Partitions {
    /// `states` holds one state per partition, in order; `owned[p]` says whether `p` is served.
    pub fn new(
        states: Vec<Arc<PartitionState>>,
        owned: Vec<bool>,
        log: Arc<dyn Log>,
        coalescer: Coalescer,
    ) -> Partitions {
        Partitions {
            states,
            owned,
            log,
            log_failed: AtomicBool::new(false),
            holds: Mutex::new(BTreeMap::new()),
            coalescer,
            appends: metrics::counter!("notadb_log_appends_total"),
        }
    }

    /// The state of partition `p`.
    pub fn get(&self, p: PartitionId) -> &Arc<PartitionState> {
        &self.states[p.0 as usize]
    }

    /// Whether this node applies and serves partition `p`.
    pub fn owns(&self, p: PartitionId) -> bool {
        self.owned.get(p.0 as usize).copied().unwrap_or(false)
    }

    /// The states of the partitions this node serves.
    pub fn served(&self) -> impl Iterator<Item = &Arc<PartitionState>> {
        self.states.iter().filter(|s| self.owns(s.id))
    }

    /// Every partition's applied seq, served or not (unserved ones stay where storage was).
    pub fn applied(&self) -> impl Iterator<Item = (PartitionId, Seq)> + '_ {
        self.states.iter().map(|s| (s.id, s.applied()))
    }

    /// The log the partitions are appended to and applied from.
    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    /// Appends to the log, noting failures that retries will not fix.
    pub async fn append(&self, p: PartitionId, payload: Vec<u8>) -> Result<Seq, NodeError> {
        self.appends.increment(1);
        match self.log.append(p, payload.into()).await {
            Ok(seq) => {
                self.get(p).appended(seq);
                Ok(seq)
            }
            Err(e) => {
                if matches!(e, LogError::Io(_) | LogError::Closed) {
                    tracing::error!(error = %e, "the log failed; the node is unhealthy");
                    self.log_failed.store(true, Ordering::Release);
                }
                Err(e.into())
            }
        }
    }

    /// Keeps entries of `p` from `from` on for `holder`; replaces its previous hold on `p`.
    pub fn hold(&self, holder: &str, p: PartitionId, from: Seq) {
        self.holds
            .lock()
            .expect("log holds lock")
            .insert((holder.to_string(), p), from);
    }

    /// The oldest seq of `p` any holder still needs.
    pub fn oldest_hold(&self, p: PartitionId) -> Option<Seq> {
        self.holds
            .lock()
            .expect("log holds lock")
            .iter()
            .filter(|((_, q), _)| *q == p)
            .map(|(_, seq)| *seq)
            .min()
    }

    /// The progress of every served partition.
    pub fn statuses(&self) -> Vec<PartitionStatus> {
        self.served()
            .map(|s| PartitionStatus {
                partition: s.id,
                applied: s.applied(),
                last: s.last_seq(),
                lag_records: s.lag_records(),
                lag_seconds: s.lag_seconds(),
                failed: s.is_failed(),
            })
            .collect()
    }

    /// Whether the log works and no partition's apply stopped on an error.
    pub fn healthy(&self) -> bool {
        !self.log_failed.load(Ordering::Acquire) && self.states.iter().all(|s| !s.is_failed())
    }

    /// Whether every served partition is within these lag bounds.
    pub fn caught_up(&self, max_lag_records: u64, max_lag_secs: f64) -> bool {
        self.served()
            .all(|s| s.is_ready(max_lag_records, max_lag_secs))
    }
}

impl Node {
    pub(crate) fn partition(&self, p: PartitionId) -> &Arc<PartitionState> {
        self.inner.partitions.get(p)
    }

    /// Appends to the log, noting failures that retries will not fix.
    pub(crate) async fn append(&self, p: PartitionId, payload: Vec<u8>) -> Result<Seq, NodeError> {
        self.inner.partitions.append(p, payload).await
    }

    /// Whether this node applies and serves partition `p`.
    pub fn owns(&self, p: PartitionId) -> bool {
        self.inner.partitions.owns(p)
    }

    /// The partitions this node applies and serves.
    pub fn owned_partitions(&self) -> Vec<PartitionId> {
        self.inner.partitions.served().map(|s| s.id).collect()
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
            let last = self.inner.partitions.log().bounds(p).await?.last;
            self.partition(p).appended(last);
        }
        Ok(())
    }

    /// The log this node applies from.
    pub fn log(&self) -> Arc<dyn Log> {
        self.inner.partitions.log().clone()
    }

    /// Keeps entries of `p` from `from` on in the log for `holder`, a reader outside the apply
    /// loops (e.g. the transmitter); replaces the holder's previous hold on `p`.
    pub fn hold_log(&self, holder: &str, p: PartitionId, from: Seq) {
        self.inner.partitions.hold(holder, p, from);
    }

    /// The oldest seq of `p` any holder still needs.
    pub fn log_hold(&self, p: PartitionId) -> Option<Seq> {
        self.inner.partitions.oldest_hold(p)
    }
}
