//! [`Writer`]: the one thread that appends to, syncs and truncates every partition's files.
//!
//! It takes every pending command (a bounded batch), writes all appends of the batch (one
//! positional write per partition and segment), syncs each touched file once if the policy is
//! [`FsyncPolicy::Always`], makes the records visible to readers, publishes the new last seqs and
//! only then answers the waiters. Truncations and flushes of the batch run after its appends.
//!
//! Any failure to write or sync is fatal to the writer: it answers the batch with the error and
//! stops, so later writes get [`LogError::Closed`] and the log must be reopened (which verifies
//! the files and cuts off a torn tail). Retrying a failed `fsync` is not safe, and a write error
//! leaves the file in an unknown state.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use notadb_types::Seq;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

use crate::frame;
use crate::partition::Partition;
use crate::segment::{self, Segment};
use crate::sync::SyncPool;
use crate::{FsyncPolicy, LogError};

/// Capacity of the queue of commands waiting for the writer; appenders wait when it is full.
pub(crate) const WRITE_QUEUE_CAPACITY: usize = 8192;

/// Most commands the writer takes into one batch.
const MAX_BATCH_COMMANDS: usize = 4096;

/// The writer stops adding commands to a batch once their payloads reach this many bytes.
const MAX_BATCH_BYTES: usize = 16 << 20;

/// The frame buffer is released after a batch that grew it beyond this many bytes.
const RETAINED_BUFFER_BYTES: usize = 4 << 20;

/// What the writer thread is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Append `payload` to `partition`; answer with its seq once acknowledged.
    Append {
        /// Index of the partition.
        partition: u16,
        /// The entry's bytes (already checked against the size limit).
        payload: Bytes,
        /// Receives the seq, or why the append failed.
        reply: oneshot::Sender<Result<Seq, LogError>>,
    },
    /// Delete the sealed segments of `partition` that hold only seqs below `before`.
    Truncate {
        /// Index of the partition.
        partition: u16,
        /// Entries below this seq may go.
        before: Seq,
        /// Receives the outcome.
        reply: oneshot::Sender<Result<(), LogError>>,
    },
    /// Sync every file written since its last sync.
    Flush {
        /// Receives the outcome.
        reply: oneshot::Sender<Result<(), LogError>>,
    },
}

/// Write-side state of a partition's active segment.
struct Active {
    first: Seq,
    path: Arc<Path>,
    file: Arc<File>,
    /// Bytes written to the file, acknowledged or not.
    len: u64,
    next_seq: Seq,
    /// Written since its last sync.
    dirty: bool,
}

/// An append of the current batch.
struct PendingAppend {
    partition: u16,
    payload: Bytes,
    reply: oneshot::Sender<Result<Seq, LogError>>,
}

/// The writer thread's state: it alone writes to, syncs and deletes segment files.
pub(crate) struct Writer {
    partitions: Arc<[Partition]>,
    active: Vec<Active>,
    policy: FsyncPolicy,
    segment_bytes: u64,
    /// When a file first became dirty after the last sync (drives [`FsyncPolicy::Interval`]).
    dirty_since: Option<Instant>,
    /// Reused buffer of encoded frames.
    frames: Vec<u8>,
    /// Syncs the files of several partitions in parallel.
    sync: SyncPool,
}

impl Writer {
    /// A writer appending after the last record of each partition's active segment.
    pub fn new(partitions: Arc<[Partition]>, policy: FsyncPolicy, segment_bytes: u64) -> Writer {
        let active = partitions
            .iter()
            .map(|partition| {
                let index = partition.index();
                let segment = index.active();
                Active {
                    first: segment.first,
                    path: segment.path.clone(),
                    file: segment.file.clone(),
                    len: segment.end,
                    next_seq: segment.next_seq(),
                    dirty: false,
                }
            })
            .collect();
        Writer {
            partitions,
            active,
            policy,
            segment_bytes,
            dirty_since: None,
            frames: Vec::new(),
            sync: SyncPool::new(),
        }
    }

    /// Serves `commands` until every sender is gone (then syncs and returns) or a write fails.
    /// `runtime` (current-thread, with timers) only drives the queue and the sync timer.
    pub fn run(mut self, runtime: Runtime, commands: mpsc::Receiver<Command>) {
        if let Err(error) = runtime.block_on(self.serve(commands)) {
            tracing::error!(%error, "the log writer stopped; reopen the log to write again");
        }
    }

