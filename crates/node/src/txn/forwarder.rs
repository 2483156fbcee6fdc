//! The forwarder: copies the sequencer log into the participants' logs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use notadb_log::Log;
use notadb_record::{DecodeError, Record};
use notadb_txn::{Entry, TxnError, TxnInput};
use notadb_types::{PartitionId, Seq};

use super::append::{append_until_done, APPEND_RETRY};
use crate::Node;

/// Metadata key of the forwarder's position: every sequencer entry up to it is copied.
const FORWARDED_KEY: &[u8] = b"txn/forwarded";
/// Most sequencer entries the forwarder copies per read.
const FORWARD_BATCH: usize = 256;
/// How long one sequencer read waits for entries before checking for shutdown.
const FORWARD_WAIT: Duration = Duration::from_millis(200);
/// Truncate the sequencer log after this many forwarded entries.
const SEQUENCER_TRUNCATE_EVERY: u64 = 4096;

/// Copies the sequencer log into participants' logs, into each one in sequencer order (the
/// participants of a read batch in parallel), while this node is the forwarder (always on a single
/// node; in a cluster, while it holds the forwarder lease).
///
/// Copies go out with an id per (sequencer position, partition), so a backend that
/// deduplicates (JetStream) stores one copy even when two forwarders overlap or one
/// restarts. Order holds even then: a forwarder copies position `s` to a partition only after
/// its copy of every earlier position there was acknowledged, so the first copy of each
/// position lands after the first copies of the earlier ones. Later copies (outside the
/// duplicate window, or on a backend that does not deduplicate) are skipped by the executors,
/// which ignore a sequencer position not above the highest they have seen.
///
/// The position (every entry up to it copied) is stored in this node's meta after each read,
/// and the sequencer log is truncated behind it; a forwarder resumes from the later of the
/// two, so a new lease holder does not copy again what the previous one truncated.
pub(crate) async fn forward_loop(node: Node) {
    let Some(sequencer) = node.inner.txns.sequencer.clone() else {
        return;
    };
    let mut shutdown = node.inner.shutdown.subscribe();
    let mut gate = node.inner.txns.forwarder_gate.clone();
    loop {
        if let Some(gate) = gate.as_mut() {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                r = gate.wait_for(|held| *held) => if r.is_err() { return },
            }
            tracing::info!("forwarding the sequencer log");
        }
        metrics::gauge!("notadb_txn_forwarder_active").set(1.0);
        let stopped = forward(&node, &*sequencer, &mut shutdown, gate.as_mut()).await;
        metrics::gauge!("notadb_txn_forwarder_active").set(0.0);
        if stopped || gate.is_none() {
            return;
        }
        tracing::info!("stopped forwarding the sequencer log (lease lost)");
    }
}

