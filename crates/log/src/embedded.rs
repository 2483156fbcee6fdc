//! [`EmbeddedLog`]: the single-node log on local files, durable across kill -9 (and, with
//! [`FsyncPolicy::Always`], power loss).
//!
//! Layout of the log directory:
//!
//! ```text
//! LOG_META                         format version and partition count
//! wal/00000000000000000001.wal     segments shared by every partition, numbered in order
//! wal/00000000000000000002.wal
//! ```
//!
//! A segment is a header (each partition's next seq when the segment was started) and a
//! sequence of frames `len u32 LE | crc32 u32 LE | partition u16 LE | 0u16 | seq u64 LE |
//! payload` (the CRC covers everything after it). Only one process may open a log directory at
//! a time; this is not enforced. A log of the first format (a directory of segments per
//! partition) is converted when it is opened (see the `legacy` module).
//!
//! One writer thread appends for every partition into the one active segment, so one
//! `fdatasync` acknowledges a batch of appends to any partitions (see the `writer` module).
//! Readers go through an in-memory index of acknowledged records, so they never see an entry
//! before its append is acknowledged: the newest entries of each partition are served from
//! memory, older ones by positional reads of the segment files (reads of up to 64 KiB inline on
//! the calling task, larger ones on tokio's blocking pool). A sealed segment is deleted once
//! every partition has truncated the entries it holds.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use notadb_types::{PartitionId, Seq};
use tokio::sync::{mpsc, oneshot};

use crate::frame::MAX_FRAME_PAYLOAD_BYTES;
use crate::index::Planned;
use crate::partition::Partition;
use crate::read::{self, MAX_READ_BYTES};
use crate::segment::{self, sync_dir, with_path, WAL_DIR};
use crate::writer::{Command, Writer, WRITE_QUEUE_CAPACITY};
use crate::{meta, EmbeddedLogOptions, FsyncPolicy, Log, LogBounds, LogEntry, LogError};

/// A durable, in-process [`Log`] on local files. Cheap to clone: clones share one log.
///
/// Dropping the last clone stops the writer thread after it has written and synced everything
/// it was given.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    partitions: Arc<[Partition]>,
    max_entry_bytes: usize,
    fsync: FsyncPolicy,
    /// `None` only while dropping.
    commands: Option<mpsc::Sender<Command>>,
    /// `None` only while dropping.
    writer: Option<thread::JoinHandle<()>>,
}

impl EmbeddedLog {
    /// Opens the log in `dir` with `partitions` partitions, creating it if `dir` holds none.
    ///
    /// Converts a log of the first format (a directory per partition); verifies every record;
    /// cuts a torn tail off the newest segment (logging a warning); fails with
    /// [`LogError::PartitionCount`] if the existing log has another partition count and
    /// [`LogError::Corrupt`] if older data is damaged. Blocking: meant to be called at
    /// start-up.
    pub fn open(
        dir: &Path,
        partitions: u16,
        options: EmbeddedLogOptions,
    ) -> Result<EmbeddedLog, LogError> {
        fs::create_dir_all(dir).map_err(with_path(dir))?;
        if meta::open_or_create(dir, partitions)? == meta::LEGACY_FORMAT {
            crate::legacy::convert(dir, partitions)?;
        }
        crate::legacy::remove_leftovers(dir)?;
        let wal = dir.join(WAL_DIR);
        let tail_bytes = options.tail_bytes / usize::from(partitions.max(1));
        let recovered = segment::recover(&wal, usize::from(partitions), tail_bytes)?;
        // The segment directory may be new: make its entry durable before any append.
        sync_dir(dir)?;
        let opened: Arc<[Partition]> = recovered.indexes.into_iter().map(Partition::new).collect();
        let writer = Writer::new(
            opened.clone(),
            wal,
            recovered.segments,
            recovered.active_len,
            options.fsync,
            options.segment_bytes,
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let (commands, queue) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let writer = thread::Builder::new()
            .name("notadb-log-writer".to_string())
            .spawn(move || writer.run(runtime, queue))?;
        tracing::debug!(dir = %dir.display(), partitions, "opened the embedded log");
        Ok(EmbeddedLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                partitions: opened,
                max_entry_bytes: options.max_entry_bytes.min(MAX_FRAME_PAYLOAD_BYTES),
                fsync: options.fsync,
                commands: Some(commands),
                writer: Some(writer),
            }),
        })
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn partition(&self, partition: PartitionId) -> Result<&Partition, LogError> {
        crate::log::partition_slot(&self.inner.partitions, partition)
    }

    /// Sends `command` to the writer and waits for its answer on `answer`.
    async fn call<T>(
        &self,
        command: Command,
        answer: oneshot::Receiver<Result<T, LogError>>,
    ) -> Result<T, LogError> {
        let commands = self
            .inner
            .commands
            .as_ref()
            .expect("the command sender is only taken when the last handle drops");
        commands.send(command).await.map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }
}

