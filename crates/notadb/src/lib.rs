//! notadb: a framework and server for distributed stateful services.
//!
//! A service is a node with its own keyspaces and named query handlers. Handlers run on the
//! partition that owns their data, over one consistent snapshot:
//!
//! ```no_run
//! use notadb::{KeyRange, NodeError, QueryContext, Server, ServerConfig};
//! use serde_json::{json, Value};
//!
//! fn count_items(ctx: &QueryContext<'_>, _args: &Value) -> Result<Value, NodeError> {
//!     let rows = ctx.scan("items", &KeyRange::prefix(ctx.partition_key().to_vec()), false)?;
//!     Ok(json!(rows.count()))
//! }
//!
//! # async fn run(schema: notadb::KeyspaceSchema) -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::start(ServerConfig::default(), |node| {
//!     node.keyspace(schema).handler("count_items", count_items)
//! })
//! .await?;
//! server.run_until_signal().await?;
//! # Ok(()) }
//! ```
//!
//! A service's binary should also name [`Allocator`] its global allocator, as the `notadb`
//! command does: the request and apply paths make many small, short-lived allocations, and
//! with the system allocator a `Put` costs about a fifth more server CPU (`docs/performance.md`).
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: notadb::Allocator = notadb::Allocator;
//! # fn main() {}
//! ```

#![warn(missing_docs)]

pub use notadb_client as client;
pub use notadb_log as log;
pub use notadb_node::*;
pub use notadb_record as record;
pub use notadb_server::{
    parse_frame_addr, wait_for_signal, LoaderError, PostgresLoader, PostgresLoaderConfig, Server,
    ServerConfig, ServerError, EXIT_CONFIG, EXIT_SOFTWARE, EXIT_TEMPFAIL,
};
pub use notadb_transmitter as transmitter;
pub use notadb_types as types;
pub use notadb_types::{
    Element, ElementType, KeyElement, KeyspaceSchema, Order, PartitionId, Seq, Token, TtlSpec,
    ValueFormat,
};
/// The global allocator of notadb's binaries: jemalloc, as in TiKV. It serves Rust's
/// allocations; RocksDB's own stay with the system allocator.
pub use tikv_jemallocator::Jemalloc as Allocator;
