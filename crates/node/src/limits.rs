use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Request limits. Every one is checked before anything reaches the log, and a request over a
/// limit fails with `InvalidArgument` (`ResourceExhausted` for the counts of keyspaces and
/// caches) naming the limit; all are configurable.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest encoded key tuple, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most mutations in one `Write`.
    pub max_batch_mutations: usize,
    /// Largest log entry a write may produce, in bytes (keys, values and framing).
    pub max_batch_bytes: usize,
    /// Largest `limit` a scan may ask for.
    pub max_scan_limit: usize,
    /// Key and value bytes one scan may return; past it the scan stops early with `more`
    /// set (a scan always returns at least one row per partition it visits).
    pub max_scan_bytes: usize,
    /// The limit of a scan that asks for none.
    pub default_scan_limit: usize,
    /// Most keys in one `MultiGet`.
    pub max_multi_get_keys: usize,
    /// Most rows one `Aggregate` may visit.
    pub max_aggregate_rows: u64,
    /// Most groups one `Aggregate` may hold.
    pub max_aggregate_groups: usize,
    /// Longest a read waits for its tokens when the request sets no deadline, in milliseconds.
    pub max_read_wait_ms: u64,
    /// Most keyspaces; creating one more fails with `ResourceExhausted`.
    pub max_keyspaces: usize,
    /// Most caches; creating one more fails with `ResourceExhausted`.
    pub max_caches: usize,
    /// Most `capacity_bytes` of all caches together (they live in memory): a cache that
    /// would take the sum past it fails with `ResourceExhausted`.
    pub max_cache_bytes_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4 << 10,
            max_value_bytes: 1 << 20,
            max_batch_mutations: 10_000,
            max_batch_bytes: 8 << 20,
            max_scan_limit: 10_000,
            max_scan_bytes: 64 << 20,
            default_scan_limit: 100,
            max_multi_get_keys: 1_000,
            max_aggregate_rows: 10_000_000,
            max_aggregate_groups: 100_000,
            max_read_wait_ms: 10_000,
            max_keyspaces: 1_000,
            max_caches: 100,
            max_cache_bytes_total: 16 << 30,
        }
    }
}

impl Limits {
    /// `max_read_wait_ms` as a duration.
    pub fn max_read_wait(&self) -> Duration {
        Duration::from_millis(self.max_read_wait_ms)
    }
}
