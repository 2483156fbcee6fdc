//! Cluster mode: real `notadb serve` processes on a real `nats-server` (JetStream), every test
//! with its own server, store and node data directories on 127.0.0.1. Tests run one at a time
//! (see `harness::cluster::serial`).

mod harness;

use harness::cluster::*;
use harness::{failed, ok};
use notadb_client::{proto, Client, Code, Element, Token};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KS: &str = "ks";

fn key(k: &str) -> Vec<Element> {
    vec![Element::String(k.to_string())]
}

fn json_of(value: &proto::Value) -> serde_json::Value {
    serde_json::from_slice(notadb_client::value_bytes(value)).expect("JSON value")
}

/// Creates the test keyspace through `nodes[0]` and waits until every node knows it.
async fn create_keyspace(nodes: &[&ClusterNode]) {
    nodes[0]
        .client()
        .await
        .create_keyspace(&string_keyspace(KS), false)
        .await
        .expect("create keyspace");
    wait_keyspace(nodes, KS).await;
}

/// Reads every `(key, value)` through `client` in multi-get batches after `tokens`; returns
/// the keys that were missing or had another value.
async fn missing_keys(
    client: &Client,
    expected: &[(String, serde_json::Value)],
    tokens: &[Token],
) -> Vec<String> {
    let mut missing = Vec::new();
    for chunk in expected.chunks(1000) {
        let keys: Vec<Vec<Element>> = chunk.iter().map(|(k, _)| key(k)).collect();
        let values = client
            .multi_get(KS, &keys, tokens)
            .await
            .expect("multi_get");
        assert_eq!(values.len(), chunk.len());
        for ((k, want), got) in chunk.iter().zip(values) {
            if got.as_ref().map(json_of).as_ref() != Some(want) {
                missing.push(k.clone());
            }
        }
    }
    missing
}

/// COUNT over every partition, through `client`.
async fn count(client: &Client, tokens: &[Token]) -> u64 {
    let response = client
        .aggregate(proto::AggregateRequest {
            keyspace: KS.into(),
            range: Some(notadb_client::prefix_range(&[])),
            function: proto::AggregateFunction::Count as i32,
            tokens: tokens
                .iter()
                .copied()
                .map(notadb_proto::token_to_proto)
                .collect(),
            ..Default::default()
        })
        .await
        .expect("aggregate count");
    assert_eq!(response.groups.len(), 1, "{response:?}");
    response.groups[0].rows
}

/// A failed call: its code, when the server answered, and the error text.
type Failure = (Option<Code>, String);

/// Acknowledged writes of a concurrent writer.
#[derive(Default)]
struct Acked {
    writes: Mutex<Vec<(usize, Token)>>,
    count: AtomicUsize,
}

