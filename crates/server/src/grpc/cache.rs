//! The `Cache` service: named caches, reads that load their misses on the owning group's
//! loader replica, and writes appended to the keys' partitions.

use crate::convert;
use crate::route::Router;
use crate::status::{convert_status, to_status};
use bytes::Bytes;
use futures::future::try_join_all;
use notadb_node::{CacheDef, CacheValue, Consistency, Node, NodeError};
use notadb_proto::token_to_proto;
use notadb_proto::tuple_from_proto;
use notadb_proto::v1::cache_client::CacheClient;
use notadb_proto::v1::cache_server::Cache;
use notadb_proto::v1::*;
use notadb_types::{GroupId, PartitionId};
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Set on a `CacheGet` sent to a group's loader replica: the receiver loads the misses itself.
pub const LOAD_HERE: &str = "notadb-cache-load";

/// The `Cache` service.
pub struct CacheService {
    node: Node,
    router: Arc<Router>,
}

fn settings_to_proto(def: &CacheDef) -> CacheSettings {
    CacheSettings {
        name: def.name.clone(),
        capacity_bytes: def.capacity_bytes,
        default_ttl_ms: def.default_ttl_ms,
        negative_ttl_ms: def.negative_ttl_ms,
        loader: def.loader.clone().unwrap_or_default(),
        load_timeout_ms: def.load_timeout_ms,
        derived_from: def.derived_from.clone().unwrap_or_default(),
    }
}

fn settings_from_proto(s: CacheSettings) -> CacheDef {
    let some = |v: String| (!v.is_empty()).then_some(v);
    CacheDef {
        name: s.name,
        capacity_bytes: s.capacity_bytes,
        default_ttl_ms: s.default_ttl_ms,
        negative_ttl_ms: s.negative_ttl_ms,
        loader: some(s.loader),
        load_timeout_ms: if s.load_timeout_ms == 0 {
            notadb_cache::DEFAULT_LOAD_TIMEOUT_MS
        } else {
            s.load_timeout_ms
        },
        derived_from: some(s.derived_from),
    }
}

fn result_of(value: CacheValue, loaded: bool) -> CacheResult {
    let (status, value) = match value {
        CacheValue::Hit(v) => (CacheStatus::Hit, v.to_vec()),
        CacheValue::NotFound => (CacheStatus::NotFound, Vec::new()),
        CacheValue::Miss => (CacheStatus::Miss, Vec::new()),
    };
    CacheResult {
        status: status as i32,
        value,
        loaded,
    }
}

