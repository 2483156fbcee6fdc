use thiserror::Error;

/// A storage failure. None of them is a valid outcome of applying an entry: a replica that
/// meets one while applying stops rather than diverge.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    #[error("storage was created with {found} partitions, this node is configured for {expected}")]
    PartitionCount { expected: u16, found: u16 },
}
