//! [`KafkaLog`]: the [`Log`] on one Kafka topic, a notadb partition per Kafka partition.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use notadb_log::{partition_slot, Log, LogBounds, LogEntry, LogError};
use notadb_types::{PartitionId, Seq};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Mutex;

use crate::options::RECORD_OVERHEAD_BYTES;
use crate::KafkaOptions;

/// Pause between two checks while waiting for a created topic to appear in the metadata, or
/// for a partition to reach the seq a read starts at.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// `retention.ms` of a topic that keeps its entries forever. Kafka reads `-1` as unlimited,
/// but tansu (0.6) reads it as "older than -1 ms" and deletes every entry at its next sweep;
/// the largest value means the same on both.
const KEEP_FOREVER_MS: i64 = i64::MAX;

/// Messages a reader's consumer keeps fetched ahead, in KiB (librdkafka's default is 64 MiB per
/// consumer, too much for one consumer per partition).
const READ_AHEAD_KIB: usize = 16 << 10;

/// A [`Log`] on a Kafka topic with one partition per notadb partition. Cheap to clone: clones
/// share one producer and the readers' consumers.
///
/// Any number of handles, in any number of processes, may append to and read the same log.
#[derive(Clone)]
pub struct KafkaLog {
    inner: Arc<Inner>,
}

struct Inner {
    options: KafkaOptions,
    /// Replaced after a fatal producer error (an idempotent producer whose state the broker
    /// lost, say): appends then go on with a new producer id.
    producer: RwLock<Arc<FutureProducer>>,
    /// Per partition, the consumer of the last read and the seq it reads next.
    cursors: Box<[Mutex<Option<Cursor>>]>,
}

/// A consumer assigned to one partition, positioned at `next`.
struct Cursor {
    consumer: StreamConsumer,
    next: Seq,
}

impl KafkaLog {
    /// Connects to `options.bootstrap` and opens the log on `options.topic`, creating the topic
    /// with `partitions` partitions when it is missing and `create_topic` is set.
    ///
    /// Fails with [`LogError::PartitionCount`] if the topic has another partition count,
    /// [`LogError::InvalidOptions`] for invalid options, [`LogError::Unavailable`] if no broker
    /// answers within `request_timeout`, and [`LogError::Rejected`] if the broker refuses (a
    /// missing topic with `create_topic = false`, no permission).
    pub async fn connect(options: KafkaOptions, partitions: u16) -> Result<KafkaLog, LogError> {
        options.validate()?;
        if partitions == 0 {
            return Err(LogError::InvalidOptions(
                "partitions: expected at least 1, found 0".into(),
            ));
        }
        let producer = Arc::new(producer(&options)?);
        open_topic(&options, &producer, partitions).await?;
        tracing::debug!(bootstrap = %options.bootstrap, topic = %options.topic, partitions, "opened the Kafka log");
        Ok(KafkaLog {
            inner: Arc::new(Inner {
                cursors: (0..partitions).map(|_| Mutex::new(None)).collect(),
                producer: RwLock::new(producer),
                options,
            }),
        })
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &KafkaOptions {
        &self.inner.options
    }

    /// Largest payload [`Log::append`] accepts.
    pub fn max_entry_bytes(&self) -> usize {
        self.inner.options.max_entry_bytes
    }

    fn producer(&self) -> Arc<FutureProducer> {
        self.inner
            .producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a fatal error of `failed`, replaces it (unless another append already did).
    fn replace_producer(&self, failed: &Arc<FutureProducer>) -> Result<(), LogError> {
        let mut slot = self
            .inner
            .producer
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if Arc::ptr_eq(&slot, failed) {
            *slot = Arc::new(producer(&self.inner.options)?);
        }
        Ok(())
    }

    /// The seqs of `partition`: the topic's low and high watermarks.
    async fn watermarks(&self, partition: PartitionId) -> Result<LogBounds, LogError> {
        let producer = self.producer();
        let topic = self.inner.options.topic.clone();
        let timeout = self.inner.options.request_timeout;
        let (low, high) = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_watermarks(&topic, i32::from(partition.0), timeout)
        })
        .await
        .map_err(|e| LogError::Unavailable(format!("the watermark request panicked: {e}")))?
        .map_err(|e| {
            unavailable(
                &format!("fetch the watermarks of partition {}", partition.0),
                e,
            )
        })?;
        Ok(LogBounds {
            first: Seq(u64::try_from(low).unwrap_or(0) + 1),
            last: Seq(u64::try_from(high).unwrap_or(0)),
        })
    }

