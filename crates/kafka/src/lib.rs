//! notadb's partition log on Apache Kafka, or a Kafka-protocol broker (Redpanda, tansu, ...).
//!
//! - [`KafkaLog`]: the [`Log`](notadb_log::Log) on one topic; it passes the same conformance
//!   suite as the embedded and JetStream logs.
//! - [`KafkaOptions`]: bootstrap servers, topic, creation settings, and librdkafka properties
//!   passed through (SASL, TLS).
//!
//! # One topic, a notadb partition per Kafka partition
//!
//! The log of a cluster is one topic with exactly `P` partitions: notadb partition `N` is Kafka
//! partition `N`, and an entry's seq is its Kafka offset plus one (seqs count from 1, as on
//! every backend; offset 0 is seq 1). One topic rather than one per keyspace because a token
//! `(partition, seq)` and a transaction's position order every keyspace's writes of a
//! partition together; topics per keyspace would need an order across topics that Kafka does
//! not give. A topic with another partition count is refused at start-up
//! ([`LogError::PartitionCount`](notadb_log::LogError)), because every key would move.
//!
//! # Durability
//!
//! The producer is idempotent (`enable.idempotence=true`) with `acks=all`. An append returns
//! once the partition leader acknowledged the entry, which it does when every in-sync replica
//! has it; that acknowledgement is the durability point, as the JetStream publish ack is. With
//! replication factor 3 and the topic's `min.insync.replicas=2`, an acknowledged entry survives
//! the loss of one broker. Whether it survives a power loss depends on the brokers' flush
//! settings (Kafka relies on replication, not fsync, by default).
//!
//! The idempotent producer retries within `request_timeout` without duplicating or reordering
//! entries of one producer. An append that still fails returns
//! [`LogError::Unavailable`](notadb_log::LogError) and may have been written. After a fatal
//! producer error (a broker that lost the producer's state, say) the log opens a new producer.
//! [`Log::append_deduplicated`](notadb_log::Log::append_deduplicated) appends again: Kafka
//! keeps no ids of past messages, so its readers get copies, which the trait allows.
//!
//! # Reads by assignment
//!
//! Replicas read their partitions by assignment at a given offset: each partition's reader is a
//! consumer assigned that one partition at `from - 1`, with no consumer group membership, no
//! rebalancing and no committed offsets (the replica's applied seq is its position). An apply
//! loop that reads on from where it stopped keeps its consumer; a read from any other seq
//! checks the watermarks (for `Truncated`) and assigns a new one.
//!
//! # Retention and topic creation
//!
//! A missing topic is created (unless `create_topic = false`) with `P` partitions,
//! `cleanup.policy=delete`, `retention.ms` from [`KafkaOptions::retention`] (forever by
//! default, written as the largest `retention.ms`: tansu deletes everything for `-1`),
//! `max.message.bytes` of the entry limit plus record overhead, and the replication factor
//! from the options (the broker's default otherwise). An existing topic keeps its
//! configuration. [`Log::truncate_before`](notadb_log::Log::truncate_before) keeps entries:
//! Kafka drops the oldest entries by retention; a replica that falls behind retention gets
//! `Truncated` and must bootstrap from a checkpoint, as on JetStream with `max_age`.

#![warn(missing_docs)]

#[cfg(feature = "rdkafka")]
mod log;
mod options;

#[cfg(feature = "rdkafka")]
pub use self::log::KafkaLog;
pub use options::{
    KafkaOptions, DEFAULT_BOOTSTRAP, DEFAULT_MAX_ENTRY_BYTES, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_TOPIC, RECORD_OVERHEAD_BYTES, RESERVED_PROPERTIES,
};
