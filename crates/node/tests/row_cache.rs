//! Scans, aggregates and handlers through the row cache answer as RocksDB does, see every
//! write their tokens name, and read one state.

mod common;

use common::*;
use notadb_node::*;
use notadb_types::Element;

fn top(store: &str, product: &str, limit: usize) -> ScanRequest {
    ScanRequest {
        keyspace: "items".into(),
        range: KeyRange::prefix(vec![s(store), s(product)]),
        limit,
        filters: vec![Filter::Field {
            path: "available".into(),
            op: FilterOp::Eq,
            value: serde_json::json!(true),
        }],
        ..ScanRequest::default()
    }
}

async fn ids(node: &Node, request: ScanRequest, c: &Consistency) -> Vec<String> {
    node.scan(request, c)
        .await
        .expect("scan")
        .rows
        .iter()
        .map(|r| r.key[3].to_string())
        .collect()
}

/// Views of `user` in the past hour, by item, most viewed first.
async fn views(node: &Node, user: &str, c: &Consistency) -> Vec<(String, f64)> {
    let request = AggregateRequest {
        keyspace: "activity".into(),
        range: KeyRange::prefix(vec![s(user)]),
        function: AggregateFunction::Count,
        group_by: Some("item_id".into()),
        window: Some(TimeWindow {
            element: "ts".into(),
            last: Some(HOUR),
            ..TimeWindow::default()
        }),
        ..AggregateRequest::default()
    };
    node.aggregate(request, c)
        .await
        .expect("aggregate")
        .groups
        .iter()
        .map(|g| (g.key.clone().expect("grouped").to_string(), g.value))
        .collect()
}

/// The version and token of the newest acknowledged write.
type Latest = std::sync::Arc<tokio::sync::Mutex<(u32, notadb_types::Token)>>;

/// Writes `rows(v)` for versions 1 to `versions`, one write each, after `rows(0)`; the
/// newest acknowledged is in `Latest`.
async fn rewrite(
    node: &Node,
    rows: impl Fn(u32) -> Vec<Mutation> + Send + 'static,
    versions: u32,
) -> (Latest, tokio::task::JoinHandle<()>) {
    let t = node.write(rows(0)).await.expect("put");
    let latest: Latest = std::sync::Arc::new(tokio::sync::Mutex::new((0, t)));
    let writer = {
        let (node, latest) = (node.clone(), latest.clone());
        tokio::spawn(async move {
            for v in 1..=versions {
                let t = node.write(rows(v)).await.expect("put");
                *latest.lock().await = (v, t);
                tokio::task::yield_now().await;
            }
        })
    };
    (latest, writer)
}

/// Versions read by one request: `rows` of them, all one, no older than `v`.
fn assert_one_state(got: &[u64], rows: usize, v: u32) {
    assert_eq!(got.len(), rows);
    assert!(got.iter().all(|g| *g == got[0]), "two states: {got:?}");
    assert!(got[0] >= u64::from(v), "read {got:?} after write {v}");
}

