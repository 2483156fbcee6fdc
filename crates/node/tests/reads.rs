//! Writes go through the log and the apply loop; reads see them with tokens.

mod common;

use common::*;
use notadb_node::*;
use notadb_types::Element;

fn ids(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| r.key[3].to_string()).collect()
}

#[tokio::test]
async fn put_then_get_with_token_sees_the_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let token = node
        .write(vec![item("s1", "shoes", 0.5, "i1", true)])
        .await
        .expect("write");
    let key = vec![s("s1"), s("shoes"), Element::F64(0.5), s("i1")];
    let (format, value) = node
        .get("items", &key, &Consistency::tokens(vec![token]))
        .await
        .expect("get");
    assert_eq!(format, notadb_types::ValueFormat::Json);
    let value: serde_json::Value = serde_json::from_slice(&value.expect("found")).expect("json");
    assert_eq!(value["available"], true);
    let missing = vec![s("s1"), s("shoes"), Element::F64(0.5), s("nope")];
    assert!(node
        .get("items", &missing, &Consistency::none())
        .await
        .expect("get")
        .1
        .is_none());
}

#[tokio::test]
async fn scan_orders_by_score_desc_filters_and_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let mut batch = Vec::new();
    for i in 0..30 {
        batch.push(item(
            "s1",
            "shoes",
            f64::from(i) / 10.0,
            &format!("i{i:02}"),
            i % 3 != 0,
        ));
    }
    batch.push(item("s1", "hats", 9.0, "h1", true));
    let token = node.write(batch).await.expect("one partition: one write");
    let request = ScanRequest {
        keyspace: "items".into(),
        range: KeyRange::prefix(vec![s("s1"), s("shoes")]),
        limit: 5,
        filters: vec![Filter::Field {
            path: "available".into(),
            op: FilterOp::Eq,
            value: serde_json::json!(true),
        }],
        ..ScanRequest::default()
    };
    let result = node
        .scan(request.clone(), &Consistency::tokens(vec![token]))
        .await
        .expect("scan");
    // Best score first, skipping unavailable (i % 3 == 0) items.
    assert_eq!(ids(&result.rows), ["i29", "i28", "i26", "i25", "i23"]);
    assert!(result.more);
    let reversed = node
        .scan(
            ScanRequest {
                reverse: true,
                ..request.clone()
            },
            &Consistency::none(),
        )
        .await
        .expect("scan");
    assert_eq!(ids(&reversed.rows), ["i01", "i02", "i04", "i05", "i07"]);
    // Bounds are the elements after the prefix: scores in (2.0, 1.0].
    let bounded = ScanRequest {
        range: KeyRange {
            prefix: vec![s("s1"), s("shoes")],
            start: Some(Bound {
                key: vec![Element::F64(2.0)],
                inclusive: false,
            }),
            end: Some(Bound {
                key: vec![Element::F64(1.0)],
                inclusive: true,
            }),
        },
        limit: 100,
        filters: vec![],
        ..request
    };
    let rows = node
        .scan(bounded, &Consistency::none())
        .await
        .expect("scan")
        .rows;
    assert_eq!(
        ids(&rows),
        ["i19", "i18", "i17", "i16", "i15", "i14", "i13", "i12", "i11", "i10"]
    );
    // A key-element filter.
    let by_element = ScanRequest {
        keyspace: "items".into(),
        range: KeyRange::prefix(vec![s("s1")]),
        filters: vec![Filter::Element {
            name: "product".into(),
            op: FilterOp::Eq,
            value: s("hats"),
        }],
        ..ScanRequest::default()
    };
    assert_eq!(
        ids(&node
            .scan(by_element, &Consistency::none())
            .await
            .expect("scan")
            .rows),
        ["h1"]
    );
}

