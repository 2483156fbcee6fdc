//! Background housekeeping: trimming log entries every partition has applied and made durable
//! and no other reader (`Node::hold_log`) still needs, and reporting cache hits.

use crate::Node;
use notadb_types::Seq;

/// Periodically syncs storage, then lets each partition's log drop entries more than
/// `log_retain_entries` behind the applied position. Storage is synced first, so no entry is
/// dropped before the state it produced is on disk.
pub async fn truncate_loop(node: Node) {
    let interval = node.config().log_truncate_interval();
    let retain = node.config().log_retain_entries;
    loop {
        tokio::time::sleep(interval).await;
        let applied: Vec<_> = node
            .inner
            .partitions
            .iter()
            .map(|s| (s.id, s.applied()))
            .collect();
        let storage = node.inner.storage.clone();
        match tokio::task::spawn_blocking(move || storage.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "storage sync failed; log not truncated");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "storage sync task failed");
                continue;
            }
        }
        for (p, seq) in applied {
            let mut before = Seq(seq.0.saturating_sub(retain).saturating_add(1));
            if let Some(hold) = node.log_hold(p) {
                before = before.min(hold);
            }
            if let Err(e) = node.inner.log.truncate_before(p, before).await {
                tracing::warn!(partition = %p, error = %e, "log truncation failed");
            }
        }
    }
}

/// Reports the hits cache reads noted, every `TOUCH_INTERVAL` (see `Node::report_touches`).
pub async fn touch_loop(node: Node) {
    loop {
        tokio::time::sleep(crate::TOUCH_INTERVAL).await;
        node.report_touches().await;
    }
}
