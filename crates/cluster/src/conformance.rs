//! The conformance suites of the control-plane stores: every [`KvStore`] and every
//! [`Objects`] implementation passes the same checks, so the cluster code above them reads
//! the same for every broker. Run on the JetStream bucket and object store (against a real
//! `nats-server`), on [`LogKv`](crate::LogKv) over the embedded log, and on
//! [`DirObjects`](crate::DirObjects).

use crate::control::{KvChange, KvEntry, KvStore, Objects};
use crate::error::ClusterError;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::path::Path;
use std::time::Duration;

/// How long a watch may take to deliver a change that was acknowledged.
const WATCH_WAIT: Duration = Duration::from_secs(10);

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn value_of(store: &dyn KvStore, key: &str) -> Option<(Bytes, u64)> {
    store
        .entry(key)
        .await
        .unwrap_or_else(|e| panic!("reading {key}: {e}"))
        .map(|e| (e.value, e.revision))
}

/// Every check of the key-value store contract, each on its own keys of `store` (which must
/// start empty).
pub(crate) async fn kv_store(store: &dyn KvStore) {
    create_writes_only_new_keys(store).await;
    revisions_grow_across_the_store(store).await;
    delete_at_checks_the_revision(store).await;
    delete_of_a_missing_key_is_fine(store).await;
    entries_are_live_sorted_and_by_prefix(store).await;
    watch_delivers_changes_under_its_prefixes_in_order(store).await;
}

async fn create_writes_only_new_keys(store: &dyn KvStore) {
    let first = store
        .create("create.a", bytes("1"))
        .await
        .expect("create")
        .expect("a new key is created");
    assert_eq!(
        store.create("create.a", bytes("2")).await.expect("create"),
        None,
        "a create of a live key must not write"
    );
    assert_eq!(
        store.entry("create.a").await.expect("entry"),
        Some(KvEntry {
            key: "create.a".into(),
            value: bytes("1"),
            revision: first,
        })
    );
    assert_eq!(value_of(store, "create.none").await, None);
    store.delete("create.a").await.expect("delete");
    let again = store
        .create("create.a", bytes("3"))
        .await
        .expect("create")
        .expect("a deleted key can be created again");
    assert!(again > first, "revision {again} after {first}");
    assert_eq!(value_of(store, "create.a").await, Some((bytes("3"), again)));
}

async fn revisions_grow_across_the_store(store: &dyn KvStore) {
    let mut last = 0;
    for (key, value) in [("rev.a", "1"), ("rev.b", "2"), ("rev.a", "3")] {
        let revision = store.put(key, bytes(value)).await.expect("put");
        assert!(revision > last, "revision {revision} after {last}");
        assert_eq!(value_of(store, key).await, Some((bytes(value), revision)));
        last = revision;
    }
}

async fn delete_at_checks_the_revision(store: &dyn KvStore) {
    let old = store.put("cas.a", bytes("1")).await.expect("put");
    let new = store.put("cas.a", bytes("2")).await.expect("put");
    match store.delete_at("cas.a", old).await {
        Err(ClusterError::Conflict(_)) => {}
        other => panic!("delete_at with a stale revision: {other:?}, expected a conflict"),
    }
    assert_eq!(value_of(store, "cas.a").await, Some((bytes("2"), new)));
    store.delete_at("cas.a", new).await.expect("delete_at");
    assert_eq!(value_of(store, "cas.a").await, None);
}

async fn delete_of_a_missing_key_is_fine(store: &dyn KvStore) {
    store
        .delete("missing.never")
        .await
        .expect("deleting a key never written");
    store.put("missing.a", bytes("1")).await.expect("put");
    store.delete("missing.a").await.expect("delete");
    store.delete("missing.a").await.expect("deleting twice");
    assert_eq!(value_of(store, "missing.a").await, None);
}

