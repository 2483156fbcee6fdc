//! Coalesced appends: concurrent writes to one partition share one log entry, each keeps its
//! own validation, and a failed or abandoned append neither loses nor stalls the others.

mod common;

use common::*;
use notadb_node::*;
use notadb_types::{Element, Seq, Token};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Lets the spawned writers run until `n` appends have started and the rest wait.
async fn until_started(log: &GatedLog, n: usize) {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    while log.started.load(Ordering::Acquire) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

async fn items_node_on(dir: &std::path::Path, log: Arc<GatedLog>) -> Node {
    NodeBuilder::new(config(dir))
        .log(log)
        .keyspace(items())
        .open()
        .await
        .expect("open")
}

/// Spawns one write of item `id` of store `s`, product `p`.
fn spawn_write(node: &Node, id: u32) -> tokio::task::JoinHandle<Result<Token, NodeError>> {
    let node = node.clone();
    tokio::spawn(async move {
        node.write(vec![item("s", "p", f64::from(id), &format!("i{id}"), true)])
            .await
    })
}

fn scan_items() -> ScanRequest {
    ScanRequest {
        keyspace: "items".into(),
        limit: 1000,
        ..ScanRequest::default()
    }
}

#[tokio::test]
async fn writes_queued_behind_an_append_share_one_entry_and_bad_ones_fail_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = GatedLog::open(dir.path(), false, true, vec![]);
    let node = items_node_on(dir.path(), log.clone()).await;
    let first = spawn_write(&node, 0);
    until_started(&log, 1).await;
    let queued: Vec<_> = (1..=10).map(|id| spawn_write(&node, id)).collect();
    // Bad input beside them fails on its own, at once, naming what is wrong.
    let bad = node
        .write(vec![Mutation::Put {
            keyspace: "items".into(),
            key: vec![s("s"), s("p"), s("not a score"), s("x")],
            value: ValueInput::Json("{}".into()),
        }])
        .await
        .expect_err("a string where a float goes");
    assert!(
        matches!(bad, NodeError::InvalidArgument(ref m) if m.starts_with("key:")),
        "{bad}"
    );
    let not_json = node
        .write(vec![Mutation::Put {
            keyspace: "items".into(),
            key: vec![s("s"), s("p"), Element::F64(99.0), s("x")],
            value: ValueInput::Json("{oops".into()),
        }])
        .await
        .expect_err("not JSON");
    assert!(not_json.to_string().contains("not JSON"), "{not_json}");
    until_started(&log, 1).await;
    assert_eq!(log.started.load(Ordering::Acquire), 1, "the others wait");
    log.appends.send_replace(true);
    let first = first.await.expect("join").expect("first write");
    let mut tokens = vec![first];
    for write in queued {
        let token = write.await.expect("join").expect("queued write");
        assert_eq!(token.partition, first.partition);
        assert_eq!(
            token.seq,
            Seq(first.seq.0 + 1),
            "queued writes share the next entry"
        );
        tokens.push(token);
    }
    assert_eq!(
        log.started.load(Ordering::Acquire),
        2,
        "two appends for 11 writes"
    );
    let rows = node
        .scan(scan_items(), &Consistency::tokens(tokens))
        .await
        .expect("scan")
        .rows;
    assert_eq!(rows.len(), 11, "every write applied, the bad ones not");
}

#[tokio::test]
async fn a_failed_batch_fails_each_of_its_writes_and_the_partition_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The second append (the batch) fails.
    let log = GatedLog::open(dir.path(), false, true, vec![2]);
    let node = items_node_on(dir.path(), log.clone()).await;
    let first = spawn_write(&node, 0);
    until_started(&log, 1).await;
    let queued: Vec<_> = (1..=5).map(|id| spawn_write(&node, id)).collect();
    until_started(&log, 1).await;
    log.appends.send_replace(true);
    let first = first.await.expect("join").expect("first write");
    for write in queued {
        let err = write.await.expect("join").expect_err("the batch failed");
        assert!(
            matches!(err, NodeError::Unavailable(ref m) if m.contains("append 2 refused")),
            "{err}"
        );
        assert!(err.is_retryable());
    }
    // The partition takes writes again.
    let later = spawn_write(&node, 6).await.expect("join").expect("later");
    let rows = node
        .scan(scan_items(), &Consistency::tokens(vec![first, later]))
        .await
        .expect("scan")
        .rows;
    assert_eq!(rows.len(), 2, "only the writes that were acknowledged");
}

#[tokio::test]
async fn an_abandoned_append_hands_its_turn_to_the_queued_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = GatedLog::open(dir.path(), false, true, vec![]);
    let node = items_node_on(dir.path(), log.clone()).await;
    // The first writer's request is cancelled while its append waits.
    let first = spawn_write(&node, 0);
    until_started(&log, 1).await;
    let queued: Vec<_> = (1..=3).map(|id| spawn_write(&node, id)).collect();
    until_started(&log, 1).await;
    first.abort();
    assert!(first.await.expect_err("aborted").is_cancelled());
    // The queued batch takes the turn at once.
    until_started(&log, 2).await;
    log.appends.send_replace(true);
    let mut tokens = Vec::new();
    for write in queued {
        tokens.push(write.await.expect("join").expect("queued write"));
    }
    let rows = node
        .scan(scan_items(), &Consistency::tokens(tokens))
        .await
        .expect("scan")
        .rows;
    // The abandoned write was never appended: its append waited at the gate when dropped.
    assert_eq!(rows.len(), 3);
}
