//! notadb's cache core. Everything here decides and nothing here waits: no I/O, no clock, no
//! randomness, no iteration over unordered maps.
//!
//! - [`CacheDef`]: a named cache's settings, validated, and its id (derived from the name).
//! - [`CacheShard`]: one cache's entries in one partition. Log operations go in
//!   ([`CacheShard::apply`]), storage rows come out ([`Change`]); every replica that applies the
//!   same operations holds the same entries and makes the same evictions. Eviction is SIEVE
//!   over the bytes the entries take; TTL is decided from the log's timestamps.
//! - [`row`]: how a shard is persisted in the replica's storage, and read back.

#![warn(missing_docs)]

mod def;
pub mod row;
mod shard;

pub use def::{CacheDef, CacheDefError, DEFAULT_LOAD_TIMEOUT_MS, MAX_TTL_MS};
pub use notadb_types::{CacheId, CACHE_ID_BASE};
pub use shard::{entry_size, CacheOp, CacheShard, Change, Lookup, ShardStats, ENTRY_OVERHEAD};