#[tokio::test]
async fn scan_across_partitions_merges_in_key_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let mut tokens = Vec::new();
    for store in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"] {
        tokens.push(
            node.write(vec![item(store, "x", 1.0, "i", true)])
                .await
                .expect("write"),
        );
    }
    let partitions: std::collections::BTreeSet<_> = tokens.iter().map(|t| t.partition).collect();
    assert!(partitions.len() > 1, "stores spread over partitions");
    let request = ScanRequest {
        keyspace: "items".into(),
        limit: 4,
        ..ScanRequest::default()
    };
    let result = node
        .scan(request, &Consistency::tokens(tokens))
        .await
        .expect("scan");
    let stores: Vec<String> = result.rows.iter().map(|r| r.key[0].to_string()).collect();
    assert_eq!(stores, ["a", "b", "c", "d"]);
    assert!(result.more);
}

#[tokio::test]
async fn aggregate_counts_views_in_the_window_grouped_top_k() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let mut batch = Vec::new();
    // In the past hour: item a viewed 3 times, b 2, c 1 (plus clicks that must not count).
    for (n, item) in [(3, "a"), (2, "b"), (1, "c")] {
        for k in 0..n {
            batch.push(event("u1", T0 - 10 * 60_000_000 - k, "view", item));
        }
        batch.push(event("u1", T0 - 60_000_000, "click", item));
    }
    // Older than an hour: many views of z.
    for k in 0..10 {
        batch.push(event("u1", T0 - 2 * HOUR - k, "view", "z"));
    }
    let token = node.write(batch).await.expect("write");
    let request = AggregateRequest {
        keyspace: "activity".into(),
        range: KeyRange::prefix(vec![s("u1")]),
        filters: vec![Filter::Element {
            name: "feature".into(),
            op: FilterOp::Eq,
            value: s("view"),
        }],
        function: AggregateFunction::Count,
        group_by: Some("item_id".into()),
        top_k: 2,
        window: Some(TimeWindow {
            element: "ts".into(),
            last: Some(HOUR),
            ..TimeWindow::default()
        }),
        ..AggregateRequest::default()
    };
    let result = node
        .aggregate(request, &Consistency::tokens(vec![token]))
        .await
        .expect("aggregate");
    let groups: Vec<(String, f64)> = result
        .groups
        .iter()
        .map(|g| (g.key.clone().expect("grouped").to_string(), g.value))
        .collect();
    assert_eq!(groups, [("a".to_string(), 3.0), ("b".to_string(), 2.0)]);
    // The window narrowed the range: the ten old views were never visited.
    assert_eq!(result.rows_scanned, 9);
}

#[tokio::test]
async fn aggregate_sum_min_max_of_a_json_field_across_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let mut tokens = Vec::new();
    for (store, score) in [("a", 1.0), ("b", 2.5), ("c", 4.0)] {
        tokens.push(
            node.write(vec![item(store, "x", score, "i", true)])
                .await
                .expect("write"),
        );
    }
    let run = |function| {
        let node = node.clone();
        let tokens = tokens.clone();
        async move {
            let request = AggregateRequest {
                keyspace: "items".into(),
                function,
                field: Some("price".into()),
                ..AggregateRequest::default()
            };
            let r = node
                .aggregate(request, &Consistency::tokens(tokens))
                .await
                .expect("aggregate");
            assert_eq!(r.groups.len(), 1);
            (r.groups[0].value, r.groups[0].rows)
        }
    };
    assert_eq!(run(AggregateFunction::Sum).await, (7.5, 3));
    assert_eq!(run(AggregateFunction::Min).await, (1.0, 3));
    assert_eq!(run(AggregateFunction::Max).await, (4.0, 3));
}