fn cache_client(channel: Channel) -> CacheClient<Channel> {
    CacheClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

impl CacheService {
    /// Serves `node`'s caches, forwarding through `router`.
    pub fn new(node: Node, router: Arc<Router>) -> CacheService {
        CacheService { node, router }
    }

    /// The keys' bytes: as given, or encoded by the derived cache's keyspace.
    fn keys(&self, cache: &str, keys: &[CacheKey], field: &str) -> Result<Vec<Bytes>, Status> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| match &k.kind {
                Some(cache_key::Kind::Bytes(b)) => Ok(Bytes::copy_from_slice(b)),
                Some(cache_key::Kind::Tuple(t)) => {
                    let elements = tuple_from_proto(Some(t), format_args!("{field}[{i}]"))
                        .map_err(convert_status)?;
                    self.node
                        .cache_key_of(cache, &elements)
                        .map(Bytes::from)
                        .map_err(|e| to_status(NodeError::invalid(format!("{field}[{i}]: {e}"))))
                }
                None => Err(to_status(NodeError::invalid(format!(
                    "{field}[{i}]: a key needs bytes or a tuple"
                )))),
            })
            .collect()
    }

    /// Whether this node loads the misses of partition `p`: on a single node, when asked to
    /// by another replica, or when it is the first ready replica of its group by node id.
    fn loads_here(&self, metadata: &MetadataMap, p: PartitionId) -> bool {
        let Some(cluster) = self.router.forwarder().map(|f| f.cluster()) else {
            return true;
        };
        if metadata.contains_key(LOAD_HERE) {
            return true;
        }
        let group = cluster.routes().doc().group_of(p);
        match cluster.routes().loaders(group).first() {
            Some(first) => first.node_id == self.node.config().node_id,
            // No ready replica in the table (this one is catching up): load here.
            None => true,
        }
    }

    /// Answers for keys on this node's partitions, loading misses here or on the group's
    /// loader replica.
    async fn local_get(
        &self,
        def: &CacheDef,
        keys: Vec<Bytes>,
        partitions: &[PartitionId],
        consistency: &Consistency,
        load: bool,
        metadata: &MetadataMap,
    ) -> Result<Vec<CacheResult>, Status> {
        let cache = def.name.as_str();
        let values = self
            .node
            .cache_lookup(def, &keys, partitions, consistency)
            .await
            .map_err(to_status)?;
        let mut results: Vec<CacheResult> =
            values.into_iter().map(|v| result_of(v, false)).collect();
        if !load || def.loader.is_none() {
            return Ok(results);
        }
        let misses: Vec<usize> = (0..keys.len())
            .filter(|&i| results[i].status == CacheStatus::Miss as i32)
            .collect();
        let (here, there): (Vec<usize>, Vec<usize>) = misses
            .into_iter()
            .partition(|&i| self.loads_here(metadata, partitions[i]));
        let loads = here.iter().map(|&i| {
            let key = keys[i].clone();
            async move {
                let value = self.node.cache_load(cache, key).await.map_err(to_status)?;
                Ok::<_, Status>((i, result_of(value, true)))
            }
        });
        for (i, r) in try_join_all(loads).await? {
            results[i] = r;
        }
        if let Some(forwarder) = self.router.forwarder().filter(|_| !there.is_empty()) {
            let cluster = forwarder.cluster();
            let group = cluster.group();
            let request = CacheGetRequest {
                cache: cache.to_string(),
                keys: there
                    .iter()
                    .map(|&i| CacheKey {
                        kind: Some(cache_key::Kind::Bytes(keys[i].to_vec())),
                    })
                    .collect(),
                tokens: Vec::new(),
                no_load: false,
            };
            let loaders = cluster.routes().loaders(group);
            let response = forwarder
                .forward_to(
                    loaders,
                    group,
                    None,
                    consistency,
                    &[LOAD_HERE],
                    request,
                    |c, r| async move { cache_client(c).cache_get(r).await },
                )
                .await?;
            for (i, r) in there.into_iter().zip(response.results) {
                results[i] = r;
            }
        }
        Ok(results)
    }
}

#[tonic::async_trait]
impl Cache for CacheService {
    async fn create_cache(
        &self,
        request: Request<CreateCacheRequest>,
    ) -> Result<Response<CreateCacheResponse>, Status> {
        observe!("CreateCache", async {
            let r = request.into_inner();
            let settings = r
                .settings
                .ok_or_else(|| to_status(NodeError::invalid("settings: required")))?;
            let (def, created) = self
                .node
                .create_cache(settings_from_proto(settings), r.if_not_exists)
                .await
                .map_err(to_status)?;
            Ok(Response::new(CreateCacheResponse {
                settings: Some(settings_to_proto(&def)),
                created,
            }))
        })
        .await
    }

    async fn drop_cache(
        &self,
        request: Request<DropCacheRequest>,
    ) -> Result<Response<DropCacheResponse>, Status> {
        observe!("DropCache", async {
            self.node
                .drop_cache(&request.get_ref().name)
                .await
                .map_err(to_status)?;
            Ok(Response::new(DropCacheResponse {}))
        })
        .await
    }

    async fn list_caches(
        &self,
        _request: Request<ListCachesRequest>,
    ) -> Result<Response<ListCachesResponse>, Status> {
        observe!("ListCaches", async {
            let caches = self
                .node
                .list_caches()
                .into_iter()
                .map(|info| CacheInfo {
                    settings: Some(settings_to_proto(&info.def)),
                    entries: info.usage.entries,
                    bytes: info.usage.bytes,
                    evictions: info.usage.stats.evictions,
                    expirations: info.usage.stats.expirations,
                })
                .collect();
            Ok(Response::new(ListCachesResponse { caches }))
        })
        .await
    }

