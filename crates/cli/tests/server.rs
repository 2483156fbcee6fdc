//! The server process: gRPC codes, reflection, admin endpoints, SIGTERM and kill -9.

mod harness;

use harness::*;
use notadb_client::{proto, Client, Code, Element, KeyspaceSchema};
use notadb_types::{ElementType, KeyElement, Order, ValueFormat};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn kv() -> KeyspaceSchema {
    KeyspaceSchema {
        name: "kv".into(),
        key: vec![KeyElement {
            name: "k".into(),
            ty: ElementType::I64,
            order: Order::Asc,
        }],
        partition_by: 1,
        value_format: ValueFormat::Bytes,
        ttl: None,
    }
}

fn bytes(v: &str) -> proto::Value {
    proto::Value {
        kind: Some(proto::value::Kind::Bytes(v.as_bytes().to_vec())),
    }
}

#[tokio::test]
async fn grpc_errors_carry_codes_and_reflection_lists_services() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"));
    let client = Client::connect(&node.url()).await.expect("connect");
    client.create_keyspace(&kv(), false).await.expect("create");
    let err = client
        .put("kv", &[Element::String("x".into())], bytes("v"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(err.to_string().contains("`k`"), "{err}");
    let err = client
        .get("missing", &[Element::I64(1)], &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound));
    let err = client.create_keyspace(&kv(), false).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::AlreadyExists));
    let token = client
        .put("kv", &[Element::I64(1)], bytes("one"))
        .await
        .expect("put");
    let got = client
        .get("kv", &[Element::I64(1)], &[token])
        .await
        .expect("get")
        .expect("found");
    assert_eq!(notadb_client::value_bytes(&got), b"one");

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let channel = tonic::transport::Endpoint::from_shared(node.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("message")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected response")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "notadb.v1.Data",
        "notadb.v1.Keyspaces",
        "notadb.v1.Node",
        "notadb.v1.Transactions",
    ] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn admin_endpoints_report_health_readiness_metrics_and_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"));
    let client = Client::connect(&node.url()).await.expect("connect");
    client.create_keyspace(&kv(), false).await.expect("create");
    client
        .put("kv", &[Element::I64(7)], bytes("v"))
        .await
        .expect("put");
    assert_eq!(http_get(node.admin, "/healthz").0, 200);
    assert_eq!(
        http_get(node.admin, "/readyz"),
        (200, "ready\n".to_string())
    );
    let (code, metrics) = http_get(node.admin, "/metrics");
    assert_eq!(code, 200);
    for needle in [
        "notadb_requests_total{method=\"Put\",code=\"Ok\"} 1",
        "notadb_request_duration_seconds_bucket{method=\"Put\"",
        "notadb_partition_applied_seq{partition=\"0\"}",
        "notadb_partition_lag_records{partition=\"7\"}",
        "notadb_rocksdb_memory_bytes{kind=\"block_cache\"}",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    let (code, page) = http_get(node.admin, "/");
    assert_eq!(code, 200);
    assert!(
        page.contains("<h2>Keyspaces</h2>") && page.contains("<td>kv</td>"),
        "{page}"
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero_and_data_survives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let node = Node::start(&data);
    let client = Client::connect(&node.url()).await.expect("connect");
    client.create_keyspace(&kv(), false).await.expect("create");
    for k in 0..20 {
        client
            .put("kv", &[Element::I64(k)], bytes(&format!("v{k}")))
            .await
            .expect("put");
    }
    let status = node.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    let node = Node::start(&data);
    let client = Client::connect(&node.url()).await.expect("connect");
    for k in 0..20 {
        let v = client
            .get("kv", &[Element::I64(k)], &[])
            .await
            .expect("get")
            .expect("found after restart");
        assert_eq!(notadb_client::value_bytes(&v), format!("v{k}").as_bytes());
    }
}

#[tokio::test]
async fn kill_9_while_writing_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let node = Node::start(&data);
    let client = Client::connect(&node.url()).await.expect("connect");
    client.create_keyspace(&kv(), false).await.expect("create");
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8i64 {
        let (client, acked) = (client.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let k = i * 8 + w;
                match client
                    .put("kv", &[Element::I64(k)], bytes(&format!("value-{k}")))
                    .await
                {
                    Ok(_) => acked.lock().expect("lock").push(k),
                    Err(_) => return,
                }
            }
        }));
    }
    // Let writes flow, then kill without warning.
    while acked.lock().expect("lock").len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.kill9();
    for w in writers {
        w.await.expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    let node = Node::start(&data);
    let client = Client::connect(&node.url()).await.expect("connect");
    let keys: Vec<Vec<Element>> = acked.iter().map(|k| vec![Element::I64(*k)]).collect();
    let mut missing = Vec::new();
    for (chunk_keys, chunk) in keys.chunks(500).zip(acked.chunks(500)) {
        let values = client
            .multi_get("kv", chunk_keys, &[])
            .await
            .expect("multi_get");
        for (k, v) in chunk.iter().zip(values) {
            match v {
                Some(v) if notadb_client::value_bytes(&v) == format!("value-{k}").as_bytes() => {}
                _ => missing.push(*k),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
}