async fn entries_are_live_sorted_and_by_prefix(store: &dyn KvStore) {
    for key in ["list.b", "list.a", "list.c", "listx.a", "lis.a"] {
        store.put(key, bytes(key)).await.expect("put");
    }
    store.delete("list.c").await.expect("delete");
    let listed = store.entries("list.").await.expect("entries");
    let keys: Vec<&str> = listed.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["list.a", "list.b"]);
    for e in &listed {
        assert_eq!(e.value, bytes(&e.key));
        assert_eq!(
            value_of(store, &e.key).await,
            Some((e.value.clone(), e.revision))
        );
    }
    let all: Vec<String> = store
        .entries("")
        .await
        .expect("entries")
        .into_iter()
        .map(|e| e.key)
        .collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "entries come by key");
    for key in ["lis.a", "list.a", "list.b", "listx.a"] {
        assert!(all.iter().any(|k| k == key), "{key} missing from {all:?}");
    }
    assert!(
        !all.iter().any(|k| k == "list.c"),
        "a deleted key is listed"
    );
}

async fn next_change(watch: &mut BoxStream<'static, KvChange>) -> KvChange {
    tokio::time::timeout(WATCH_WAIT, watch.next())
        .await
        .expect("a watched change arrives")
        .expect("the watch stays open")
}

async fn watch_delivers_changes_under_its_prefixes_in_order(store: &dyn KvStore) {
    // A prefix that ends a token (`watch.a.`) and one that does not (`watch.c`).
    let mut watch = store.watch(&["watch.a.", "watch.c"]).await.expect("watch");
    let one = store.put("watch.a.1", bytes("1")).await.expect("put");
    store
        .put("watch.b.1", bytes("not watched"))
        .await
        .expect("put");
    let two = store.put("watch.c.1", bytes("2")).await.expect("put");
    store.delete_at("watch.a.1", one).await.expect("delete_at");
    let three = store
        .create("watch.cz", bytes("3"))
        .await
        .expect("create")
        .expect("a new key");
    let put = |key: &str, value: &str, revision| {
        KvChange::Put(KvEntry {
            key: key.into(),
            value: bytes(value),
            revision,
        })
    };
    assert_eq!(next_change(&mut watch).await, put("watch.a.1", "1", one));
    assert_eq!(next_change(&mut watch).await, put("watch.c.1", "2", two));
    assert_eq!(
        next_change(&mut watch).await,
        KvChange::Deleted("watch.a.1".into())
    );
    assert_eq!(next_change(&mut watch).await, put("watch.cz", "3", three));
}

/// Every check of the object store contract on `objects` (which must start empty), with
/// scratch files in `scratch`.
pub(crate) async fn objects(objects: &dyn Objects, scratch: &Path) {
    let small = scratch.join("small");
    std::fs::write(&small, b"checkpoint bytes").expect("write");
    // Several MiB: more than one chunk of a chunked store.
    let large_bytes: Vec<u8> = (0..(3 << 20) + 17).map(|i: u32| (i % 251) as u8).collect();
    let large = scratch.join("large");
    std::fs::write(&large, &large_bytes).expect("write");
    for (name, file) in [
        ("g0/1/b.sst", &large),
        ("g0/1/a.sst", &small),
        ("g1/2/a.sst", &small),
    ] {
        objects.put(name, file).await.expect("put");
    }
    assert_eq!(
        objects.list("g0/").await.expect("list"),
        ["g0/1/a.sst", "g0/1/b.sst"]
    );
    assert_eq!(
        objects.list("").await.expect("list"),
        ["g0/1/a.sst", "g0/1/b.sst", "g1/2/a.sst"]
    );
    assert!(objects.list("g2/").await.expect("list").is_empty());
    let copy = scratch.join("copy");
    objects.get("g0/1/b.sst", &copy).await.expect("get");
    assert!(
        std::fs::read(&copy).expect("read") == large_bytes,
        "a large object round trips"
    );
    // A put replaces the object of that name.
    objects.put("g0/1/b.sst", &small).await.expect("put");
    let copy = scratch.join("copy2");
    objects.get("g0/1/b.sst", &copy).await.expect("get");
    assert_eq!(std::fs::read(&copy).expect("read"), b"checkpoint bytes");
    objects.delete("g0/1/b.sst").await.expect("delete");
    objects.delete("g0/1/b.sst").await.expect("deleting twice");
    objects
        .delete("never/put")
        .await
        .expect("deleting a missing object");
    assert_eq!(objects.list("g0/").await.expect("list"), ["g0/1/a.sst"]);
    assert!(
        objects
            .get("g0/1/b.sst", &scratch.join("copy3"))
            .await
            .is_err(),
        "a deleted object is gone"
    );
}
