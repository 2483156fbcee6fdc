//! The conformance suite against [`KafkaLog`] on a real Kafka-protocol broker (`tansu`, with
//! SQLite storage), plus what only this backend has: the topic's partition count check, and
//! acknowledged entries surviving a broker restart.

use std::time::Duration;

use bytes::Bytes;
use notadb_kafka::{KafkaLog, KafkaOptions};
use notadb_log::conformance::LogHarness;
use notadb_log::{Log, LogBounds, LogError};
use notadb_testkit::TansuServer;
use notadb_types::{PartitionId, Seq};

/// A broker with its store in a temporary directory; each log name is a topic.
struct Harness {
    server: TansuServer,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let server =
            tokio::task::block_in_place(|| TansuServer::start(dir.path())).expect("start tansu");
        Harness { server, _dir: dir }
    }

    fn options(&self, topic: &str) -> KafkaOptions {
        KafkaOptions {
            topic: topic.to_string(),
            request_timeout: Duration::from_secs(20),
            ..KafkaOptions::with_bootstrap(self.server.bootstrap())
        }
    }
}

#[async_trait::async_trait]
impl LogHarness for Harness {
    type L = KafkaLog;

    async fn open(&self, name: &str, partitions: u16) -> KafkaLog {
        KafkaLog::connect(self.options(name), partitions)
            .await
            .unwrap_or_else(|e| panic!("connect the log {name}: {e}"))
    }
}

notadb_log::conformance_tests!(Harness::new());

/// Opening a topic with another partition count is a clear error, and a missing topic with
/// `create_topic = false` names the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_another_partition_count_is_refused() {
    let harness = Harness::new();
    let log = harness.open("shape", 4).await;
    log.append(PartitionId(3), Bytes::from_static(b"x"))
        .await
        .expect("append");
    drop(log);
    match KafkaLog::connect(harness.options("shape"), 8).await {
        Err(LogError::PartitionCount { expected, found }) => {
            assert_eq!((expected, found), (8, 4));
        }
        Err(other) => panic!("expected PartitionCount, found {other}"),
        Ok(_) => panic!("a 4-partition topic opened as an 8-partition log"),
    }
    let missing = KafkaOptions {
        create_topic: false,
        ..harness.options("never-created")
    };
    match KafkaLog::connect(missing, 2).await {
        Err(LogError::Rejected(message)) => {
            assert!(message.contains("create_topic"), "{message}")
        }
        Err(other) => panic!("expected Rejected, found {other}"),
        Ok(_) => panic!("a missing topic opened with create_topic = false"),
    }
    let reserved = KafkaOptions {
        client: [("enable.idempotence".to_string(), "false".to_string())].into(),
        ..harness.options("shape")
    };
    assert!(
        matches!(
            KafkaLog::connect(reserved, 4).await,
            Err(LogError::InvalidOptions(_))
        ),
        "a reserved client property was accepted"
    );
}

/// Every acknowledged append survives a broker restart, and appends go on with contiguous seqs
/// through the same handle once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_broker_restart() {
    let mut harness = Harness::new();
    let log = harness.open("restart", 2).await;
    for i in 1..=50u64 {
        let seq = log
            .append(
                PartitionId((i % 2) as u16),
                Bytes::from(format!("before {i}")),
            )
            .await
            .expect("append before the restart");
        assert_eq!(seq, Seq(i.div_ceil(2)), "seq of append {i}");
    }
    tokio::task::block_in_place(|| harness.server.restart()).expect("restart tansu");
    let mut after = Vec::new();
    for i in 1..=10u64 {
        after.push(
            log.append(PartitionId(0), Bytes::from(format!("after {i}")))
                .await
                .expect("append after the restart"),
        );
    }
    assert_eq!(after, (26..=35).map(Seq).collect::<Vec<_>>());
    let reopened = harness.open("restart", 2).await;
    assert_eq!(
        reopened.bounds(PartitionId(0)).await.expect("bounds"),
        LogBounds {
            first: Seq(1),
            last: Seq(35)
        }
    );
    let mut entries = Vec::new();
    while entries.len() < 35 {
        let from = Seq(entries.len() as u64 + 1);
        let batch = reopened
            .read(PartitionId(0), from, 100, Duration::from_secs(10))
            .await
            .expect("read");
        assert!(!batch.is_empty(), "no entries from seq {from}");
        entries.extend(batch);
    }
    for (i, entry) in entries.iter().enumerate() {
        let expected = if i < 25 {
            format!("before {}", 2 * (i + 1))
        } else {
            format!("after {}", i - 24)
        };
        assert_eq!(entry.seq, Seq(i as u64 + 1));
        assert_eq!(entry.payload, expected.as_bytes(), "seq {}", i + 1);
    }
}
