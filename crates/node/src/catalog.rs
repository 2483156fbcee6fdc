//! The keyspaces a node knows, persisted in the storage's meta column family.

use crate::NodeError;
use notadb_cache::{CacheDef, CACHE_ID_BASE};
use notadb_record::KeyspaceDef;
use notadb_storage::RocksStorage;
use notadb_types::{KeyspaceId, KeyspaceSchema};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock, RwLockReadGuard};

const KEYSPACE_PREFIX: &[u8] = b"keyspace/";
const DROPPING_PREFIX: &[u8] = b"dropping/";
const NEXT_ID_KEY: &[u8] = b"next_keyspace_id";
const CACHE_PREFIX: &[u8] = b"cache/";

/// Name → keyspace, plus the ids of dropped keyspaces whose data is still being deleted, and
/// name → cache.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    keyspaces: Arc<BTreeMap<String, Arc<KeyspaceDef>>>,
    caches: Arc<BTreeMap<String, Arc<CacheDef>>>,
    next_id: u32,
    dropping: BTreeSet<KeyspaceId>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::Internal(format!("catalog entry {what} is unreadable: {e}"))
}

impl Catalog {
    /// Reads the catalog a data directory holds.
    pub fn load(storage: &RocksStorage) -> Result<Catalog, NodeError> {
        let mut catalog = Catalog {
            next_id: 1,
            ..Catalog::default()
        };
        for (key, value) in storage.scan_meta(KEYSPACE_PREFIX)? {
            let def: KeyspaceDef = serde_json::from_slice(&value)
                .map_err(|e| corrupt(&String::from_utf8_lossy(&key), e))?;
            Arc::make_mut(&mut catalog.keyspaces).insert(def.schema.name.clone(), Arc::new(def));
        }
        for (key, _) in storage.scan_meta(DROPPING_PREFIX)? {
            let id: [u8; 4] = key[DROPPING_PREFIX.len()..]
                .try_into()
                .map_err(|_| corrupt("dropping", "bad length"))?;
            catalog.dropping.insert(KeyspaceId(u32::from_be_bytes(id)));
        }
        for (key, value) in storage.scan_meta(CACHE_PREFIX)? {
            let def: CacheDef = serde_json::from_slice(&value)
                .map_err(|e| corrupt(&String::from_utf8_lossy(&key), e))?;
            Arc::make_mut(&mut catalog.caches).insert(def.name.clone(), Arc::new(def));
        }
        if let Some(next) = storage.get_meta(NEXT_ID_KEY)? {
            let next: [u8; 4] = next
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("next id", "bad length"))?;
            catalog.next_id = u32::from_be_bytes(next);
        }
        Ok(catalog)
    }

    /// The keyspace named `name`.
    pub fn get(&self, name: &str) -> Result<Arc<KeyspaceDef>, NodeError> {
        self.keyspaces
            .get(name)
            .cloned()
            .ok_or_else(|| NodeError::NotFound(format!("keyspace `{name}` does not exist")))
    }

    /// The keyspaces as of now; later changes do not affect the returned map.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, Arc<KeyspaceDef>>> {
        self.keyspaces.clone()
    }

    /// Every keyspace, by name.
    pub fn list(&self) -> Vec<Arc<KeyspaceDef>> {
        self.keyspaces.values().cloned().collect()
    }

    /// Dropped keyspaces whose drop has not been applied everywhere yet.
    pub fn dropping(&self) -> Vec<KeyspaceId> {
        self.dropping.iter().copied().collect()
    }

    /// Creates a keyspace; an identical existing one is returned as is when `if_not_exists`.
    /// Returns the keyspace and whether it was created.
    pub fn create(
        &mut self,
        storage: &RocksStorage,
        schema: KeyspaceSchema,
        if_not_exists: bool,
    ) -> Result<(Arc<KeyspaceDef>, bool), NodeError> {
        schema.validate()?;
        if let Some(existing) = self.keyspaces.get(&schema.name) {
            if if_not_exists && existing.schema == schema {
                return Ok((existing.clone(), false));
            }
            return Err(NodeError::AlreadyExists(format!(
                "keyspace `{}` already exists{}",
                schema.name,
                if existing.schema == schema {
                    ""
                } else {
                    " with another schema"
                }
            )));
        }
        let def = KeyspaceDef {
            id: KeyspaceId(self.next_id),
            schema,
        };
        let mut batch = storage.batch();
        batch.put_meta(
            &keyspace_key(&def.schema.name),
            &serde_json::to_vec(&def).expect("serializable"),
        );
        batch.put_meta(NEXT_ID_KEY, &(self.next_id + 1).to_be_bytes());
        storage.commit(batch, true)?;
        self.next_id += 1;
        let def = Arc::new(def);
        Arc::make_mut(&mut self.keyspaces).insert(def.schema.name.clone(), def.clone());
        Ok((def, true))
    }

    /// Removes a keyspace from the catalog and remembers its id until its data is gone.
    pub fn remove(&mut self, storage: &RocksStorage, name: &str) -> Result<KeyspaceId, NodeError> {
        let def = self.get(name)?;
        let mut batch = storage.batch();
        batch.delete_meta(&keyspace_key(name));
        batch.put_meta(&dropping_key(def.id), &[]);
        storage.commit(batch, true)?;
        Arc::make_mut(&mut self.keyspaces).remove(name);
        self.dropping.insert(def.id);
        Ok(def.id)
    }

    /// Adds or replaces a keyspace whose id was assigned elsewhere (the cluster's metadata
    /// store). Returns whether anything changed.
    pub fn install(&mut self, storage: &RocksStorage, def: KeyspaceDef) -> Result<bool, NodeError> {
        if self.keyspaces.get(&def.schema.name).map(|d| d.as_ref()) == Some(&def) {
            return Ok(false);
        }
        if def.id.0 >= CACHE_ID_BASE {
            return Err(NodeError::Internal(format!(
                "keyspace id {} of `{}` is in the range reserved for caches",
                def.id, def.schema.name
            )));
        }
        let next_id = self.next_id.max(def.id.0.saturating_add(1));
        let mut batch = storage.batch();
        batch.put_meta(
            &keyspace_key(&def.schema.name),
            &serde_json::to_vec(&def).expect("serializable"),
        );
        batch.put_meta(NEXT_ID_KEY, &next_id.to_be_bytes());
        storage.commit(batch, true)?;
        self.next_id = next_id;
        Arc::make_mut(&mut self.keyspaces).insert(def.schema.name.clone(), Arc::new(def));
        Ok(true)
    }

    /// Removes a keyspace dropped elsewhere: the node that dropped it appends the drop
    /// entries. Returns the removed keyspace, if it was there.
    pub fn forget(
        &mut self,
        storage: &RocksStorage,
        name: &str,
    ) -> Result<Option<Arc<KeyspaceDef>>, NodeError> {
        let Some(def) = self.keyspaces.get(name).cloned() else {
            return Ok(None);
        };
        let mut batch = storage.batch();
        batch.delete_meta(&keyspace_key(name));
        storage.commit(batch, true)?;
        Arc::make_mut(&mut self.keyspaces).remove(name);
        Ok(Some(def))
    }

    /// Forgets a dropped keyspace once every partition applied its drop.
    pub fn finish_drop(&mut self, storage: &RocksStorage, id: KeyspaceId) -> Result<(), NodeError> {
        let mut batch = storage.batch();
        batch.delete_meta(&dropping_key(id));
        storage.commit(batch, true)?;
        self.dropping.remove(&id);
        Ok(())
    }
}