    async fn serve(&mut self, mut commands: mpsc::Receiver<Command>) -> Result<(), LogError> {
        let mut batch = Vec::new();
        loop {
            let received = match self.sync_deadline() {
                None => commands.recv().await,
                Some(deadline) => {
                    let deadline = tokio::time::Instant::from_std(deadline);
                    match tokio::time::timeout_at(deadline, commands.recv()).await {
                        Ok(received) => received,
                        Err(_elapsed) => {
                            self.sync_dirty()?;
                            continue;
                        }
                    }
                }
            };
            let Some(command) = received else {
                break;
            };
            let mut bytes = command_bytes(&command);
            batch.push(command);
            while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
                match commands.try_recv() {
                    Ok(command) => {
                        bytes += command_bytes(&command);
                        batch.push(command);
                    }
                    Err(_) => break,
                }
            }
            self.process(&mut batch)?;
            if self
                .sync_deadline()
                .is_some_and(|deadline| deadline <= Instant::now())
            {
                self.sync_dirty()?;
            }
        }
        self.sync_dirty()
    }

    /// When dirty files must be synced next, if the policy syncs on a timer and any is dirty.
    fn sync_deadline(&self) -> Option<Instant> {
        match self.policy {
            FsyncPolicy::Interval(every) => self
                .dirty_since
                .map(|since| since.checked_add(every).unwrap_or(since)),
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        }
    }

    /// Runs one batch: appends first, then truncations, then flushes.
    fn process(&mut self, batch: &mut Vec<Command>) -> Result<(), LogError> {
        let mut appends = Vec::with_capacity(batch.len());
        let mut truncations = Vec::new();
        let mut flushes = Vec::new();
        for command in batch.drain(..) {
            match command {
                Command::Append {
                    partition,
                    payload,
                    reply,
                } => appends.push(PendingAppend {
                    partition,
                    payload,
                    reply,
                }),
                Command::Truncate {
                    partition,
                    before,
                    reply,
                } => truncations.push((partition, before, reply)),
                Command::Flush { reply } => flushes.push(reply),
            }
        }
        if !appends.is_empty() {
            self.append(appends)?;
        }
        for (partition, before, reply) in truncations {
            let _ = reply.send(self.truncate(partition, before));
        }
        if !flushes.is_empty() {
            let result = self.sync_dirty();
            for reply in flushes {
                let _ = reply.send(match &result {
                    Ok(()) => Ok(()),
                    Err(error) => Err(copy_error(error)),
                });
            }
            result?;
        }
        Ok(())
    }

    /// Writes, syncs (per policy), publishes and acknowledges `appends`.
    fn append(&mut self, mut appends: Vec<PendingAppend>) -> Result<(), LogError> {
        // Stable: each partition's appends stay in arrival order.
        appends.sort_by_key(|append| append.partition);
        let mut seqs = Vec::with_capacity(appends.len());
        let mut written: Vec<(u16, Vec<Segment>)> = Vec::new();
        let mut result = Ok(());
        for group in appends.chunk_by(|a, b| a.partition == b.partition) {
            let partition = group[0].partition;
            match self.write_partition(partition, group, &mut seqs) {
                Ok(segments) => written.push((partition, segments)),
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        if result.is_ok() {
            result = self.sync_written(written.iter().map(|(partition, _)| *partition));
        }
        if self.frames.capacity() > RETAINED_BUFFER_BYTES {
            self.frames = Vec::new();
        }
        if let Err(error) = result {
            let error = LogError::Io(error);
            for append in appends {
                let _ = append.reply.send(Err(copy_error(&error)));
            }
            return Err(error);
        }
        for (partition, segments) in written {
            let partition = usize::from(partition);
            let shared = &self.partitions[partition];
            {
                let mut index = shared.index_mut();
                for segment in segments {
                    index.commit(segment);
                }
            }
            shared
                .acked
                .send_replace(Seq(self.active[partition].next_seq.0 - 1));
        }
        for (append, seq) in appends.into_iter().zip(seqs) {
            let _ = append.reply.send(Ok(seq));
        }
        Ok(())
    }

    /// Writes the frames of `group` (appends to one partition) and returns what was written to
    /// each segment, rolling to a new segment when the active one is full.
    fn write_partition(
        &mut self,
        partition: u16,
        group: &[PendingAppend],
        seqs: &mut Vec<Seq>,
    ) -> io::Result<Vec<Segment>> {
        let dir = &self.partitions[usize::from(partition)].dir;
        let active = &mut self.active[usize::from(partition)];
        let frames = &mut self.frames;
        frames.clear();
        let mut written = Vec::new();
        let mut chunk = written_chunk(active);
        for append in group {
            if active.len > 0 && active.len >= self.segment_bytes {
                active
                    .file
                    .write_all_at(frames, chunk.end - frames.len() as u64)
                    .map_err(segment::with_path(&active.path))?;
                frames.clear();
                roll(active, dir)?;
                written.push(std::mem::replace(&mut chunk, written_chunk(active)));
            }
            chunk.offsets.push(active.len);
            seqs.push(active.next_seq);
            frame::encode(frames, active.next_seq, &append.payload);
            active.len += frame::frame_len(append.payload.len());
            active.next_seq = active.next_seq.next();
            chunk.end = active.len;
        }
        active
            .file
            .write_all_at(frames, chunk.end - frames.len() as u64)
            .map_err(segment::with_path(&active.path))?;
        active.dirty = true;
        written.push(chunk);
        Ok(written)
    }

    /// Syncs the given partitions' active files if the policy asks for it before
    /// acknowledging; otherwise notes that they are dirty.
    fn sync_written(&mut self, partitions: impl Iterator<Item = u16>) -> io::Result<()> {
        match self.policy {
            FsyncPolicy::Always => {
                let partitions: Vec<usize> = partitions.map(usize::from).collect();
                let files = partitions
                    .iter()
                    .map(|p| self.active[*p].file.clone())
                    .collect();
                self.sync.sync_data(files)?;
                for partition in partitions {
                    self.active[partition].dirty = false;
                }
            }
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => {
                if self.dirty_since.is_none() {
                    self.dirty_since = Some(Instant::now());
                }
            }
        }
        Ok(())
    }

    /// Syncs every file written since its last sync.
    fn sync_dirty(&mut self) -> Result<(), LogError> {
        let dirty = self
            .active
            .iter()
            .filter(|a| a.dirty)
            .map(|a| a.file.clone())
            .collect();
        self.sync.sync_data(dirty)?;
        for active in &mut self.active {
            active.dirty = false;
        }
        self.dirty_since = None;
        Ok(())
    }

    /// Deletes the sealed segments of `partition` holding only seqs below `before`.
    fn truncate(&mut self, partition: u16, before: Seq) -> Result<(), LogError> {
        let partition = &self.partitions[usize::from(partition)];
        let removed = partition.index_mut().remove_before(before);
        if removed.is_empty() {
            return Ok(());
        }
        for segment in &removed {
            segment::remove(segment)?;
        }
        segment::sync_dir(&partition.dir)?;
        tracing::debug!(
            dir = %partition.dir.display(),
            segments = removed.len(),
            before = before.0,
            "truncated log segments"
        );
        Ok(())
    }
}

/// Seals the active segment (synced, so that no newer segment exists before it is complete on
/// disk) and starts the next one.
fn roll(active: &mut Active, dir: &Path) -> io::Result<()> {
    active
        .file
        .sync_data()
        .map_err(segment::with_path(&active.path))?;
    let segment = Segment::create(dir, active.next_seq)?;
    *active = Active {
        first: segment.first,
        path: segment.path,
        file: segment.file,
        len: 0,
        next_seq: active.next_seq,
        dirty: false,
    };
    Ok(())
}

/// An empty description of what is about to be written to `active`.
fn written_chunk(active: &Active) -> Segment {
    Segment {
        first: active.first,
        path: active.path.clone(),
        file: active.file.clone(),
        offsets: Vec::new(),
        end: active.len,
    }
}

/// Payload bytes a command brings into a batch.
fn command_bytes(command: &Command) -> usize {
    match command {
        Command::Append { payload, .. } => payload.len() + frame::FRAME_HEADER_BYTES,
        Command::Truncate { .. } | Command::Flush { .. } => 0,
    }
}

/// A copy of `error` for another waiter (I/O errors are not `Clone`).
fn copy_error(error: &LogError) -> LogError {
    match error {
        LogError::Io(io) => LogError::Io(io::Error::new(io.kind(), io.to_string())),
        _ => LogError::Closed,
    }
}
