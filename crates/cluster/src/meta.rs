//! Cluster metadata in a [`KvStore`] (the JetStream bucket `{name}_meta`, or the Kafka topic
//! `{topic}.meta`): the partition map, keyspace schemas whose ids are the store revisions
//! that created them, and cache definitions (`cache.{name}`; a cache's id follows from its
//! name).

use crate::control::{KvChange, KvEntry, KvStore};
use crate::error::ClusterError;
use futures::StreamExt;
use notadb_node::{CacheDef, KeyspaceDef, Node, NodeError, SchemaStore};
use notadb_types::{GroupId, KeyspaceId, KeyspaceSchema, PartitionId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const CLUSTER_KEY: &str = "cluster";
const KEYSPACE_PREFIX: &str = "keyspace.";
const CACHE_PREFIX: &str = "cache.";
/// Pause before re-watching after the watch stream ended (a NATS restart).
const REWATCH_PAUSE: Duration = Duration::from_millis(500);

/// The cluster's fixed shape, written once by the first node and checked by every other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterDoc {
    /// Partition count `P`.
    pub partitions: u16,
    /// Shard group count.
    pub groups: u16,
    /// `assignment[p]`: the shard group serving partition `p`.
    pub assignment: Vec<GroupId>,
}

impl ClusterDoc {
    /// Partitions dealt round-robin to the groups: `p mod groups`.
    pub fn new(partitions: u16, groups: u16) -> ClusterDoc {
        ClusterDoc {
            partitions,
            groups,
            assignment: (0..partitions).map(|p| GroupId(p % groups)).collect(),
        }
    }

    /// The group serving `p`.
    pub fn group_of(&self, p: PartitionId) -> GroupId {
        self.assignment[p.0 as usize]
    }

    /// The partitions `group` serves.
    pub fn partitions_of(&self, group: GroupId) -> BTreeSet<PartitionId> {
        (0..self.partitions)
            .map(PartitionId)
            .filter(|p| self.group_of(*p) == group)
            .collect()
    }
}

/// Writes the cluster's shape if it is new, or checks that it matches this configuration.
pub(crate) async fn cluster_doc(
    meta: &dyn KvStore,
    wanted: ClusterDoc,
) -> Result<ClusterDoc, ClusterError> {
    let bytes = serde_json::to_vec(&wanted).expect("serializable");
    if meta.create(CLUSTER_KEY, bytes.into()).await?.is_some() {
        return Ok(wanted);
    }
    let found = meta.entry(CLUSTER_KEY).await?.ok_or_else(|| {
        ClusterError::Nats("the cluster's shape could not be created or read".into())
    })?;
    let found: ClusterDoc = serde_json::from_slice(&found.value)
        .map_err(|e| ClusterError::Config(format!("the cluster's shape is unreadable: {e}")))?;
    if found.partitions != wanted.partitions || found.groups != wanted.groups {
        return Err(ClusterError::Config(format!(
            "this node is configured for {} partitions in {} shard groups, the cluster has {} partitions in {} groups",
            wanted.partitions, wanted.groups, found.partitions, found.groups
        )));
    }
    Ok(found)
}

/// Keyspace schemas in the metadata bucket: `keyspace.{name}` holds the schema, and the
/// revision that created the key is the keyspace's id, so ids are cluster-wide, never reused,
/// and ordered like the changes.
pub struct KvSchemas {
    pub(crate) meta: Arc<dyn KvStore>,
}

fn keyspace_key(name: &str) -> String {
    format!("{KEYSPACE_PREFIX}{name}")
}

fn def_of(entry: &KvEntry) -> Result<KeyspaceDef, NodeError> {
    let schema: KeyspaceSchema = serde_json::from_slice(&entry.value).map_err(|e| {
        NodeError::Internal(format!("cluster metadata {} is unreadable: {e}", entry.key))
    })?;
    Ok(KeyspaceDef {
        id: keyspace_id(entry.revision)?,
        schema,
    })
}

fn keyspace_id(revision: u64) -> Result<KeyspaceId, NodeError> {
    u32::try_from(revision).map(KeyspaceId).map_err(|_| {
        NodeError::Internal(format!(
            "metadata revision {revision} does not fit a keyspace id"
        ))
    })
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::Unavailable(format!("cluster metadata: {what}: {e}"))
}

