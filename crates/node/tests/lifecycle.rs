//! TTL, restarts, drops, replica determinism and token deadlines.

mod common;

use bytes::Bytes;
use common::*;
use notadb_log::{EmbeddedLog, EmbeddedLogOptions, Log};
use notadb_node::*;
use notadb_types::{Element, PartitionId, Seq};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn scan_all(keyspace: &str) -> ScanRequest {
    ScanRequest {
        keyspace: keyspace.into(),
        limit: 10_000,
        ..ScanRequest::default()
    }
}

#[tokio::test]
async fn ttl_hides_expired_entries_at_once_by_data_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, clock) = node(dir.path()).await;
    // Expires at T0 + 1h (ts = T0 - 23h, TTL 24h); the other at T0 + 23h.
    let old = event("u", T0 - 23 * HOUR, "view", "a");
    let new = event("u", T0 - HOUR, "view", "b");
    let token = node.write(vec![old, new]).await.expect("write");
    let c = Consistency::tokens(vec![token]);
    assert_eq!(
        node.scan(scan_all("activity"), &c)
            .await
            .expect("scan")
            .rows
            .len(),
        2
    );
    clock.advance(HOUR);
    let rows = node
        .scan(scan_all("activity"), &c)
        .await
        .expect("scan")
        .rows;
    assert_eq!(rows.len(), 1, "the entry expired exactly at ts + ttl");
    assert_eq!(rows[0].key[3], s("b"));
    let key = vec![
        s("u"),
        Element::Timestamp(T0 - 23 * HOUR),
        s("view"),
        s("a"),
    ];
    assert!(node
        .get("activity", &key, &c)
        .await
        .expect("get")
        .1
        .is_none());
    let request = AggregateRequest {
        keyspace: "activity".into(),
        ..AggregateRequest::default()
    };
    assert_eq!(
        node.aggregate(request, &c).await.expect("aggregate").groups[0].rows,
        1
    );
}

#[tokio::test]
async fn ttl_from_append_time_counts_from_the_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let mut schema = items();
    schema.name = "sessions".into();
    schema.ttl = Some(notadb_types::TtlSpec::Append { ttl_micros: 1_000 });
    let node = NodeBuilder::new(config(dir.path()))
        .clock(Arc::new(clock.clone()))
        .keyspace(schema)
        .open()
        .await
        .expect("open");
    let mut put = item("s", "p", 1.0, "i", true);
    if let Mutation::Put { keyspace, .. } = &mut put {
        *keyspace = "sessions".into();
    }
    let token = node.write(vec![put]).await.expect("write");
    let c = Consistency::tokens(vec![token]);
    clock.advance(999);
    assert_eq!(
        node.scan(scan_all("sessions"), &c)
            .await
            .expect("scan")
            .rows
            .len(),
        1
    );
    clock.advance(1);
    assert!(node
        .scan(scan_all("sessions"), &c)
        .await
        .expect("scan")
        .rows
        .is_empty());
}

#[tokio::test]
async fn data_and_schemas_survive_restart_and_partition_count_is_fixed() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (node, _) = node(dir.path()).await;
        let token = node
            .write(vec![item("s", "p", 1.0, "i", true)])
            .await
            .expect("write");
        node.get(
            "items",
            &[s("s"), s("p"), Element::F64(1.0), s("i")],
            &Consistency::tokens(vec![token]),
        )
        .await
        .expect("applied");
        node.shutdown().await.expect("shutdown");
    }
    let node = NodeBuilder::new(config(dir.path()))
        .open()
        .await
        .expect("reopen without declaring keyspaces");
    let names: Vec<String> = node
        .list_keyspaces()
        .iter()
        .map(|k| k.def.schema.name.clone())
        .collect();
    assert_eq!(names, ["activity", "items"]);
    assert_eq!(
        node.scan(scan_all("items"), &Consistency::none())
            .await
            .expect("scan")
            .rows
            .len(),
        1
    );
    assert!(node.is_ready());
    node.shutdown().await.expect("shutdown");
    drop(node);
    let wrong = NodeConfig {
        partitions: 16,
        ..config(dir.path())
    };
    let err = NodeBuilder::new(wrong)
        .open()
        .await
        .err()
        .expect("must refuse");
    assert!(
        err.to_string().contains("8 partitions") && err.to_string().contains("16"),
        "{err}"
    );
}

