//! Tests that need the crate's internals: publishing one message id twice, as a retry does.

use std::time::Duration;

use bytes::Bytes;
use notadb_types::{PartitionId, Seq};

use super::{JetStreamLog, JetStreamOptions};
use notadb_log::{Log, LogBounds, LogEntry};
use notadb_testkit::NatsServer;

const P0: PartitionId = PartitionId(0);

async fn connect(server: &NatsServer) -> JetStreamLog {
    JetStreamLog::connect(
        JetStreamOptions {
            name: "dedup".into(),
            ..JetStreamOptions::with_url(server.url())
        },
        1,
    )
    .await
    .expect("connect to the test server")
}

/// A retried publish (same message id) is acknowledged with the original seq and stored once,
/// also when the retry goes through another connection after a server restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publish_is_not_duplicated() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let mut server = NatsServer::start(dir.path()).expect("start nats-server");
    let log = connect(&server).await;
    let first = log
        .publish_with_id(P0, "retry-1".into(), Bytes::from_static(b"one"))
        .await
        .expect("first publish");
    let again = log
        .publish_with_id(P0, "retry-1".into(), Bytes::from_static(b"one"))
        .await
        .expect("retried publish");
    assert_eq!(
        (first, again),
        (Seq(1), Seq(1)),
        "seqs of a publish and its retry"
    );
    let next = log
        .append(P0, Bytes::from_static(b"two"))
        .await
        .expect("append");
    assert_eq!(next, Seq(2), "the append after a deduplicated retry");
    drop(log);

    tokio::task::block_in_place(|| server.restart()).expect("restart nats-server");
    let log = connect(&server).await;
    let after_restart = log
        .publish_with_id(P0, "retry-1".into(), Bytes::from_static(b"one"))
        .await
        .expect("retried publish after a restart");
    assert_eq!(after_restart, Seq(1), "a retry after a server restart");
    assert_eq!(
        log.bounds(P0).await.expect("bounds"),
        LogBounds {
            first: Seq(1),
            last: Seq(2)
        }
    );
    let mut entries = Vec::new();
    while entries.len() < 2 {
        let from = Seq(entries.len() as u64 + 1);
        let batch = log
            .read(P0, from, 10, Duration::from_secs(5))
            .await
            .expect("read");
        assert!(!batch.is_empty(), "no entries from seq {from}");
        entries.extend(batch);
    }
    assert_eq!(
        entries,
        vec![
            LogEntry {
                seq: Seq(1),
                payload: Bytes::from_static(b"one")
            },
            LogEntry {
                seq: Seq(2),
                payload: Bytes::from_static(b"two")
            },
        ]
    );
}