#[tokio::test]
async fn multi_get_keeps_request_order_across_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let a = node
        .write(vec![item("a", "x", 1.0, "i", true)])
        .await
        .expect("write");
    let b = node
        .write(vec![item("b", "x", 1.0, "i", false)])
        .await
        .expect("write");
    let key = |store: &str| vec![s(store), s("x"), Element::F64(1.0), s("i")];
    let (_, values) = node
        .multi_get(
            "items",
            &[key("b"), key("missing"), key("a")],
            &Consistency::tokens(vec![a, b]),
        )
        .await
        .expect("multi_get");
    let available: Vec<Option<bool>> = values
        .iter()
        .map(|v| {
            v.as_ref().map(|v| {
                serde_json::from_slice::<serde_json::Value>(v).expect("json")["available"]
                    .as_bool()
                    .expect("bool")
            })
        })
        .collect();
    assert_eq!(available, [Some(false), None, Some(true)]);
}

#[tokio::test]
async fn deletes_and_range_deletes_apply_in_log_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.push(item("s", "p", f64::from(i), &format!("i{i}"), true));
    }
    node.write(batch).await.expect("write");
    node.write(vec![Mutation::Delete {
        keyspace: "items".into(),
        key: vec![s("s"), s("p"), Element::F64(9.0), s("i9")],
    }])
    .await
    .expect("delete");
    // Scores 7.0 down to 5.0 inclusive (descending element: start is the larger value).
    let range = KeyRange {
        prefix: vec![s("s"), s("p")],
        start: Some(Bound {
            key: vec![Element::F64(7.0)],
            inclusive: true,
        }),
        end: Some(Bound {
            key: vec![Element::F64(5.0)],
            inclusive: true,
        }),
    };
    let token = node
        .write(vec![Mutation::DeleteRange {
            keyspace: "items".into(),
            range,
        }])
        .await
        .expect("delete range");
    let request = ScanRequest {
        keyspace: "items".into(),
        range: KeyRange::prefix(vec![s("s")]),
        ..ScanRequest::default()
    };
    let rows = node
        .scan(request, &Consistency::tokens(vec![token]))
        .await
        .expect("scan")
        .rows;
    assert_eq!(ids(&rows), ["i8", "i4", "i3", "i2", "i1", "i0"]);
}

/// `Rows::next_raw` sees the rows `Rows` iterates, in either direction, and reads a field
/// without the rest of the value.
#[tokio::test]
async fn handlers_read_borrowed_rows_and_single_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pick = |ctx: &QueryContext<'_>,
                args: &serde_json::Value|
     -> Result<serde_json::Value, NodeError> {
        let reverse = args["reverse"].as_bool().unwrap_or(false);
        let range = KeyRange::prefix(ctx.partition_key().to_vec());
        let owned: Vec<Row> = ctx
            .scan("items", &range, reverse)?
            .collect::<Result<_, _>>()?;
        let mut rows = ctx.scan("items", &range, reverse)?;
        let mut borrowed = Vec::new();
        let mut available = Vec::new();
        while let Some(row) = rows.next_raw() {
            let row = row?;
            borrowed.push(row.to_row()?);
            if row.field("available") == Some(serde_json::json!(true)) {
                available.push(row.key()?[3].to_json());
            }
            assert_eq!(row.key_after(0)?, row.key()?);
            assert_eq!(row.key_after(2)?, row.key()?[2..]);
            assert_eq!(row.key_after(4)?, []);
            assert!(row.key_after(5).is_err(), "past the key's elements");
            assert_eq!(row.field("missing"), None);
            assert_eq!(
                row.field("price"),
                row.json().expect("json").get("price").cloned()
            );
        }
        assert!(rows.next_raw().is_none(), "stays ended");
        assert_eq!(owned, borrowed);
        Ok(serde_json::json!(available))
    };
    let node = NodeBuilder::new(config(dir.path()))
        .keyspace(items())
        .handler("pick", pick)
        .open()
        .await
        .expect("open");
    let token = node
        .write(vec![
            item("s1", "a", 3.0, "x", true),
            item("s1", "a", 2.0, "y", false),
            item("s1", "b", 1.0, "z", true),
        ])
        .await
        .expect("write");
    let other = node
        .write(vec![item("s2", "a", 1.0, "w", true)])
        .await
        .expect("write");
    let c = Consistency::tokens(vec![token, other]);
    for (reverse, want) in [(false, ["x", "z"]), (true, ["z", "x"])] {
        let got = node
            .query(
                "pick",
                "items",
                vec![s("s1")],
                serde_json::json!({ "reverse": reverse }),
                &c,
            )
            .await
            .expect("query");
        assert_eq!(got, serde_json::json!(want), "reverse {reverse}");
    }
}