impl KvSchemas {
    async fn live_entry(&self, name: &str) -> Result<Option<KvEntry>, NodeError> {
        self.meta
            .entry(&keyspace_key(name))
            .await
            .map_err(|e| unavailable("reading a keyspace", e))
    }
}

#[async_trait::async_trait]
impl SchemaStore for KvSchemas {
    async fn create(
        &self,
        schema: KeyspaceSchema,
        if_not_exists: bool,
    ) -> Result<(KeyspaceDef, bool), NodeError> {
        let key = keyspace_key(&schema.name);
        let bytes = serde_json::to_vec(&schema).expect("serializable");
        match self.meta.create(&key, bytes.into()).await {
            Ok(Some(revision)) => Ok((
                KeyspaceDef {
                    id: keyspace_id(revision)?,
                    schema,
                },
                true,
            )),
            Ok(None) => {
                let existing = self.live_entry(&schema.name).await?.ok_or_else(|| {
                    NodeError::Unavailable(format!(
                        "keyspace `{}` is being created or dropped concurrently; retry",
                        schema.name
                    ))
                })?;
                let def = def_of(&existing)?;
                if if_not_exists && def.schema == schema {
                    return Ok((def, false));
                }
                Err(NodeError::AlreadyExists(format!(
                    "keyspace `{}` already exists{}",
                    schema.name,
                    if def.schema == schema {
                        ""
                    } else {
                        " with another schema"
                    }
                )))
            }
            Err(e) => Err(unavailable("creating a keyspace", e)),
        }
    }

    async fn remove(&self, name: &str) -> Result<KeyspaceDef, NodeError> {
        let entry = self
            .live_entry(name)
            .await?
            .ok_or_else(|| NodeError::NotFound(format!("keyspace `{name}` does not exist")))?;
        let def = def_of(&entry)?;
        self.meta
            .delete_at(&keyspace_key(name), entry.revision)
            .await
            .map_err(|e| unavailable("dropping a keyspace", e))?;
        Ok(def)
    }

    async fn create_cache(&self, def: CacheDef, if_not_exists: bool) -> Result<bool, NodeError> {
        let key = format!("{CACHE_PREFIX}{}", def.name);
        let bytes = serde_json::to_vec(&def).expect("serializable");
        match self.meta.create(&key, bytes.into()).await {
            Ok(Some(_)) => Ok(true),
            Ok(None) => {
                let existing = self.live_cache(&def.name).await?.ok_or_else(|| {
                    NodeError::Unavailable(format!(
                        "cache `{}` is being created or dropped concurrently; retry",
                        def.name
                    ))
                })?;
                if if_not_exists && existing.0 == def {
                    return Ok(false);
                }
                Err(NodeError::AlreadyExists(format!(
                    "cache `{}` already exists{}",
                    def.name,
                    if existing.0 == def {
                        ""
                    } else {
                        " with other settings"
                    }
                )))
            }
            Err(e) => Err(unavailable("creating a cache", e)),
        }
    }

    async fn remove_cache(&self, name: &str) -> Result<CacheDef, NodeError> {
        let (def, revision) = self
            .live_cache(name)
            .await?
            .ok_or_else(|| NodeError::NotFound(format!("cache `{name}` does not exist")))?;
        self.meta
            .delete_at(&format!("{CACHE_PREFIX}{name}"), revision)
            .await
            .map_err(|e| unavailable("dropping a cache", e))?;
        Ok(def)
    }
}

impl KvSchemas {
    async fn live_cache(&self, name: &str) -> Result<Option<(CacheDef, u64)>, NodeError> {
        let entry = self
            .meta
            .entry(&format!("{CACHE_PREFIX}{name}"))
            .await
            .map_err(|e| unavailable("reading a cache", e))?;
        match entry {
            None => Ok(None),
            Some(e) => Ok(Some((cache_of(&e)?, e.revision))),
        }
    }
}

fn cache_of(entry: &KvEntry) -> Result<CacheDef, NodeError> {
    serde_json::from_slice(&entry.value).map_err(|e| {
        NodeError::Internal(format!("cluster metadata {} is unreadable: {e}", entry.key))
    })
}

