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
    // The standard gRPC health service says the same, overall and per service.
    {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;
        let channel = tonic::transport::Endpoint::from_shared(node.url())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut health = HealthClient::new(channel);
        // The service reads readiness every 500 ms.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for service in ["", "notadb.v1.Data", "notadb.v1.Keyspaces"] {
            loop {
                let status = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
                    .into_inner()
                    .status;
                if status == ServingStatus::Serving as i32 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{service:?} is {status}, not SERVING"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let unknown = health
            .check(HealthCheckRequest {
                service: "no.such.Service".into(),
            })
            .await
            .expect_err("unknown service");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }
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
    // /digest hashes every partition: one answer per digest_min_interval_ms (1 s).
    let (code, digest) = http_get(node.admin, "/digest");
    assert_eq!(code, 200, "{digest}");
    let (code, again) = http_get(node.admin, "/digest");
    assert_eq!(code, 429, "{again}");
    assert!(again.contains("digest_min_interval_ms"), "{again}");
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

/// Runs `notadb serve` that is expected to refuse to start; returns its exit code and stderr.
fn refused_start(data: &std::path::Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN)
        .args(["serve", "--partitions", "8"])
        .arg("--data-dir")
        .arg(data)
        .args(["--admin-addr", &free_addr().to_string()])
        .args(["--frame-addr", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "error")
        .output()
        .expect("run notadb serve");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn start_up_refusals_exit_with_what_a_supervisor_should_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // A configuration file that does not parse: starting again fails again (EX_CONFIG).
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "grpc_addr = [").expect("write");
    let (code, stderr) = refused_start(&data, &["--config", bad.to_str().expect("utf-8")]);
    assert_eq!(code, Some(78), "{stderr}");
    // The gRPC address is taken: a later start may work (EX_TEMPFAIL).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let (code, stderr) = refused_start(&data, &["--grpc-addr", &taken_addr]);
    assert_eq!(code, Some(75), "{stderr}");
    assert!(stderr.contains("binding"), "{stderr}");
    drop(taken);
    // Storage that does not go with its log: a permanent refusal, never UNAVAILABLE.
    let node = Node::start(&data);
    let client = Client::connect(&node.url()).await.expect("connect");
    client.create_keyspace(&kv(), false).await.expect("create");
    client
        .put("kv", &[Element::I64(1)], bytes("v"))
        .await
        .expect("put");
    assert_eq!(node.terminate().code(), Some(0));
    std::fs::remove_dir_all(data.join("db")).expect("remove storage");
    let (code, stderr) = refused_start(&data, &["--grpc-addr", &free_addr().to_string()]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("restore the data directory"), "{stderr}");
}

#[tokio::test]
async fn kill_9_while_writing_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let node = Node::start(&data);
    let client = Client::connect(&node.url()).await.expect("connect");
    client.create_keyspace(&kv(), false).await.expect("create");
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    // Enough writers that the log's batches, each made durable by one fdatasync of the
    // shared segment, hold appends to many partitions when the kill lands.
    const WRITERS: i64 = 32;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, acked) = (client.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let k = i * WRITERS + w;
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
    while acked.lock().expect("lock").len() < 2000 {
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

#[tokio::test]
async fn the_frame_protocol_answers_like_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"));
    let frame = Client::connect(&node.url()).await.expect("connect");
    let grpc = Client::connect_grpc(&node.url()).await.expect("connect");
    assert_eq!(frame.transport(), "frame");
    assert_eq!(grpc.transport(), "grpc");
    frame.create_keyspace(&kv(), false).await.expect("create");
    let mut tokens = Vec::new();
    for i in 0..50 {
        tokens.push(
            frame
                .put("kv", &[Element::I64(i)], bytes(&format!("v{i}")))
                .await
                .expect("put over frames"),
        );
    }
    // Many calls in flight on the one connection, answered to the right callers.
    let calls = (0..50).map(|i| {
        let (frame, tokens) = (frame.clone(), tokens.clone());
        async move {
            let got = frame
                .get("kv", &[Element::I64(i)], &tokens)
                .await
                .expect("get over frames")
                .expect("found");
            assert_eq!(notadb_client::value_bytes(&got), format!("v{i}").as_bytes());
        }
    });
    futures::future::join_all(calls).await;
    let keys: Vec<Vec<Element>> = (0..60).map(|i| vec![Element::I64(i)]).collect();
    assert_eq!(
        frame.multi_get("kv", &keys, &[]).await.expect("frame"),
        grpc.multi_get("kv", &keys, &[]).await.expect("grpc"),
    );
    assert_eq!(
        frame.multi_get("kv", &keys, &tokens).await.expect("frame"),
        grpc.multi_get("kv", &keys, &tokens).await.expect("grpc"),
    );
    // Requests the frame path's direct `MultiGet` declines (a key of the wrong type or
    // length, an unknown keyspace) get the gRPC method's errors.
    let bad_keys = [
        vec![Element::String("x".into())],
        vec![],
        vec![Element::I64(1), Element::I64(2)],
    ];
    for bad in bad_keys {
        let keys = [vec![Element::I64(1)], bad];
        let (a, b) = (
            frame.multi_get("kv", &keys, &[]).await.expect_err("frame"),
            grpc.multi_get("kv", &keys, &[]).await.expect_err("grpc"),
        );
        assert_eq!((a.code(), a.to_string()), (b.code(), b.to_string()));
        assert!(a.to_string().contains("keys[1]"), "{a}");
    }
    let (a, b) = (
        frame
            .multi_get("nope", &keys, &[])
            .await
            .expect_err("frame"),
        grpc.multi_get("nope", &keys, &[]).await.expect_err("grpc"),
    );
    assert_eq!((a.code(), a.to_string()), (b.code(), b.to_string()));
    assert_eq!(a.code(), Some(Code::NotFound), "{a}");
    // One key over `max_multi_get_keys` (1,000 by default) is refused whole, on both.
    let too_many: Vec<Vec<Element>> = (0..1_001).map(|i| vec![Element::I64(i)]).collect();
    for client in [&frame, &grpc] {
        let err = client
            .multi_get("kv", &too_many, &[])
            .await
            .expect_err("over the limit");
        assert!(
            err.to_string()
                .contains("1001 keys, the limit is 1000 (max_multi_get_keys)"),
            "{err}"
        );
    }
    let scan = proto::ScanRequest {
        keyspace: "kv".into(),
        limit: 7,
        reverse: true,
        ..Default::default()
    };
    let (a, b) = (
        frame.scan(scan.clone()).await.expect("frame"),
        grpc.scan(scan).await.expect("grpc"),
    );
    assert_eq!(a, b);
    assert_eq!(a.rows.len(), 7);
    assert!(a.more);
    // Errors keep their codes and messages.
    for client in [&frame, &grpc] {
        let err = client
            .get("missing", &[Element::I64(1)], &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(Code::NotFound), "{err}");
        let err = client
            .put("kv", &[Element::String("x".into())], bytes("v"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
        assert!(err.to_string().contains("`k`"), "{err}");
    }
}

/// A raw frame-protocol connection.
async fn frame_socket(client: &Client) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = client.status().await.expect("status").frame_addr;
    assert!(!addr.is_empty(), "the node serves the frame protocol");
    let mut socket = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    socket
        .write_all(notadb_proto::frame::PREAMBLE)
        .await
        .expect("preamble");
    let mut answer = [0u8; 8];
    socket.read_exact(&mut answer).await.expect("preamble back");
    assert_eq!(&answer, notadb_proto::frame::PREAMBLE);
    socket
}

/// Reads frames until the server closes the connection.
async fn frames_until_closed(
    socket: &mut tokio::net::TcpStream,
) -> Vec<(notadb_proto::frame::ResponseHead, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = bytes::BytesMut::new();
    let mut frames = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read_buf(&mut buf))
            .await
            .expect("the server answers in time")
            .expect("read");
        while let Some((head, body)) =
            notadb_proto::frame::decode_response(&mut buf, 1 << 20).expect("valid frames")
        {
            frames.push((head, body.to_vec()));
        }
        if n == 0 {
            return frames;
        }
    }
}