    /// The bounds of `partition`, or `Truncated` if the broker no longer holds `from`.
    async fn not_truncated(
        &self,
        partition: PartitionId,
        from: Seq,
    ) -> Result<LogBounds, LogError> {
        let bounds = self.watermarks(partition).await?;
        if from < bounds.first {
            return Err(LogError::Truncated {
                partition,
                requested: from,
                first: bounds.first,
            });
        }
        Ok(bounds)
    }

    /// A consumer of `partition` positioned at `from`, which the partition holds or is the next
    /// seq to be appended. Waits up to `wait` for a `from` further past the end; `None` if it
    /// was not reached.
    async fn position(
        &self,
        partition: PartitionId,
        from: Seq,
        wait: Duration,
    ) -> Result<Option<Cursor>, LogError> {
        let deadline = Instant::now() + wait;
        loop {
            let bounds = self.not_truncated(partition, from).await?;
            if from.0 <= bounds.last.0 + 1 {
                break;
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - Instant::now())).await;
        }
        let consumer = consumer(&self.inner.options)?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(
                &self.inner.options.topic,
                i32::from(partition.0),
                Offset::Offset(offset_of(from)),
            )
            .map_err(|e| LogError::Rejected(format!("assign partition {}: {e}", partition.0)))?;
        consumer
            .assign(&assignment)
            .map_err(|e| LogError::Rejected(format!("assign partition {}: {e}", partition.0)))?;
        Ok(Some(Cursor {
            consumer,
            next: from,
        }))
    }

    async fn read_with(
        &self,
        cached: &mut Option<Cursor>,
        partition: PartitionId,
        from: Seq,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<LogEntry>, LogError> {
        if cached.as_ref().is_none_or(|c| c.next != from) {
            *cached = None;
            match self.position(partition, from, wait).await? {
                Some(cursor) => *cached = Some(cursor),
                None => return Ok(Vec::new()),
            }
        }
        let cursor = cached.as_mut().expect("positioned above");
        let result = receive(cursor, max, wait).await;
        match result {
            Ok(entries) => Ok(entries),
            Err(e) => {
                *cached = None;
                if matches!(
                    e,
                    KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange)
                ) {
                    self.not_truncated(partition, from).await?;
                }
                Err(unavailable(&format!("read partition {}", partition.0), e))
            }
        }
    }
}

#[async_trait::async_trait]
impl Log for KafkaLog {
    fn partitions(&self) -> u16 {
        u16::try_from(self.inner.cursors.len()).expect("connect opens at most u16::MAX partitions")
    }

    /// Produces the entry to the topic's partition and returns once the broker acknowledged it
    /// with `acks=all`: the entry is in every in-sync replica.
    async fn append(&self, partition: PartitionId, payload: Bytes) -> Result<Seq, LogError> {
        partition_slot(&self.inner.cursors, partition)?;
        let max = self.inner.options.max_entry_bytes;
        if payload.len() > max {
            return Err(LogError::EntryTooLarge {
                size: payload.len(),
                max,
            });
        }
        let producer = self.producer();
        let record = FutureRecord::<(), [u8]>::to(&self.inner.options.topic)
            .partition(i32::from(partition.0))
            .payload(&payload[..]);
        match producer
            .send(record, Timeout::After(self.inner.options.request_timeout))
            .await
        {
            Ok(delivery) => u64::try_from(delivery.offset)
                .map(|offset| Seq(offset + 1))
                .map_err(|_| {
                    LogError::Unavailable(format!(
                        "the broker acknowledged an append to partition {} without an offset",
                        partition.0
                    ))
                }),
            Err((e, _message)) => {
                if let Some((code, reason)) = producer.client().fatal_error() {
                    tracing::warn!(?code, %reason, "the Kafka producer failed fatally; opening a new one");
                    self.replace_producer(&producer)?;
                }
                Err(append_error(partition, e))
            }
        }
    }