impl Acked {
    fn record(&self, i: usize, token: Token) {
        self.writes.lock().expect("lock").push((i, token));
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn len(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn take(&self) -> Vec<(usize, Token)> {
        let mut writes = self.writes.lock().expect("lock").clone();
        writes.sort_by_key(|(i, _)| *i);
        writes
    }
}

async fn wait_acked(acked: &Acked, n: usize, timeout: Duration) {
    wait_until_async(&format!("{n} acknowledged writes"), timeout, || async {
        if acked.len() >= n {
            Ok(())
        } else {
            Err(acked.len())
        }
    })
    .await;
}

fn key_of(i: usize) -> String {
    format!("k{i:06}")
}

/// Test 1: Two shard groups of two replicas: every write through any node is readable through
/// every node; each group's replicas converge to identical digests; a scan and a count over
/// all partitions scatter to both groups and merge in key order.
#[test]
fn two_groups_of_two_replicas_serve_every_key_everywhere_and_converge() {
    two_groups_of_two_replicas_serve_every_key_everywhere_and_converge_on(BrokerKind::Nats);
}

/// The same on Kafka (a tansu broker).
#[test]
fn kafka_two_groups_of_two_replicas_serve_every_key_everywhere_and_converge() {
    two_groups_of_two_replicas_serve_every_key_everywhere_and_converge_on(BrokerKind::Kafka);
}

fn two_groups_of_two_replicas_serve_every_key_everywhere_and_converge_on(kind: BrokerKind) {
    serial(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = TestBroker::start(kind, dir.path());
        let nodes = start_two_by_two(&broker, "t_two_groups", dir.path());
        let all: Vec<&ClusterNode> = nodes.iter().collect();
        wait_members(&all, 4).await;

        // The keyspace is created with the CLI through one node and reaches every node.
        ok(&nodes[3].cli(&[
            "keyspace", "create", KS, "--key", "k:string", "--value", "json",
        ]));
        wait_keyspace(&all, KS).await;

        let mut clients = Vec::new();
        for node in &nodes {
            clients.push(node.client().await);
        }
        let mut written: Vec<(String, Token)> = Vec::new();
        for i in 0..200 {
            let k = format!("k{i:03}");
            let token = clients[i % 4]
                .put_json(KS, &key(&k), &json!({ "v": i }))
                .await
                .unwrap_or_else(|e| panic!("put {k} through {}: {e}", nodes[i % 4].spec.node_id));
            written.push((k, token));
        }
        let groups_written: std::collections::BTreeSet<u16> =
            written.iter().map(|(_, t)| t.partition.0 % 2).collect();
        assert_eq!(groups_written.len(), 2, "200 keys land in both groups");

        // Read-your-writes through every node, for every key.
        for (node, client) in nodes.iter().zip(&clients) {
            for (i, (k, token)) in written.iter().enumerate() {
                let value = client
                    .get(KS, &key(k), &[*token])
                    .await
                    .unwrap_or_else(|e| panic!("get {k} through {}: {e}", node.spec.node_id))
                    .unwrap_or_else(|| panic!("{k} not found through {}", node.spec.node_id));
                assert_eq!(
                    json_of(&value),
                    json!({ "v": i }),
                    "{k} through {}",
                    node.spec.node_id
                );
            }
        }
        // A routed client (reads go straight to a replica of the owning group) sees the
        // same, without any node forwarding its single-key reads.
        let forwarded = |nodes: &[ClusterNode]| -> f64 {
            nodes
                .iter()
                .map(|n| n.metric("notadb_forwarded_requests_total"))
                .sum()
        };
        let frame_connections = |nodes: &[ClusterNode]| -> Vec<f64> {
            nodes
                .iter()
                .map(|n| n.metric("notadb_frame_connections_total"))
                .collect()
        };
        let routed = Client::connect_routed(&nodes[0].url())
            .await
            .expect("connect_routed");
        assert!(routed.is_routed());
        let members = routed.cluster().await.expect("cluster").members;
        assert!(
            members.iter().all(|m| !m.frame_addr.is_empty()),
            "every member advertises its frame address: {members:?}"
        );
        let connections_before = frame_connections(&nodes);
        let before = forwarded(&nodes);
        for (i, (k, token)) in written.iter().enumerate() {
            let value = routed
                .get(KS, &key(k), &[*token])
                .await
                .unwrap_or_else(|e| panic!("routed get {k}: {e}"))
                .unwrap_or_else(|| panic!("{k} not found by the routed client"));
            assert_eq!(json_of(&value), json!({ "v": i }), "routed get {k}");
        }
        assert_eq!(
            forwarded(&nodes) - before,
            0.0,
            "routed gets go straight to an owner replica"
        );
        // ... over frame connections to replicas of both groups.
        let opened: Vec<f64> = frame_connections(&nodes)
            .iter()
            .zip(&connections_before)
            .map(|(after, before)| after - before)
            .collect();
        for g in 0..2 {
            assert!(
                opened[2 * g] + opened[2 * g + 1] >= 1.0,
                "routed gets reached group {g} over the frame protocol: {opened:?}"
            );
        }
        let all_tokens = newest_tokens(written.iter().map(|(_, t)| t));
        let expected: Vec<(String, serde_json::Value)> = written
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), json!({ "v": i })))
            .collect();
        let missing = missing_keys(&routed, &expected, &all_tokens).await;
        assert!(missing.is_empty(), "routed multi-get missed {missing:?}");
        // Every node forwarded reads of the other group's partitions.
        for node in &nodes {
            let forwarded = node.metric("notadb_forwarded_requests_total");
            assert!(
                forwarded >= 1.0,
                "{} forwarded {forwarded} requests",
                node.spec.node_id
            );
        }
        // The CLI through every node: a key of each group, and a missing key.
        let of_group = |g: u16| {
            written
                .iter()
                .position(|(_, t)| t.partition.0 % 2 == g)
                .expect("a key of the group")
        };
        for node in &nodes {
            for g in 0..2 {
                let i = of_group(g);
                let out = ok(&node.cli(&["get", KS, &json!([written[i].0]).to_string()]));
                let got: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
                assert_eq!(got, json!({ "v": i }));
            }
            let err = failed(&node.cli(&["get", KS, "[\"absent\"]"]));
            assert!(err.contains("not found"), "{err}");
        }