#[tokio::test]
async fn scans_and_aggregates_through_the_row_cache_see_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, clock) = node(dir.path()).await;
    let batch = (0..30)
        .map(|i| item("s1", "shoes", f64::from(i), &format!("i{i:02}"), i % 3 != 0))
        .collect();
    let t = node.write(batch).await.expect("write");
    let c = Consistency::tokens(vec![t]);
    // The first scan fills the group, the second reads it; both answer the same.
    for _ in 0..2 {
        assert_eq!(
            ids(&node, top("s1", "shoes", 3), &c).await,
            ["i29", "i28", "i26"]
        );
    }
    let reversed = ScanRequest {
        reverse: true,
        ..top("s1", "shoes", 3)
    };
    assert_eq!(ids(&node, reversed, &c).await, ["i01", "i02", "i04"]);
    let t = node
        .write(vec![item("s1", "shoes", 99.0, "new", true)])
        .await
        .expect("put");
    let c = Consistency::tokens(vec![t]);
    assert_eq!(
        ids(&node, top("s1", "shoes", 2), &c).await,
        ["new", "i29"],
        "a put drops the group"
    );
    let t = node
        .write(vec![Mutation::Delete {
            keyspace: "items".into(),
            key: vec![s("s1"), s("shoes"), Element::F64(29.0), s("i29")],
        }])
        .await
        .expect("delete");
    let c = Consistency::tokens(vec![t]);
    assert_eq!(ids(&node, top("s1", "shoes", 2), &c).await, ["new", "i28"]);
    let t = node
        .write(vec![Mutation::DeleteRange {
            keyspace: "items".into(),
            range: KeyRange::prefix(vec![s("s1"), s("shoes")]),
        }])
        .await
        .expect("delete range");
    let c = Consistency::tokens(vec![t]);
    assert!(ids(&node, top("s1", "shoes", 2), &c).await.is_empty());

    // Aggregates read their group through the cache too; expiry is checked on every read.
    let t = node
        .write(vec![
            event("u1", T0 - 60_000_000, "view", "a"),
            event("u1", T0 - 50_000_000, "view", "a"),
            event("u1", T0 - 40_000_000, "view", "b"),
        ])
        .await
        .expect("events");
    let c = Consistency::tokens(vec![t]);
    for _ in 0..2 {
        assert_eq!(
            views(&node, "u1", &c).await,
            [("a".to_string(), 2.0), ("b".to_string(), 1.0)]
        );
    }
    let t = node
        .write(vec![event("u1", T0 - 30_000_000, "view", "b")])
        .await
        .expect("event");
    let c = Consistency::tokens(vec![t]);
    let mut got = views(&node, "u1", &c).await;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, [("a".to_string(), 2.0), ("b".to_string(), 2.0)]);
    clock.set(T0 + 25 * HOUR);
    assert!(views(&node, "u1", &c).await.is_empty(), "all expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scans_racing_writes_see_one_state_no_older_than_their_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    // Each write rewrites every row of the group with one version, in one batch.
    let rows = |v: u32| -> Vec<Mutation> {
        (0..8)
            .map(|i| Mutation::Put {
                keyspace: "items".into(),
                key: vec![s("s1"), s("hot"), Element::F64(f64::from(i)), s("x")],
                value: ValueInput::Json(format!(r#"{{"version": {v}}}"#)),
            })
            .collect()
    };
    let (latest, writer) = rewrite(&node, rows, 300).await;
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (node, latest) = (node.clone(), latest.clone());
        readers.push(tokio::spawn(async move {
            for _ in 0..600 {
                let (v, t) = *latest.lock().await;
                let request = ScanRequest {
                    keyspace: "items".into(),
                    range: KeyRange::prefix(vec![s("s1"), s("hot")]),
                    ..ScanRequest::default()
                };
                let got: Vec<u64> = node
                    .scan(request, &Consistency::tokens(vec![t]))
                    .await
                    .expect("scan")
                    .rows
                    .iter()
                    .map(|r| {
                        let v: serde_json::Value = serde_json::from_slice(&r.value).expect("json");
                        v["version"].as_u64().expect("version")
                    })
                    .collect();
                assert_one_state(&got, 8, v);
                tokio::task::yield_now().await;
            }
        }));
    }
    writer.await.expect("writer");
    for r in readers {
        r.await.expect("reader");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_reading_two_groups_sees_one_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Two groups of one partition: `items` is partitioned by store.
    let (a, b) = ("p0".to_string(), "p1".to_string());
    let reader_product = a.clone();
    let versions = {
        let (a, b) = (a.clone(), b.clone());
        move |ctx: &QueryContext<'_>,
              _: &serde_json::Value|
              -> Result<serde_json::Value, NodeError> {
            let mut out = Vec::new();
            for product in [&a, &b] {
                let range = KeyRange::prefix(vec![s("s1"), s(product)]);
                for row in ctx.scan("items", &range, false)? {
                    let v: serde_json::Value = serde_json::from_slice(&row?.value)
                        .map_err(|e| NodeError::Internal(e.to_string()))?;
                    out.push(v["version"].clone());
                }
            }
            Ok(serde_json::json!(out))
        }
    };
    let node = NodeBuilder::new(config(dir.path()))
        .keyspace(items())
        .handler("versions", versions)
        .open()
        .await
        .expect("open");
    // Both groups rewritten with one version in one batch (one partition: one commit).
    let rows = move |v: u32| -> Vec<Mutation> {
        [a.clone(), b.clone()]
            .into_iter()
            .flat_map(|product| {
                (0..4).map(move |i| Mutation::Put {
                    keyspace: "items".into(),
                    key: vec![s("s1"), s(&product), Element::F64(f64::from(i)), s("x")],
                    value: ValueInput::Json(format!(r#"{{"version": {v}}}"#)),
                })
            })
            .collect()
    };
    let (latest, writer) = rewrite(&node, rows, 600).await;
    let mut readers = Vec::new();
    for r in 0..4 {
        let (node, latest, a) = (node.clone(), latest.clone(), reader_product.clone());
        readers.push(tokio::spawn(async move {
            for i in 0..1_200 {
                let (v, t) = *latest.lock().await;
                let c = Consistency::tokens(vec![t]);
                // Plain scans keep group a filled with its newest rows.
                if (i + r) % 2 == 0 {
                    ids(&node, top("s1", &a, 10), &c).await;
                }
                let got = node
                    .query(
                        "versions",
                        "items",
                        vec![s("s1")],
                        serde_json::json!({}),
                        &c,
                    )
                    .await
                    .expect("query");
                let got: Vec<u64> = got
                    .as_array()
                    .expect("an array")
                    .iter()
                    .map(|v| v.as_u64().expect("a version"))
                    .collect();
                assert_one_state(&got, 8, v);
                tokio::task::yield_now().await;
            }
        }));
    }
    writer.await.expect("writer");
    for r in readers {
        r.await.expect("reader");
    }
}
