//! The [`Log`] trait: per-partition, totally ordered, durable sequences of entries.

use std::time::Duration;

use bytes::Bytes;
use notadb_types::{PartitionId, Seq};

use crate::LogError;

/// One entry read back from a partition's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The entry's position in its partition, assigned by the append.
    pub seq: Seq,
    /// The bytes that were appended, unchanged.
    pub payload: Bytes,
}

/// The range of seqs a partition currently holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LogBounds {
    /// The oldest readable seq; `last + 1` when the partition holds no entry.
    pub first: Seq,
    /// The newest appended seq; `Seq(0)` when nothing was ever appended.
    pub last: Seq,
}

/// A set of partition logs: per partition, a totally ordered, durable sequence of entries
/// numbered by [`Seq`] from 1.
///
/// Every implementation passes the suite in [`crate::conformance`].
#[async_trait::async_trait]
pub trait Log: Send + Sync + 'static {
    /// Number of partitions this log was created with.
    fn partitions(&self) -> u16;

    /// Whether concurrent appends already share one durable write inside the log (the
    /// embedded log's group commit), so that a caller gains nothing by merging them into
    /// fewer entries first. Logs whose every append is a round trip to a broker say no.
    fn groups_appends(&self) -> bool {
        false
    }

    /// Appends one entry; returns its seq once the entry is durable as the backend's policy
    /// defines. Seqs of a partition start at 1 and are contiguous, in append order.
    ///
    /// An append that fails with a retryable error, or whose future is dropped, may still have
    /// been written: the entry may appear in later reads.
    async fn append(&self, partition: PartitionId, payload: Bytes) -> Result<Seq, LogError>;

    /// Appends an entry that another writer (or this one, before a crash) may already have
    /// appended under the same `id`. A backend that deduplicates by id (JetStream, within its
    /// duplicate window) answers with the first append's seq and stores one copy; the default
    /// appends again, so readers of such entries must tolerate copies. Ids are unique within a
    /// partition.
    async fn append_deduplicated(
        &self,
        partition: PartitionId,
        id: &str,
        payload: Bytes,
    ) -> Result<Seq, LogError> {
        let _ = id;
        self.append(partition, payload).await
    }

    /// Entries with seq >= from, in order, at most `max`. If none is available yet, waits up to
    /// `wait` for one and returns an empty Vec if none came. `from` below the oldest kept entry
    /// is LogError::Truncated.
    ///
    /// `Seq(0)` reads from the start, like `Seq(1)`. A read may return fewer than `max` entries
    /// even when more are available; callers loop.
    async fn read(
        &self,
        partition: PartitionId,
        from: Seq,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<LogEntry>, LogError>;

    /// Allows the log to drop entries with seq < before (an implementation may keep some).
    /// Never changes the numbering of later appends.
    async fn truncate_before(&self, partition: PartitionId, before: Seq) -> Result<(), LogError>;

    /// The seqs the partition currently holds.
    async fn bounds(&self, partition: PartitionId) -> Result<LogBounds, LogError>;

    /// Makes everything appended so far durable (fsync), whatever the policy.
    async fn flush(&self) -> Result<(), LogError>;
}

/// The slot of `partition` among one slot per partition, or `UnknownPartition`: how every
/// implementation checks the partition a call names.
pub fn partition_slot<T>(slots: &[T], partition: PartitionId) -> Result<&T, LogError> {
    slots
        .get(usize::from(partition.0))
        .ok_or(LogError::UnknownPartition {
            partition,
            partitions: u16::try_from(slots.len()).unwrap_or(u16::MAX),
        })
}