    async fn read(
        &self,
        partition: PartitionId,
        from: Seq,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<LogEntry>, LogError> {
        let slot = partition_slot(&self.inner.cursors, partition)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let from = from.max(Seq(1));
        // A concurrent reader of the same partition gets a consumer of its own rather than
        // waiting for the cached one.
        match slot.try_lock() {
            Ok(mut cached) => {
                self.read_with(&mut cached, partition, from, max, wait)
                    .await
            }
            Err(_busy) => self.read_with(&mut None, partition, from, max, wait).await,
        }
    }

    /// Keeps every entry: Kafka drops a partition's oldest entries by the topic's retention
    /// (`retention.ms`, `retention.bytes`), not on request. [`Log::bounds`] reports what the
    /// broker still holds.
    async fn truncate_before(&self, partition: PartitionId, before: Seq) -> Result<(), LogError> {
        partition_slot(&self.inner.cursors, partition)?;
        let _ = before;
        Ok(())
    }

    async fn bounds(&self, partition: PartitionId) -> Result<LogBounds, LogError> {
        partition_slot(&self.inner.cursors, partition)?;
        self.watermarks(partition).await
    }

    /// Waits until every message the producer holds has been acknowledged or failed.
    async fn flush(&self) -> Result<(), LogError> {
        let producer = self.producer();
        let timeout = self.inner.options.request_timeout;
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| LogError::Unavailable(format!("the flush panicked: {e}")))?
            .map_err(|e| unavailable("flush the producer", e))
    }
}

/// Receives up to `max` entries: the first waits up to `wait`, the rest only if already
/// fetched.
async fn receive(
    cursor: &mut Cursor,
    max: usize,
    wait: Duration,
) -> Result<Vec<LogEntry>, KafkaError> {
    let mut entries = Vec::new();
    let first = match tokio::time::timeout(wait, cursor.consumer.recv()).await {
        Ok(message) => message?,
        Err(_elapsed) => return Ok(entries),
    };
    let mut message = Some(first);
    while let Some(m) = message.take() {
        let seq = Seq(u64::try_from(m.offset()).unwrap_or(0) + 1);
        // Offsets only grow; a message below the position (none is expected) is skipped.
        if seq >= cursor.next {
            entries.push(LogEntry {
                seq,
                payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
            });
            cursor.next = Seq(seq.0 + 1);
        }
        if entries.len() >= max {
            break;
        }
        message = match cursor.consumer.recv().now_or_never() {
            Some(next) => Some(next?),
            None => None,
        };
    }
    Ok(entries)
}

/// The Kafka offset of `seq`: seqs count from 1, offsets from 0.
fn offset_of(seq: Seq) -> i64 {
    i64::try_from(seq.0.saturating_sub(1)).unwrap_or(i64::MAX)
}

/// The properties every client of the log shares: the bootstrap servers and the passed-through
/// ones.
fn base_config(options: &KafkaOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &options.bootstrap);
    for (key, value) in &options.client {
        config.set(key, value);
    }
    config
}

fn timeout_ms(duration: Duration) -> String {
    duration.as_millis().clamp(1, i32::MAX as u128).to_string()
}

/// The idempotent producer: `acks=all`, retries within `request_timeout` without duplicates or
/// reordering.
fn producer(options: &KafkaOptions) -> Result<FutureProducer, LogError> {
    let mut config = base_config(options);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", timeout_ms(options.request_timeout))
        .set(
            "message.max.bytes",
            (options.max_entry_bytes + RECORD_OVERHEAD_BYTES).to_string(),
        );
    if !options.client.contains_key("linger.ms") {
        config.set("linger.ms", "1");
    }
    config
        .create()
        .map_err(|e| LogError::InvalidOptions(format!("client: the producer refused it: {e}")))
}

/// A consumer for reads by assignment: no group membership, no committed offsets, an error
/// (not a jump) when its position is out of range.
fn consumer(options: &KafkaOptions) -> Result<StreamConsumer, LogError> {
    let mut config = base_config(options);
    let fetch_bytes = options.max_entry_bytes + RECORD_OVERHEAD_BYTES;
    config
        .set("group.id", format!("notadb-reader-{}", options.topic))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_uncommitted")
        .set("max.partition.fetch.bytes", fetch_bytes.to_string())
        .set("fetch.max.bytes", (2 * fetch_bytes).to_string())
        .set(
            "receive.message.max.bytes",
            (2 * fetch_bytes + (1 << 20)).to_string(),
        );
    // `fetch.wait.max.ms` stays at librdkafka's 500 ms: a Kafka broker answers a fetch as
    // soon as an entry arrives, so the wait only bounds idle polling. (tansu 0.6 sleeps
    // through part of every fetch instead; with 50 ms, 32 idle readers kept it at 93% of a
    // core. See docs/kafka.md.)
    if !options.client.contains_key("queued.max.messages.kbytes") {
        config.set("queued.max.messages.kbytes", READ_AHEAD_KIB.to_string());
    }
    config
        .create()
        .map_err(|e| LogError::InvalidOptions(format!("client: the consumer refused it: {e}")))
}

