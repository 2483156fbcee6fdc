//! [`LogKv`]: a [`KvStore`] as a state machine over a one-partition [`Log`], for brokers
//! without a key-value store of their own (Kafka).
//!
//! Every write, conditional or not, is appended to the log as a command; every handle reads
//! the log from its start and applies the commands in log order to a map. A command's seq is
//! the revision it writes, and whether a conditional command takes effect depends only on the
//! commands before it, so every handle reaches the same map and the same verdicts: the log's
//! order is the agreement, as a JetStream bucket's is. A writer appends, waits until its own
//! handle applied its seq, and reads the verdict. A read first waits until the handle applied
//! everything the log held when the read began, so it sees every acknowledged write.
//!
//! Apply is deterministic: no clock, no randomness, ordered maps only.

use crate::control::{KvChange, KvEntry, KvStore};
use crate::error::ClusterError;
use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use notadb_log::{Log, LogError};
use notadb_types::{PartitionId, Seq};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The one partition of the log.
const PARTITION: PartitionId = PartitionId(0);

/// Verdicts kept for writers that have not read theirs yet.
const VERDICTS_KEPT: usize = 4096;

/// Commands one read takes from the log.
const READ_BATCH: usize = 1024;

/// How long a read of the log waits for new commands.
const READ_WAIT: Duration = Duration::from_millis(500);

/// Pause after a failed read.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Command format version (first byte).
const VERSION: u8 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Create = 1,
    Put = 2,
    DeleteAt = 3,
    Delete = 4,
}

/// One command: `[version][op][expected revision: u64 LE][key length: u16 LE][key][value]`.
fn encode(op: Op, expected: u64, key: &str, value: &[u8]) -> Result<Bytes, ClusterError> {
    let key_len = u16::try_from(key.len())
        .map_err(|_| ClusterError::Config(format!("key of {} bytes: at most 65535", key.len())))?;
    let mut buf = BytesMut::with_capacity(12 + key.len() + value.len());
    buf.put_u8(VERSION);
    buf.put_u8(op as u8);
    buf.put_u64_le(expected);
    buf.put_u16_le(key_len);
    buf.put_slice(key.as_bytes());
    buf.put_slice(value);
    Ok(buf.freeze())
}

struct Command {
    op: Op,
    expected: u64,
    key: String,
    value: Bytes,
}

fn decode(payload: &Bytes) -> Option<Command> {
    if payload.len() < 12 || payload[0] != VERSION {
        return None;
    }
    let op = match payload[1] {
        1 => Op::Create,
        2 => Op::Put,
        3 => Op::DeleteAt,
        4 => Op::Delete,
        _ => return None,
    };
    let expected = u64::from_le_bytes(payload[2..10].try_into().ok()?);
    let key_len = usize::from(u16::from_le_bytes(payload[10..12].try_into().ok()?));
    let key = payload.get(12..12 + key_len)?;
    Some(Command {
        op,
        expected,
        key: String::from_utf8(key.to_vec()).ok()?,
        value: payload.slice(12 + key_len..),
    })
}

/// The map and the verdicts of recent commands.
#[derive(Default)]
struct State {
    entries: BTreeMap<String, KvEntry>,
    /// (seq, took effect) of the last [`VERDICTS_KEPT`] commands.
    verdicts: VecDeque<(u64, bool)>,
    watchers: Vec<(Vec<String>, mpsc::UnboundedSender<KvChange>)>,
}

impl State {
    /// Applies the command at `seq`; returns whether it took effect.
    fn apply(&mut self, seq: u64, payload: &Bytes) -> bool {
        let Some(command) = decode(payload) else {
            tracing::warn!(seq, "skipping an unreadable metadata command");
            self.record(seq, false);
            return false;
        };
        let current = self.entries.get(&command.key).map(|e| e.revision);
        let change = match command.op {
            Op::Create if current.is_some() => None,
            Op::DeleteAt if current != Some(command.expected) => None,
            Op::Delete if current.is_none() => None,
            Op::Create | Op::Put => {
                let entry = KvEntry {
                    key: command.key.clone(),
                    value: command.value,
                    revision: seq,
                };
                self.entries.insert(command.key, entry.clone());
                Some(KvChange::Put(entry))
            }
            Op::DeleteAt | Op::Delete => {
                self.entries.remove(&command.key);
                Some(KvChange::Deleted(command.key))
            }
        };
        let took_effect = change.is_some();
        if let Some(change) = change {
            let key = match &change {
                KvChange::Put(e) => &e.key,
                KvChange::Deleted(k) => k,
            };
            let key = key.clone();
            self.watchers.retain(|(prefixes, tx)| {
                !prefixes.iter().any(|p| key.starts_with(p.as_str()))
                    || tx.send(change.clone()).is_ok()
            });
        }
        self.record(seq, took_effect);
        took_effect
    }