impl Catalog {
    /// The cache named `name`.
    pub fn cache(&self, name: &str) -> Result<Arc<CacheDef>, NodeError> {
        self.caches
            .get(name)
            .cloned()
            .ok_or_else(|| NodeError::NotFound(format!("cache `{name}` does not exist")))
    }

    /// The caches as of now; later changes do not affect the returned map.
    pub fn cache_snapshot(&self) -> Arc<BTreeMap<String, Arc<CacheDef>>> {
        self.caches.clone()
    }

    /// Every cache, by name.
    pub fn caches(&self) -> Vec<Arc<CacheDef>> {
        self.caches.values().cloned().collect()
    }

    /// Creates (or, when installing a definition decided elsewhere, replaces) a cache. An
    /// identical existing one is returned as is when `if_not_exists`. Returns whether anything
    /// changed.
    pub fn put_cache(
        &mut self,
        storage: &RocksStorage,
        def: CacheDef,
        if_not_exists: bool,
        replace: bool,
    ) -> Result<(Arc<CacheDef>, bool), NodeError> {
        if let Some(existing) = self.caches.get(&def.name) {
            if **existing == def && (if_not_exists || replace) {
                return Ok((existing.clone(), false));
            }
            if !replace {
                return Err(NodeError::AlreadyExists(format!(
                    "cache `{}` already exists{}",
                    def.name,
                    if **existing == def {
                        ""
                    } else {
                        " with other settings"
                    }
                )));
            }
        }
        if let Some(other) = self
            .caches
            .values()
            .find(|c| c.name != def.name && c.id() == def.id())
        {
            return Err(NodeError::AlreadyExists(format!(
                "cache `{}` would share its id with cache `{}`; choose another name",
                def.name, other.name
            )));
        }
        let mut batch = storage.batch();
        batch.put_meta(
            &[CACHE_PREFIX, def.name.as_bytes()].concat(),
            &serde_json::to_vec(&def).expect("serializable"),
        );
        storage.commit(batch, true)?;
        let def = Arc::new(def);
        Arc::make_mut(&mut self.caches).insert(def.name.clone(), def.clone());
        Ok((def, true))
    }