        // After the writes stop, each group's replicas reach identical digests.
        let tokens = newest_tokens(written.iter().map(|(_, t)| t));
        let mut applied_total = 0;
        for g in 0..2usize {
            let digest = blocking(|| {
                wait_converged(
                    &[&nodes[2 * g], &nodes[2 * g + 1]],
                    &tokens,
                    Duration::from_secs(30),
                )
            });
            applied_total += digest.values().map(|(applied, _)| applied).sum::<u64>();
        }
        assert_eq!(
            applied_total, 200,
            "one log entry per put, each applied by its group"
        );

        // A scan over all partitions through one node: every key, in key order.
        let scan = |limit| proto::ScanRequest {
            keyspace: KS.into(),
            range: Some(notadb_client::prefix_range(&[])),
            limit,
            tokens: tokens
                .iter()
                .copied()
                .map(notadb_proto::token_to_proto)
                .collect(),
            ..Default::default()
        };
        let keys_of = |response: &proto::ScanResponse| -> Vec<String> {
            response
                .rows
                .iter()
                .map(|row| match row.key.as_ref().map(|t| t.elements.len()) {
                    Some(1) => {
                        let element = notadb_proto::element_from_proto(
                            &row.key.as_ref().expect("key").elements[0],
                            "key",
                        )
                        .expect("element");
                        match element {
                            Element::String(s) => s,
                            other => panic!("unexpected key element {other:?}"),
                        }
                    }
                    other => panic!("unexpected key with {other:?} elements"),
                })
                .collect()
        };
        let expected: Vec<String> = written.iter().map(|(k, _)| k.clone()).collect();
        for (node, client) in nodes.iter().zip(&clients).step_by(2) {
            let all_rows = client.scan(scan(1000)).await.expect("scan");
            assert_eq!(
                keys_of(&all_rows),
                expected,
                "scan through {}",
                node.spec.node_id
            );
            assert!(!all_rows.more);
            for (row, i) in all_rows.rows.iter().zip(0..) {
                assert_eq!(
                    json_of(row.value.as_ref().expect("value")),
                    json!({ "v": i })
                );
            }
            // A limit cuts the merged order, not each group's.
            let first = client.scan(scan(50)).await.expect("scan with a limit");
            assert_eq!(keys_of(&first), expected[..50].to_vec());
            assert!(first.more, "50 of 200 rows: more follow");
        }

        // COUNT over all partitions, by the CLI and by the client, through a node of each group.
        for node in [&nodes[0], &nodes[2]] {
            let out = ok(&node.cli(&["aggregate", KS]));
            let line: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
            assert_eq!(line["rows"], json!(200), "{out}");
            assert_eq!(line["value"].as_f64(), Some(200.0), "{out}");
        }
        assert_eq!(count(&clients[1], &tokens).await, 200);
        assert_eq!(count(&clients[3], &tokens).await, 200);
        drop(nodes);
    });
}

/// Test 2: kill -9 one replica while a client writes 50,000 entries through the other: the
/// survivor keeps serving, the killed one restarts on its data directory, catches up, and
/// ends with the same digest; every acknowledged write is readable from both.
#[test]
fn kill_9_of_a_replica_under_write_load_loses_nothing_and_it_catches_up() {
    kill_9_of_a_replica_under_write_load_loses_nothing_and_it_catches_up_on(BrokerKind::Nats);
}

/// The same on Kafka (a tansu broker).
#[test]
fn kafka_kill_9_of_a_replica_under_write_load_loses_nothing_and_it_catches_up() {
    kill_9_of_a_replica_under_write_load_loses_nothing_and_it_catches_up_on(BrokerKind::Kafka);
}

