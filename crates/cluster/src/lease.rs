//! Leases: at most one holder per name at a time.
//!
//! On JetStream ([`hold_lease`]), a key-value bucket (`{name}_leases`) whose entries expire
//! after the member TTL. A candidate takes a free lease with `create` (which fails while a
//! live entry exists) and keeps it by updating the entry with the revision it last wrote (a
//! compare-and-set), every third of the TTL. A holder that dies stops updating; its entry
//! expires and another candidate's `create` succeeds. A holder that cannot renew gives the
//! lease up. Leases are advisory for safety: a paused holder may briefly overlap its
//! successor, so what a lease guards must also fence (the transmitter's positions do, in
//! PostgreSQL; the transaction forwarder's copies are deduplicated or skipped by position).
//!
//! On Kafka, which has no compare-and-set store that expires entries, a node competes by
//! naming the lease in its heartbeats, with the time it began to ([`hold_candidacy`]); the
//! live candidate that began first holds it, by every node's routing table. A holder that
//! dies is dropped from the tables after the member TTL and the next candidate takes over;
//! a newcomer does not displace a live holder (the start times are each node's wall clock,
//! so this holds while the clocks agree better than the gap between the starts). Tables can
//! disagree for a heartbeat interval (one node has not yet heard of a death), so two holders
//! can overlap briefly: the same advisory guarantee as above.

use crate::members::{Candidacies, Routes};
use async_nats::jetstream::kv;
use bytes::Bytes;
use notadb_record::now_micros;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Competes for `key` as `holder` until `stop`; `held` tells whether this node holds it.
/// On stop, a held lease is released so a successor need not wait for it to expire.
pub(crate) async fn hold_lease(
    store: kv::Store,
    key: String,
    holder: String,
    ttl: Duration,
    held: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let period = ttl / 3;
    let mut revision: Option<u64> = None;
    loop {
        revision = match revision {
            None => match store.create(&key, Bytes::from(holder.clone())).await {
                Ok(rev) => {
                    tracing::info!(%key, "took the lease");
                    Some(rev)
                }
                Err(_) => None,
            },
            Some(rev) => match store.update(&key, Bytes::from(holder.clone()), rev).await {
                Ok(rev) => Some(rev),
                Err(e) => {
                    tracing::warn!(%key, error = %e, "lost the lease");
                    None
                }
            },
        };
        held.send_replace(revision.is_some());
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(period) => {}
        }
    }
    if revision.is_some() {
        held.send_replace(false);
        let _ = store.delete(&key).await;
    }
}

/// Competes for `key` by naming it in this node's heartbeats until `stop`; `held` tells
/// whether this node is the first live candidate in its routing table, checked every
/// `interval`. On stop, the candidacy is withdrawn with the next heartbeat (or the departure).
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub(crate) async fn hold_candidacy(
    routes: Arc<Routes>,
    candidacies: Candidacies,
    key: String,
    interval: Duration,
    held: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let since = now_micros() as u64 / 1000;
    candidacies
        .lock()
        .expect("candidacies lock")
        .insert(key.clone(), since);
    // Hear the other candidates first, and send this candidacy, before judging.
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = tokio::time::sleep(interval * 2) => {}
    }
    while !*stop.borrow() {
        let holds = routes.lease_holder(&key).as_deref() == Some(routes.self_id());
        if holds != *held.borrow() {
            tracing::info!(%key, holds, "lease holder changed");
        }
        held.send_replace(holds);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
    held.send_replace(false);
    candidacies.lock().expect("candidacies lock").remove(&key);
}
