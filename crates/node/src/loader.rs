//! Miss loaders, and the flights that make concurrent misses of one key load it once.

use crate::NodeError;
use bytes::Bytes;
use notadb_cache::CacheId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// The key of a load: its cache, its bytes, and for a cache derived from a keyspace its
/// elements (empty otherwise).
#[derive(Clone, Copy, Debug)]
pub struct LoadKey<'a> {
    /// The cache's name.
    pub cache: &'a str,
    /// The key's bytes (for a cache derived from a keyspace, the encoded key).
    pub key: &'a [u8],
    /// The key's decoded elements for a cache derived from a keyspace; empty otherwise.
    pub elements: &'a [notadb_types::Element],
}

/// Loads a missing cache entry from where the data really lives. A framework user implements
/// it and registers it by name (`NodeBuilder::loader`); a cache names its loader.
#[async_trait::async_trait]
pub trait CacheLoader: Send + Sync + 'static {
    /// The value of the key: `Ok(None)` when the source has none (cached for the cache's
    /// negative TTL), `Err` when the source failed (not cached; the message reaches every
    /// waiting caller).
    async fn load(&self, key: LoadKey<'_>) -> Result<Option<Bytes>, String>;
}

/// The outcome every caller waiting on one load gets.
pub(crate) type LoadOutcome = Result<Option<Bytes>, NodeError>;

/// One load and the outcome its callers share.
type Flight = Arc<OnceCell<LoadOutcome>>;

/// Loads in flight on this node, by cache and key.
#[derive(Default)]
pub(crate) struct Flights {
    inflight: Mutex<HashMap<(CacheId, Bytes), Flight>>,
}

impl Flights {
    /// Joins the flight for `key`, or starts it: `load` runs at most once per flight (again
    /// only if the caller driving it is cancelled), and every joined caller gets its outcome.
    /// The flight ends once `load` has returned, so a later miss loads again.
    pub async fn run<F, Fut>(&self, cache: CacheId, key: Bytes, load: F) -> LoadOutcome
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = LoadOutcome>,
    {
        let id = (cache, key);
        let cell = self
            .inflight
            .lock()
            .expect("flights lock")
            .entry(id.clone())
            .or_default()
            .clone();
        let outcome = cell.get_or_init(load).await.clone();
        let mut inflight = self.inflight.lock().expect("flights lock");
        if inflight.get(&id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            inflight.remove(&id);
        }
        outcome
    }

    /// Loads in flight now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inflight.lock().expect("flights lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_load_and_its_error() {
        let flights = Arc::new(Flights::default());
        let calls = Arc::new(AtomicU32::new(0));
        let entered = Arc::new(AtomicU32::new(0));
        let (release, wait) = tokio::sync::watch::channel(false);
        let mut joins = Vec::new();
        for _ in 0..50 {
            let (flights, calls, mut wait) = (flights.clone(), calls.clone(), wait.clone());
            let entered = entered.clone();
            joins.push(tokio::spawn(async move {
                // Counted in the same poll that reaches the flight's await.
                entered.fetch_add(1, Ordering::SeqCst);
                flights
                    .run(CacheId(1), Bytes::from_static(b"k"), || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _ = wait.wait_for(|r| *r).await;
                        Err(NodeError::Unavailable("source down".into()))
                    })
                    .await
            }));
        }
        while entered.load(Ordering::SeqCst) < 50 {
            tokio::task::yield_now().await;
        }
        release.send_replace(true);
        for join in joins {
            let err = join.await.expect("task").expect_err("shared error");
            assert_eq!(err.to_string(), "source down");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0, "the flight ended");
        // A later miss loads again.
        let again = flights
            .run(CacheId(1), Bytes::from_static(b"k"), || async {
                Ok(Some(Bytes::from_static(b"v")))
            })
            .await;
        assert_eq!(again.expect("ok"), Some(Bytes::from_static(b"v")));
    }
}