#[tokio::test]
async fn unapplied_log_entries_are_replayed_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    // Append straight to the log, as if the node died after acknowledging but before applying.
    {
        let (node, _) = node(dir.path()).await;
        node.shutdown().await.expect("shutdown");
    }
    let payload = notadb_record::Record::Batch {
        ts_micros: T0,
        ops: vec![],
    }
    .encode();
    {
        let log = EmbeddedLog::open(&log_dir, 8, EmbeddedLogOptions::default()).expect("log");
        for _ in 0..5 {
            log.append(PartitionId(2), Bytes::from(payload.clone()))
                .await
                .expect("append");
        }
    }
    let (node, _) = node(dir.path()).await;
    let token = notadb_types::Token {
        partition: PartitionId(2),
        seq: Seq(5),
    };
    node.wait_for(&Consistency::tokens(vec![token]))
        .await
        .expect("replayed");
    let p2 = &node.status().partitions[2];
    assert_eq!((p2.applied, p2.last), (Seq(5), Seq(5)));
}

/// A transaction entry whose input is of a newer format than this build reads.
fn newer_txn_entry() -> Vec<u8> {
    let input = notadb_txn::TxnInput::new(
        TxnId(7),
        "i64.add",
        Bytes::new(),
        notadb_txn::TxnEnv {
            now_micros: T0,
            seed: 1,
        },
        vec![],
    );
    let mut entry = notadb_txn::Entry::encode_txn(&input, None);
    // kind (1 byte) and sequencer position (8 bytes), then the input's format version.
    entry[9] += 1;
    notadb_record::Record::Txn {
        ts_micros: T0,
        entry,
    }
    .encode()
}

#[tokio::test]
async fn malformed_entries_are_skipped_and_newer_ones_stop_the_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let first = node
        .write(vec![item("s", "p", 1.0, "a", true)])
        .await
        .expect("write");
    let p = first.partition;
    // Bytes no build reads: every replica skips them alike and goes on.
    node.log()
        .append(p, Bytes::from_static(&[0, 1, 2]))
        .await
        .expect("append");
    let second = node
        .write(vec![item("s", "p", 2.0, "b", true)])
        .await
        .expect("write");
    assert_eq!(second.partition, p);
    let rows = node
        .scan(scan_all("items"), &Consistency::tokens(vec![second]))
        .await
        .expect("scan")
        .rows;
    assert_eq!(rows.len(), 2);
    assert!(node.is_healthy());
    // A transaction of a newer format: skipping it would diverge from upgraded replicas.
    let newer = node
        .log()
        .append(p, Bytes::from(newer_txn_entry()))
        .await
        .expect("append");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.status().partitions[p.0 as usize].failed {
        assert!(Instant::now() < deadline, "the partition did not stop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!node.is_healthy());
    assert!(node.status().partitions[p.0 as usize].applied < newer);
}

#[tokio::test]
async fn dropped_keyspace_data_is_deleted_and_the_name_reusable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = node(dir.path()).await;
    let token = node
        .write(vec![item("s", "p", 1.0, "i", true)])
        .await
        .expect("write");
    node.wait_for(&Consistency::tokens(vec![token]))
        .await
        .expect("applied");
    node.drop_keyspace("items").await.expect("drop");
    assert!(matches!(
        node.scan(scan_all("items"), &Consistency::none()).await,
        Err(NodeError::NotFound(_))
    ));
    let (info, created) = node
        .create_keyspace(items(), false)
        .await
        .expect("recreate");
    assert!(created);
    let token = node
        .write(vec![item("s", "p", 2.0, "j", true)])
        .await
        .expect("write");
    let rows = node
        .scan(scan_all("items"), &Consistency::tokens(vec![token]))
        .await
        .expect("scan")
        .rows;
    assert_eq!(rows.len(), 1, "only the write after the drop: {rows:?}");
    assert_ne!(info.def.id.0, 1, "ids are never reused");
}

