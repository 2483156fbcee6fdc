//! The deterministic apply step: log entries of one partition in, storage mutations out.
//!
//! Everything here depends only on the entry bytes and on state derived from entries applied
//! before (the set of keyspaces dropped in this partition). No clock, no randomness, no
//! iteration over unordered maps, no I/O: the caller commits the batch, with the applied seq.

use crate::cache_store::CacheMemory;
use crate::record::{Op, Record};
use notadb_log::LogEntry;
use notadb_storage::StorageBatch;
use notadb_types::{KeyspaceId, PartitionId};
use std::collections::BTreeSet;
use std::sync::Arc;

/// What applying one entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The entry's mutations were added to the batch; `ts_micros` is its append time.
    Ok { ts_micros: i64 },
    /// The entry could not be parsed; every replica skips it identically.
    Malformed,
}

/// Applies one partition's entries in order.
pub struct Applier {
    partition: PartitionId,
    dropped: BTreeSet<KeyspaceId>,
    /// The node's cache shards; cache ops change the partition's shards and persist them.
    caches: Arc<CacheMemory>,
}

impl Applier {
    /// An applier for `partition`, given the keyspaces already dropped there and the node's
    /// cache shards.
    pub(crate) fn new(
        partition: PartitionId,
        dropped: impl IntoIterator<Item = KeyspaceId>,
        caches: Arc<CacheMemory>,
    ) -> Applier {
        Applier {
            partition,
            dropped: dropped.into_iter().collect(),
            caches,
        }
    }

    /// The partition this applier serves.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// Adds the effect of `entry` to `batch`.
    pub fn apply(&mut self, batch: &mut StorageBatch<'_>, entry: &LogEntry) -> Applied {
        let record = match Record::decode(&entry.payload) {
            Ok(record) => record,
            Err(message) => {
                tracing::error!(
                    partition = %self.partition, seq = %entry.seq, %message,
                    "skipping a malformed log entry"
                );
                return Applied::Malformed;
            }
        };
        let p = self.partition;
        match record {
            Record::Batch { ts_micros, ops } => {
                for op in &ops {
                    match op {
                        Op::Put {
                            keyspace,
                            key,
                            stored,
                        } if !self.dropped.contains(keyspace) => {
                            batch.put(p, *keyspace, key, stored)
                        }
                        Op::Delete { keyspace, key } if !self.dropped.contains(keyspace) => {
                            batch.delete(p, *keyspace, key)
                        }
                        Op::DeleteRange {
                            keyspace,
                            start,
                            end,
                        } if !self.dropped.contains(keyspace) => {
                            batch.delete_range(p, *keyspace, start, end)
                        }
                        Op::Put { .. } | Op::Delete { .. } | Op::DeleteRange { .. } => {}
                        cache_op => {
                            self.caches.apply(p, cache_op, ts_micros, batch);
                        }
                    }
                }
                Applied::Ok { ts_micros }
            }
            Record::DropKeyspace {
                ts_micros,
                keyspace,
            } => {
                batch.drop_keyspace(p, keyspace);
                self.dropped.insert(keyspace);
                Applied::Ok { ts_micros }
            }
        }
    }
}
