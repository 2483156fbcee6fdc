//! The cache end to end against a real PostgreSQL (own database per test, loads counted by
//! the loader's own SQL function) and, for the cluster cases, a real JetStream.

mod harness;

use harness::cluster::{blocking, serial, wait_converged, wait_members, ClusterNode, NodeSpec};
use harness::pg::{connect, Db};
use notadb::client::proto::{CacheResult, CacheSettings, CacheStatus};
use notadb::client::{cache_key, cache_tuple_key, Client, Code, Element};
use notadb::{CacheDef, PostgresLoaderConfig, Server, ServerConfig};
use notadb_testkit::NatsServer;
use std::path::Path;
use std::time::{Duration, Instant};

/// The loader's source: `load_value(k)` records every call in `loads`, fails for `boom`,
/// and returns NULL (not found) for keys that are not in `source`.
const SOURCE: &str = "
CREATE TABLE source (k text PRIMARY KEY, v text NOT NULL);
CREATE TABLE loads (id bigserial PRIMARY KEY, k text NOT NULL);
CREATE FUNCTION load_value(key text) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  INSERT INTO loads (k) VALUES (key);
  IF key = 'boom' THEN RAISE EXCEPTION 'source refused key boom'; END IF;
  IF key LIKE 'slow%' THEN PERFORM pg_sleep(0.5); END IF;
  RETURN (SELECT v FROM source WHERE k = key);
END $$;
INSERT INTO source SELECT 'k' || i, 'value-' || i FROM generate_series(0, 999) i;
INSERT INTO source VALUES ('slow', 'slow-value');
";

async fn create_db(tag: &str) -> Db {
    Db::create(format!("notadb_cache_{tag}_{}", std::process::id()), SOURCE).await
}

/// Loads of `key` so far, counted by the loader's SQL function.
async fn loads(db: &Db, key: &str) -> i64 {
    connect(&db.url)
        .await
        .query_one("SELECT count(*) FROM loads WHERE k = $1", &[&key])
        .await
        .expect("count loads")
        .get(0)
}

/// The PostgreSQL loader `pg` over the database's `load_value`.
fn loader(db: &Db) -> PostgresLoaderConfig {
    PostgresLoaderConfig {
        name: "pg".into(),
        url: db.url.clone(),
        sql: "SELECT load_value($1)".into(),
    }
}

fn loaded_cache(name: &str) -> CacheDef {
    CacheDef {
        default_ttl_ms: 0,
        negative_ttl_ms: 800,
        loader: Some("pg".into()),
        ..CacheDef::new(name, 8 << 20)
    }
}

/// A single node on the embedded log with the PostgreSQL loader.
async fn single_node(dir: &Path, db: &Db, caches: Vec<CacheDef>) -> (Server, Client) {
    let mut config = ServerConfig {
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        frame_addr: Some("127.0.0.1:0".parse().expect("addr")),
        postgres_loaders: vec![loader(db)],
        caches,
        ..ServerConfig::default()
    };
    config.node.data_dir = dir.to_path_buf();
    config.node.partitions = 8;
    let server = Server::start(config, |b| b).await.expect("server starts");
    let client = Client::connect(&format!("http://{}", server.grpc_addr()))
        .await
        .expect("connect");
    (server, client)
}

fn status(r: &CacheResult) -> CacheStatus {
    CacheStatus::try_from(r.status).expect("a known status")
}

