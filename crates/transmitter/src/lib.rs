//! The transmitter: writes the changes of mapped keyspaces behind to PostgreSQL tables.
//!
//! It reads the partition logs from its own position, which lives in PostgreSQL
//! (`notadb_transmitter_positions`) and moves in the same transaction as the rows it covers:
//! a batch and its positions commit together or not at all, so nothing is written twice or
//! skipped, even across crashes. Each row also carries the seq that wrote it and is only
//! overwritten by a newer one. The update of a position checks the value this transmitter
//! last committed, which fences off a second transmitter writing the same partitions.
//!
//! - [`batch`]: the deterministic core: log entries in, one coalesced, key-sorted batch out.
//! - [`mapping`]: keyspace → table mappings, value rendering, SQL, checks against the table.
//! - [`sink`]: PostgreSQL: the transmitter's own tables and the batch transaction.
//! - [`Transmitter`]: the loops that read, batch, write and retry, with metrics and status.

#![warn(missing_docs)]

pub mod batch;
mod config;
mod error;
pub mod mapping;
pub mod sink;
mod transmitter;

pub use config::{DeleteMode, TableMapping, TransmitterConfig};
pub use error::TransmitterError;
pub use transmitter::{
    Host, HostError, PartitionProgress, Transmitter, TransmitterStatus, LOG_HOLDER,
};