fn kill_9_of_a_replica_under_write_load_loses_nothing_and_it_catches_up_on(kind: BrokerKind) {
    const TOTAL: usize = 50_000;
    const WRITERS: usize = 64;
    serial(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = TestBroker::start(kind, dir.path());
        let spec = |id| broker.spec("t_kill9", 1, 0, id, dir.path());
        let mut nodes = start_nodes(vec![spec("victim"), spec("survivor")]);
        wait_members(&[&nodes[0], &nodes[1]], 2).await;
        create_keyspace(&[&nodes[1], &nodes[0]]).await;

        let client = nodes[1]
            .client()
            .await
            .with_timeout(Duration::from_secs(30));
        let acked = Arc::new(Acked::default());
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut writers = Vec::new();
        for _ in 0..WRITERS {
            let (client, acked, errors, next) =
                (client.clone(), acked.clone(), errors.clone(), next.clone());
            writers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= TOTAL {
                        return;
                    }
                    match client
                        .put_json(KS, &key(&key_of(i)), &json!({ "i": i }))
                        .await
                    {
                        Ok(token) => acked.record(i, token),
                        Err(e) => errors
                            .lock()
                            .expect("lock")
                            .push(format!("{}: {e}", key_of(i))),
                    }
                }
            }));
        }

        wait_acked(&acked, TOTAL / 5, Duration::from_secs(60)).await;
        blocking(|| nodes[0].kill9());
        let killed_at = acked.len();
        // The survivor keeps serving reads during the outage.
        let recent = acked.take();
        for (i, token) in recent.iter().rev().take(50) {
            let value = client
                .get(KS, &key(&key_of(*i)), &[*token])
                .await
                .expect("get during the outage")
                .expect("found during the outage");
            assert_eq!(json_of(&value), json!({ "i": i }));
        }
        blocking(|| nodes[1].wait_ready(Duration::from_secs(30)));
        wait_acked(&acked, TOTAL * 3 / 5, Duration::from_secs(120)).await;
        let restarted_at = acked.len();
        blocking(|| nodes[0].restart());
        for w in writers {
            w.await.expect("writer task");
        }
        let elapsed = started.elapsed();
        let errors = errors.lock().expect("lock").clone();
        assert!(
            errors.is_empty(),
            "{} writes failed: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        let writes = acked.take();
        assert_eq!(writes.len(), TOTAL);
        eprintln!(
            "kill -9 test: {TOTAL} puts in {elapsed:.1?} ({:.0}/s); killed after {killed_at}, restarted after {restarted_at}",
            TOTAL as f64 / elapsed.as_secs_f64()
        );

        for node in &mut nodes {
            blocking(|| node.wait_ready(Duration::from_secs(60)));
        }
        let tokens = newest_tokens(writes.iter().map(|(_, t)| t));
        blocking(|| wait_converged(&[&nodes[0], &nodes[1]], &tokens, Duration::from_secs(60)));
        let expected: Vec<(String, serde_json::Value)> = writes
            .iter()
            .map(|(i, _)| (key_of(*i), json!({ "i": i })))
            .collect();
        for node in &nodes {
            let client = node.client().await;
            let missing = missing_keys(&client, &expected, &tokens).await;
            assert!(
                missing.is_empty(),
                "{} of {TOTAL} acknowledged writes missing on {}: {:?}",
                missing.len(),
                node.spec.node_id,
                &missing[..missing.len().min(10)]
            );
            assert_eq!(
                count(&client, &tokens).await,
                TOTAL as u64,
                "count on {}",
                node.spec.node_id
            );
        }
    });
}

/// kill -9 of the node every write goes through, while writes it coalesced into shared log
/// entries are in flight: every acknowledged write is on the other replica and, once the killed
/// node is back, on it too; the replicas' digests agree. Writes in flight at the kill may or may
/// not be there (their clients saw errors, not acknowledgements).
#[test]
fn kill_9_of_the_writing_node_with_coalesced_batches_in_flight_loses_no_acknowledged_write() {
    const WRITERS: usize = 64;
    serial(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = TestBroker::start(BrokerKind::Nats, dir.path());
        let spec = |id| broker.spec("t_coalesced_kill9", 1, 0, id, dir.path());
        let mut nodes = start_nodes(vec![spec("writer"), spec("replica")]);
        wait_members(&[&nodes[0], &nodes[1]], 2).await;
        create_keyspace(&[&nodes[0], &nodes[1]]).await;
        let client = nodes[0]
            .client()
            .await
            .with_timeout(Duration::from_secs(10));
        let acked = Arc::new(Acked::default());
        let next = Arc::new(AtomicUsize::new(0));
        let mut writers = Vec::new();
        for _ in 0..WRITERS {
            let (client, acked, next) = (client.clone(), acked.clone(), next.clone());
            writers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    match client
                        .put_json(KS, &key(&key_of(i)), &json!({ "i": i }))
                        .await
                    {
                        Ok(token) => acked.record(i, token),
                        // The node is gone: this write's outcome is unknown.
                        Err(_) => return,
                    }
                }
            }));
        }
        wait_acked(&acked, 5_000, Duration::from_secs(60)).await;
        let coalesced = nodes[0].metric("notadb_writes_coalesced_total");
        assert!(coalesced > 0.0, "no write was coalesced before the kill");
        blocking(|| nodes[0].kill9());
        for w in writers {
            w.await.expect("writer task");
        }
        let writes = acked.take();
        eprintln!(
            "coalesced kill -9 test: {} writes acknowledged, {coalesced} of them (or more) coalesced, then the writer was killed",
            writes.len()
        );
        let tokens = newest_tokens(writes.iter().map(|(_, t)| t));
        let expected: Vec<(String, serde_json::Value)> = writes
            .iter()
            .map(|(i, _)| (key_of(*i), json!({ "i": i })))
            .collect();
        let survivor = nodes[1].client().await;
        let missing = missing_keys(&survivor, &expected, &tokens).await;
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged writes missing on the replica: {:?}",
            missing.len(),
            writes.len(),
            &missing[..missing.len().min(10)]
        );
        blocking(|| nodes[0].restart());
        for node in &mut nodes {
            blocking(|| node.wait_ready(Duration::from_secs(60)));
        }
        blocking(|| wait_converged(&[&nodes[0], &nodes[1]], &tokens, Duration::from_secs(60)));
        let restarted = nodes[0].client().await;
        let missing = missing_keys(&restarted, &expected, &tokens).await;
        assert!(
            missing.is_empty(),
            "{} acknowledged writes missing on the restarted writer: {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    });
}