fn hit(r: &CacheResult) -> String {
    assert_eq!(status(r), CacheStatus::Hit, "{r:?}");
    String::from_utf8(r.value.clone()).expect("utf8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_through_ttl_negative_ttl_and_loader_errors() {
    let db = create_db("read").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ttl = CacheDef {
        default_ttl_ms: 600,
        ..loaded_cache("short")
    };
    let (server, client) = single_node(dir.path(), &db, vec![loaded_cache("users"), ttl]).await;

    // A miss loads from PostgreSQL; the next read hits without touching it.
    let first = client.cache_get("users", b"k1").await.expect("get");
    assert_eq!(hit(&first), "value-1");
    assert!(first.loaded, "the first read loaded");
    let second = client.cache_get("users", b"k1").await.expect("get");
    assert_eq!(hit(&second), "value-1");
    assert!(!second.loaded);
    assert_eq!(loads(&db, "k1").await, 1, "one query for two reads");

    // "Not found" is cached for the negative TTL, then asked again.
    for _ in 0..3 {
        let r = client.cache_get("users", b"nobody").await.expect("get");
        assert_eq!(status(&r), CacheStatus::NotFound);
    }
    assert_eq!(loads(&db, "nobody").await, 1);
    tokio::time::sleep(Duration::from_millis(900)).await;
    client.cache_get("users", b"nobody").await.expect("get");
    assert_eq!(loads(&db, "nobody").await, 2, "the negative entry expired");

    // Loaded values expire after the cache's default TTL.
    assert_eq!(
        hit(&client.cache_get("short", b"k2").await.expect("get")),
        "value-2"
    );
    assert_eq!(
        hit(&client.cache_get("short", b"k2").await.expect("get")),
        "value-2"
    );
    assert_eq!(loads(&db, "k2").await, 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let miss = client
        .cache_get_many("short", vec![cache_key("k2")], &[], true)
        .await
        .expect("get");
    assert_eq!(status(&miss[0]), CacheStatus::Miss, "expired");
    assert_eq!(
        hit(&client.cache_get("short", b"k2").await.expect("get")),
        "value-2"
    );
    assert_eq!(loads(&db, "k2").await, 2);

    // A set with its own TTL, seen at once through its tokens.
    let tokens = client
        .cache_set("users", b"manual", b"m", Some(300))
        .await
        .expect("set");
    let r = client
        .cache_get_many("users", vec![cache_key("manual")], &tokens, true)
        .await
        .expect("get");
    assert_eq!(hit(&r[0]), "m");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = client
        .cache_get_many("users", vec![cache_key("manual")], &[], true)
        .await
        .expect("get");
    assert_eq!(status(&r[0]), CacheStatus::Miss);

    // A loader error reaches the caller, is not cached (every read calls the loader again:
    // the error metric counts each call), and is counted.
    let load_errors = || {
        let metrics = harness::http_get(server.admin_addr(), "/metrics").1;
        harness::cluster::metric_value(&metrics, "notadb_cache_load_errors_total")
    };
    for attempt in 1..=2 {
        let err = client
            .cache_get("users", b"boom")
            .await
            .expect_err("loader fails");
        assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
        assert!(err.to_string().contains("source refused key boom"), "{err}");
        assert_eq!(load_errors(), attempt as f64, "errors are not cached");
    }
    let metrics = harness::http_get(server.admin_addr(), "/metrics").1;
    assert!(harness::cluster::metric_value(&metrics, "notadb_cache_hits_total") >= 3.0);
    assert!(harness::cluster::metric_value(&metrics, "notadb_cache_loads_total") >= 5.0);

    // Delete, then the next read loads again.
    let tokens = client
        .cache_delete("users", vec![cache_key("k1")])
        .await
        .expect("delete");
    let r = client
        .cache_get_many("users", vec![cache_key("k1")], &tokens, false)
        .await
        .expect("get");
    assert_eq!(hit(&r[0]), "value-1");
    assert!(r[0].loaded);
    assert_eq!(loads(&db, "k1").await, 2);

    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_the_keyspace_drop_derived_entries() {
    let db = create_db("derived").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, client) = single_node(dir.path(), &db, vec![]).await;
    let schema = harness::cluster::string_keyspace("accounts");
    client
        .create_keyspace(&schema, false)
        .await
        .expect("keyspace");
    let (settings, created) = client
        .create_cache(
            CacheSettings {
                name: "account_views".into(),
                capacity_bytes: 1 << 20,
                derived_from: "accounts".into(),
                ..Default::default()
            },
            false,
        )
        .await
        .expect("create a derived cache");
    assert!(created);
    assert_eq!(settings.derived_from, "accounts");
    let key = [Element::String("a1".into())];
    client
        .cache_set_many(
            "account_views",
            vec![(cache_tuple_key(&key), b"rendered".to_vec())],
            None,
        )
        .await
        .expect("set");
    let other = [Element::String("a2".into())];
    let tokens = client
        .cache_set_many(
            "account_views",
            vec![(cache_tuple_key(&other), b"other".to_vec())],
            None,
        )
        .await
        .expect("set");
    let r = client
        .cache_get_many("account_views", vec![cache_tuple_key(&key)], &tokens, true)
        .await
        .expect("get");
    assert_eq!(hit(&r[0]), "rendered");
    // A write to the key drops the entry, in the same log entry as the write.
    let token = client
        .put_json("accounts", &key, &serde_json::json!({"balance": 5}))
        .await
        .expect("put");
    let r = client
        .cache_get_many(
            "account_views",
            vec![cache_tuple_key(&key), cache_tuple_key(&other)],
            &[token],
            true,
        )
        .await
        .expect("get");
    assert_eq!(
        status(&r[0]),
        CacheStatus::Miss,
        "the write dropped the entry"
    );
    assert_eq!(hit(&r[1]), "other", "other keys stay");
    // Byte keys are refused by a derived cache: its keys are the keyspace's keys.
    let err = client
        .cache_set("account_views", b"\xff\xff", b"x", None)
        .await
        .expect_err("not a key of the keyspace");
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_memory_under_the_bound_on_a_skewed_workload() {
    let db = create_db("evict").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capacity: u64 = 1 << 20;
    let (server, client) = single_node(dir.path(), &db, vec![CacheDef::new("hot", capacity)]).await;
    // 20,000 keys of 1,000 bytes (about 21 MB) through a 1 MiB cache; key i drawn with
    // probability ~ 1/(i+1) (Zipf s=1), read-through by hand: get, and set on a miss.
    let keys = 20_000u64;
    let value = vec![7u8; 1000];
    let harmonic: f64 = (1..=keys).map(|i| 1.0 / i as f64).sum();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let (mut hits, mut gets) = (0u64, 0u64);
    let started = Instant::now();
    while gets < 30_000 {
        let batch: Vec<String> = (0..100)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let mut u = (state >> 11) as f64 / (1u64 << 53) as f64 * harmonic;
                let mut i = 1;
                while u > 1.0 / i as f64 && i < keys {
                    u -= 1.0 / i as f64;
                    i += 1;
                }
                format!("key{i}")
            })
            .collect();
        let results = client
            .cache_get_many(
                "hot",
                batch.iter().map(|k| cache_key(k.as_str())).collect(),
                &[],
                true,
            )
            .await
            .expect("get");
        gets += results.len() as u64;
        let missed: Vec<_> = batch
            .iter()
            .zip(&results)
            .filter(|(_, r)| status(r) == CacheStatus::Miss)
            .map(|(k, _)| (cache_key(k.as_str()), value.clone()))
            .collect();
        hits += 100 - missed.len() as u64;
        if !missed.is_empty() {
            client
                .cache_set_many("hot", missed, None)
                .await
                .expect("set");
        }
    }
    let info = &client.list_caches().await.expect("list")[0];
    println!(
        "skewed workload: {gets} gets in {:.1} s, hit ratio {:.3}, {} entries, {} bytes of {capacity}, {} evictions",
        started.elapsed().as_secs_f64(),
        hits as f64 / gets as f64,
        info.entries,
        info.bytes,
        info.evictions
    );
    assert!(
        info.bytes <= capacity,
        "{} bytes over the bound",
        info.bytes
    );
    assert!(info.evictions > 0, "the workload overflowed the cache");
    assert!(info.entries > 0);
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error_and_stores_nothing() {
    let db = create_db("bad").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, client) = single_node(dir.path(), &db, vec![CacheDef::new("c", 1 << 20)]).await;
    let last = |s: &notadb::client::proto::StatusResponse| -> u64 {
        s.partitions.iter().map(|p| p.last_seq).sum()
    };
    let before = last(&client.status().await.expect("status"));
    let check = |r: Result<Vec<notadb::client::Token>, notadb::client::ClientError>,
                 code: Code,
                 words: &str| {
        let err = r.expect_err(words);
        assert_eq!(err.code(), Some(code), "{err}");
        assert!(
            err.to_string().contains(words),
            "`{err}` should say `{words}`"
        );
    };
    check(
        client.cache_set("c", &vec![b'k'; 5000], b"v", None).await,
        Code::InvalidArgument,
        "max_key_bytes",
    );
    check(
        client.cache_set("c", b"", b"v", None).await,
        Code::InvalidArgument,
        "1 to",
    );
    check(
        client
            .cache_set("c", b"k", &vec![0; (1 << 20) + 1], None)
            .await,
        Code::InvalidArgument,
        "max_value_bytes",
    );
    check(
        client.cache_set("c", b"k", &vec![0; 200_000], None).await,
        Code::InvalidArgument,
        "partition's share",
    );
    check(
        client.cache_set("c", b"k", b"v", Some(-5)).await,
        Code::InvalidArgument,
        "negative",
    );
    check(
        client.cache_set("nope", b"k", b"v", None).await,
        Code::NotFound,
        "cache `nope`",
    );
    // A batch with one bad entry stores none of them.
    check(
        client
            .cache_set_many(
                "c",
                vec![
                    (cache_key("fine"), b"v".to_vec()),
                    (cache_key(""), b"v".to_vec()),
                ],
                None,
            )
            .await,
        Code::InvalidArgument,
        "entries[1]",
    );
    let err = client
        .cache_get("nope", b"k")
        .await
        .expect_err("unknown cache");
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    for (settings, words) in [
        (
            CacheSettings {
                name: "tiny".into(),
                capacity_bytes: 10,
                ..Default::default()
            },
            "capacity_bytes",
        ),
        (
            CacheSettings {
                name: "x".into(),
                capacity_bytes: 1 << 20,
                loader: "missing".into(),
                ..Default::default()
            },
            "loader `missing`",
        ),
        (
            CacheSettings {
                name: "bad name".into(),
                capacity_bytes: 1 << 20,
                ..Default::default()
            },
            "name:",
        ),
        (
            CacheSettings {
                name: "d".into(),
                capacity_bytes: 1 << 20,
                derived_from: "nosuch".into(),
                ..Default::default()
            },
            "derived_from",
        ),
    ] {
        let err = client.create_cache(settings, false).await.expect_err(words);
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
        assert!(
            err.to_string().contains(words),
            "`{err}` should say `{words}`"
        );
    }
    let err = client
        .create_cache(
            CacheSettings {
                name: "c".into(),
                capacity_bytes: 2 << 20,
                ..Default::default()
            },
            true,
        )
        .await
        .expect_err("other settings");
    assert_eq!(err.code(), Some(Code::AlreadyExists), "{err}");
    assert_eq!(
        last(&client.status().await.expect("status")),
        before,
        "nothing appended"
    );
    let caches = client.list_caches().await.expect("list");
    assert_eq!(caches.len(), 1);
    assert_eq!(caches[0].entries, 0);
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

/// Round `round` of the mixed workload: 50 of the 400 keys `m*` set to the round's number.
async fn set_round(client: &Client, round: u32) -> Vec<notadb::client::Token> {
    let entries = (0..50u32)
        .map(|i| {
            (
                cache_key(format!("m{}", (round * 31 + i) % 400)),
                round.to_be_bytes().to_vec(),
            )
        })
        .collect();
    client
        .cache_set_many("users", entries, None)
        .await
        .expect("set")
}

fn cluster_config(dir: &Path, db: &Db) -> std::path::PathBuf {
    let path = dir.join("notadb.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[postgres_loaders]]
name = "pg"
url = "{}"
sql = "SELECT load_value($1)"

[[caches]]
name = "users"
capacity_bytes = 8388608
loader = "pg"
load_timeout_ms = 10000
"#,
            db.url
        ),
    )
    .expect("write config");
    path
}

#[test]
fn cluster_herd_loads_once_and_replicas_converge_after_kill9() {
    serial(async {
        let db = create_db("cluster").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let nats = blocking(|| NatsServer::start(&dir.path().join("nats"))).expect("nats-server");
        let config = cluster_config(dir.path(), &db);
        let spec = |id: &str| {
            NodeSpec::new(&nats.url(), "cachetest", 1, 0, id, dir.path()).with_config(&config)
        };
        let a = blocking(|| ClusterNode::start(spec("a")));
        let mut b = blocking(|| ClusterNode::start(spec("b")));
        wait_members(&[&a, &b], 2).await;
        let (ca, cb) = (a.client().await, b.client().await);

        // 1,000 concurrent misses of one slow key, half through each replica: one query.
        let mut joins = Vec::new();
        for i in 0..1000 {
            let client = if i % 2 == 0 { ca.clone() } else { cb.clone() };
            joins.push(tokio::spawn(async move {
                client.cache_get("users", b"slow").await
            }));
        }
        for join in joins {
            let r = join.await.expect("task").expect("get");
            assert_eq!(hit(&r), "slow-value");
        }
        assert_eq!(
            loads(&db, "slow").await,
            1,
            "one loader query for 1,000 misses"
        );

        // A mixed set/delete workload through both replicas.
        let mut tokens = Vec::new();
        for round in 0..20u32 {
            let client = if round % 2 == 0 { &ca } else { &cb };
            tokens.extend(set_round(client, round).await);
            let dels = (0..10u32)
                .map(|i| cache_key(format!("m{}", (round * 7 + i) % 400)))
                .collect();
            tokens.extend(client.cache_delete("users", dels).await.expect("delete"));
        }
        blocking(|| wait_converged(&[&a, &b], &tokens, Duration::from_secs(60)));

        // Kill b, keep writing through a, restart b: it rebuilds its cache partitions from
        // its storage and the log tail.
        blocking(|| b.kill9());
        for round in 20..30u32 {
            tokens.extend(set_round(&ca, round).await);
        }
        let dels = (0..50).map(|i| cache_key(format!("m{i}"))).collect();
        tokens.extend(ca.cache_delete("users", dels).await.expect("delete"));
        blocking(|| b.restart());
        blocking(|| b.wait_ready(Duration::from_secs(60)));
        blocking(|| wait_converged(&[&a, &b], &tokens, Duration::from_secs(60)));
        let cb = b.client().await;
        let keys: Vec<_> = (0..400).map(|i| cache_key(format!("m{i}"))).collect();
        let from_a = ca
            .cache_get_many("users", keys.clone(), &tokens, true)
            .await
            .expect("get a");
        let from_b = cb
            .cache_get_many("users", keys, &tokens, true)
            .await
            .expect("get b");
        assert_eq!(from_a, from_b, "both replicas serve the same entries");
        assert!(from_a.iter().any(|r| status(r) == CacheStatus::Hit));
        assert!(
            from_a[..50].iter().all(|r| status(r) == CacheStatus::Miss),
            "deletes happened"
        );
        drop((a, b));
        db.drop_db().await;
    });
}