#[tokio::test]
async fn the_frame_protocol_refuses_bad_input_clearly() {
    use notadb_proto::frame::{encode_request, Method, RequestHead};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"));
    let client = Client::connect(&node.url()).await.expect("connect");
    client.create_keyspace(&kv(), false).await.expect("create");
    client
        .put("kv", &[Element::I64(1)], bytes("one"))
        .await
        .expect("put");

    // A request for an unknown method and one that is not a protobuf message get errors of
    // their own; the connection goes on and answers the next request.
    let mut socket = frame_socket(&client).await;
    let mut out = bytes::BytesMut::new();
    let get = proto::GetRequest {
        keyspace: "kv".into(),
        key: Some(notadb_client::tuple(&[Element::I64(1)])),
        tokens: vec![],
    };
    let head = |id, method: u16| RequestHead {
        id,
        method,
        timeout_ms: 5_000,
    };
    encode_request(head(1, 99), &get, &mut out);
    encode_request(head(2, Method::Get as u16), &get, &mut out);
    // id 3: a Get whose body is not a protobuf message.
    out.extend_from_slice(&(10u32 + 3).to_le_bytes());
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(Method::Get as u16).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&[0xff, 0xff, 0xff]);
    socket.write_all(&out).await.expect("write");
    socket.shutdown().await.expect("half close");
    let mut frames = frames_until_closed(&mut socket).await;
    frames.sort_by_key(|(h, _)| h.id);
    let codes: Vec<(u32, u16)> = frames.iter().map(|(h, _)| (h.id, h.code)).collect();
    assert_eq!(
        codes,
        vec![
            (1, Code::Unimplemented as u16),
            (2, 0),
            (3, Code::InvalidArgument as u16)
        ]
    );
    let answer: proto::GetResponse = prost::Message::decode(&frames[1].1[..]).expect("decodes");
    assert_eq!(
        notadb_client::value_bytes(&answer.value.expect("value")),
        b"one"
    );
    assert!(String::from_utf8_lossy(&frames[0].1).contains("99"));

    // A frame longer than the limit closes the connection with RESOURCE_EXHAUSTED.
    let mut socket = frame_socket(&client).await;
    socket
        .write_all(&(u32::MAX - 1).to_le_bytes())
        .await
        .expect("write");
    let frames = frames_until_closed(&mut socket).await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0.id, 0);
    assert_eq!(frames[0].0.code, Code::ResourceExhausted as u16);

    // A client that speaks something else gets an error, not a hang.
    let addr = client.status().await.expect("status").frame_addr;
    let mut socket = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    socket
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .expect("answered")
        .expect("read");
    assert!(String::from_utf8_lossy(&answer).contains("frame protocol preamble"));

    // Nothing above disturbed the node.
    let got = client
        .get("kv", &[Element::I64(1)], &[])
        .await
        .expect("get")
        .expect("found");
    assert_eq!(notadb_client::value_bytes(&got), b"one");
}
