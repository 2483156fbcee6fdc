//! [`JetStreamLog`]: the [`Log`] on NATS JetStream, one stream per partition.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use notadb_types::{PartitionId, Seq};
use tokio::sync::Mutex;

use super::cursor::{self, Cursor, ReadTarget};
use super::publish::{self, MessageIds, Publication};
use super::streams;
use super::JetStreamOptions;
use notadb_log::{Log, LogBounds, LogEntry, LogError};

/// Bytes of a message the server counts against `max_payload` that are left for headers
/// (`Nats-Msg-Id`, `Nats-Expected-Stream`) when the entry limit comes from the server.
pub const HEADER_ROOM_BYTES: usize = 1024;

/// Partition streams opened (or created) concurrently by [`JetStreamLog::connect`].
const CONCURRENT_STREAM_OPENS: usize = 16;

/// Oldest nats-server release this log supports (stream metadata came in 2.10).
const MIN_SERVER_VERSION: (u64, u64) = (2, 10);

/// A [`Log`] on NATS JetStream. Cheap to clone: clones share one connection.
///
/// Any number of handles, in any number of processes, may append to and read the same log.
#[derive(Clone)]
pub struct JetStreamLog {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    context: jetstream::Context,
    options: JetStreamOptions,
    partitions: Box<[Partition]>,
    max_entry_bytes: usize,
    ids: MessageIds,
}

/// One partition's stream and its cached read position.
struct Partition {
    stream: stream::Stream,
    name: String,
    subject: String,
    cursor: Mutex<Option<Cursor>>,
    /// Truncations made through this handle; a cursor opened before one is not reused.
    truncations: AtomicU64,
}

impl JetStreamLog {
    /// Connects to `options.url` and opens the log's `partitions` streams, creating the missing
    /// ones with `options`.
    ///
    /// Fails with [`LogError::PartitionCount`] if an existing stream belongs to a log with
    /// another partition count, [`LogError::InvalidOptions`] for invalid options,
    /// [`LogError::Unavailable`] if the server cannot be reached and [`LogError::Rejected`] if it
    /// refuses (JetStream disabled, a server older than 2.10, a foreign stream of that name).
    pub async fn connect(
        options: JetStreamOptions,
        partitions: u16,
    ) -> Result<JetStreamLog, LogError> {
        options.validate()?;
        if partitions == 0 {
            return Err(LogError::InvalidOptions(
                "partitions: expected at least 1, found 0".into(),
            ));
        }
        let client = options
            .auth
            .connect_options()
            .await?
            .name("notadb-log")
            .connection_timeout(options.publish_timeout)
            .request_timeout(Some(options.publish_timeout))
            .connect(options.url.as_str())
            .await
            .map_err(|e| crate::connect_error(&options.url, &e))?;
        check_server_version(&client.server_info().version)?;
        let max_entry_bytes = max_entry_bytes(&options, client.server_info().max_payload)?;
        let context = jetstream::ContextBuilder::new()
            .timeout(options.publish_timeout)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let opened: Vec<Partition> = futures::stream::iter(0..partitions)
            .map(|p| open_partition(&context, &options, partitions, p))
            .buffered(CONCURRENT_STREAM_OPENS)
            .try_collect()
            .await?;
        let ids = MessageIds::new(unique_prefix(&client));
        tracing::debug!(url = %options.url, name = %options.name, partitions, "opened the JetStream log");
        Ok(JetStreamLog {
            inner: Arc::new(Inner {
                client,
                context,
                options,
                partitions: opened.into(),
                max_entry_bytes,
                ids,
            }),
        })
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &JetStreamOptions {
        &self.inner.options
    }

    /// Largest payload [`Log::append`] accepts.
    pub fn max_entry_bytes(&self) -> usize {
        self.inner.max_entry_bytes
    }

    /// Name of the stream that holds `partition`, if the log has that partition.
    pub fn stream_name(&self, partition: PartitionId) -> Option<&str> {
        self.partition(partition).ok().map(|p| p.name.as_str())
    }

    fn partition(&self, partition: PartitionId) -> Result<&Partition, LogError> {
        notadb_log::partition_slot(&self.inner.partitions, partition)
    }

    /// Publishes `payload` to `partition` under `message_id`, the way every append does.
    /// Exposed to the crate's tests, which publish one id twice.
    pub(crate) async fn publish_with_id(
        &self,
        partition: PartitionId,
        message_id: String,
        payload: Bytes,
    ) -> Result<Seq, LogError> {
        let target = self.partition(partition)?;
        if payload.len() > self.inner.max_entry_bytes {
            return Err(LogError::EntryTooLarge {
                size: payload.len(),
                max: self.inner.max_entry_bytes,
            });
        }
        let publication = Publication {
            subject: &target.subject,
            stream: &target.name,
            id: message_id,
            payload,
            attempts: self.inner.options.publish_attempts,
        };
        publish::publish(&self.inner.context, publication).await
    }
}

#[async_trait::async_trait]
impl Log for JetStreamLog {
    fn partitions(&self) -> u16 {
        u16::try_from(self.inner.partitions.len())
            .expect("connect opens at most u16::MAX partitions")
    }