    async fn cache_get(
        &self,
        request: Request<CacheGetRequest>,
    ) -> Result<Response<CacheGetResponse>, Status> {
        observe!("CacheGet", async {
            let metadata = request.metadata().clone();
            let r = request.into_inner();
            let consistency = convert::consistency(&r.tokens, &metadata)?;
            let def = self.node.cache(&r.cache).map_err(to_status)?;
            let keys = self.keys(&r.cache, &r.keys, "keys")?;
            let partitions = self.node.cache_partitions(&def, &keys).map_err(to_status)?;
            let load = !r.no_load;
            // Keys by where they are answered: here (None) or on another group.
            let mut by_group: BTreeMap<Option<GroupId>, Vec<usize>> = BTreeMap::new();
            let scattering = self.router.scattering(&metadata);
            for (i, p) in partitions.iter().enumerate() {
                let group = scattering.and_then(|f| f.remote_group(*p));
                by_group.entry(group).or_default().push(i);
            }
            let mut results = vec![CacheResult::default(); keys.len()];
            for (group, indices) in by_group {
                let part: Vec<Bytes> = indices.iter().map(|&i| keys[i].clone()).collect();
                // A group is only ever Some with a forwarder: it came from one.
                let answered = match group.zip(scattering) {
                    None => {
                        let ps: Vec<PartitionId> = indices.iter().map(|&i| partitions[i]).collect();
                        self.local_get(&def, part, &ps, &consistency, load, &metadata)
                            .await?
                    }
                    Some((g, forwarder)) => {
                        let request = CacheGetRequest {
                            cache: r.cache.clone(),
                            keys: part
                                .iter()
                                .map(|k| CacheKey {
                                    kind: Some(cache_key::Kind::Bytes(k.to_vec())),
                                })
                                .collect(),
                            tokens: r.tokens.clone(),
                            no_load: r.no_load,
                        };
                        let replicas = forwarder
                            .cluster()
                            .routes()
                            .replicas(g, Some(partitions[indices[0]]), &consistency.tokens)
                            .into_iter()
                            .filter(|m| m.ready)
                            .collect();
                        forwarder
                            .forward_to(
                                replicas,
                                g,
                                None,
                                &consistency,
                                &[],
                                request,
                                |c, r| async move { cache_client(c).cache_get(r).await },
                            )
                            .await?
                            .results
                    }
                };
                for (i, result) in indices.into_iter().zip(answered) {
                    results[i] = result;
                }
            }
            Ok(Response::new(CacheGetResponse { results }))
        })
        .await
    }

    async fn cache_set(
        &self,
        request: Request<CacheSetRequest>,
    ) -> Result<Response<CacheWriteResponse>, Status> {
        observe!("CacheSet", async {
            let r = request.into_inner();
            let keys: Vec<CacheKey> = r
                .entries
                .iter()
                .map(|e| e.key.clone().unwrap_or_default())
                .collect();
            let keys = self.keys(&r.cache, &keys, "entries")?;
            let entries = keys
                .into_iter()
                .zip(r.entries)
                .map(|(k, e)| (k, Bytes::from(e.value)))
                .collect();
            let tokens = self
                .node
                .cache_set(&r.cache, entries, r.ttl_ms)
                .await
                .map_err(to_status)?;
            Ok(Response::new(CacheWriteResponse {
                tokens: tokens.into_iter().map(token_to_proto).collect(),
            }))
        })
        .await
    }

    async fn cache_del(
        &self,
        request: Request<CacheDelRequest>,
    ) -> Result<Response<CacheWriteResponse>, Status> {
        observe!("CacheDel", async {
            let r = request.into_inner();
            let keys = self.keys(&r.cache, &r.keys, "keys")?;
            let tokens = self
                .node
                .cache_delete(&r.cache, keys)
                .await
                .map_err(to_status)?;
            Ok(Response::new(CacheWriteResponse {
                tokens: tokens.into_iter().map(token_to_proto).collect(),
            }))
        })
        .await
    }
}