/// Test 3: A new, empty replica restores the group's newest checkpoint instead of replaying the
/// log, becomes ready, and converges with its peer.
#[test]
fn a_new_empty_replica_restores_from_a_checkpoint() {
    a_new_empty_replica_restores_from_a_checkpoint_on(BrokerKind::Nats);
}

/// The same on Kafka: the checkpoint in a shared directory, its manifest in the metadata topic.
#[test]
fn kafka_a_new_empty_replica_restores_from_a_checkpoint() {
    a_new_empty_replica_restores_from_a_checkpoint_on(BrokerKind::Kafka);
}

fn a_new_empty_replica_restores_from_a_checkpoint_on(kind: BrokerKind) {
    const TOTAL: usize = 20_000;
    serial(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = TestBroker::start(kind, dir.path());
        let spec = |id| {
            broker
                .spec("t_checkpoint", 1, 0, id, dir.path())
                .checkpoints_every(1)
        };
        let mut first = start_nodes(vec![spec("a")]).remove(0);
        create_keyspace(&[&first]).await;
        let client = first.client().await;
        let next = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(Acked::default());
        let mut writers = Vec::new();
        for _ in 0..64 {
            let (client, next, acked) = (client.clone(), next.clone(), acked.clone());
            writers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= TOTAL {
                        return;
                    }
                    let token = client
                        .put_json(KS, &key(&key_of(i)), &json!({ "i": i }))
                        .await
                        .unwrap_or_else(|e| panic!("put {i}: {e}"));
                    acked.record(i, token);
                }
            }));
        }
        for w in writers {
            w.await.expect("writer task");
        }
        let writes = acked.take();
        assert_eq!(writes.len(), TOTAL);

        // Two more checkpoints after the load: the second one began after the last write.
        blocking(|| first.wait_ready(Duration::from_secs(60)));
        let before = first.metric("notadb_checkpoints_stored_total");
        blocking(|| {
            wait_until(
                "two checkpoints stored after the load",
                Duration::from_secs(60),
                || describe_all(&[&first]),
                || {
                    let now = first.metric("notadb_checkpoints_stored_total");
                    if now >= before + 2.0 {
                        Ok(())
                    } else {
                        Err(format!("{now} stored, {before} before"))
                    }
                },
            )
        });

        // Concurrent puts share log entries: count the entries, not the puts.
        let in_log: u64 = client
            .status()
            .await
            .expect("status")
            .partitions
            .iter()
            .map(|p| p.last_seq)
            .sum();
        let started = Instant::now();
        let mut second = ClusterNode::spawn(spec("b"));
        blocking(|| second.wait_ready(Duration::from_secs(60)));
        let ready_after = started.elapsed();
        let applied = second.metric("notadb_applied_entries_total");
        eprintln!(
            "checkpoint test: the new replica was ready after {ready_after:.1?}, having applied {applied} of {in_log} log entries ({TOTAL} puts)"
        );
        assert!(
            applied < (in_log / 2) as f64,
            "the new replica applied {applied} of {in_log} log entries: it replayed the log instead of restoring a checkpoint\n{}",
            second.stderr_tail()
        );
        let tokens = newest_tokens(writes.iter().map(|(_, t)| t));
        blocking(|| wait_converged(&[&first, &second], &tokens, Duration::from_secs(60)));
        let client = second.client().await;
        assert_eq!(count(&client, &tokens).await, TOTAL as u64);
        let expected: Vec<(String, serde_json::Value)> = writes
            .iter()
            .map(|(i, _)| (key_of(*i), json!({ "i": i })))
            .collect();
        let missing = missing_keys(&client, &expected, &tokens).await;
        assert!(
            missing.is_empty(),
            "{} keys missing on the restored replica: {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    });
}