/// Forwards until shutdown (true) or until `gate` closes (false).
async fn forward(
    node: &Node,
    sequencer: &dyn Log,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    mut gate: Option<&mut tokio::sync::watch::Receiver<bool>>,
) -> bool {
    let storage = node.inner.storage.clone();
    // RocksDB calls run on the blocking pool, not on the async workers.
    let read = {
        let storage = storage.clone();
        tokio::task::spawn_blocking(move || storage.get_meta(FORWARDED_KEY)).await
    };
    let stored = match read
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        Ok(v) => v
            .and_then(|v| v.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0),
        Err(e) => {
            tracing::error!(error = %e, "reading the forwarder's position failed; not forwarding");
            return true;
        }
    };
    let mut forwarded = Seq(stored);
    let mut truncated = Seq(0);
    let mut at_bounds = true;
    loop {
        if gate.as_ref().is_some_and(|g| !*g.borrow()) {
            return false;
        }
        if at_bounds {
            // What the log no longer holds was copied (truncation follows the copies).
            match sequencer.bounds(PartitionId(0)).await {
                Ok(b) => {
                    let before = Seq(b.first.0.saturating_sub(1));
                    // The first time, a later start is another forwarder's truncation;
                    // later, entries went before anyone forwarded them.
                    if before > forwarded && truncated > Seq(0) {
                        tracing::error!(from = %forwarded.next(), to = %before, "sequencer entries were dropped before this node forwarded them (retention settings?)");
                    }
                    forwarded = forwarded.max(before);
                    truncated = forwarded.max(Seq(1));
                    at_bounds = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the sequencer log's bounds failed, retrying");
                    tokio::select! {
                        biased;
                        _ = shutdown.changed() => return true,
                        _ = tokio::time::sleep(APPEND_RETRY) => continue,
                    }
                }
            }
        }
        let read = tokio::select! {
            biased;
            _ = shutdown.changed() => return true,
            read = sequencer.read(PartitionId(0), forwarded.next(), FORWARD_BATCH, FORWARD_WAIT) => read,
        };
        let entries = match read {
            Ok(entries) => entries,
            Err(notadb_log::LogError::Truncated { .. }) => {
                at_bounds = true;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the sequencer log failed, retrying");
                tokio::time::sleep(APPEND_RETRY).await;
                continue;
            }
        };
        let Some(mut last) = entries.last().map(|e| e.seq) else {
            continue;
        };
        // A sequencer entry of a newer format than this build reads: forwarding stops before
        // it (skipping it would lose the transaction) until an upgraded node forwards it.
        let mut newer = false;
        // Per participant, its copies in sequencer order; participants in parallel, each
        // one's copies one after the other (the order the executors rely on).
        let mut copies: BTreeMap<PartitionId, Vec<(String, Vec<u8>)>> = BTreeMap::new();
        for entry in entries {
            let (ts_micros, input) = match sequenced_txn(&entry.payload) {
                Ok(decoded) => decoded,
                Err(Unusable::Malformed(message)) => {
                    tracing::error!(seq = %entry.seq, %message, "skipping a malformed sequencer entry");
                    continue;
                }
                Err(Unusable::Newer(message)) => {
                    tracing::error!(seq = %entry.seq, %message, "not forwarding past a sequencer entry this build cannot read");
                    last = Seq(entry.seq.0 - 1);
                    newer = true;
                    break;
                }
            };
            let payload = Record::Txn {
                ts_micros,
                entry: Entry::encode_txn(&input, Some(entry.seq)),
            }
            .encode();
            let id = format!("txn-{}", entry.seq.0);
            for p in input.participants() {
                copies
                    .entry(p)
                    .or_default()
                    .push((id.clone(), payload.clone()));
            }
        }
        let copied = futures::future::join_all(copies.into_iter().map(|(p, list)| {
            let mut shutdown = shutdown.clone();
            async move {
                for (id, payload) in list {
                    let log = &**node.inner.partitions.log();
                    let seq = loop {
                        match append_until_done(log, p, Some(&id), &payload, &mut shutdown).await {
                            Ok(seq) => break seq?,
                            // The copy has its sequencer entry's size, so this is the log
                            // refusing what it accepted before: nothing to skip to.
                            Err(e) => {
                                tracing::error!(partition = %p, copy = %id, error = %e, "the forwarder cannot copy a sequencer entry; retrying");
                                tokio::select! {
                                    biased;
                                    _ = shutdown.changed() => return None,
                                    _ = tokio::time::sleep(APPEND_RETRY * 10) => {}
                                }
                            }
                        }
                    };
                    node.partition(p).appended(seq);
                }
                Some(())
            }
        }))
        .await;
        if copied.iter().any(Option::is_none) {
            return true;
        }
        if newer {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return true,
                _ = tokio::time::sleep(APPEND_RETRY * 10) => {}
            }
            if last <= forwarded {
                continue;
            }
        }
        forwarded = last;
        let stored = {
            let storage = storage.clone();
            tokio::task::spawn_blocking(move || {
                let mut batch = storage.batch();
                batch.put_meta(FORWARDED_KEY, &forwarded.0.to_be_bytes());
                storage.commit(batch, false).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, "storing the forwarder's position failed");
        }
        if forwarded.0 - truncated.0 >= SEQUENCER_TRUNCATE_EVERY {
            if let Err(e) = sequencer
                .truncate_before(PartitionId(0), forwarded.next())
                .await
            {
                tracing::warn!(error = %e, "truncating the sequencer log failed");
            }
            truncated = forwarded;
        }
        if let Some(gate) = gate.as_deref_mut() {
            if gate.has_changed().is_err() {
                return true;
            }
        }
    }
}

/// Why a sequencer entry holds no transaction to forward.
enum Unusable {
    /// Bytes no build reads: skipped.
    Malformed(String),
    /// A format newer than this build reads: forwarding waits for an upgraded node.
    Newer(String),
}

/// The transaction a sequencer entry holds, with its append time.
fn sequenced_txn(payload: &[u8]) -> Result<(i64, Arc<TxnInput>), Unusable> {
    let record = Record::decode(payload).map_err(|e| match e {
        DecodeError::Newer { .. } => Unusable::Newer(e.to_string()),
        DecodeError::Malformed(_) => Unusable::Malformed(e.to_string()),
    })?;
    let Record::Txn { ts_micros, entry } = record else {
        return Err(Unusable::Malformed("not a transaction record".into()));
    };
    match Entry::decode(&entry) {
        Ok(Entry::Txn { input, .. }) => Ok((ts_micros, input)),
        Ok(_) => Err(Unusable::Malformed("not a transaction".into())),
        Err(e @ TxnError::Newer { .. }) => Err(Unusable::Newer(e.to_string())),
        Err(e) => Err(Unusable::Malformed(e.to_string())),
    }
}