    fn record(&mut self, seq: u64, took_effect: bool) {
        if self.verdicts.len() == VERDICTS_KEPT {
            self.verdicts.pop_front();
        }
        self.verdicts.push_back((seq, took_effect));
    }

    fn verdict(&self, seq: u64) -> Option<bool> {
        self.verdicts
            .iter()
            .rev()
            .find(|(s, _)| *s == seq)
            .map(|(_, v)| *v)
    }
}

struct Shared {
    log: Arc<dyn Log>,
    name: String,
    state: Mutex<State>,
    /// The seq applied last.
    applied: watch::Sender<u64>,
    /// How long a write or read waits for this handle to apply the log up to a seq.
    timeout: Duration,
}

/// Aborts the reader task when the last handle goes.
struct Reader(tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A [`KvStore`] over a one-partition log. Cheap to clone; clones share one reader.
#[derive(Clone)]
pub struct LogKv {
    shared: Arc<Shared>,
    _reader: Arc<Reader>,
}

impl LogKv {
    /// Starts reading `log` (one partition) from its first entry. `name` names the store in
    /// errors and logs. `gaps`: whether entries dropped by the log's retention may be
    /// skipped (a store whose entries matter only while recent, such as heartbeats); without
    /// it, a truncated log stops the reader with an error, since skipping commands would
    /// make this handle disagree with the others. `timeout` bounds every wait for the reader.
    pub fn open(log: Arc<dyn Log>, name: &str, gaps: bool, timeout: Duration) -> LogKv {
        let shared = Arc::new(Shared {
            log,
            name: name.to_string(),
            state: Mutex::new(State::default()),
            applied: watch::channel(0).0,
            timeout,
        });
        let reader = tokio::spawn(read_loop(shared.clone(), gaps));
        LogKv {
            shared,
            _reader: Arc::new(Reader(reader)),
        }
    }

    /// The seq this handle applied last.
    pub fn applied(&self) -> u64 {
        *self.shared.applied.borrow()
    }

    async fn wait_applied(&self, seq: u64) -> Result<(), ClusterError> {
        let mut applied = self.shared.applied.subscribe();
        let reached = tokio::time::timeout(self.shared.timeout, async {
            applied.wait_for(|a| *a >= seq).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(ClusterError::Log(LogError::Unavailable(format!(
                "{}: the store did not read its log up to seq {seq} within {:?} (applied {})",
                self.shared.name,
                self.shared.timeout,
                self.applied()
            )))),
        }
    }

    /// Appends a command and returns its seq and verdict once applied.
    async fn command(
        &self,
        op: Op,
        expected: u64,
        key: &str,
        value: &[u8],
    ) -> Result<(u64, bool), ClusterError> {
        let payload = encode(op, expected, key, value)?;
        let seq = self.shared.log.append(PARTITION, payload).await?.0;
        self.wait_applied(seq).await?;
        let verdict = self
            .shared
            .state
            .lock()
            .expect("state lock")
            .verdict(seq)
            .ok_or_else(|| {
                ClusterError::Log(LogError::Unavailable(format!(
                    "{}: the verdict of seq {seq} is no longer kept",
                    self.shared.name
                )))
            })?;
        Ok((seq, verdict))
    }

    /// Waits until this handle applied every command the log held when called.
    async fn catch_up(&self) -> Result<(), ClusterError> {
        let last = self.shared.log.bounds(PARTITION).await?.last.0;
        self.wait_applied(last).await
    }
}

async fn read_loop(shared: Arc<Shared>, gaps: bool) {
    let mut next = Seq(1);
    loop {
        match shared
            .log
            .read(PARTITION, next, READ_BATCH, READ_WAIT)
            .await
        {
            Ok(entries) => {
                if entries.is_empty() {
                    continue;
                }
                let mut state = shared.state.lock().expect("state lock");
                for entry in &entries {
                    state.apply(entry.seq.0, &entry.payload);
                    next = Seq(entry.seq.0 + 1);
                }
                drop(state);
                shared.applied.send_replace(next.0 - 1);
            }
            Err(LogError::Truncated { first, .. }) if gaps => {
                tracing::debug!(store = %shared.name, from = next.0, to = first.0, "skipping entries the log dropped");
                next = first;
            }
            Err(e) => {
                tracing::warn!(store = %shared.name, error = %e, "reading the store's log failed; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

#[async_trait::async_trait]
impl KvStore for LogKv {
    async fn create(&self, key: &str, value: Bytes) -> Result<Option<u64>, ClusterError> {
        let (seq, created) = self.command(Op::Create, 0, key, &value).await?;
        Ok(created.then_some(seq))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, ClusterError> {
        Ok(self.command(Op::Put, 0, key, &value).await?.0)
    }

    async fn entry(&self, key: &str) -> Result<Option<KvEntry>, ClusterError> {
        self.catch_up().await?;
        Ok(self
            .shared
            .state
            .lock()
            .expect("state lock")
            .entries
            .get(key)
            .cloned())
    }

    async fn delete_at(&self, key: &str, revision: u64) -> Result<(), ClusterError> {
        match self.command(Op::DeleteAt, revision, key, &[]).await? {
            (_, true) => Ok(()),
            (_, false) => Err(ClusterError::Conflict(format!(
                "{}: {key} no longer has revision {revision}",
                self.shared.name
            ))),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), ClusterError> {
        self.command(Op::Delete, 0, key, &[]).await.map(|_| ())
    }

    async fn entries(&self, prefix: &str) -> Result<Vec<KvEntry>, ClusterError> {
        self.catch_up().await?;
        let state = self.shared.state.lock().expect("state lock");
        Ok(state
            .entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn watch(&self, prefixes: &[&str]) -> Result<BoxStream<'static, KvChange>, ClusterError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared
            .state
            .lock()
            .expect("state lock")
            .watchers
            .push((prefixes.iter().map(|p| p.to_string()).collect(), tx));
        Ok(tokio_stream_of(rx))
    }
}

fn tokio_stream_of(mut rx: mpsc::UnboundedReceiver<KvChange>) -> BoxStream<'static, KvChange> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use notadb_log::{EmbeddedLog, EmbeddedLogOptions};

    fn bytes(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    async fn open(dir: &std::path::Path) -> (Arc<dyn Log>, LogKv) {
        let log: Arc<dyn Log> = Arc::new(
            EmbeddedLog::open(dir, 1, EmbeddedLogOptions::default()).expect("open the log"),
        );
        let kv = LogKv::open(log.clone(), "test", false, Duration::from_secs(10));
        (log, kv)
    }

    #[tokio::test]
    async fn passes_the_kv_store_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_log, kv) = open(dir.path()).await;
        crate::conformance::kv_store(&kv).await;
    }

    #[tokio::test]
    async fn conditional_writes_agree_across_handles_in_log_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, a) = open(dir.path()).await;
        let b = LogKv::open(log.clone(), "test", false, Duration::from_secs(10));
        let mut watch = b.watch(&["keyspace."]).await.expect("watch");
        let first = a
            .create("keyspace.items", bytes("v1"))
            .await
            .expect("create");
        let first = first.expect("a new key is created");
        assert_eq!(
            b.create("keyspace.items", bytes("v2"))
                .await
                .expect("create"),
            None,
            "a second create of a live key must fail"
        );
        let entry = b
            .entry("keyspace.items")
            .await
            .expect("entry")
            .expect("live");
        assert_eq!((entry.value, entry.revision), (bytes("v1"), first));
        assert!(a.delete_at("keyspace.items", first + 100).await.is_err());
        b.delete_at("keyspace.items", first).await.expect("delete");
        assert_eq!(a.entry("keyspace.items").await.expect("entry"), None);
        let again = a
            .create("keyspace.items", bytes("v3"))
            .await
            .expect("create")
            .expect("created after the delete");
        assert!(again > first, "revisions grow: {again} after {first}");
        a.put("other", bytes("x")).await.expect("put");
        a.put("keyspace.more", bytes("m")).await.expect("put");
        let keys: Vec<String> = b
            .entries("keyspace.")
            .await
            .expect("entries")
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["keyspace.items", "keyspace.more"]);
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let change = tokio::time::timeout(Duration::from_secs(5), watch.next())
                .await
                .expect("a change within 5 s")
                .expect("the watch goes on");
            seen.push(match change {
                KvChange::Put(e) => format!("put {} {:?}", e.key, e.value),
                KvChange::Deleted(k) => format!("delete {k}"),
            });
        }
        assert_eq!(
            seen,
            [
                "put keyspace.items b\"v1\"",
                "delete keyspace.items",
                "put keyspace.items b\"v3\"",
                "put keyspace.more b\"m\"",
            ]
        );
        // A handle opened later replays the log to the same map.
        let late = LogKv::open(log, "late", false, Duration::from_secs(10));
        assert_eq!(
            late.entries("").await.expect("entries"),
            a.entries("").await.expect("entries")
        );
    }

    #[test]
    fn unreadable_commands_are_skipped_without_effect() {
        let mut state = State::default();
        assert!(!state.apply(1, &Bytes::from_static(b"\x09garbage")));
        assert!(!state.apply(2, &Bytes::from_static(b"")));
        let put = encode(Op::Put, 0, "k", b"v").expect("encode");
        assert!(state.apply(3, &put));
        assert_eq!(state.entries["k"].revision, 3);
        assert_eq!(state.verdict(1), Some(false));
        assert_eq!(state.verdict(3), Some(true));
    }
}