#[tokio::test]
async fn two_replicas_on_one_log_reach_identical_state() {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let log: Arc<dyn Log> = Arc::new(
        EmbeddedLog::open(
            &a_dir.path().join("shared-log"),
            8,
            EmbeddedLogOptions::default(),
        )
        .expect("log"),
    );
    let open = |dir: std::path::PathBuf| {
        let log = log.clone();
        async move {
            NodeBuilder::new(config(&dir))
                .log(log)
                .clock(Arc::new(ManualClock::new(T0)))
                .keyspace(items())
                .keyspace(activity())
                .open()
                .await
                .expect("open")
        }
    };
    let a = open(a_dir.path().join("a")).await;
    let b = open(b_dir.path().join("b")).await;
    let mut tokens = Vec::new();
    for i in 0..200u32 {
        let store = format!("s{}", i % 13);
        let writer = if i % 2 == 0 { &a } else { &b };
        let m = match i % 5 {
            0 => Mutation::Delete {
                keyspace: "items".into(),
                key: vec![s(&store), s("p"), Element::F64(f64::from(i / 2)), s("x")],
            },
            1 => event(&format!("u{}", i % 7), T0 - i64::from(i), "view", "x"),
            _ => item(&store, "p", f64::from(i / 3), "x", i % 3 == 0),
        };
        tokens.push(writer.write(vec![m]).await.expect("write"));
    }
    let c = Consistency::tokens(tokens);
    a.wait_for(&c).await.expect("a applied");
    b.wait_for(&c).await.expect("b applied");
    let mut checked = 0;
    for p in a.partitioner().all() {
        assert_eq!(
            a.status().partitions[p.0 as usize].applied,
            b.status().partitions[p.0 as usize].applied
        );
        let (da, db) = (
            a.storage().digest(p, T0).expect("digest"),
            b.storage().digest(p, T0).expect("digest"),
        );
        assert_eq!(da, db, "partition {p} differs");
        checked += u32::from(a.status().partitions[p.0 as usize].applied.0 > 0);
    }
    assert!(checked > 3, "writes reached several partitions");
}

#[tokio::test]
async fn a_read_waits_for_its_token_until_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = GatedLog::open(dir.path(), true, false, vec![]);
    let node = NodeBuilder::new(config(dir.path()))
        .log(log.clone())
        .keyspace(items())
        .open()
        .await
        .expect("open");
    let token = node
        .write(vec![item("s", "p", 1.0, "i", true)])
        .await
        .expect("acknowledged");
    let deadline = Instant::now() + Duration::from_millis(200);
    let err = node
        .scan(
            scan_all("items"),
            &Consistency {
                tokens: vec![token],
                deadline: Some(deadline),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::DeadlineExceeded(ref m) if m.contains("not applied")),
        "{err}"
    );
    // Without the token the write is not visible yet: reads are not blocked by apply.
    assert!(node
        .scan(scan_all("items"), &Consistency::none())
        .await
        .expect("scan")
        .rows
        .is_empty());
    log.reads.send_replace(true);
    let rows = node
        .scan(scan_all("items"), &Consistency::tokens(vec![token]))
        .await
        .expect("scan")
        .rows;
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn a_new_storage_refuses_a_log_that_already_holds_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (node, _) = node(dir.path()).await;
        node.write(vec![item("s", "p", 1.0, "i", true)])
            .await
            .expect("write");
        node.shutdown().await.expect("shutdown");
    }
    std::fs::remove_dir_all(dir.path().join("db")).expect("wipe storage");
    let err = NodeBuilder::new(config(dir.path()))
        .open()
        .await
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("is new but partition"), "{err}");
}