#[tokio::test]
async fn json_handlers_copy_stored_json_and_answer_like_value_handlers() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The same answer twice: built as a `serde_json::Value`, and written as text.
    let as_value =
        |ctx: &QueryContext<'_>, _: &serde_json::Value| -> Result<serde_json::Value, NodeError> {
            let mut rows = ctx.scan(
                "items",
                &KeyRange::prefix(ctx.partition_key().to_vec()),
                false,
            )?;
            let mut all = Vec::new();
            while let Some(row) = rows.next_raw() {
                all.push(row?.json().expect("stored JSON"));
            }
            Ok(serde_json::Value::Array(all))
        };
    let as_text = |ctx: &QueryContext<'_>, _: &serde_json::Value| -> Result<String, NodeError> {
        let mut rows = ctx.scan(
            "items",
            &KeyRange::prefix(ctx.partition_key().to_vec()),
            false,
        )?;
        let mut texts = Vec::new();
        while let Some(row) = rows.next_raw() {
            texts.push(row?.json_text()?.to_string());
        }
        Ok(format!("[{}]", texts.join(",")))
    };
    let broken = |_: &QueryContext<'_>, _: &serde_json::Value| -> Result<String, NodeError> {
        Ok("[1, 2".into())
    };
    let bytes_text = |ctx: &QueryContext<'_>, _: &serde_json::Value| -> Result<String, NodeError> {
        let mut rows = ctx.scan(
            "activity",
            &KeyRange::prefix(ctx.partition_key().to_vec()),
            false,
        )?;
        match rows.next_raw() {
            Some(row) => Ok(row?.json_text()?.to_string()),
            None => Ok("null".into()),
        }
    };
    let node = NodeBuilder::new(config(dir.path()))
        .keyspace(items())
        .keyspace(activity())
        .handler("value", as_value)
        .handler("text", JsonHandler(as_text))
        .handler("broken", JsonHandler(broken))
        .handler("bytes_text", JsonHandler(bytes_text))
        .open()
        .await
        .expect("open");
    let token = node
        .write(vec![
            item("s1", "a", 3.0, "x", true),
            item("s1", "a", 2.0, "y", false),
            item("s1", "b", 1.0, "z", true),
        ])
        .await
        .expect("write");
    let c = Consistency::tokens(vec![token]);
    let run = |name: &'static str, keyspace: &'static str, key: Element| {
        let (node, c) = (node.clone(), c.clone());
        async move {
            node.query_json(name, keyspace, vec![key], serde_json::Value::Null, &c)
                .await
        }
    };
    let value: serde_json::Value =
        serde_json::from_str(&run("value", "items", s("s1")).await.expect("value")).unwrap();
    let text = run("text", "items", s("s1")).await.expect("text");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        value
    );
    assert_eq!(value.as_array().map(Vec::len), Some(3));
    // `query` parses a text handler's answer for in-process callers.
    let parsed = node
        .query("text", "items", vec![s("s1")], serde_json::Value::Null, &c)
        .await
        .expect("query");
    assert_eq!(parsed, value);
    let err = run("broken", "items", s("s1")).await.unwrap_err();
    assert!(
        matches!(err, NodeError::Internal(ref m) if m.contains("not one JSON value")),
        "{err}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64;
    let bytes = node
        .write(vec![event("u1", now, "view", "i1")])
        .await
        .expect("write bytes");
    let c = Consistency::tokens(vec![token, bytes]);
    let err = node
        .query_json(
            "bytes_text",
            "activity",
            vec![s("u1")],
            serde_json::Value::Null,
            &c,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::InvalidArgument(ref m) if m.contains("bytes values, not JSON")),
        "{err}"
    );
}

