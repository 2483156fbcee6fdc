//! Behaviour specific to [`JetStreamLog`]: server restarts, several writers, limits, and the
//! partition count kept in stream metadata.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use notadb_jetstream::{JetStreamLog, JetStreamOptions, HEADER_ROOM_BYTES};
use notadb_log::{Log, LogBounds, LogEntry, LogError};
use notadb_testkit::{NatsServer, NATS_MAX_PAYLOAD_BYTES};
use notadb_types::{PartitionId, Seq};

const P0: PartitionId = PartitionId(0);

/// How long reads of entries known to exist may wait.
const READ_WAIT: Duration = Duration::from_secs(10);

/// A server in its own temporary directory.
struct TestServer {
    server: NatsServer,
    _dir: tempfile::TempDir,
}

impl TestServer {
    fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let server = tokio::task::block_in_place(|| NatsServer::start(dir.path()))
            .expect("start nats-server");
        TestServer { server, _dir: dir }
    }

    fn options(&self, name: &str) -> JetStreamOptions {
        JetStreamOptions {
            name: name.to_string(),
            ..JetStreamOptions::with_url(self.server.url())
        }
    }

    async fn connect(&self, name: &str, partitions: u16) -> JetStreamLog {
        JetStreamLog::connect(self.options(name), partitions)
            .await
            .unwrap_or_else(|e| panic!("connect the log {name}: {e}"))
    }
}

/// Every entry of `partition` from `first` to its last seq, looping over short reads.
async fn read_all(log: &JetStreamLog, partition: PartitionId, first: Seq) -> Vec<LogEntry> {
    let last = log.bounds(partition).await.expect("bounds").last;
    let mut entries: Vec<LogEntry> = Vec::new();
    let mut next = first.max(Seq(1));
    while next <= last {
        let batch = log
            .read(partition, next, 1000, READ_WAIT)
            .await
            .unwrap_or_else(|e| panic!("read from seq {next}: {e}"));
        assert!(
            !batch.is_empty(),
            "no entries from seq {next}, expected up to {last}"
        );
        for entry in batch {
            assert_eq!(entry.seq, next, "seqs of a read");
            next = next.next();
            entries.push(entry);
        }
    }
    entries
}