/// Test 4: nats-server stops and restarts while clients write: errors are retryable codes, every
/// acknowledged write is there exactly once afterwards, and nothing was appended twice.
#[test]
fn restarting_nats_server_under_writes_loses_and_duplicates_nothing() {
    restarting_nats_server_under_writes_loses_and_duplicates_nothing_on(BrokerKind::Nats);
}

/// The same on Kafka (a tansu broker).
#[test]
fn kafka_restarting_the_broker_under_writes_loses_and_duplicates_nothing() {
    restarting_nats_server_under_writes_loses_and_duplicates_nothing_on(BrokerKind::Kafka);
}

fn restarting_nats_server_under_writes_loses_and_duplicates_nothing_on(kind: BrokerKind) {
    const WRITERS: usize = 32;
    serial(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut broker = TestBroker::start(kind, dir.path());
        let spec = |id| broker.spec("t_broker_restart", 1, 0, id, dir.path());
        let nodes = start_nodes(vec![spec("a"), spec("b")]);
        wait_members(&[&nodes[0], &nodes[1]], 2).await;
        create_keyspace(&[&nodes[0], &nodes[1]]).await;

        let mut clients = Vec::new();
        for node in &nodes {
            clients.push(node.client().await.with_timeout(Duration::from_secs(5)));
        }
        let acked = Arc::new(Acked::default());
        let errors: Arc<Mutex<Vec<Failure>>> = Arc::default();
        let attempts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let client = clients[w % 2].clone();
            let (acked, errors, attempts, stop) = (
                acked.clone(),
                errors.clone(),
                attempts.clone(),
                stop.clone(),
            );
            writers.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let i = attempts.fetch_add(1, Ordering::SeqCst);
                    match client
                        .put_json(KS, &key(&key_of(i)), &json!({ "i": i }))
                        .await
                    {
                        Ok(token) => acked.record(i, token),
                        Err(e) => {
                            errors.lock().expect("lock").push((e.code(), e.to_string()));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }));
        }
        wait_acked(&acked, 1000, Duration::from_secs(60)).await;
        blocking(|| broker.stop()).expect("stop the broker");
        let stopped_at = acked.len();
        tokio::time::sleep(Duration::from_secs(3)).await;
        blocking(|| broker.restart()).expect("restart the broker");
        let restarted = Instant::now();
        let restarted_at = acked.len();
        let resumed = Instant::now();
        wait_acked(&acked, restarted_at + 2000, Duration::from_secs(90)).await;
        let recovered_in = resumed.elapsed();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.await.expect("writer task");
        }
        let attempts = attempts.load(Ordering::SeqCst);
        let writes = acked.take();
        let errors = errors.lock().expect("lock").clone();
        let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
        for (code, _) in &errors {
            *by_code.entry(format!("{code:?}")).or_default() += 1;
        }
        let samples: Vec<&String> = {
            let mut seen = std::collections::BTreeSet::new();
            errors
                .iter()
                .filter(|(code, _)| seen.insert(format!("{code:?}")))
                .map(|(_, m)| m)
                .collect()
        };
        eprintln!(
            "{kind:?} broker restart test: {attempts} attempts, {} acknowledged ({stopped_at} before the stop, {restarted_at} before the restart), writes flowed again {recovered_in:.1?} after the restart; errors by code {by_code:?}; one of each: {samples:?}",
            writes.len()
        );
        for (code, message) in &errors {
            assert!(
                matches!(code, Some(Code::Unavailable | Code::DeadlineExceeded)),
                "a write failed with a code a client would not retry: {code:?}: {message}"
            );
        }

        // Both replicas apply every acknowledged write (after a NATS restart each replica
        // first has to notice that its log consumers are gone and reopen them).
        let tokens = newest_tokens(writes.iter().map(|(_, t)| t));
        let applied_after = blocking(|| {
            wait_until(
                "both replicas apply every acknowledged write after the NATS restart",
                Duration::from_secs(90),
                || describe_all(&[&nodes[0], &nodes[1]]),
                || {
                    let digests = [nodes[0].digest(), nodes[1].digest()];
                    let behind = behind_tokens(&digests, &tokens);
                    if behind.is_empty() {
                        Ok(restarted.elapsed())
                    } else {
                        Err(behind)
                    }
                },
            )
        });
        eprintln!(
            "{kind:?} broker restart test: both replicas applied every acknowledged write {applied_after:.1?} after the broker was back"
        );
        for node in &nodes {
            blocking(|| node_ready_or_panic(node));
        }
        blocking(|| wait_converged(&[&nodes[0], &nodes[1]], &tokens, Duration::from_secs(60)));
        let expected: Vec<(String, serde_json::Value)> = writes
            .iter()
            .map(|(i, _)| (key_of(*i), json!({ "i": i })))
            .collect();
        let appends: u64 = nodes
            .iter()
            .map(|n| n.metric("notadb_log_appends_total") as u64)
            .sum();
        for (node, client) in nodes.iter().zip(&clients) {
            let missing = missing_keys(client, &expected, &tokens).await;
            assert!(
                missing.is_empty(),
                "{} acknowledged writes missing on {}: {:?}",
                missing.len(),
                node.spec.node_id,
                &missing[..missing.len().min(10)]
            );
            let present = count(client, &tokens).await;
            assert!(
                present >= writes.len() as u64 && present <= attempts as u64,
                "{} holds {present} keys: expected between {} acknowledged and {attempts} attempted",
                node.spec.node_id,
                writes.len()
            );
            // Puts go to the log one per entry or several per coalesced entry, and a retried
            // append is stored once: the log holds no more entries than the nodes asked it to
            // append, nor than puts were tried.
            let status = client.status().await.expect("status");
            let in_log: u64 = status.partitions.iter().map(|p| p.last_seq).sum();
            let applied = node.metric("notadb_applied_entries_total");
            assert!(
                in_log <= appends && in_log <= attempts as u64 && applied <= attempts as f64,
                "{}: {in_log} log entries and {applied} applied for {appends} appends of {attempts} attempted puts: a retry was appended twice",
                node.spec.node_id
            );
            assert!(in_log > 0);
        }
    });
}

