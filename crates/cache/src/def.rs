//! A named cache's settings, and the id its entries are stored and logged under.

use notadb_types::CacheId;
use serde::{Deserialize, Serialize};

/// Longest cache name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Smallest capacity a cache may have, in bytes.
pub const MIN_CAPACITY_BYTES: u64 = 64 << 10;
/// Longest TTL (default or negative), in milliseconds: one year.
pub const MAX_TTL_MS: u64 = 365 * 24 * 3600 * 1000;
/// The load timeout of a cache created without one, in milliseconds.
pub const DEFAULT_LOAD_TIMEOUT_MS: u64 = 5_000;

/// A named cache and its settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheDef {
    /// The cache's name; its id is derived from it.
    pub name: String,
    /// Bytes the cache's entries may take in all, keys and values plus a fixed overhead per
    /// entry ([`crate::ENTRY_OVERHEAD`]); each of the `P` partitions gets `capacity_bytes / P`.
    pub capacity_bytes: u64,
    /// TTL of a `Set` that names none, and of loaded values, in milliseconds; 0: no expiry.
    #[serde(default)]
    pub default_ttl_ms: u64,
    /// How long a "not found" from the loader is cached, in milliseconds; 0: not cached.
    #[serde(default)]
    pub negative_ttl_ms: u64,
    /// The loader called on a miss, by name; none: a miss is just a miss.
    #[serde(default)]
    pub loader: Option<String>,
    /// Longest a load may take, in milliseconds.
    #[serde(default = "default_load_timeout_ms")]
    pub load_timeout_ms: u64,
    /// A keyspace whose writes drop this cache's entry for the written key. Keys of such a
    /// cache are the keyspace's keys, and an entry lives in the key's store partition.
    #[serde(default)]
    pub derived_from: Option<String>,
}

fn default_load_timeout_ms() -> u64 {
    DEFAULT_LOAD_TIMEOUT_MS
}

/// A cache definition that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct CacheDefError(pub String);

impl CacheDef {
    /// A cache with `capacity_bytes` and no TTL, loader or derivation.
    pub fn new(name: impl Into<String>, capacity_bytes: u64) -> CacheDef {
        CacheDef {
            name: name.into(),
            capacity_bytes,
            default_ttl_ms: 0,
            negative_ttl_ms: 0,
            loader: None,
            load_timeout_ms: DEFAULT_LOAD_TIMEOUT_MS,
            derived_from: None,
        }
    }

    /// The cache's id.
    pub fn id(&self) -> CacheId {
        CacheId::of(&self.name)
    }

    /// Each partition's share of the capacity, in bytes.
    pub fn partition_capacity(&self, partitions: u16) -> u64 {
        self.capacity_bytes / u64::from(partitions.max(1))
    }

    /// Checks names, sizes and TTLs; errors name the field.
    pub fn validate(&self) -> Result<(), CacheDefError> {
        let bad = |m: String| Err(CacheDefError(m));
        if self.name.is_empty() || self.name.len() > MAX_NAME_BYTES {
            return bad(format!(
                "name: a cache name takes 1 to {MAX_NAME_BYTES} bytes, found {}",
                self.name.len()
            ));
        }
        if let Some(c) = self
            .name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
        {
            return bad(format!(
                "name: `{}` holds `{c}`; a cache name uses letters, digits, `_` and `-`",
                self.name
            ));
        }
        if self.capacity_bytes < MIN_CAPACITY_BYTES {
            return bad(format!(
                "capacity_bytes: {} is below the minimum of {MIN_CAPACITY_BYTES}",
                self.capacity_bytes
            ));
        }
        for (field, ttl) in [
            ("default_ttl_ms", self.default_ttl_ms),
            ("negative_ttl_ms", self.negative_ttl_ms),
        ] {
            if ttl > MAX_TTL_MS {
                return bad(format!(
                    "{field}: {ttl} is above the maximum of {MAX_TTL_MS}"
                ));
            }
        }
        if self.load_timeout_ms == 0 || self.load_timeout_ms > 600_000 {
            return bad(format!(
                "load_timeout_ms: {} is outside 1..=600000",
                self.load_timeout_ms
            ));
        }
        if self.negative_ttl_ms > 0 && self.loader.is_none() {
            return bad("negative_ttl_ms: only a cache with a loader caches \"not found\"".into());
        }
        if matches!(&self.loader, Some(l) if l.is_empty()) {
            return bad("loader: the loader name is empty".into());
        }
        if matches!(&self.derived_from, Some(k) if k.is_empty()) {
            return bad("derived_from: the keyspace name is empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_definitions_name_their_field() {
        let ok = CacheDef::new("users", 1 << 20);
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            (CacheDef::new("", 1 << 20), "name:"),
            (CacheDef::new("a b", 1 << 20), "name:"),
            (CacheDef::new("a", 10), "capacity_bytes:"),
            (
                CacheDef {
                    default_ttl_ms: MAX_TTL_MS + 1,
                    ..ok.clone()
                },
                "default_ttl_ms:",
            ),
            (
                CacheDef {
                    negative_ttl_ms: 5,
                    ..ok.clone()
                },
                "negative_ttl_ms:",
            ),
            (
                CacheDef {
                    load_timeout_ms: 0,
                    ..ok.clone()
                },
                "load_timeout_ms:",
            ),
        ];
        for (def, field) in cases {
            let err = def.validate().expect_err(field);
            assert!(err.0.starts_with(field), "{err}");
        }
    }

    #[test]
    fn capacity_is_shared_by_partitions() {
        assert_eq!(CacheDef::new("c", 64 << 20).partition_capacity(64), 1 << 20);
    }
}