    /// Removes a cache; returns it, if it was there.
    pub fn remove_cache(
        &mut self,
        storage: &RocksStorage,
        name: &str,
    ) -> Result<Option<Arc<CacheDef>>, NodeError> {
        let Some(def) = self.caches.get(name).cloned() else {
            return Ok(None);
        };
        let mut batch = storage.batch();
        batch.delete_meta(&[CACHE_PREFIX, name.as_bytes()].concat());
        storage.commit(batch, true)?;
        Arc::make_mut(&mut self.caches).remove(name);
        Ok(Some(def))
    }
}

/// The node's part that owns its definitions: the catalog reads resolve names against, the
/// cluster's schema store when the node is a member, and the lock that orders changes.
pub(crate) struct Definitions {
    current: RwLock<Catalog>,
    store: Option<Arc<dyn SchemaStore>>,
    /// Serialises catalog changes (create, drop), which commit outside the catalog lock.
    ddl: tokio::sync::Mutex<()>,
    storage: Arc<RocksStorage>,
}

impl Definitions {
    /// Serves `catalog`, changes persisted in `storage`; `store` decides them in a cluster.
    pub fn new(
        catalog: Catalog,
        store: Option<Arc<dyn SchemaStore>>,
        storage: Arc<RocksStorage>,
    ) -> Definitions {
        Definitions {
            current: RwLock::new(catalog),
            store,
            ddl: tokio::sync::Mutex::new(()),
            storage,
        }
    }

    /// The current catalog (a read lock: hold it briefly, never across an await).
    pub fn read(&self) -> RwLockReadGuard<'_, Catalog> {
        self.current.read().expect("catalog lock")
    }

    /// The cluster's schema store, when this node is a member of one.
    pub fn store(&self) -> Option<Arc<dyn SchemaStore>> {
        self.store.clone()
    }

    /// Applies a catalog change on a blocking thread (it fsyncs), one change at a time, and
    /// publishes the new catalog only once it is durable.
    pub async fn change<R, F>(self: &Arc<Self>, change: F) -> Result<R, NodeError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Catalog, &RocksStorage) -> Result<R, NodeError> + Send + 'static,
    {
        let _ddl = self.ddl.lock().await;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut next = this.read().clone();
            let result = change(&mut next, &this.storage)?;
            *this.current.write().expect("catalog lock") = next;
            Ok(result)
        })
        .await?
    }
}

/// Where keyspace definitions are decided when a node is one of many: the cluster's metadata
/// store assigns ids (never reused) and orders changes, and every node installs them into its
/// own catalog in that order. Without one, the node's own catalog decides.
#[async_trait::async_trait]
pub trait SchemaStore: Send + Sync + 'static {
    /// Creates a keyspace cluster-wide; an identical existing one is returned as is when
    /// `if_not_exists`. Returns the keyspace and whether it was created.
    async fn create(
        &self,
        schema: KeyspaceSchema,
        if_not_exists: bool,
    ) -> Result<(KeyspaceDef, bool), NodeError>;

    /// Removes a keyspace cluster-wide and returns it; the caller appends its drop entries.
    async fn remove(&self, name: &str) -> Result<KeyspaceDef, NodeError>;

    /// Creates a cache cluster-wide; an identical existing one is returned as is when
    /// `if_not_exists`. Returns whether it was created.
    async fn create_cache(&self, def: CacheDef, if_not_exists: bool) -> Result<bool, NodeError>;

    /// Removes a cache cluster-wide; the caller appends its clear entries.
    async fn remove_cache(&self, name: &str) -> Result<CacheDef, NodeError>;
}

fn keyspace_key(name: &str) -> Vec<u8> {
    [KEYSPACE_PREFIX, name.as_bytes()].concat()
}

fn dropping_key(id: KeyspaceId) -> Vec<u8> {
    [DROPPING_PREFIX, &id.0.to_be_bytes()[..]].concat()
}
