//! The cache calls of [`Client`]: named caches, get/set/delete of one or many keys.

use crate::{Client, ClientError};
use notadb_proto::frame::Method;
use notadb_proto::{token_from_proto, token_to_proto, tuple_to_proto, v1};
use notadb_types::{Element, Token};

/// A byte key.
pub fn cache_key(key: impl Into<Vec<u8>>) -> v1::CacheKey {
    v1::CacheKey {
        kind: Some(v1::cache_key::Kind::Bytes(key.into())),
    }
}

/// A key of a cache derived from a keyspace: that keyspace's key.
pub fn cache_tuple_key(key: &[Element]) -> v1::CacheKey {
    v1::CacheKey {
        kind: Some(v1::cache_key::Kind::Tuple(tuple_to_proto(key))),
    }
}

fn tokens(response: v1::CacheWriteResponse) -> Result<Vec<Token>, ClientError> {
    response
        .tokens
        .iter()
        .map(|t| token_from_proto(t).map_err(|e| ClientError::Invalid(e.0)))
        .collect()
}

impl Client {
    /// Creates a cache; returns its settings and whether it was created.
    pub async fn create_cache(
        &self,
        settings: v1::CacheSettings,
        if_not_exists: bool,
    ) -> Result<(v1::CacheSettings, bool), ClientError> {
        let r = self
            .cache
            .clone()
            .create_cache(self.request(v1::CreateCacheRequest {
                settings: Some(settings),
                if_not_exists,
            }))
            .await?
            .into_inner();
        Ok((r.settings.unwrap_or_default(), r.created))
    }

    /// Drops a cache and its entries.
    pub async fn drop_cache(&self, name: &str) -> Result<(), ClientError> {
        self.cache
            .clone()
            .drop_cache(self.request(v1::DropCacheRequest { name: name.into() }))
            .await?;
        Ok(())
    }

    /// The caches, with their sizes on the connected node.
    pub async fn list_caches(&self) -> Result<Vec<v1::CacheInfo>, ClientError> {
        Ok(self
            .cache
            .clone()
            .list_caches(self.request(v1::ListCachesRequest {}))
            .await?
            .into_inner()
            .caches)
    }

    /// What the cache holds for one byte key, loading a miss when it has a loader.
    pub async fn cache_get(&self, cache: &str, key: &[u8]) -> Result<v1::CacheResult, ClientError> {
        let mut results = self
            .cache_get_many(cache, vec![cache_key(key)], &[], false)
            .await?;
        results
            .pop()
            .ok_or_else(|| ClientError::Invalid("the node answered no result".into()))
    }

    /// What the cache holds for each key, in order (one call for any partitions): waits for
    /// `tokens`, and loads misses unless `no_load`.
    pub async fn cache_get_many(
        &self,
        cache: &str,
        keys: Vec<v1::CacheKey>,
        tokens: &[Token],
        no_load: bool,
    ) -> Result<Vec<v1::CacheResult>, ClientError> {
        let request = v1::CacheGetRequest {
            cache: cache.into(),
            keys,
            tokens: tokens.iter().map(|t| token_to_proto(*t)).collect(),
            no_load,
        };
        let mut grpc = self.cache.clone();
        Ok(self
            .hot(Method::CacheGet, request, |r| async move {
                grpc.cache_get(r).await
            })
            .await?
            .results)
    }

    /// Stores one entry with `ttl_ms` (`None`: the cache's default; 0: none).
    pub async fn cache_set(
        &self,
        cache: &str,
        key: &[u8],
        value: &[u8],
        ttl_ms: Option<i64>,
    ) -> Result<Vec<Token>, ClientError> {
        self.cache_set_many(cache, vec![(cache_key(key), value.to_vec())], ttl_ms)
            .await
    }

    /// Stores entries; one token per partition they fall in.
    pub async fn cache_set_many(
        &self,
        cache: &str,
        entries: Vec<(v1::CacheKey, Vec<u8>)>,
        ttl_ms: Option<i64>,
    ) -> Result<Vec<Token>, ClientError> {
        let request = v1::CacheSetRequest {
            cache: cache.into(),
            entries: entries
                .into_iter()
                .map(|(key, value)| v1::CacheEntry {
                    key: Some(key),
                    value,
                })
                .collect(),
            ttl_ms,
        };
        let mut grpc = self.cache.clone();
        tokens(
            self.hot(Method::CacheSet, request, |r| async move {
                grpc.cache_set(r).await
            })
            .await?,
        )
    }

    /// Removes keys; one token per partition they fall in.
    pub async fn cache_delete(
        &self,
        cache: &str,
        keys: Vec<v1::CacheKey>,
    ) -> Result<Vec<Token>, ClientError> {
        let request = v1::CacheDelRequest {
            cache: cache.into(),
            keys,
        };
        let mut grpc = self.cache.clone();
        tokens(
            self.hot(Method::CacheDel, request, |r| async move {
                grpc.cache_del(r).await
            })
            .await?,
        )
    }
}