#[tokio::test]
async fn query_handlers_run_on_the_owning_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let count = |ctx: &QueryContext<'_>,
                 args: &serde_json::Value|
     -> Result<serde_json::Value, NodeError> {
        let mut prefix = ctx.partition_key().to_vec();
        if let Some(p) = args["product"].as_str() {
            prefix.push(Element::String(p.into()));
        }
        let rows = ctx.scan("items", &KeyRange::prefix(prefix), false)?;
        Ok(serde_json::json!(rows.count()))
    };
    let outside =
        |ctx: &QueryContext<'_>, _: &serde_json::Value| -> Result<serde_json::Value, NodeError> {
            ctx.scan("items", &KeyRange::default(), false)
                .map(|_| serde_json::Value::Null)
        };
    let node = NodeBuilder::new(config(dir.path()))
        .keyspace(items())
        .handler("count", count)
        .handler("outside", outside)
        .open()
        .await
        .expect("open");
    let token = node
        .write(vec![
            item("s1", "a", 1.0, "x", true),
            item("s1", "a", 2.0, "y", true),
            item("s1", "b", 1.0, "z", true),
        ])
        .await
        .expect("write");
    let c = Consistency::tokens(vec![token]);
    let n = node
        .query(
            "count",
            "items",
            vec![s("s1")],
            serde_json::json!({"product": "a"}),
            &c,
        )
        .await
        .expect("query");
    assert_eq!(n, serde_json::json!(2));
    let err = node
        .query(
            "outside",
            "items",
            vec![s("s1")],
            serde_json::Value::Null,
            &c,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::InvalidArgument(ref m) if m.contains("outside partition")),
        "{err}"
    );
    let err = node
        .query("nope", "items", vec![s("s1")], serde_json::Value::Null, &c)
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::NotFound(ref m) if m.contains("registered: count, outside")),
        "{err}"
    );
    let err = node
        .query(
            "count",
            "items",
            vec![s("s1"), s("a")],
            serde_json::Value::Null,
            &c,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::InvalidArgument(ref m) if m.starts_with("partition_key")),
        "{err}"
    );
}

#[tokio::test]
async fn the_scan_byte_budget_returns_a_prefix_of_the_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Each row is about 100 bytes; 8 partitions share 4,000 bytes.
    let node = items_node(dir.path(), |l| l.max_scan_bytes = 4_000).await;
    let stores = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
    let tokens = fill_stores(&node, &stores, 20).await;
    let c = Consistency::tokens(tokens);
    let request = ScanRequest {
        keyspace: "items".into(),
        limit: 1_000,
        ..ScanRequest::default()
    };
    let budgeted = node.scan(request.clone(), &c).await.expect("scan");
    assert!(budgeted.more, "the budget cut the scan short");
    assert!(
        !budgeted.rows.is_empty() && budgeted.rows.len() < 240,
        "{} rows",
        budgeted.rows.len()
    );
    // Unlimited, the same scan returns everything; the budgeted rows are its first rows.
    let all_ids: Vec<String> = {
        let mut ids = Vec::new();
        for store in stores {
            let prefix = ScanRequest {
                keyspace: "items".into(),
                range: KeyRange::prefix(vec![s(store)]),
                limit: 1_000,
                ..ScanRequest::default()
            };
            ids.extend(ids_of(&node.scan(prefix, &c).await.expect("scan").rows));
        }
        ids
    };
    let got = ids_of(&budgeted.rows);
    assert_eq!(got[..], all_ids[..got.len()]);
}

