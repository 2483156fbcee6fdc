//! The stores a cluster's control plane runs on, whatever the broker:
//!
//! - [`KvStore`]: a key-value store with revisions and compare-and-set, watched for changes.
//!   The metadata (shape, keyspaces, caches, checkpoint manifests) and the members'
//!   heartbeats live in one each. On JetStream it is a key-value bucket; on Kafka a
//!   [`LogKv`](crate::logkv::LogKv), a state machine over a one-partition topic.
//! - [`Objects`]: files by name, for checkpoints: the JetStream object store, or a directory
//!   ([`DirObjects`](crate::objects::DirObjects)).
//!
//! Leases and transaction reports have a form per broker (see `lease.rs` and `txn.rs`).

use crate::error::{nats, ClusterError};
use async_nats::jetstream::{kv, object_store::ObjectStore};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::path::Path;

/// One live entry of a [`KvStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: Bytes,
    /// The store's revision when the entry was written: unique and growing across the store.
    pub revision: u64,
}

/// One change a [`KvStore::watch`] delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvChange {
    Put(KvEntry),
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

    /// Deletes `key` if its entry still has `revision`; an error otherwise.
    async fn delete_at(&self, key: &str, revision: u64) -> Result<(), ClusterError>;

    /// Deletes `key` whatever it holds.
    async fn delete(&self, key: &str) -> Result<(), ClusterError>;

    /// Every live entry whose key starts with `prefix`, by key.
    async fn entries(&self, prefix: &str) -> Result<Vec<KvEntry>, ClusterError>;

    /// The changes of keys starting with one of `prefixes` made from now on, in revision
    /// order. The stream ends when the store's connection is lost; watch again.
    async fn watch(&self, prefixes: &[&str]) -> Result<BoxStream<'static, KvChange>, ClusterError>;
}

/// Files by name, for checkpoints. Names are `/`-separated paths of letters, digits, `.`,
/// `_` and `-`.
#[async_trait::async_trait]
pub trait Objects: Send + Sync + 'static {
    /// Stores the file at `path` as `name`, replacing any object of that name.
    async fn put(&self, name: &str, path: &Path) -> Result<(), ClusterError>;

    /// Writes the object `name` to a new file at `path`.
    async fn get(&self, name: &str, path: &Path) -> Result<(), ClusterError>;

    /// Every object name starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ClusterError>;

    /// Deletes the object `name`; a missing one is fine.
    async fn delete(&self, name: &str) -> Result<(), ClusterError>;
}

/// A JetStream key-value bucket as a [`KvStore`].
pub(crate) struct JetStreamKv(pub kv::Store);

fn live(entry: kv::Entry) -> Option<KvEntry> {
    (entry.operation == kv::Operation::Put).then(|| KvEntry {
        key: entry.key,
        value: entry.value,
        revision: entry.revision,
    })
}

#[async_trait::async_trait]
impl KvStore for JetStreamKv {
    async fn create(&self, key: &str, value: Bytes) -> Result<Option<u64>, ClusterError> {
        match self.0.create(key, value).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(nats(&format!("creating {key}"), e)),
        }
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, ClusterError> {
        self.0
            .put(key, value)
            .await
            .map_err(|e| nats(&format!("writing {key}"), e))
    }

    async fn entry(&self, key: &str) -> Result<Option<KvEntry>, ClusterError> {
        let entry = self
            .0
            .entry(key)
            .await
            .map_err(|e| nats(&format!("reading {key}"), e))?;
        Ok(entry.and_then(live))
    }

    async fn delete_at(&self, key: &str, revision: u64) -> Result<(), ClusterError> {
        self.0
            .delete_expect_revision(key, Some(revision))
            .await
            .map_err(|e| nats(&format!("deleting {key}"), e))
    }

    async fn delete(&self, key: &str) -> Result<(), ClusterError> {
        self.0
            .delete(key)
            .await
            .map_err(|e| nats(&format!("deleting {key}"), e))
    }

    async fn entries(&self, prefix: &str) -> Result<Vec<KvEntry>, ClusterError> {
        let mut listing = self.0.keys().await.map_err(|e| nats("listing keys", e))?;
        let mut keys = Vec::new();
        while let Some(key) = listing.next().await {
            let key = key.map_err(|e| nats("listing keys", e))?;
            if key.starts_with(prefix) {
                keys.push(key);
            }
        }
        keys.sort();
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(entry) = self.entry(&key).await? {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    async fn watch(&self, prefixes: &[&str]) -> Result<BoxStream<'static, KvChange>, ClusterError> {
        let subjects: Vec<String> = prefixes.iter().map(|p| format!("{p}>")).collect();
        let watch = if prefixes.iter().any(|p| p.is_empty()) {
            self.0.watch_all().await
        } else {
            self.0.watch_many(subjects).await
        }
        .map_err(|e| nats("watching keys", e))?;
        Ok(watch
            .take_while(|e| futures::future::ready(e.is_ok()))
            .filter_map(|e| async move {
                let e = e.ok()?;
                Some(match e.operation {
                    kv::Operation::Put => KvChange::Put(KvEntry {
                        key: e.key,
                        value: e.value,
                        revision: e.revision,
                    }),
                    kv::Operation::Delete | kv::Operation::Purge => KvChange::Deleted(e.key),
                })
            })
            .boxed())
    }
}

/// The JetStream object store as [`Objects`].
pub(crate) struct JetStreamObjects(pub ObjectStore);

#[async_trait::async_trait]
impl Objects for JetStreamObjects {
    async fn put(&self, name: &str, path: &Path) -> Result<(), ClusterError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClusterError::Checkpoint(format!("opening {}: {e}", path.display())))?;
        self.0
            .put(name, &mut file)
            .await
            .map(|_| ())
            .map_err(|e| nats(&format!("uploading {name}"), e))
    }

    async fn get(&self, name: &str, path: &Path) -> Result<(), ClusterError> {
        let mut object = self
            .0
            .get(name)
            .await
            .map_err(|e| nats(&format!("downloading {name}"), e))?;
        let mut out = tokio::fs::File::create(path)
            .await
            .map_err(|e| ClusterError::Checkpoint(format!("creating {}: {e}", path.display())))?;
        tokio::io::copy(&mut object, &mut out)
            .await
            .map_err(|e| ClusterError::Checkpoint(format!("downloading {name}: {e}")))?;
        out.sync_all()
            .await
            .map_err(|e| ClusterError::Checkpoint(format!("syncing {}: {e}", path.display())))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ClusterError> {
        let mut list = self
            .0
            .list()
            .await
            .map_err(|e| nats("listing checkpoint objects", e))?;
        let mut names = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| nats("listing checkpoint objects", e))?;
            if info.name.starts_with(prefix) {
                names.push(info.name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn delete(&self, name: &str) -> Result<(), ClusterError> {
        self.0
            .delete(name)
            .await
            .map_err(|e| nats(&format!("deleting {name}"), e))
    }
}
