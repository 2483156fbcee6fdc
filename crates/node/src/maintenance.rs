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
        let applied: Vec<_> = node.inner.partitions.applied().collect();
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
            if let Err(e) = node.inner.partitions.log().truncate_before(p, before).await {
                tracing::warn!(partition = %p, error = %e, "log truncation failed");
            }
        }
    }
}

/// Memtable bytes below which an idle flush is not worth a table file.
const IDLE_FLUSH_MIN_BYTES: u64 = 1 << 20;

/// Flushes the memtables to table files and compacts level 0 (`Node::settle_storage`) once
/// no partition has applied anything for `flush_idle_secs`: after a bulk load, point reads
/// then search hash-indexed blocks behind bloom filters instead of a large skip list, and a
/// range read seeks one file per level. Housekeeping, not apply: the data does not change.
pub async fn idle_flush_loop(node: Node) {
    let idle_for = node.config().flush_idle();
    let Some(idle_for) = idle_for else {
        return;
    };
    let tick = (idle_for / 4).max(std::time::Duration::from_millis(100));
    let applied = |node: &Node| -> u64 {
        node.inner
            .partitions
            .applied()
            .map(|(_, seq)| seq.0)
            .fold(0u64, u64::wrapping_add)
    };
    let mut last = applied(&node);
    let mut quiet_since = tokio::time::Instant::now();
    // Once after start too: a restarted node may find level-0 files to compact.
    let mut flushed = false;
    loop {
        tokio::time::sleep(tick).await;
        let now = applied(&node);
        if now != last {
            (last, quiet_since, flushed) = (now, tokio::time::Instant::now(), false);
            continue;
        }
        if flushed || quiet_since.elapsed() < idle_for {
            continue;
        }
        flushed = true;
        let storage = &node.inner.storage;
        if storage.memtable_bytes() < IDLE_FLUSH_MIN_BYTES && storage.level0_files() <= 1 {
            continue;
        }
        match node.settle_storage().await {
            Ok(()) => tracing::debug!("flushed and compacted level 0 after writes went quiet"),
            Err(e) => tracing::warn!(error = %e, "idle flush and compaction failed"),
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