fn ids_of(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| r.key[3].to_string()).collect()
}

/// Reads first run over a memory-only view with a budget of reads; one that needs more runs
/// again on a blocking thread, so a long read is whole, even through a handler that ignores
/// the errors its rows report.
#[tokio::test]
async fn reads_longer_than_the_memory_budget_are_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = notadb_storage::MEMORY_VIEW_BUDGET + 500;
    let node = NodeBuilder::new(config(dir.path()))
        .keyspace(items())
        .handler(
            "count_ignoring_errors",
            |ctx: &QueryContext<'_>, _: &serde_json::Value| {
                let range = KeyRange::prefix(ctx.partition_key().to_vec());
                let n = ctx
                    .scan("items", &range, false)?
                    .filter_map(Result::ok)
                    .count();
                Ok(serde_json::json!(n))
            },
        )
        .open()
        .await
        .expect("node opens");
    let mut tokens = Vec::new();
    for chunk in 0..rows.div_ceil(1000) {
        let batch = (chunk * 1000..((chunk + 1) * 1000).min(rows))
            .map(|i| item("big", "p", f64::from(i), &format!("i{i:06}"), true))
            .collect();
        tokens.push(node.write(batch).await.expect("write"));
    }
    let after = Consistency::tokens(tokens);
    let counted = node
        .query(
            "count_ignoring_errors",
            "items",
            vec![s("big")],
            serde_json::json!({}),
            &after,
        )
        .await
        .expect("query");
    assert_eq!(counted, serde_json::json!(rows));
    let request = AggregateRequest {
        keyspace: "items".into(),
        range: KeyRange::prefix(vec![s("big")]),
        ..AggregateRequest::default()
    };
    let aggregated = node.aggregate(request, &after).await.expect("aggregate");
    assert_eq!(aggregated.groups[0].value, f64::from(rows));
}

fn get_key(id: &str) -> Vec<Element> {
    vec![s("s1"), s("a"), Element::F64(1.0), s(id)]
}