/// Appends while the server stops and restarts: every acknowledged append is there exactly once
/// at its seq, every failure is retryable, and no entry is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_survive_a_server_restart_exactly_once() {
    let mut test = TestServer::start();
    let options = JetStreamOptions {
        publish_timeout: Duration::from_secs(1),
        publish_attempts: 3,
        ..test.options("restart")
    };
    let log = JetStreamLog::connect(options, 1).await.expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let appender = {
        let log = log.clone();
        let stop = stop.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                i += 1;
                let payload = format!("entry {i}");
                let outcome = log.append(P0, Bytes::from(payload.clone())).await;
                outcomes.push((payload, outcome));
                progress.store(i, Ordering::Release);
            }
            outcomes
        })
    };
    // Each disruption happens while appends are under way, and appends go on after it.
    let appended_more = |after: u64| {
        let progress = progress.clone();
        async move {
            while progress.load(Ordering::Acquire) < after + 20 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    appended_more(0).await;
    let at = progress.load(Ordering::Acquire);
    tokio::task::block_in_place(|| test.server.restart()).expect("restart nats-server");
    appended_more(at).await;
    let at = progress.load(Ordering::Acquire);
    tokio::task::block_in_place(|| test.server.kill()).expect("kill nats-server");
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::task::block_in_place(|| test.server.restart()).expect("start nats-server again");
    appended_more(at).await;
    stop.store(true, Ordering::Release);
    let outcomes = appender.await.expect("the appender task");

    let mut acked: HashMap<String, Seq> = HashMap::new();
    let mut failed = 0;
    for (payload, outcome) in &outcomes {
        match outcome {
            Ok(seq) => {
                acked.insert(payload.clone(), *seq);
            }
            Err(error) => {
                assert!(
                    error.is_retryable(),
                    "append of {payload:?} failed with {error}"
                );
                failed += 1;
            }
        }
    }
    assert!(
        acked.len() > 10,
        "only {} appends were acknowledged",
        acked.len()
    );

    // A standalone server writes each message to its files (not synced) before it acks, so
    // even its SIGKILL loses nothing acknowledged; only a power loss could (`sync_interval`).
    let fresh = test.connect("restart", 1).await;
    let entries = read_all(&fresh, P0, Seq(1)).await;
    let mut seen: HashMap<&[u8], Seq> = HashMap::new();
    for entry in &entries {
        if let Some(earlier) = seen.insert(&entry.payload, entry.seq) {
            panic!(
                "{:?} stored twice, at seqs {earlier} and {}",
                String::from_utf8_lossy(&entry.payload),
                entry.seq
            );
        }
    }
    for (payload, seq) in &acked {
        assert_eq!(
            seen.get(payload.as_bytes()),
            Some(seq),
            "acknowledged {payload:?} at seq {seq}"
        );
    }
    eprintln!(
        "{} appends: {} acknowledged, {failed} failed, {} stored",
        outcomes.len(),
        acked.len(),
        entries.len()
    );

    // The handle that lived through the restarts reads everything too.
    let survivor = read_all(&log, P0, Seq(1)).await;
    assert_eq!(survivor, entries, "reads through the original handle");
}

/// Two connections appending to one partition get unique contiguous seqs, and each reads
/// everything both wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_share_one_partition() {
    const TASKS_PER_HANDLE: u64 = 4;
    const PER_TASK: u64 = 50;
    let test = TestServer::start();
    let handles = [
        test.connect("shared", 2).await,
        test.connect("shared", 2).await,
    ];
    let mut tasks = Vec::new();
    for (h, log) in handles.iter().enumerate() {
        for task in 0..TASKS_PER_HANDLE {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..PER_TASK {
                    let payload = format!("handle {h} task {task} entry {i}");
                    let seq = log
                        .append(P0, Bytes::from(payload.clone()))
                        .await
                        .unwrap_or_else(|e| panic!("append {payload}: {e}"));
                    seqs.push((seq, payload));
                }
                seqs
            }));
        }
    }
    let mut by_seq: HashMap<Seq, String> = HashMap::new();
    for task in tasks {
        for (seq, payload) in task.await.expect("an appending task") {
            if let Some(other) = by_seq.insert(seq, payload.clone()) {
                panic!("seq {seq} returned for {other:?} and {payload:?}");
            }
        }
    }
    let total = 2 * TASKS_PER_HANDLE * PER_TASK;
    assert_eq!(by_seq.len() as u64, total);
    assert!(
        (1..=total).all(|seq| by_seq.contains_key(&Seq(seq))),
        "seqs are not 1..={total}"
    );
    for (h, log) in handles.iter().enumerate() {
        let entries = read_all(log, P0, Seq(0)).await;
        assert_eq!(entries.len() as u64, total, "entries read by handle {h}");
        for entry in entries {
            assert_eq!(
                entry.payload,
                by_seq[&entry.seq].as_bytes(),
                "handle {h}: payload of seq {}",
                entry.seq
            );
        }
        assert_eq!(
            log.bounds(PartitionId(1)).await.expect("bounds"),
            LogBounds {
                first: Seq(1),
                last: Seq(0)
            },
            "the other partition is untouched"
        );
    }
}

/// Opening an existing log with another partition count fails, either way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_count_mismatch_is_an_error() {
    let test = TestServer::start();
    drop(test.connect("counted", 2).await);
    for partitions in [1, 3] {
        match JetStreamLog::connect(test.options("counted"), partitions).await {
            Err(LogError::PartitionCount { expected, found: 2 }) if expected == partitions => {}
            Err(other) => panic!("open with {partitions} partitions: {other}"),
            Ok(_) => panic!("open with {partitions} partitions succeeded"),
        }
    }
    let reopened = test.connect("counted", 2).await;
    assert_eq!(reopened.partitions(), 2);
}

/// Entries above the limit fail before anything is published; one at the limit fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_entries_are_refused_and_not_written() {
    let test = TestServer::start();
    let log = test.connect("sizes", 1).await;
    let max = NATS_MAX_PAYLOAD_BYTES - HEADER_ROOM_BYTES;
    assert_eq!(
        log.max_entry_bytes(),
        max,
        "the limit from the server's max_payload"
    );
    match log.append(P0, Bytes::from(vec![7u8; max + 1])).await {
        Err(LogError::EntryTooLarge { size, max: found }) => {
            assert_eq!((size, found), (max + 1, max));
        }
        other => panic!(
            "append of {} bytes: expected EntryTooLarge, got {other:?}",
            max + 1
        ),
    }
    assert_eq!(
        log.bounds(P0).await.expect("bounds").last,
        Seq(0),
        "nothing written"
    );
    let at_limit = log
        .append(P0, Bytes::from(vec![7u8; max]))
        .await
        .expect("append an entry of exactly the limit");
    assert_eq!(at_limit, Seq(1));

    let limited = JetStreamLog::connect(
        JetStreamOptions {
            max_entry_bytes: Some(100),
            ..test.options("sizes")
        },
        1,
    )
    .await
    .expect("connect with a configured limit");
    assert!(matches!(
        limited.append(P0, Bytes::from(vec![1u8; 101])).await,
        Err(LogError::EntryTooLarge {
            size: 101,
            max: 100
        })
    ));
    assert_eq!(
        limited
            .append(P0, Bytes::from(vec![1u8; 100]))
            .await
            .expect("append"),
        Seq(2)
    );
}

