//! A replica's storage: one RocksDB instance holding every partition the replica serves.
//!
//! Layout (see `layout`): the `data` column family keys every entry as
//! `partition (u16 BE) | keyspace id (u32 BE) | encoded key tuple`, so a partition's data is
//! one contiguous key range (it can be checkpointed, moved or deleted as a range), and a
//! keyspace within a partition is a sub-range. The `meta` column family holds each partition's
//! applied `seq`, written in the same write batch as the data it produced, and the catalog.
//!
//! Stored values carry a small header with the entry's expiry (`notadb_record::value`); expired entries
//! are hidden by the readers and dropped by a compaction filter.
//!
//! Point reads (`ReadView::get_one`, `ReadView::multi_get`) go through a point cache of
//! stored values in front of RocksDB, kept exact by the one write path, `RocksStorage::commit` (see
//! `point_cache`). Range reads inside one partition key (`ReadView::group_cursor`) go through
//! a cache of each such group's rows, kept exact the same way (see `row_cache`).

#![warn(missing_docs)]

mod batch;
mod error;
pub mod layout;
mod options;
mod point_cache;
mod rocks;
mod row_cache;
mod view;

pub use batch::StorageBatch;
pub use error::StorageError;
pub use options::StorageOptions;
pub use rocks::{MemoryUsage, RocksStorage};
pub use view::{Cursor, Freshness, ReadView, Values, MEMORY_VIEW_BUDGET};
