//! Summaries of a cluster member's partitions, shown by `notadb status` and the status page.

use crate::v1::Member;

impl Member {
    /// Entries applied, summed over its partitions.
    pub fn applied_total(&self) -> u64 {
        self.partitions.iter().map(|p| p.applied_seq).sum()
    }

    /// Entries not applied yet, summed over its partitions.
    pub fn lag_records_total(&self) -> u64 {
        self.partitions.iter().map(|p| p.lag_records).sum()
    }

    /// The largest lag in seconds of any of its partitions.
    pub fn max_lag_seconds(&self) -> f64 {
        self.partitions
            .iter()
            .map(|p| p.lag_seconds)
            .fold(0.0, f64::max)
    }
}