/// Invalid options and unreachable servers fail with the matching error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_are_classified() {
    let invalid = JetStreamOptions {
        name: "has.dot".into(),
        ..JetStreamOptions::default()
    };
    assert!(matches!(
        JetStreamLog::connect(invalid, 1).await,
        Err(LogError::InvalidOptions(_))
    ));
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let unreachable = JetStreamOptions::with_url(format!("nats://127.0.0.1:{port}"));
    match JetStreamLog::connect(unreachable, 1).await {
        Err(error @ LogError::Unavailable(_)) => assert!(error.is_retryable()),
        Err(other) => panic!("connect to a closed port: expected Unavailable, got {other}"),
        Ok(_) => panic!("connect to a closed port succeeded"),
    }
}

/// A one-partition log named `name` on `server`, connecting with `auth`.
async fn connect_with(
    server: &NatsServer,
    name: &str,
    auth: notadb_jetstream::NatsAuth,
) -> Result<JetStreamLog, LogError> {
    let options = JetStreamOptions {
        name: name.into(),
        auth,
        ..JetStreamOptions::with_url(server.url())
    };
    JetStreamLog::connect(options, 1).await
}

/// Connects with `auth`, which the server must accept, and appends the log's first entry.
async fn connects_and_appends(server: &NatsServer, name: &str, auth: notadb_jetstream::NatsAuth) {
    let log = connect_with(server, name, auth)
        .await
        .unwrap_or_else(|e| panic!("the server accepts the connection: {e}"));
    let seq = log
        .append(PartitionId(0), Bytes::from_static(b"x"))
        .await
        .expect("append");
    assert_eq!(seq, Seq(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_password_takes_the_right_one_and_names_the_wrong_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = tokio::task::block_in_place(|| {
        NatsServer::start_with_user(&dir.path().join("nats"), "notadb", "right horse")
    })
    .expect("start nats-server");
    let password = dir.path().join("password");
    std::fs::write(&password, "right horse\n").expect("write");
    let auth = notadb_jetstream::NatsAuth {
        user: Some("notadb".into()),
        password_file: Some(password.clone()),
        ..notadb_jetstream::NatsAuth::default()
    };
    connects_and_appends(&server, "auth", auth.clone()).await;
    // No credentials, and a wrong password: refused, as a configuration error.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "wrong horse").expect("write");
    for auth in [
        notadb_jetstream::NatsAuth::default(),
        notadb_jetstream::NatsAuth {
            password_file: Some(wrong.clone()),
            ..auth.clone()
        },
    ] {
        let Err(err) = connect_with(&server, "auth", auth).await else {
            panic!("connected without the right credentials");
        };
        assert!(
            matches!(err, LogError::InvalidOptions(ref m) if m.contains("refused the credentials")),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_is_reached_with_its_ca_and_refused_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("a certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write");
    let server = tokio::task::block_in_place(|| {
        NatsServer::start_with_tls(&dir.path().join("nats"), &cert, &key, &cert)
    })
    .expect("start nats-server with TLS");
    let trusted = notadb_jetstream::NatsAuth {
        tls_ca_file: Some(cert.clone()),
        ..notadb_jetstream::NatsAuth::default()
    };
    connects_and_appends(&server, "tls", trusted).await;
    // The system's roots do not know this server's certificate: refused, as configuration.
    let unknown = notadb_jetstream::NatsAuth {
        tls_required: true,
        ..notadb_jetstream::NatsAuth::default()
    };
    let Err(err) = connect_with(&server, "tls", unknown).await else {
        panic!("connected to a server whose CA it does not trust");
    };
    assert!(
        matches!(err, LogError::InvalidOptions(ref m) if m.contains("TLS")),
        "{err}"
    );
}
