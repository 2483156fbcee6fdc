use crate::Limits;
use notadb_log::{EmbeddedLogOptions, FsyncPolicy};
use notadb_storage::StorageOptions;
use notadb_types::partition::DEFAULT_PARTITIONS;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Default most entries one apply step takes from the log.
pub const DEFAULT_APPLY_BATCH: usize = 1024;

/// How a node stores and applies data. Loaded from the `[node]` table of the config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name in logs, metrics and status.
    pub node_id: String,
    /// Where RocksDB (`data_dir/db`) and the embedded log (`data_dir/log`) live.
    pub data_dir: PathBuf,
    /// Partition count, fixed when the data directory is created.
    pub partitions: u16,
    /// Request limits.
    pub limits: Limits,
    /// RocksDB shared block cache, MiB.
    pub block_cache_mb: usize,
    /// RocksDB memtable budget for the whole instance, MiB.
    pub write_buffer_mb: usize,
    /// Point cache for `Get`, MiB: stored values of recently read keys, answered without
    /// RocksDB's block lookups; 0 turns it off.
    pub point_cache_mb: usize,
    /// Row cache for `Scan` and `Aggregate` inside one partition key, MiB: every row of
    /// recently read partition keys, searched in memory without a RocksDB iterator; 0 turns
    /// it off.
    pub row_cache_mb: usize,
    /// Largest partition key the row cache keeps, KiB of keys and values; ranges of larger
    /// ones are read from RocksDB.
    pub row_cache_max_group_kb: usize,
    /// Flush memtables to table files and compact level 0 once nothing was applied for this
    /// many seconds (reads of table files cost less than a large memtable's, and a seek
    /// then searches one file per level); 0: only when full.
    pub flush_idle_secs: u64,
    /// Embedded log fsync policy: `always`, `never` or `interval:<ms>ms`.
    pub log_fsync: String,
    /// Embedded log segment size, MiB.
    pub log_segment_mb: u64,
    /// The newest embedded log entries kept in memory for the apply loop, MiB, shared evenly
    /// among partitions.
    pub log_tail_mb: usize,
    /// Entries each partition keeps in the embedded log behind its applied position.
    pub log_retain_entries: u64,
    /// How often applied log entries are truncated, seconds.
    pub log_truncate_interval_secs: u64,
    /// Most entries one apply step takes from the log.
    pub apply_batch: usize,
    /// Appends each partition runs at once; writes arriving while all are busy wait and go
    /// together as one log entry.
    pub append_in_flight: usize,
    /// Largest log entry coalesced writes make, KiB (a larger write goes alone); 0 turns
    /// coalescing off, so every write is its own entry. Writes are never coalesced on the
    /// embedded log, whose group commit already gives concurrent appends one `fdatasync`.
    pub append_coalesce_kb: usize,
    /// `/readyz` answers 503 while any owned partition is more than this many entries behind
    /// the end of its log.
    pub ready_max_lag_records: u64,
    /// `/readyz` answers 503 while any owned partition applies entries older than this,
    /// seconds.
    pub ready_max_lag_secs: f64,
    /// Transactions: run selective contention analysis when a partition's executor would
    /// otherwise wait (finds blocked transactions that can run early).
    pub txn_sca: bool,
    /// Transactions: most entries a partition's executor holds blocked at once; later entries
    /// wait unread in order.
    pub txn_max_blocked: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let storage = StorageOptions::default();
        NodeConfig {
            node_id: "node-1".into(),
            data_dir: PathBuf::from("notadb-data"),
            partitions: DEFAULT_PARTITIONS,
            limits: Limits::default(),
            block_cache_mb: storage.block_cache_bytes >> 20,
            write_buffer_mb: storage.write_buffer_bytes >> 20,
            point_cache_mb: storage.point_cache_bytes >> 20,
            row_cache_mb: storage.row_cache_bytes >> 20,
            row_cache_max_group_kb: storage.max_group_bytes >> 10,
            flush_idle_secs: 5,
            log_fsync: "always".into(),
            log_segment_mb: 64,
            log_tail_mb: notadb_log::DEFAULT_TAIL_BYTES >> 20,
            log_retain_entries: 10_000,
            log_truncate_interval_secs: 60,
            apply_batch: DEFAULT_APPLY_BATCH,
            append_in_flight: 1,
            append_coalesce_kb: 256,
            ready_max_lag_records: 1000,
            ready_max_lag_secs: 5.0,
            txn_sca: true,
            txn_max_blocked: notadb_txn::DEFAULT_MAX_BLOCKED,
        }
    }
}

impl NodeConfig {
    /// The transaction executors' settings.
    pub fn executor_config(&self) -> notadb_txn::ExecutorConfig {
        notadb_txn::ExecutorConfig {
            sca: self.txn_sca,
            max_blocked: self.txn_max_blocked.max(1),
        }
    }

    /// RocksDB options from this configuration.
    pub fn storage_options(&self) -> StorageOptions {
        StorageOptions {
            block_cache_bytes: self.block_cache_mb << 20,
            write_buffer_bytes: self.write_buffer_mb << 20,
            point_cache_bytes: self.point_cache_mb << 20,
            row_cache_bytes: self.row_cache_mb << 20,
            max_group_bytes: self.row_cache_max_group_kb << 10,
            ..StorageOptions::default()
        }
    }

    /// Embedded log options from this configuration.
    pub fn log_options(&self) -> Result<EmbeddedLogOptions, String> {
        let fsync: FsyncPolicy = self
            .log_fsync
            .parse()
            .map_err(|e| format!("log_fsync: {e}"))?;
        Ok(EmbeddedLogOptions {
            fsync,
            segment_bytes: self.log_segment_mb << 20,
            tail_bytes: self.log_tail_mb << 20,
            // A log entry holds at most one write batch plus framing.
            max_entry_bytes: self.limits.max_batch_bytes + (64 << 10),
        })
    }

    /// `flush_idle_secs` as a duration; `None` when idle flushes are off.
    pub fn flush_idle(&self) -> Option<Duration> {
        (self.flush_idle_secs > 0).then(|| Duration::from_secs(self.flush_idle_secs))
    }

    /// `log_truncate_interval_secs` as a duration.
    pub fn log_truncate_interval(&self) -> Duration {
        Duration::from_secs(self.log_truncate_interval_secs.max(1))
    }
}