/// Installs every keyspace the bucket holds into the node's catalog and removes the ones it
/// does not; returns once the node's catalog matches the bucket.
pub(crate) async fn sync_schemas(meta: &dyn KvStore, node: &Node) -> Result<(), ClusterError> {
    let mut caches = BTreeSet::new();
    for entry in meta.entries(CACHE_PREFIX).await? {
        node.install_cache(cache_of(&entry)?).await?;
        caches.insert(entry.key[CACHE_PREFIX.len()..].to_string());
    }
    let mut names = BTreeSet::new();
    for entry in meta.entries(KEYSPACE_PREFIX).await? {
        node.install_keyspace(def_of(&entry)?).await?;
        names.insert(entry.key[KEYSPACE_PREFIX.len()..].to_string());
    }
    for info in node.list_keyspaces() {
        if !names.contains(&info.def.schema.name) {
            node.forget_keyspace(&info.def.schema.name).await?;
        }
    }
    for info in node.list_caches() {
        if !caches.contains(&info.def.name) {
            node.forget_cache(&info.def.name).await?;
        }
    }
    Ok(())
}

/// Applies schema and cache changes to the node's catalog in bucket order until `stop`.
/// Each watch (the first, and each after the store's connection was lost) opens before the
/// catalog is synced with the store, so no change falls between the two: one that lands in
/// both is applied again, and the changes after the sync bring the catalog to the store's
/// state.
pub(crate) async fn watch_schemas(
    meta: Arc<dyn KvStore>,
    node: Node,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let watched = async {
            let watch = meta.watch(&[KEYSPACE_PREFIX, CACHE_PREFIX]).await?;
            sync_schemas(meta.as_ref(), &node).await?;
            Ok::<_, ClusterError>(watch)
        };
        match watched.await {
            Ok(mut watch) => loop {
                let next = tokio::select! {
                    _ = stop.changed() => return,
                    next = watch.next() => next,
                };
                let Some(change) = next else { break };
                if let Err(e) = apply_change(&node, &change).await {
                    tracing::error!(?change, error = %e, "could not apply a metadata change");
                }
            },
            Err(e) => tracing::warn!(error = %e, "watching keyspace schemas failed; retrying"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(REWATCH_PAUSE) => {}
        }
    }
}

/// Installs or removes the keyspace or cache one bucket entry describes.
async fn apply_change(node: &Node, change: &KvChange) -> Result<(), NodeError> {
    let (key, entry) = match change {
        KvChange::Put(entry) => (entry.key.as_str(), Some(entry)),
        KvChange::Deleted(key) => (key.as_str(), None),
    };
    if let Some(name) = key.strip_prefix(CACHE_PREFIX) {
        return match entry {
            Some(entry) => node.install_cache(cache_of(entry)?).await,
            None => node.forget_cache(name).await,
        };
    }
    let Some(name) = key.strip_prefix(KEYSPACE_PREFIX) else {
        return Ok(());
    };
    match entry {
        Some(entry) => node.install_keyspace(def_of(entry)?).await,
        None => node.forget_keyspace(name).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_doc_keeps_bare_group_numbers_in_its_json() {
        // As every earlier version wrote it: a cluster keeps reading its own metadata.
        let json = r#"{"partitions":4,"groups":2,"assignment":[0,1,0,1]}"#;
        let doc: ClusterDoc = serde_json::from_str(json).expect("parses");
        assert_eq!(doc, ClusterDoc::new(4, 2));
        assert_eq!(doc.group_of(PartitionId(3)), GroupId(1));
        assert_eq!(serde_json::to_string(&doc).expect("serializes"), json);
    }

    #[test]
    fn partitions_are_dealt_round_robin() {
        let doc = ClusterDoc::new(8, 3);
        assert_eq!(doc.assignment, [0, 1, 2, 0, 1, 2, 0, 1].map(GroupId));
        assert_eq!(doc.group_of(PartitionId(5)), GroupId(2));
        let g1: Vec<u16> = doc
            .partitions_of(GroupId(1))
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(g1, [1, 4, 7]);
        let all: usize = (0..3).map(|g| doc.partitions_of(GroupId(g)).len()).sum();
        assert_eq!(all, 8);
    }

    #[test]
    fn keyspace_ids_are_revisions_that_fit_u32() {
        assert_eq!(keyspace_id(7).expect("fits"), KeyspaceId(7));
        assert!(keyspace_id(u64::from(u32::MAX) + 1).is_err());
    }
}