/// Checks the topic's partition count, creating the topic first when it is missing.
async fn open_topic(
    options: &KafkaOptions,
    producer: &Arc<FutureProducer>,
    partitions: u16,
) -> Result<(), LogError> {
    let deadline = Instant::now() + options.request_timeout;
    let mut created = false;
    loop {
        match topic_partitions(options, producer).await? {
            Some(found) if found == usize::from(partitions) => return Ok(()),
            Some(found) => {
                return Err(LogError::PartitionCount {
                    expected: partitions,
                    found: u16::try_from(found).unwrap_or(u16::MAX),
                })
            }
            None if !options.create_topic => {
                return Err(LogError::Rejected(format!(
                    "topic {:?} does not exist and create_topic is false: create it with \
                     {partitions} partitions",
                    options.topic
                )))
            }
            None if !created => {
                create_topic(options, partitions).await?;
                created = true;
            }
            None if Instant::now() >= deadline => {
                return Err(LogError::Unavailable(format!(
                    "topic {:?} was created but did not appear in the metadata within {}",
                    options.topic,
                    humantime::format_duration(options.request_timeout)
                )))
            }
            None => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// The topic's partition count, `None` if it does not exist.
async fn topic_partitions(
    options: &KafkaOptions,
    producer: &Arc<FutureProducer>,
) -> Result<Option<usize>, LogError> {
    let producer = producer.clone();
    let topic = options.topic.clone();
    let timeout = options.request_timeout;
    let found = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&topic), timeout)
            .map(|metadata| {
                metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map(|t| (t.error(), t.partitions().len()))
            })
    })
    .await
    .map_err(|e| LogError::Unavailable(format!("the metadata request panicked: {e}")))?
    .map_err(|e| unavailable(&format!("fetch the metadata of {:?}", options.topic), e))?;
    match found {
        None | Some((Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART), _)) => Ok(None),
        Some((None, 0)) => Ok(None),
        Some((None, count)) => Ok(Some(count)),
        Some((Some(error), _)) => Err(LogError::Rejected(format!(
            "the metadata of topic {:?}: {error:?}",
            options.topic
        ))),
    }
}

/// Creates the topic: `partitions` partitions, delete policy, the options' retention and
/// replication factor, messages up to the entry limit. A topic created meanwhile by another
/// node is fine.
async fn create_topic(options: &KafkaOptions, partitions: u16) -> Result<(), LogError> {
    let admin: AdminClient<DefaultClientContext> = base_config(options).create().map_err(|e| {
        LogError::InvalidOptions(format!("client: the admin client refused it: {e}"))
    })?;
    let retention = options.retention.map_or_else(
        || KEEP_FOREVER_MS.to_string(),
        |r| r.as_millis().to_string(),
    );
    let max_message = (options.max_entry_bytes + RECORD_OVERHEAD_BYTES).to_string();
    let topic = NewTopic::new(
        &options.topic,
        i32::from(partitions),
        TopicReplication::Fixed(options.replication_factor.map_or(-1, i32::from)),
    )
    .set("cleanup.policy", "delete")
    .set("retention.ms", &retention)
    .set("max.message.bytes", &max_message);
    let admin_options = AdminOptions::new().operation_timeout(Some(options.request_timeout));
    let results = admin
        .create_topics([&topic], &admin_options)
        .await
        .map_err(|e| unavailable(&format!("create topic {:?}", options.topic), e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(LogError::Rejected(format!(
                    "create topic {name:?} with {partitions} partitions: {code}"
                )))
            }
        }
    }
    tracing::info!(topic = %options.topic, partitions, "created the log's Kafka topic");
    Ok(())
}

fn unavailable(what: &str, error: KafkaError) -> LogError {
    LogError::Unavailable(format!("{what}: {error}"))
}

/// An append's error: the broker's refusal of the entry itself is final, anything else may
/// pass.
fn append_error(partition: PartitionId, error: KafkaError) -> LogError {
    match error.rdkafka_error_code() {
        Some(
            code @ (RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::UnknownTopicOrPartition),
        ) => LogError::Rejected(format!("append to partition {}: {code}", partition.0)),
        _ => unavailable(&format!("append to partition {}", partition.0), error),
    }
}