    async fn append(&self, partition: PartitionId, payload: Bytes) -> Result<Seq, LogError> {
        self.partition(partition)?;
        let id = self.inner.ids.next();
        self.publish_with_id(partition, id, payload).await
    }

    async fn append_deduplicated(
        &self,
        partition: PartitionId,
        id: &str,
        payload: Bytes,
    ) -> Result<Seq, LogError> {
        self.publish_with_id(partition, format!("dedup-{id}"), payload)
            .await
    }

    async fn read(
        &self,
        partition: PartitionId,
        from: Seq,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<LogEntry>, LogError> {
        let target = self.partition(partition)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let from = from.max(Seq(1));
        let read_target = || ReadTarget {
            partition,
            stream: &target.stream,
            truncations: target.truncations.load(Ordering::Acquire),
        };
        // A concurrent reader of the same partition gets a cursor of its own rather than
        // waiting for the cached one.
        match target.cursor.try_lock() {
            Ok(mut cached) => cursor::read(read_target(), &mut cached, from, max, wait).await,
            Err(_busy) => cursor::read(read_target(), &mut None, from, max, wait).await,
        }
    }

    async fn truncate_before(&self, partition: PartitionId, before: Seq) -> Result<(), LogError> {
        let target = self.partition(partition)?;
        let result = streams::truncate_before(&target.stream, partition, before).await;
        // Even a failed purge may have happened.
        target.truncations.fetch_add(1, Ordering::AcqRel);
        result
    }

    async fn bounds(&self, partition: PartitionId) -> Result<LogBounds, LogError> {
        streams::bounds(&self.partition(partition)?.stream).await
    }

    /// Waits until the server has received everything this connection sent. Acknowledged
    /// appends are already as durable as the server makes them (see the module docs); this adds
    /// nothing to that, since a client cannot make a server fsync.
    async fn flush(&self) -> Result<(), LogError> {
        self.inner
            .client
            .flush()
            .await
            .map_err(|e| LogError::Unavailable(format!("flush the NATS connection: {e}")))
    }
}

async fn open_partition(
    context: &jetstream::Context,
    options: &JetStreamOptions,
    partitions: u16,
    partition: u16,
) -> Result<Partition, LogError> {
    let stream = streams::open(context, options, partitions, partition).await?;
    Ok(Partition {
        stream,
        name: streams::stream_name(&options.name, partition),
        subject: streams::subject(&options.name, partition),
        cursor: Mutex::new(None),
        truncations: AtomicU64::new(0),
    })
}

/// The entry limit: the configured one, capped by what the server accepts.
fn max_entry_bytes(options: &JetStreamOptions, max_payload: usize) -> Result<usize, LogError> {
    let server_max = max_payload.saturating_sub(HEADER_ROOM_BYTES);
    if server_max == 0 {
        return Err(LogError::Rejected(format!(
            "expected a server max_payload above {HEADER_ROOM_BYTES} bytes, found {max_payload}"
        )));
    }
    Ok(options
        .max_entry_bytes
        .map_or(server_max, |max| max.min(server_max)))
}

/// Fails unless `version` (`2.10.4`, `2.11.0-beta.1`) is at least [`MIN_SERVER_VERSION`].
fn check_server_version(version: &str) -> Result<(), LogError> {
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u64>().ok());
    let found = (numbers.next().flatten(), numbers.next().flatten());
    match found {
        (Some(major), Some(minor)) if (major, minor) >= MIN_SERVER_VERSION => Ok(()),
        _ => Err(LogError::Rejected(format!(
            "expected nats-server {}.{} or newer, found version {version:?}",
            MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
        ))),
    }
}

/// A prefix for this handle's message ids that no other handle uses: the random part of a
/// fresh inbox subject (a NUID).
fn unique_prefix(client: &async_nats::Client) -> String {
    let inbox = client.new_inbox();
    inbox.rsplit('.').next().unwrap_or(&inbox).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        for ok in ["2.10.0", "2.10.22", "2.11.0-beta.1", "2.15.1", "3.0.0"] {
            check_server_version(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for old in ["2.9.10", "1.4.1", "", "v"] {
            assert!(
                matches!(check_server_version(old), Err(LogError::Rejected(_))),
                "{old:?} accepted"
            );
        }
    }

    #[test]
    fn entry_limit_leaves_room_for_headers() {
        let options = JetStreamOptions::default();
        assert_eq!(
            max_entry_bytes(&options, 1 << 20).expect("a large max_payload"),
            (1 << 20) - HEADER_ROOM_BYTES
        );
        let small = JetStreamOptions {
            max_entry_bytes: Some(100),
            ..JetStreamOptions::default()
        };
        assert_eq!(max_entry_bytes(&small, 1 << 20).expect("limit"), 100);
        assert!(max_entry_bytes(&options, 10).is_err());
    }
}
