//! The deterministic apply step: log entries of one partition in, storage mutations out.
//!
//! Entries go through the partition's transaction executor (`notadb_txn`), which locks keys
//! with VLL so that transactions waiting for other partitions' reads hold up only the entries
//! that touch their keys; plain puts and deletes lock their keys, everything else (range
//! deletes, cache operations, keyspace drops) runs alone. An entry that is not a transaction's,
//! met while the executor is idle (nothing in flight or waiting), is applied at once in log
//! order and only reported to the executor ([`Executor::pass`]): the lock table would grant it
//! anyway. Either way the storage effects are the same.
//!
//! Everything here depends only on the entry bytes and on state derived from entries applied
//! before. No clock, no randomness, no iteration over unordered maps, no I/O but reads of the
//! replica's own RocksDB: the caller commits the batch, with the partition's low-watermark.

use crate::cache_store::CacheMemory;
use crate::txn_store::{entry_of, ApplyStore, Overlay, Persisted};
use notadb_log::LogEntry;
use notadb_record::Record;
use notadb_storage::{RocksStorage, StorageBatch};
use notadb_txn::{Effects, Executor, ExecutorConfig, Procedures, Resume, TxnError};
use notadb_types::{KeyspaceId, PartitionId, Seq};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The transaction executor's view of a log entry's bytes (tools and tests replay logs with
/// it): plain puts and deletes, a transaction or remote reads, or anything else as a barrier.
/// Fails on a transaction entry of a newer format than this build reads.
pub fn executor_entry(payload: &bytes::Bytes) -> Result<notadb_txn::Entry, TxnError> {
    entry_of(payload).map(|(entry, _)| entry)
}

/// What applying a run of entries did.
#[derive(Debug, Default)]
pub struct Applied {
    /// The append time of the first entry that carried one.
    pub first_ts: Option<i64>,
    /// Entries that could not be parsed; every replica skips them identically.
    pub malformed: u64,
    /// What the executor decided: reads to send, transactions finished, its position.
    pub effects: Effects,
}

/// Applies one partition's entries in order.
pub struct Applier {
    partition: PartitionId,
    dropped: BTreeSet<KeyspaceId>,
    /// The node's cache shards; cache ops change the partition's shards and persist them.
    caches: Arc<CacheMemory>,
    executor: Executor,
    persisted: Persisted,
}

impl Applier {
    /// An applier for `partition`, given the keyspaces already dropped there, the node's cache
    /// shards, the registered procedures and where the executor resumes.
    pub(crate) fn new(
        partition: PartitionId,
        dropped: impl IntoIterator<Item = KeyspaceId>,
        caches: Arc<CacheMemory>,
        procedures: Procedures,
        config: ExecutorConfig,
        resume: Resume,
    ) -> Applier {
        let persisted = Persisted::new(&resume);
        Applier {
            partition,
            dropped: dropped.into_iter().collect(),
            caches,
            executor: Executor::new(partition, procedures, config, resume),
            persisted,
        }
    }

    /// The partition this applier serves.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// The next log entry to apply.
    pub fn next_seq(&self) -> Seq {
        self.executor.next_seq()
    }

    /// Entries read but waiting: for locks, or for other partitions' reads.
    pub fn in_flight(&self) -> usize {
        self.executor.in_flight() + self.executor.backlog()
    }

    /// Whether applying `entries` only writes: no transaction among them and none in flight,
    /// so nothing reads storage or sends reads to other partitions (only transactions do).
    pub fn only_writes(&self, entries: &[LogEntry]) -> bool {
        self.in_flight() == 0 && !entries.iter().any(|e| Record::is_txn(&e.payload))
    }

    /// Applies `entries` (from [`Applier::next_seq`] on, in order) into `batch`, then gives the
    /// executor its idle turn. The executor's state changes are added to `batch` by
    /// [`Applier::persist`], once the caller has sent the reads it asks for.
    pub fn apply(
        &mut self,
        storage: &RocksStorage,
        batch: &mut StorageBatch<'_>,
        entries: &[LogEntry],
    ) -> Result<Applied, TxnError> {
        let mut overlay = Overlay::new(!self.only_writes(entries));
        let mut store = ApplyStore {
            partition: self.partition,
            storage,
            batch,
            overlay: &mut overlay,
            dropped: &mut self.dropped,
            caches: &self.caches,
            malformed: 0,
        };
        let mut out = Applied::default();
        for entry in entries {
            let ts = if !Record::is_txn(&entry.payload) && self.executor.pass(entry.seq) {
                store
                    .apply_entry(entry.seq, &entry.payload)
                    .map_err(|e| TxnError::Storage {
                        partition: self.partition,
                        message: e.0,
                    })?
            } else {
                let (e, ts) = entry_of(&entry.payload)?;
                let fx = self.executor.step(entry.seq, e, &mut store)?;
                out.effects.absorb(fx);
                ts
            };
            out.first_ts = out.first_ts.or(ts);
        }
        let fx = self.executor.idle(&mut store)?;
        out.effects.absorb(fx);
        out.malformed = store.malformed;
        Ok(out)
    }

    /// Adds the executor's state after `effects` to `batch`, with the partition's watermark as
    /// its applied seq.
    pub fn persist(&mut self, effects: &Effects, batch: &mut StorageBatch<'_>) {
        self.persisted.write(self.partition, effects, batch);
    }
}
