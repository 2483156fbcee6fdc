//! The stores a cluster's control plane runs on, whatever the broker:
//!
//! - [`KvStore`]: a key-value store with revisions and compare-and-set, watched for changes.
//!   The metadata (shape, keyspaces, caches, checkpoint manifests) and the members'
//!   heartbeats live in one each. On JetStream it is a key-value bucket; on Kafka a
//!   [`LogKv`](crate::logkv::LogKv), a state machine over a one-partition topic.
//! - [`Objects`]: files by name, for checkpoints: the JetStream object store, or a directory
//!   ([`DirObjects`](crate::objects::DirObjects)).
//!
//! Leases and transaction reports have a form per broker (`broker/`). Both traits have a
//! conformance suite (`conformance.rs`) that every implementation passes.

use crate::error::ClusterError;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::path::Path;

/// One live entry of a [`KvStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    /// The entry's key.
    pub key: String,
    /// The entry's value.
    pub value: Bytes,
    /// The store's revision when the entry was written: unique and growing across the store.
    pub revision: u64,
}

/// One change a [`KvStore::watch`] delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvChange {
    /// A key was written: its new entry.
    Put(KvEntry),
    /// A key was deleted: its key.
    Deleted(String),
}

/// A key-value store with revisions: every write gets a store-wide revision, higher than
/// every earlier one, and writes can be made conditional on the revision a key holds.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// Writes `key` if it holds no live entry: `Some(revision)`, or `None` if it exists.
    async fn create(&self, key: &str, value: Bytes) -> Result<Option<u64>, ClusterError>;

    /// Writes `key` whatever it holds; returns the new revision.
    async fn put(&self, key: &str, value: Bytes) -> Result<u64, ClusterError>;

    /// The live entry of `key`, reading every write acknowledged before the call.
    async fn entry(&self, key: &str) -> Result<Option<KvEntry>, ClusterError>;

    /// Deletes `key` if its entry still has `revision`; [`ClusterError::Conflict`] otherwise.
    async fn delete_at(&self, key: &str, revision: u64) -> Result<(), ClusterError>;

    /// Deletes `key` whatever it holds; a key without an entry is fine (watchers may or may
    /// not see a [`KvChange::Deleted`] for it).
    async fn delete(&self, key: &str) -> Result<(), ClusterError>;

    /// Every live entry whose key starts with `prefix`, by key.
    async fn entries(&self, prefix: &str) -> Result<Vec<KvEntry>, ClusterError>;

    /// The changes of keys starting with one of `prefixes` (any strings; `""` watches every
    /// key) made from now on, in revision order; changes acknowledged shortly before the call
    /// may come too. The stream ends when the store's connection is lost: watch again, then
    /// read [`entries`](KvStore::entries) for what happened in between.
    async fn watch(&self, prefixes: &[&str]) -> Result<BoxStream<'static, KvChange>, ClusterError>;
}

/// Files by name, for checkpoints. Names are `/`-separated paths of letters, digits, `.`,
/// `_` and `-`.
#[async_trait::async_trait]
pub trait Objects: Send + Sync + 'static {
    /// Stores the file at `path` as `name`, replacing any object of that name.
    async fn put(&self, name: &str, path: &Path) -> Result<(), ClusterError>;

    /// Writes the object `name` to a new file at `path`; an error if there is none.
    async fn get(&self, name: &str, path: &Path) -> Result<(), ClusterError>;

    /// Every object name starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ClusterError>;

    /// Deletes the object `name`; a missing one is fine.
    async fn delete(&self, name: &str) -> Result<(), ClusterError>;
}