#[async_trait::async_trait]
impl Log for EmbeddedLog {
    fn partitions(&self) -> u16 {
        u16::try_from(self.inner.partitions.len()).expect("opened with a u16 partition count")
    }

    /// Concurrent appends to any partitions share one write and one `fdatasync`.
    fn groups_appends(&self) -> bool {
        true
    }

    async fn append(&self, partition: PartitionId, payload: Bytes) -> Result<Seq, LogError> {
        self.partition(partition)?;
        if payload.len() > self.inner.max_entry_bytes {
            return Err(LogError::EntryTooLarge {
                size: payload.len(),
                max: self.inner.max_entry_bytes,
            });
        }
        let (reply, answer) = oneshot::channel();
        let command = Command::Append {
            partition: partition.0,
            payload,
            reply,
        };
        self.call(command, answer).await
    }

    async fn read(
        &self,
        partition: PartitionId,
        from: Seq,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<LogEntry>, LogError> {
        let shared = self.partition(partition)?;
        let from = from.max(Seq(1));
        let deadline = tokio::time::Instant::now().checked_add(wait);
        let mut acked = shared.acked.subscribe();
        loop {
            let planned = {
                let index = shared.index();
                let bounds = index.bounds();
                if from < bounds.first {
                    return Err(LogError::Truncated {
                        partition,
                        requested: from,
                        first: bounds.first,
                    });
                }
                if max == 0 {
                    return Ok(Vec::new());
                }
                (from <= bounds.last).then(|| index.plan_read(from, max, MAX_READ_BYTES))
            };
            match planned {
                Some(Planned::Memory(entries)) => return Ok(entries),
                Some(Planned::Files(chunks)) => {
                    return read::read_entries(partition.0, chunks).await
                }
                None => {}
            }
            // The writer publishes a seq only after committing it to the index, so once the
            // watch reaches `from` the next pass finds the entry.
            let arrived = acked.wait_for(|last| *last >= from);
            let woken = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, arrived).await {
                    Ok(woken) => woken.map(drop),
                    Err(_elapsed) => return Ok(Vec::new()),
                },
                None => arrived.await.map(drop),
            };
            woken.map_err(|_| LogError::Closed)?;
        }
    }

    async fn truncate_before(&self, partition: PartitionId, before: Seq) -> Result<(), LogError> {
        let shared = self.partition(partition)?;
        if before <= shared.index().bounds().first {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let command = Command::Truncate {
            partition: partition.0,
            before,
            reply,
        };
        self.call(command, answer).await
    }

    async fn bounds(&self, partition: PartitionId) -> Result<LogBounds, LogError> {
        Ok(self.partition(partition)?.index().bounds())
    }

    async fn flush(&self) -> Result<(), LogError> {
        let (reply, answer) = oneshot::channel();
        self.call(Command::Flush { reply }, answer).await
    }
}

impl fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("dir", &self.inner.dir)
            .field("partitions", &self.inner.partitions.len())
            .field("fsync", &self.inner.fsync)
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain it, sync, and exit.
        drop(self.commands.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(dir = %self.dir.display(), "the log writer thread panicked");
            }
        }
    }
}
