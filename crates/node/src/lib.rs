//! notadb's node: the catalog of keyspaces, the write path (validate, append to the
//! partition's log, acknowledge with a token), one apply loop per partition (log entries to
//! RocksDB in order, exactly once), reads over consistent snapshots (get, multi-get, scan,
//! aggregate) and the framework API for user query handlers.
//!
//! The deciding parts are synchronous and free of I/O: `apply` (entries, as `notadb_record`
//! encodes them, to storage mutations), `write` (validation), `query` (ranges, filters, scans, aggregates).
//! `Node` is the async shell that moves bytes between them, the log and RocksDB.

#![warn(missing_docs)]

pub mod apply;
mod cache;
mod cache_store;
mod catalog;
mod coalesce;
mod config;
mod error;
mod handler;
mod keyspaces;
mod limits;
mod loader;
mod maintenance;
mod node;
mod partitions;
pub mod query;
mod read;
mod replica;
pub mod request;
mod txn;
mod txn_store;
pub mod write;

pub use cache::{CacheInfo, CacheValue, TOUCH_INTERVAL};
pub use cache_store::CacheUsage;
pub use catalog::SchemaStore;
pub use config::NodeConfig;
pub use error::NodeError;
pub use handler::{JsonHandler, QueryContext, QueryHandler, RawRow, Rows};
pub use keyspaces::KeyspaceInfo;
pub use limits::Limits;
pub use loader::{CacheLoader, LoadKey};
pub use node::{ClusterMember, Node, NodeBuilder, NodeStatus, PartitionStatus};
pub use notadb_cache::CacheDef;
pub use notadb_record::{Clock, KeyspaceDef, ManualClock, SystemClock};
pub use notadb_txn::{builtin, decode_report, encode_report, Finished};
pub use notadb_txn::{Abort, Access, Outcome, Procedure, TxnContext, TxnId, TxnKey};
pub use query::scan::{RawRows, RawScan};
pub use read::{merge_aggregates, merge_scans, EncodedKeys, MultiGetValues};
pub use request::*;
pub use txn::{origin_of, TxnKeyRequest, TxnNotifier, TxnRequest, TxnResult};
