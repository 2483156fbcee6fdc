//! The node's keyspace API: create, install, list, describe and drop keyspaces. Definitions
//! live in the catalog part ([`crate::catalog::Definitions`]); a drop also appends a drop entry
//! to every partition's log, which deletes the keyspace's data in log order.

use crate::request::Mutation;
use crate::write::{keyspace_of, prepare, WriteContext};
use crate::{Node, NodeError};
use notadb_record::{KeyspaceDef, Op, Record};
use notadb_types::{KeyspaceId, KeyspaceSchema, PartitionId, Token};
use std::collections::BTreeSet;
use std::sync::Arc;

/// A keyspace and its size.
#[derive(Clone, Debug)]
pub struct KeyspaceInfo {
    /// The keyspace's definition.
    pub def: Arc<KeyspaceDef>,
    /// RocksDB's estimate of the keyspace's bytes on disk, over all partitions.
    pub approximate_bytes: u64,
}

impl Node {
    /// Creates a keyspace; returns it and whether it was created (vs. already there).
    pub async fn create_keyspace(
        &self,
        schema: KeyspaceSchema,
        if_not_exists: bool,
    ) -> Result<(KeyspaceInfo, bool), NodeError> {
        self.check_room_for_keyspace(&schema.name)?;
        if let Some(store) = self.inner.catalog.store() {
            schema.validate()?;
            let (def, created) = store.create(schema, if_not_exists).await?;
            let name = def.schema.name.clone();
            self.install_keyspace(def).await?;
            return Ok((self.describe_keyspace(&name)?, created));
        }
        let (def, created) = self
            .inner
            .catalog
            .change(move |catalog, storage| catalog.create(storage, schema, if_not_exists))
            .await?;
        Ok((self.info(def), created))
    }

    /// Installs a keyspace decided by the cluster's schema store (called in the store's order).
    pub async fn install_keyspace(&self, def: KeyspaceDef) -> Result<(), NodeError> {
        self.inner
            .catalog
            .change(move |catalog, storage| catalog.install(storage, def))
            .await?;
        Ok(())
    }

    /// Removes a keyspace another node dropped (that node appends the drop entries).
    pub async fn forget_keyspace(&self, name: &str) -> Result<(), NodeError> {
        let name = name.to_string();
        self.inner
            .catalog
            .change(move |catalog, storage| catalog.forget(storage, &name))
            .await?;
        Ok(())
    }

    fn info(&self, def: Arc<KeyspaceDef>) -> KeyspaceInfo {
        let approximate_bytes = self
            .inner
            .storage
            .approximate_bytes(def.id, self.inner.config.partitions);
        KeyspaceInfo {
            def,
            approximate_bytes,
        }
    }

    /// Every keyspace.
    pub fn list_keyspaces(&self) -> Vec<KeyspaceInfo> {
        let defs = self.inner.catalog.read().list();
        defs.into_iter().map(|d| self.info(d)).collect()
    }

    /// One keyspace.
    pub fn describe_keyspace(&self, name: &str) -> Result<KeyspaceInfo, NodeError> {
        let def = self.inner.catalog.read().get(name)?;
        Ok(self.info(def))
    }

    /// The definition of the keyspace `name` (its id and schema).
    pub fn keyspace(&self, name: &str) -> Result<Arc<KeyspaceDef>, NodeError> {
        self.inner.catalog.read().get(name)
    }

    /// Drops a keyspace: it disappears from the catalog at once, and a drop entry in every
    /// partition's log deletes its data in log order.
    pub async fn drop_keyspace(&self, name: &str) -> Result<(), NodeError> {
        if let Some(store) = self.inner.catalog.store() {
            store.remove(name).await?;
        }
        let name = name.to_string();
        let id = self
            .inner
            .catalog
            .change(move |catalog, storage| catalog.remove(storage, &name))
            .await?;
        self.append_drops(id, self.inner.partitioner.all().collect())
            .await
    }

    async fn append_drops(
        &self,
        id: KeyspaceId,
        partitions: Vec<PartitionId>,
    ) -> Result<(), NodeError> {
        let ts_micros = self.inner.clock.now_micros();
        let payload = Record::DropKeyspace {
            ts_micros,
            keyspace: id,
        }
        .encode();
        let mut waits = Vec::new();
        for p in partitions {
            let seq = self.append(p, payload.clone()).await?;
            if self.owns(p) {
                waits.push((p, seq));
            }
        }
        let node = self.clone();
        self.spawn(async move {
            for (p, seq) in waits {
                node.partition(p).wait_applied(seq).await;
            }
            let finished = node
                .inner
                .catalog
                .change(move |catalog, storage| catalog.finish_drop(storage, id))
                .await;
            if let Err(e) = finished {
                tracing::error!(error = %e, keyspace = %id, "could not finish a drop");
            }
        });
        Ok(())
    }

