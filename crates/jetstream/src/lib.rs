//! [`JetStreamLog`]: the [`Log`](notadb_log::Log) on NATS JetStream, the backend for clusters of
//! more than one node. `notadb_testkit::NatsServer` runs a `nats-server` for tests and local
//! clusters.
//!
//! Requires nats-server 2.10 or newer (stream metadata); [`JetStreamLog::connect`] refuses
//! older servers.
//!
//! # One stream per partition
//!
//! Partition `N` of the log named `name` is the stream `{name}_pN`, which holds the one subject
//! `{name}.p.N`. So:
//!
//! - **The stream sequence is the partition's seq.** JetStream numbers a stream's messages from 1
//!   without gaps and returns the number in the publish ack; nothing else has to number entries,
//!   and a read is an ordered consumer started at a stream sequence. (With one stream for all
//!   partitions, per-subject numbering would have to be kept somewhere else.)
//! - **Partitions are independent.** Each stream has its own replication group and leader, so
//!   leadership and load spread over a cluster's servers, and a slow or recovering partition does
//!   not hold up the others.
//! - **Truncation is a purge.** [`Log::truncate_before`](notadb_log::Log::truncate_before) is a
//!   purge up to a sequence (it keeps `seq >= before`, clamped to `last + 1` so numbering never
//!   changes).
//! - Every stream records the log's partition count in its metadata (`notadb.partitions`); opening
//!   a log with another count fails with [`LogError::PartitionCount`](notadb_log::LogError). Missing
//!   streams are created with the [`JetStreamOptions`]; existing ones keep their configuration.
//!
//! # Durability
//!
//! An append returns once the server acknowledged the publish: the entry is stored by the
//! stream's replicas (a majority of them for `replicas` > 1). With `replicas = 1` the entry is on
//! one server, written to its files; whether it survives a *power loss* of that machine is decided
//! by the server's `sync_interval` (default 2 minutes; `sync_interval: always` syncs every
//! write), not by this client. With 3 replicas an acknowledged entry survives the loss of any one
//! server. [`Log::flush`](notadb_log::Log::flush) only waits for this connection's buffered bytes to
//! be written out; it cannot make a server sync.
//!
//! # Retries are idempotent
//!
//! Every append carries a `Nats-Msg-Id` unique to it (a random prefix per handle and a
//! counter). If the ack does not come (timeout, lost connection, a restarting server), the same
//! message, same id, is published again, up to `publish_attempts` times with backoff; the
//! server drops a repeat seen within its `duplicate_window` and acks it with the original seq.
//! [`JetStreamOptions::validate`] insists that the window covers an append's whole retry budget.
//! An append that still fails returns [`LogError::Unavailable`](notadb_log::LogError) (retryable);
//! its entry may or may not have been written.
//!
//! # Retention
//!
//! By default nothing is dropped until [`Log::truncate_before`](notadb_log::Log::truncate_before).
//! `max_age` and `max_bytes` make the server drop a partition's oldest entries on its own; a
//! reader that falls behind them gets [`LogError::Truncated`](notadb_log::LogError).
//!
//! # Reads
//!
//! Each partition keeps one ordered pull consumer positioned at the next seq to read, so an
//! apply loop that reads on from where its previous read stopped gets entries the consumer has
//! already pulled ahead; a read from any other seq checks the stream's first seq (for
//! `Truncated`) and starts a new consumer there. Any number of handles, in any number of
//! processes, may append to and read the same log.

#![warn(missing_docs)]

mod auth;
mod cursor;
mod errors;
mod log;
mod options;
mod publish;
mod streams;

pub use self::log::{JetStreamLog, HEADER_ROOM_BYTES};
pub use auth::{connect_error, NatsAuth};
pub use options::{
    JetStreamOptions, JetStreamStorage, DEFAULT_DUPLICATE_WINDOW, DEFAULT_NAME,
    DEFAULT_PUBLISH_ATTEMPTS, DEFAULT_PUBLISH_TIMEOUT, DEFAULT_URL, MAX_PUBLISH_BACKOFF,
};

#[cfg(test)]
mod tests;