/// After nats-server restarts, a replica resumes applying within a few seconds, and while it
/// does not apply acknowledged writes it does not claim to be ready.
#[test]
fn a_replica_resumes_applying_promptly_after_a_nats_restart_and_is_not_ready_meanwhile() {
    serial(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nats = start_nats(dir.path());
        let spec = NodeSpec::new(&nats.url(), "t_resume", 1, 0, "a", dir.path());
        let node = start_nodes(vec![spec]).remove(0);
        create_keyspace(&[&node]).await;
        let client = node.client().await.with_timeout(Duration::from_secs(10));
        client
            .put_json(KS, &key("before"), &json!(1))
            .await
            .expect("put before the restart");
        blocking(|| nats.stop()).expect("stop nats-server");
        tokio::time::sleep(Duration::from_secs(1)).await;
        blocking(|| nats.restart()).expect("restart nats-server");
        let token = wait_until_async(
            "a put succeeds after the restart",
            Duration::from_secs(30),
            || {
                let client = client.clone();
                async move { client.put_json(KS, &key("after"), &json!(2)).await }
            },
        )
        .await;
        let written = Instant::now();
        let mut ready_while_behind = None;
        let applied_after = blocking(|| {
            wait_until(
                "the replica applies the write made after the restart",
                Duration::from_secs(60),
                || describe_all(&[&node]),
                || {
                    if behind_tokens(&[node.digest()], &[token]).is_empty() {
                        return Ok(written.elapsed());
                    }
                    // Past the readiness bound on lag (5 s by default) plus slack.
                    if written.elapsed() > Duration::from_secs(7) && ready_while_behind.is_none() {
                        if let Ok((200, _)) = try_http_get(node.admin, "/readyz") {
                            ready_while_behind = Some(written.elapsed());
                        }
                    }
                    Err(written.elapsed())
                },
            )
        });
        eprintln!("resume test: applied {applied_after:.1?} after the write; /readyz 200 while behind at {ready_while_behind:?}");
        assert!(
            ready_while_behind.is_none(),
            "/readyz answered 200 {:?} after an acknowledged write it had not applied",
            ready_while_behind
        );
        assert!(
            applied_after < Duration::from_secs(5),
            "the replica applied a write {applied_after:?} after it was acknowledged"
        );
    });
}

fn node_ready_or_panic(node: &ClusterNode) {
    wait_until(
        &format!("{} ready after the NATS restart", node.spec.node_id),
        Duration::from_secs(60),
        || describe_all(&[node]),
        || match try_http_get(node.admin, "/readyz") {
            Ok((200, _)) => Ok(()),
            Ok((code, body)) => Err(format!("{code} {body}")),
            Err(e) => Err(e.to_string()),
        },
    );
}