    pub(crate) async fn resume_drops(&self) -> Result<(), NodeError> {
        let dropping = self.inner.catalog.read().dropping();
        if dropping.is_empty() {
            return Ok(());
        }
        let done: BTreeSet<(PartitionId, KeyspaceId)> =
            self.inner.storage.dropped()?.into_iter().collect();
        for id in dropping {
            let missing = self
                .inner
                .partitioner
                .all()
                .filter(|p| !done.contains(&(*p, id)))
                .collect();
            self.append_drops(id, missing).await?;
        }
        Ok(())
    }

    /// Validates a batch of mutations, appends it to its partition's log as one entry and
    /// returns its token. All mutations must fall in one partition; nothing is appended when
    /// any of them is invalid. Errors name fields as in a single `Put` (`key: ...`) when there
    /// is one mutation, and as `mutations[i].key: ...` otherwise.
    pub async fn write(&self, mutations: Vec<Mutation>) -> Result<Token, NodeError> {
        let indexed = mutations.len() > 1;
        self.write_named(mutations, indexed).await
    }

    /// `write` for a client's batch: errors always name `mutations[i]`, even for one mutation.
    pub async fn write_batch(&self, mutations: Vec<Mutation>) -> Result<Token, NodeError> {
        self.write_named(mutations, true).await
    }

    async fn write_named(
        &self,
        mutations: Vec<Mutation>,
        indexed: bool,
    ) -> Result<Token, NodeError> {
        let limits = &self.inner.config.limits;
        if mutations.is_empty() {
            return Err(NodeError::invalid(
                "mutations: a write needs at least one mutation",
            ));
        }
        if mutations.len() > limits.max_batch_mutations {
            return Err(NodeError::invalid(format!(
                "mutations: {} mutations, the limit is {} (max_batch_mutations)",
                mutations.len(),
                limits.max_batch_mutations
            )));
        }
        let ts_micros = self.inner.clock.now_micros();
        let (keyspaces, caches) = {
            let catalog = self.inner.catalog.read();
            (catalog.snapshot(), catalog.cache_snapshot())
        };
        let ctx = WriteContext {
            partitioner: &self.inner.partitioner,
            limits,
            ts_micros,
        };
        let mut partition: Option<(usize, PartitionId)> = None;
        let mut ops: Vec<Op> = Vec::with_capacity(mutations.len());
        for (i, mutation) in mutations.into_iter().enumerate() {
            let field = if indexed {
                format!("mutations[{i}].")
            } else {
                String::new()
            };
            let name = keyspace_of(&mutation);
            let def = keyspaces.get(name).ok_or_else(|| {
                NodeError::NotFound(format!("{field}keyspace: keyspace `{name}` does not exist"))
            })?;
            // Caches derived from the keyspace: the write drops their entry (no allocation
            // when there are none).
            let derived: Vec<notadb_cache::CacheId> = caches
                .values()
                .filter(|c| c.derived_from.as_deref() == Some(name))
                .map(|c| c.id())
                .collect();
            let prepared = prepare(def, mutation, &ctx, &field)?;
            match partition {
                None => partition = Some((i, prepared.partition)),
                Some((first, p)) if p != prepared.partition => {
                    return Err(NodeError::invalid(format!(
                        "mutations[{first}] and mutations[{i}] fall in partitions {p} and {}; a write must fall in one partition (group mutations by partition key)",
                        prepared.partition
                    )));
                }
                Some(_) => {}
            }
            if let Some(op) = prepared.op {
                for cache in derived {
                    ops.push(match &op {
                        Op::Put { key, .. } | Op::Delete { key, .. } => Op::CacheDelete {
                            cache,
                            key: key.clone(),
                        },
                        // A range's keys are unknown here: the cache's partition is cleared.
                        _ => Op::CacheClear { cache },
                    });
                }
                ops.push(op);
            }
        }
        let (_, partition) = partition.expect("at least one mutation");
        let payload = Record::Batch { ts_micros, ops }.encode();
        if payload.len() > limits.max_batch_bytes {
            return Err(NodeError::invalid(format!(
                "mutations: the write is {} bytes, the limit is {} (max_batch_bytes)",
                payload.len(),
                limits.max_batch_bytes
            )));
        }
        let seq = self.append_batch(partition, payload).await?;
        Ok(Token { partition, seq })
    }

    /// Refuses a keyspace that would take the count past `max_keyspaces` (an existing name
    /// passes: creating it again is answered by the catalog).
    fn check_room_for_keyspace(&self, name: &str) -> Result<(), NodeError> {
        let keyspaces = self.inner.catalog.read().snapshot();
        let limit = self.inner.config.limits.max_keyspaces;
        if !keyspaces.contains_key(name) && keyspaces.len() >= limit {
            return Err(NodeError::ResourceExhausted(format!(
                "there are {} keyspaces, the limit is {limit} (max_keyspaces); drop one or raise the limit",
                keyspaces.len()
            )));
        }
        Ok(())
    }
}
