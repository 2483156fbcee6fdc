use thiserror::Error;

/// A storage failure. None of them is a valid outcome of applying an entry: a replica that
/// meets one while applying stops rather than diverge.
#[derive(Debug, Error)]
pub enum StorageError {
    /// RocksDB failed (I/O, corruption it detected, a write stall it gave up on).
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A memory-only view refused a read (data not in memory, or its budget spent); the
    /// read runs again on a blocking thread. Never an error a client sees.
    #[error("the read needs the disk or more work than a memory-only view allows")]
    WouldBlock,
    /// Bytes notadb wrote do not read back as it wrote them.
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    /// The data directory belongs to a cluster of another shape.
    #[error("storage was created with {found} partitions, this node is configured for {expected}")]
    PartitionCount {
        /// The partition count this node is configured for.
        expected: u16,
        /// The partition count the storage was created with.
        found: u16,
    },
}