fn put_item(id: &str, version: u32) -> Mutation {
    Mutation::Put {
        keyspace: "items".into(),
        key: get_key(id),
        value: ValueInput::Json(format!(r#"{{"version": {version}}}"#)),
    }
}

async fn version(node: &Node, id: &str, c: &Consistency) -> Option<u64> {
    let (_, value) = node.get("items", &get_key(id), c).await.expect("get");
    value.map(|v| {
        let v: serde_json::Value = serde_json::from_slice(&v).expect("json");
        v["version"].as_u64().expect("version")
    })
}

#[tokio::test]
async fn gets_through_the_point_cache_see_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, clock) = node(dir.path()).await;
    let t = node.write(vec![put_item("x", 1)]).await.expect("put");
    let c = Consistency::tokens(vec![t]);
    // The first get fills the cache, the second is answered from it.
    assert_eq!(version(&node, "x", &c).await, Some(1));
    assert_eq!(version(&node, "x", &c).await, Some(1));
    let t = node.write(vec![put_item("x", 2)]).await.expect("put");
    assert_eq!(
        version(&node, "x", &Consistency::tokens(vec![t])).await,
        Some(2)
    );
    let t = node
        .write(vec![Mutation::Delete {
            keyspace: "items".into(),
            key: get_key("x"),
        }])
        .await
        .expect("delete");
    assert_eq!(
        version(&node, "x", &Consistency::tokens(vec![t])).await,
        None
    );
    let t = node.write(vec![put_item("x", 3)]).await.expect("put");
    let c = Consistency::tokens(vec![t]);
    assert_eq!(version(&node, "x", &c).await, Some(3));
    assert_eq!(version(&node, "x", &c).await, Some(3));
    let t = node
        .write(vec![Mutation::DeleteRange {
            keyspace: "items".into(),
            range: KeyRange::prefix(vec![s("s1")]),
        }])
        .await
        .expect("delete range");
    assert_eq!(
        version(&node, "x", &Consistency::tokens(vec![t])).await,
        None
    );

    // A cached value still expires: the stored header is checked on every read.
    let key = vec![s("u1"), Element::Timestamp(T0), s("view"), s("i1")];
    let t = node
        .write(vec![event("u1", T0, "view", "i1")])
        .await
        .expect("event");
    let c = Consistency::tokens(vec![t]);
    for _ in 0..2 {
        assert!(node
            .get("activity", &key, &c)
            .await
            .expect("get")
            .1
            .is_some());
    }
    clock.set(T0 + 25 * HOUR);
    assert!(node
        .get("activity", &key, &c)
        .await
        .expect("get")
        .1
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gets_racing_writes_never_see_an_older_value_than_their_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let t = node.write(vec![put_item("hot", 0)]).await.expect("put");
    let latest = std::sync::Arc::new(tokio::sync::Mutex::new((0u32, t)));
    let writer = {
        let (node, latest) = (node.clone(), latest.clone());
        tokio::spawn(async move {
            for v in 1..=300 {
                let t = node.write(vec![put_item("hot", v)]).await.expect("put");
                *latest.lock().await = (v, t);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (node, latest) = (node.clone(), latest.clone());
        readers.push(tokio::spawn(async move {
            let mut seen = 0;
            for _ in 0..600 {
                let (v, t) = *latest.lock().await;
                let got = version(&node, "hot", &Consistency::tokens(vec![t]))
                    .await
                    .expect("the key exists");
                assert!(
                    got >= u64::from(v),
                    "read {got} after write {v} was acknowledged"
                );
                assert!(got >= seen, "went back from {seen} to {got}");
                seen = got;
                tokio::task::yield_now().await;
            }
        }));
    }
    writer.await.expect("writer");
    for r in readers {
        r.await.expect("reader");
    }
    let (v, t) = *latest.lock().await;
    assert_eq!(
        version(&node, "hot", &Consistency::tokens(vec![t])).await,
        Some(u64::from(v))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_gets_racing_writes_see_one_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    // "a" and "b" share a partition key: each write of both is one batch, applied at once.
    let both = |v| vec![put_item("a", v), put_item("b", v)];
    let t = node.write(both(0)).await.expect("put");
    let latest = std::sync::Arc::new(tokio::sync::Mutex::new((0u32, t)));
    let writer = {
        let (node, latest) = (node.clone(), latest.clone());
        tokio::spawn(async move {
            for v in 1..=300 {
                let t = node.write(both(v)).await.expect("put");
                *latest.lock().await = (v, t);
                tokio::task::yield_now().await;
            }
        })
    };
    let keys = vec![get_key("a"), get_key("b")];
    let mut readers = Vec::new();
    for r in 0..4 {
        let (node, latest, keys) = (node.clone(), latest.clone(), keys.clone());
        readers.push(tokio::spawn(async move {
            for i in 0..600 {
                let (v, t) = *latest.lock().await;
                let c = Consistency::tokens(vec![t]);
                // Single gets keep the point cache filled, so multi_gets meet hits.
                if (i + r) % 2 == 0 {
                    version(&node, "a", &c).await;
                    version(&node, "b", &c).await;
                }
                let (_, values) = node.multi_get("items", &keys, &c).await.expect("multi_get");
                let got: Vec<u64> = values
                    .iter()
                    .map(|v| {
                        let v: serde_json::Value =
                            serde_json::from_slice(v.as_ref().expect("present")).expect("json");
                        v["version"].as_u64().expect("version")
                    })
                    .collect();
                assert_eq!(got[0], got[1], "one multi_get saw two states: {got:?}");
                assert!(got[0] >= u64::from(v), "read {got:?} after write {v}");
                tokio::task::yield_now().await;
            }
        }));
    }
    writer.await.expect("writer");
    for r in readers {
        r.await.expect("reader");
    }
}
