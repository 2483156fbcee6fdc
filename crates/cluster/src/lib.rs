//! notadb's cluster mode, on NATS JetStream or on Kafka.
//!
//! - [`ClusterConfig`]: the `[cluster]` table: the broker (`log`), shard groups, heartbeats,
//!   checkpoints.
//! - [`Cluster`]: a node joined to a cluster: its shard group's partitions of the log,
//!   keyspace schemas from the metadata store ([`KvSchemas`]), heartbeats into the members
//!   store, the routing table ([`Routes`]) and periodic checkpoints ([`Manifest`]).
//! - Transactions: the sequencer log beside the partition logs, the forwarder lease, and
//!   reports of finished transactions to the submitting node (`txn.rs`).
//!
//! The broker provides every agreement the cluster needs: the log orders writes, and the
//! metadata store ([`KvStore`]) orders schema changes and assigns keyspace ids (store
//! revisions). On JetStream the stores are key-value buckets and checkpoints go to the object
//! store; on Kafka the stores are [`LogKv`] state machines over one-partition topics (the
//! topic's order is the agreement) and checkpoints go to a shared directory
//! ([`DirObjects`]). There is no consensus or membership protocol of notadb's own.
//!
//! Only `broker/` tells the brokers apart: it opens the stores and logs behind the traits
//! ([`KvStore`], [`Objects`], [`Log`](notadb_log::Log)) and answers what a running cluster
//! asks of its broker (a second log connection, transaction reports, leases). Every store
//! implementation passes the same conformance suites (`conformance.rs`).

#![warn(missing_docs)]

mod broker;
mod checkpoint;
mod cluster;
mod config;
#[cfg(test)]
mod conformance;
mod control;
mod error;
mod lease;
mod logkv;
mod members;
mod meta;
mod objects;
mod txn;

pub use checkpoint::{CheckpointFile, Manifest};
pub use cluster::{Advertised, Cluster};
pub use config::{ClusterConfig, ClusterLog};
pub use control::{KvChange, KvEntry, KvStore, Objects};
pub use error::ClusterError;
pub use logkv::LogKv;
pub use members::{Member, MemberPartition, Routes, Seen};
pub use meta::{ClusterDoc, KvSchemas};
pub use objects::DirObjects;
