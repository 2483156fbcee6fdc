//! notadb's cluster mode on NATS JetStream.
//!
//! - [`ClusterConfig`]: the `[cluster]` table: NATS, shard groups, heartbeats, checkpoints.
//! - [`Cluster`]: a node joined to a cluster: its shard group's partitions of the JetStream log,
//!   keyspace schemas from the metadata bucket ([`KvSchemas`]), heartbeats into the members
//!   bucket, the routing table ([`Routes`]) and periodic checkpoints ([`Manifest`]).
//! - Transactions: the sequencer log beside the partition logs, the forwarder lease, and
//!   reports of finished transactions to the submitting node (`txn.rs`).
//!
//! JetStream provides every agreement the cluster needs: the log orders writes, the metadata
//! bucket orders schema changes and assigns keyspace ids (bucket revisions), and the members
//! bucket expires heartbeats. There is no consensus or membership protocol of notadb's own.

mod checkpoint;
mod cluster;
mod config;
mod error;
mod lease;
mod members;
mod meta;
mod txn;

pub use checkpoint::{CheckpointFile, Manifest};
pub use cluster::{Advertised, Cluster};
pub use config::ClusterConfig;
pub use error::ClusterError;
pub use members::{Member, MemberPartition, Routes, Seen};
pub use meta::{ClusterDoc, KvSchemas};
