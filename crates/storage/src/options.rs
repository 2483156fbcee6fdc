/// Default shared block cache size.
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 256 << 20;
/// Default size of the point cache in front of RocksDB for single-key reads.
pub const DEFAULT_POINT_CACHE_BYTES: usize = 128 << 20;
/// Default size of the row cache in front of RocksDB for range reads inside one partition
/// key.
pub const DEFAULT_ROW_CACHE_BYTES: usize = 128 << 20;
/// Default key and value bytes of the largest partition-key group the row cache keeps.
pub const DEFAULT_MAX_GROUP_BYTES: usize = 64 << 10;
/// Default budget for all memtables together.
pub const DEFAULT_WRITE_BUFFER_BYTES: usize = 128 << 20;

/// RocksDB settings a node exposes in its configuration.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// One block cache (HyperClockCache) shared by every column family.
    pub block_cache_bytes: usize,
    /// Memtable memory for the whole instance (a write buffer manager charged to the cache).
    pub write_buffer_bytes: usize,
    /// Stored values of recently read keys for single-key reads (`Get`), beside the block
    /// cache; 0 turns it off.
    pub point_cache_bytes: usize,
    /// Rows of recently read partition-key groups for range reads inside one partition key
    /// (`Scan`, `Aggregate`), beside the block cache; 0 turns it off.
    pub row_cache_bytes: usize,
    /// Key and value bytes of the largest group the row cache keeps; larger groups are
    /// read from RocksDB.
    pub max_group_bytes: usize,
    /// Background flush and compaction threads.
    pub background_jobs: i32,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
            write_buffer_bytes: DEFAULT_WRITE_BUFFER_BYTES,
            point_cache_bytes: DEFAULT_POINT_CACHE_BYTES,
            row_cache_bytes: DEFAULT_ROW_CACHE_BYTES,
            max_group_bytes: DEFAULT_MAX_GROUP_BYTES,
            background_jobs: 2,
        }
    }
}