/// Test 5: With both replicas of group 1 stopped, a read of a group-1 key through a group-0 node
/// fails within its deadline with UNAVAILABLE naming the group; group-0 keys still answer;
/// a restarted group-1 replica serves again.
#[test]
fn a_group_with_no_live_replica_fails_fast_with_unavailable() {
    serial(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = TestBroker::start(BrokerKind::Nats, dir.path());
        let mut nodes = start_two_by_two(&broker, "t_group_down", dir.path());
        let all: Vec<&ClusterNode> = nodes.iter().collect();
        wait_members(&all, 4).await;
        create_keyspace(&all).await;
        let client = nodes[0].client().await;
        let mut written: Vec<(String, Token)> = Vec::new();
        for i in 0..40 {
            let k = format!("k{i:03}");
            let token = client
                .put_json(KS, &key(&k), &json!({ "v": i }))
                .await
                .expect("put");
            written.push((k, token));
        }
        let in_group = |g: u16| -> Vec<&(String, Token)> {
            written
                .iter()
                .filter(|(_, t)| t.partition.0 % 2 == g)
                .collect()
        };
        let (group0, group1) = (in_group(0), in_group(1));
        assert!(
            !group0.is_empty() && !group1.is_empty(),
            "40 keys land in both groups"
        );
        // Every key answers through a group-0 node while group 1 is up.
        for (k, t) in &written {
            assert!(client.get(KS, &key(k), &[*t]).await.expect("get").is_some());
        }

        // One replica of group 1 leaves cleanly (its heartbeat goes at once), the other dies
        // (its heartbeat stays until the member TTL expires).
        let status = blocking(|| nodes[2].terminate());
        assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
        blocking(|| nodes[3].kill9());

        let deadline = Duration::from_secs(3);
        let timed = nodes[0].client().await.with_timeout(deadline);
        let get_group1 = || async {
            let (k, t) = group1[0];
            let started = Instant::now();
            let result = timed.get(KS, &key(k), &[*t]).await;
            let elapsed = started.elapsed();
            assert!(
                elapsed < deadline + Duration::from_millis(500),
                "the get took {elapsed:?}, its deadline was {deadline:?}"
            );
            result.expect_err("group 1 has no live replica")
        };
        let err = get_group1().await;
        eprintln!("group-down test: a group-1 get through group 0 failed with: {err}");
        assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
        assert!(err.to_string().contains("shard group 1"), "{err}");

        // Group-0 keys still answer, through either group-0 node.
        for node in &nodes[..2] {
            let c = node.client().await.with_timeout(deadline);
            for (k, t) in &group0 {
                let v = c
                    .get(KS, &key(k), &[*t])
                    .await
                    .expect("group-0 get")
                    .expect("found");
                assert!(json_of(&v)["v"].is_number());
            }
        }
        // The CLI says so in one line, within its --timeout.
        let (k1, _) = group1[0];
        let started = Instant::now();
        let out = nodes[1].cli(&["--timeout", "3s", "get", KS, &json!([k1]).to_string()]);
        let elapsed = started.elapsed();
        let line = failed(&out);
        eprintln!("group-down test: the CLI said, after {elapsed:.1?}: {line}");
        assert!(
            line.contains("UNAVAILABLE") && line.contains("shard group 1"),
            "{line}"
        );
        assert!(elapsed < Duration::from_secs(5), "the CLI took {elapsed:?}");
        // A scan over every partition needs group 1 too.
        let started = Instant::now();
        let err = timed
            .scan(proto::ScanRequest {
                keyspace: KS.into(),
                range: Some(notadb_client::prefix_range(&[])),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect_err("scan needs group 1");
        assert!(started.elapsed() < deadline + Duration::from_millis(500));
        assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
        assert!(err.to_string().contains("shard group 1"), "{err}");

        // Once the killed replica's heartbeat expires, the group has no member at all.
        let err = wait_until_async(
            "the killed replica's membership expires",
            Duration::from_secs(30),
            || async {
                let err = get_group1().await;
                if err.to_string().contains("has no ready replica") {
                    Ok(err)
                } else {
                    Err(err.to_string())
                }
            },
        )
        .await;
        eprintln!("group-down test: after the member TTL: {err}");
        assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
        assert!(err.to_string().contains("shard group 1"), "{err}");

        // A group-1 replica restarts on its data directory and serves again.
        blocking(|| nodes[2].restart());
        let (k, t) = group1[0];
        let value = wait_until_async("group 1 serves again", Duration::from_secs(30), || async {
            match timed.get(KS, &key(k), &[*t]).await {
                Ok(Some(v)) => Ok(v),
                Ok(None) => Err("not found".to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        assert!(json_of(&value)["v"].is_number());
    });
}
