//! Bad input gets a clear error naming the field, and nothing reaches the log.

mod common;

use common::*;
use notadb_node::*;
use notadb_types::{Element, PartitionId};

/// Sum of every partition's last log seq: unchanged means nothing was appended.
fn appended(node: &Node) -> u64 {
    node.status().partitions.iter().map(|p| p.last.0).sum()
}

fn invalid(result: Result<notadb_types::Token, NodeError>) -> String {
    match result {
        Err(NodeError::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[tokio::test]
async fn writes_are_validated_before_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let before = appended(&node);

    let wrong_type = Mutation::Put {
        keyspace: "items".into(),
        key: vec![s("s"), s("p"), s("not a float"), s("i")],
        value: ValueInput::Json("{}".into()),
    };
    let m = invalid(node.write(vec![wrong_type]).await);
    assert!(
        m.contains("`score`") && m.contains("f64") && m.contains("string"),
        "{m}"
    );

    let short = Mutation::Put {
        keyspace: "items".into(),
        key: vec![s("s")],
        value: ValueInput::Json("{}".into()),
    };
    assert!(invalid(node.write(vec![short]).await).starts_with("key:"));

    let nan = Mutation::Put {
        keyspace: "items".into(),
        key: vec![s("s"), s("p"), Element::F64(f64::NAN), s("i")],
        value: ValueInput::Json("{}".into()),
    };
    assert!(invalid(node.write(vec![nan]).await).contains("nan is not a valid key"));

    let malformed = Mutation::Put {
        keyspace: "items".into(),
        key: vec![s("s"), s("p"), Element::F64(1.0), s("i")],
        value: ValueInput::Json("{\"available\": tru".into()),
    };
    assert!(invalid(node.write(vec![malformed]).await).contains("not JSON"));

    let limits = Limits::default();
    let big_key = item(&"k".repeat(limits.max_key_bytes + 1), "p", 1.0, "i", true);
    assert!(invalid(node.write(vec![big_key]).await).contains("max_key_bytes"));

    let big_value = Mutation::Put {
        keyspace: "items".into(),
        key: vec![s("s"), s("p"), Element::F64(1.0), s("i")],
        value: ValueInput::Json(format!("\"{}\"", "v".repeat(limits.max_value_bytes))),
    };
    assert!(invalid(node.write(vec![big_value]).await).contains("max_value_bytes"));

    let json_into_bytes = Mutation::Put {
        keyspace: "activity".into(),
        key: vec![s("u"), Element::Timestamp(1), s("view"), s("i")],
        value: ValueInput::Json("{}".into()),
    };
    assert!(invalid(node.write(vec![json_into_bytes]).await).contains("stores bytes"));

    // One bad mutation in a batch: the message names it, and the good ones are not written.
    let m = invalid(
        node.write(vec![
            item("s", "p", 1.0, "ok", true),
            item("s", "p", 2.0, "ok2", true),
            Mutation::Delete {
                keyspace: "items".into(),
                key: vec![s("s")],
            },
        ])
        .await,
    );
    assert!(m.starts_with("mutations[2].key:"), "{m}");

    // Two partition keys in different partitions.
    let mut stores = (0..100).map(|i| format!("store-{i}"));
    let first = stores.next().expect("some");
    let partitioner = node.partitioner();
    let p_of = |s: &str| {
        let e = items()
            .encode_prefix(&[Element::String(s.into())])
            .expect("valid");
        partitioner.partition_of(&e)
    };
    let other = stores
        .find(|s| p_of(s) != p_of(&first))
        .expect("another partition");
    let m = invalid(
        node.write(vec![
            item(&first, "p", 1.0, "i", true),
            item(&other, "p", 1.0, "i", true),
        ])
        .await,
    );
    assert!(m.contains("one partition"), "{m}");

    assert!(invalid(node.write(vec![]).await).contains("at least one"));
    let short = Mutation::Delete {
        keyspace: "items".into(),
        key: vec![s("s")],
    };
    assert!(invalid(node.write_batch(vec![short]).await).starts_with("mutations[0].key:"));
    let too_many: Vec<Mutation> = (0..=limits.max_batch_mutations)
        .map(|i| item("s", "p", i as f64, "i", true))
        .collect();
    assert!(invalid(node.write(too_many).await).contains("max_batch_mutations"));

    let unknown = Mutation::Delete {
        keyspace: "nope".into(),
        key: vec![],
    };
    assert!(
        matches!(node.write(vec![unknown]).await, Err(NodeError::NotFound(m)) if m.contains("`nope`"))
    );

    let whole_keyspace = Mutation::DeleteRange {
        keyspace: "items".into(),
        range: KeyRange::default(),
    };
    assert!(invalid(node.write(vec![whole_keyspace]).await).contains("partition key"));

    assert_eq!(appended(&node), before, "no rejected write reached the log");
}

#[tokio::test]
async fn reads_reject_bad_ranges_filters_and_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let c = Consistency::none();
    let scan = |range: KeyRange| ScanRequest {
        keyspace: "items".into(),
        range,
        ..ScanRequest::default()
    };
    let err = |r: Result<ScanResult, NodeError>| match r {
        Err(NodeError::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    let reversed = KeyRange {
        prefix: vec![s("s"), s("p")],
        start: Some(Bound {
            key: vec![Element::F64(1.0)],
            inclusive: true,
        }),
        end: Some(Bound {
            key: vec![Element::F64(2.0)],
            inclusive: true,
        }),
    };
    assert!(err(node.scan(scan(reversed), &c).await).contains("start is after end"));
    let too_long = KeyRange {
        prefix: vec![s("a"), s("b"), Element::F64(1.0), s("c"), s("d")],
        ..KeyRange::default()
    };
    assert!(err(node.scan(scan(too_long), &c).await).starts_with("range.prefix"));
    let over = ScanRequest {
        keyspace: "items".into(),
        limit: 1_000_000,
        ..ScanRequest::default()
    };
    assert!(err(node.scan(over, &c).await).contains("max_scan_limit"));
    let bad_filter = ScanRequest {
        keyspace: "items".into(),
        filters: vec![Filter::Element {
            name: "score".into(),
            op: FilterOp::Gt,
            value: s("high"),
        }],
        ..ScanRequest::default()
    };
    assert!(err(node.scan(bad_filter, &c).await).starts_with("filters[0]"));
    let unknown = ScanRequest {
        keyspace: "nope".into(),
        ..ScanRequest::default()
    };
    assert!(matches!(
        node.scan(unknown, &c).await,
        Err(NodeError::NotFound(_))
    ));
    let field_on_bytes = ScanRequest {
        keyspace: "activity".into(),
        filters: vec![Filter::Field {
            path: "x".into(),
            op: FilterOp::Eq,
            value: serde_json::json!(1),
        }],
        ..ScanRequest::default()
    };
    assert!(err(node.scan(field_on_bytes, &c).await).contains("stores bytes"));

    let agg = |request: AggregateRequest| {
        let node = node.clone();
        async move {
            match node.aggregate(request, &Consistency::none()).await {
                Err(NodeError::InvalidArgument(m)) => m,
                other => panic!("expected InvalidArgument, got {other:?}"),
            }
        }
    };
    let base = AggregateRequest {
        keyspace: "activity".into(),
        ..AggregateRequest::default()
    };
    assert!(agg(AggregateRequest {
        function: AggregateFunction::Sum,
        ..base.clone()
    })
    .await
    .starts_with("field"));
    assert!(agg(AggregateRequest {
        group_by: Some("nope".into()),
        ..base.clone()
    })
    .await
    .starts_with("group_by"));
    let window = |element: &str, last| {
        Some(TimeWindow {
            element: element.into(),
            last,
            ..TimeWindow::default()
        })
    };
    assert!(agg(AggregateRequest {
        window: window("feature", Some(1)),
        ..base.clone()
    })
    .await
    .contains("timestamp"));
    assert!(agg(AggregateRequest {
        window: window("ts", Some(-5)),
        ..base
    })
    .await
    .contains("positive"));

    let token = notadb_types::Token {
        partition: PartitionId(3),
        seq: notadb_types::Seq(1_000),
    };
    let m = match node
        .scan(scan(KeyRange::default()), &Consistency::tokens(vec![token]))
        .await
    {
        Err(NodeError::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert!(m.contains("beyond the end"), "{m}");
    let token = notadb_types::Token {
        partition: PartitionId(99),
        seq: notadb_types::Seq(1),
    };
    assert!(matches!(
        node.scan(scan(KeyRange::default()), &Consistency::tokens(vec![token]))
            .await,
        Err(NodeError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn keyspace_admin_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let mut other = items();
    other.partition_by = 2;
    assert!(
        matches!(node.create_keyspace(other.clone(), false).await, Err(NodeError::AlreadyExists(m)) if m.contains("another schema"))
    );
    assert!(matches!(
        node.create_keyspace(other, true).await,
        Err(NodeError::AlreadyExists(_))
    ));
    let (_, created) = node
        .create_keyspace(items(), true)
        .await
        .expect("identical is fine");
    assert!(!created);
    let mut bad = items();
    bad.name = "bad".into();
    bad.partition_by = 9;
    assert!(
        matches!(node.create_keyspace(bad, false).await, Err(NodeError::InvalidArgument(m)) if m.contains("partition_by"))
    );
    assert!(matches!(
        node.drop_keyspace("nope").await,
        Err(NodeError::NotFound(_))
    ));
    assert!(matches!(
        node.describe_keyspace("nope"),
        Err(NodeError::NotFound(_))
    ));
}

#[tokio::test]
async fn oversized_ttl_and_non_utf8_json_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let mut forever = activity();
    forever.name = "forever".into();
    forever.ttl = Some(notadb_types::TtlSpec::Append {
        ttl_micros: u64::MAX,
    });
    let err = node
        .create_keyspace(forever, false)
        .await
        .expect_err("rejected");
    assert!(
        matches!(err, NodeError::InvalidArgument(ref m) if m.contains("ttl.ttl_micros")),
        "{err}"
    );
    let before = appended(&node);
    let bad = Mutation::Put {
        keyspace: "items".into(),
        key: vec![s("s"), s("p"), Element::F64(1.0), s("i")],
        value: ValueInput::Bytes(b"{\"a\": \"\xff\"}".to_vec()),
    };
    assert!(invalid(node.write(vec![bad]).await).contains("not UTF-8"));
    assert_eq!(appended(&node), before);
}

#[tokio::test]
async fn aggregate_row_limit_counts_every_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = items_node(dir.path(), |l| l.max_aggregate_rows = 5).await;
    // Three rows in each of three stores: no partition alone passes the limit.
    let tokens = fill_stores(&node, &["a", "b", "c"], 3).await;
    let request = AggregateRequest {
        keyspace: "items".into(),
        ..AggregateRequest::default()
    };
    let err = node
        .aggregate(request, &Consistency::tokens(tokens))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::ResourceExhausted(ref m) if m.contains("max_aggregate_rows")),
        "{err}"
    );
}

#[tokio::test]
async fn keyspace_and_cache_counts_and_cache_memory_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = items_node(dir.path(), |l| {
        l.max_keyspaces = 2;
        l.max_caches = 2;
        l.max_cache_bytes_total = 3 << 20;
    })
    .await;
    node.create_keyspace(activity(), false)
        .await
        .expect("the second keyspace fits");
    let mut third = activity();
    third.name = "third".into();
    let err = node
        .create_keyspace(third.clone(), false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::ResourceExhausted(ref m) if m.contains("max_keyspaces")),
        "{err}"
    );
    // An existing name is not a new keyspace: if_not_exists still answers.
    let (_, created) = node
        .create_keyspace(activity(), true)
        .await
        .expect("exists");
    assert!(!created);
    node.drop_keyspace("activity").await.expect("drop");
    node.create_keyspace(third, false)
        .await
        .expect("room again after a drop");

    node.create_cache(CacheDef::new("a", 1 << 20), false)
        .await
        .expect("first cache");
    let err = node
        .create_cache(CacheDef::new("b", 3 << 20), false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::ResourceExhausted(ref m) if m.contains("max_cache_bytes_total")),
        "{err}"
    );
    node.create_cache(CacheDef::new("b", 1 << 20), false)
        .await
        .expect("second cache");
    let err = node
        .create_cache(CacheDef::new("c", 1 << 20), false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::ResourceExhausted(ref m) if m.contains("max_caches")),
        "{err}"
    );
    let names: Vec<String> = node
        .list_caches()
        .iter()
        .map(|c| c.def.name.clone())
        .collect();
    assert_eq!(names, ["a", "b"]);
}
