//! notadb's partition logs.
//!
//! - [`Log`]: the trait every backend implements: per partition, a totally ordered, durable
//!   sequence of entries numbered by [`Seq`](notadb_types::Seq) from 1.
//! - [`EmbeddedLog`]: the single-node default, on local files shared by every partition, one
//!   writer thread with group commit (one `fdatasync` for a batch of appends to any
//!   partitions); see [`FsyncPolicy`] for what an acknowledgement guarantees.
//! - [`conformance`]: the suite every implementation runs.
//!
//! The cluster backends live in their own crates: `notadb-jetstream` (NATS JetStream) and
//! `notadb-kafka`.

#![warn(missing_docs)]

pub mod conformance;
pub mod durations;
mod embedded;
mod error;
mod frame;
mod fsync;
mod index;
mod legacy;
mod log;
mod meta;
mod options;
mod partition;
mod read;
mod segment;
mod writer;

pub use embedded::EmbeddedLog;
pub use error::LogError;
pub use fsync::{FsyncPolicy, FsyncPolicyParseError};
pub use log::{partition_slot, Log, LogBounds, LogEntry};
pub use options::{
    EmbeddedLogOptions, DEFAULT_MAX_ENTRY_BYTES, DEFAULT_SEGMENT_BYTES, DEFAULT_TAIL_BYTES,
};
