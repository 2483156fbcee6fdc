//! Reading a partition: an ordered pull consumer positioned at the next seq to read.
//!
//! A replica's apply loop reads with `from` = the previous read's last seq + 1, so a partition
//! keeps one [`Cursor`] whose next seq is that `from`; the consumer pulls ahead in the
//! background, and a read just takes what has arrived. A read from any other seq replaces the
//! cursor, and so does a read after this handle truncated the partition (the cursor may hold
//! entries pulled before the truncation). Entries truncated by *another* handle may still be
//! returned from what a cursor pulled ahead, as [`Log::truncate_before`](notadb_log::Log) allows.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::stream;
use futures::{FutureExt, StreamExt};
use notadb_types::{PartitionId, Seq};

use super::errors::api_error;
use super::streams::{self, stream_of};
use notadb_log::{LogEntry, LogError};

/// Most messages a cursor's consumer pulls ahead of the reader in one pull request.
const READ_AHEAD_MESSAGES: i64 = 256;

/// How long a read through a new cursor waits for an entry that the stream is known to hold,
/// even when the caller asked not to wait: the consumer needs a round trip to deliver it.
const KNOWN_ENTRY_WAIT: Duration = Duration::from_secs(5);

/// An ordered pull consumer of one partition's stream and the seq it delivers next.
pub(crate) struct Cursor {
    next: Seq,
    /// The partition's truncation count when the cursor was opened: entries it pulled ahead
    /// may since have been truncated by this handle.
    truncations: u64,
    messages: Ordered,
}

/// What a read needs to know about its partition.
pub(crate) struct ReadTarget<'a> {
    pub(crate) partition: PartitionId,
    pub(crate) stream: &'a stream::Stream,
    /// How many truncations this handle has made on the partition so far.
    pub(crate) truncations: u64,
}

/// Reads up to `max` entries from `from` (>= 1) through `cursor`, replacing it unless it is
/// positioned at `from`. Leaves `cursor` empty when it can no longer be trusted.
pub(crate) async fn read(
    target: ReadTarget<'_>,
    cursor: &mut Option<Cursor>,
    from: Seq,
    max: usize,
    wait: Duration,
) -> Result<Vec<LogEntry>, LogError> {
    let wait = match cursor {
        Some(open) if open.next == from && open.truncations == target.truncations => wait,
        _ => {
            *cursor = None;
            let bounds = streams::bounds(target.stream).await?;
            if from < bounds.first {
                return Err(truncated(target.partition, from, bounds.first));
            }
            *cursor = Some(Cursor::open(target.stream, from, target.truncations).await?);
            if from <= bounds.last {
                wait.max(KNOWN_ENTRY_WAIT)
            } else {
                wait
            }
        }
    };
    let open = cursor
        .as_mut()
        .expect("a cursor positioned at `from` was just ensured");
    let mut batch = Batch::new(max);
    match open.take(&mut batch, wait).await {
        Ok(()) if batch.entries.is_empty() => {
            // Nothing arrived. If the stream holds `from` all the same, the consumer is gone
            // (a restarted server forgets ephemeral consumers): open a new one next time.
            match streams::bounds(target.stream).await {
                Ok(bounds) if bounds.last < from => {}
                _ => *cursor = None,
            }
            Ok(batch.entries)
        }
        Ok(()) => Ok(batch.entries),
        Err(gap) => {
            *cursor = None;
            match gap {
                Taken::Gap { found } if batch.entries.is_empty() => {
                    Err(gap_error(target, from, found).await)
                }
                Taken::Gap { .. } => Ok(batch.entries),
                Taken::Failed(error) if batch.entries.is_empty() => Err(error),
                Taken::Failed(_) => Ok(batch.entries),
            }
        }
    }
}

/// Entries of one read, at most `max`.
struct Batch {
    entries: Vec<LogEntry>,
    max: usize,
}

impl Batch {
    fn new(max: usize) -> Batch {
        Batch {
            entries: Vec::with_capacity(max.min(READ_AHEAD_MESSAGES as usize)),
            max,
        }
    }

    fn is_full(&self) -> bool {
        self.entries.len() >= self.max
    }
}

/// Why a cursor stopped short of a full batch, other than having nothing more to deliver.
enum Taken {
    /// The consumer delivered `found` where the cursor expected an earlier seq: the entries in
    /// between were dropped (truncation or retention).
    Gap { found: Seq },
    /// The consumer failed; the cursor must be replaced.
    Failed(LogError),
}

impl Cursor {
    /// A cursor whose first entry is `from`.
    async fn open(
        stream: &stream::Stream,
        from: Seq,
        truncations: u64,
    ) -> Result<Cursor, LogError> {
        let what = || format!("read {} from seq {from}", stream_of(stream));
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from.0,
                },
                replay_policy: ReplayPolicy::Instant,
                max_batch: READ_AHEAD_MESSAGES,
                ..OrderedConfig::default()
            })
            .await
            .map_err(|e| api_error(&what(), &e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| api_error(&what(), &e))?;
        Ok(Cursor {
            next: from,
            truncations,
            messages,
        })
    }

    /// Waits up to `wait` for the first entry, then adds whatever else has already arrived,
    /// until `batch` is full.
    async fn take(&mut self, batch: &mut Batch, wait: Duration) -> Result<(), Taken> {
        if batch.is_full() {
            return Ok(());
        }
        match tokio::time::timeout(wait, self.messages.next()).await {
            Err(_elapsed) => return Ok(()),
            Ok(message) => self.accept(batch, message)?,
        }
        while !batch.is_full() {
            match self.messages.next().now_or_never() {
                None => break,
                Some(message) => self.accept(batch, message)?,
            }
        }
        Ok(())
    }

    /// Adds one delivered message to `batch` if it is the next seq.
    fn accept(
        &mut self,
        batch: &mut Batch,
        message: Option<Result<async_nats::jetstream::Message, impl std::fmt::Display>>,
    ) -> Result<(), Taken> {
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                return Err(Taken::Failed(LogError::Unavailable(format!(
                    "read from seq {}: {error}",
                    self.next
                ))))
            }
            None => {
                return Err(Taken::Failed(LogError::Unavailable(format!(
                    "read from seq {}: the consumer's message stream ended",
                    self.next
                ))))
            }
        };
        let seq = message
            .info()
            .map(|info| Seq(info.stream_sequence))
            .map_err(|e| {
                Taken::Failed(LogError::Unavailable(format!(
                    "read from seq {}: a message without stream metadata: {e}",
                    self.next
                )))
            })?;
        if seq < self.next {
            // Delivered again after the consumer was recreated; already returned.
            return Ok(());
        }
        if seq > self.next {
            return Err(Taken::Gap { found: seq });
        }
        self.next = seq.next();
        batch.entries.push(LogEntry {
            seq,
            payload: message.message.payload,
        });
        Ok(())
    }
}

fn truncated(partition: PartitionId, requested: Seq, first: Seq) -> LogError {
    LogError::Truncated {
        partition,
        requested,
        first,
    }
}

/// The error of a read from `from` whose first delivered entry was `found`.
async fn gap_error(target: ReadTarget<'_>, from: Seq, found: Seq) -> LogError {
    match streams::bounds(target.stream).await {
        Ok(bounds) if from < bounds.first => truncated(target.partition, from, bounds.first),
        Ok(bounds) => LogError::Corrupt(format!(
            "partition {} skipped seqs: expected seq {from} (the stream holds {}..={}), found {found}",
            target.partition.0, bounds.first, bounds.last
        )),
        Err(error) => error,
    }
}
