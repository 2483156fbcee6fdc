//! [`Writer`]: the one thread that appends to, syncs and truncates every partition's files.
//!
//! It takes every pending command (a bounded batch), writes the frames of all appends of the
//! batch, whatever their partitions, with one positional write to the active segment, syncs
//! that one file once if the policy is [`FsyncPolicy::Always`] (group commit across
//! partitions), makes the records visible to readers, publishes the new last seqs and only then
//! answers the waiters. Truncations and flushes of the batch run after its appends.
//!
//! Any failure to write or sync is fatal to the writer: it answers the batch with the error and
//! stops, so later writes get [`LogError::Closed`] and the log must be reopened (which verifies
//! the files and cuts off a torn tail). Retrying a failed `fsync` is not safe, and a write error
//! leaves the file in an unknown state.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use notadb_types::Seq;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

use crate::frame;
use crate::partition::Partition;
use crate::segment::{self, SegmentFile};
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
    /// Forget the entries of `partition` below `before`, and delete the sealed segments that
    /// no partition needs any more.
    Truncate {
        /// Index of the partition.
        partition: u16,
        /// Entries below this seq may go.
        before: Seq,
        /// Receives the outcome.
        reply: oneshot::Sender<Result<(), LogError>>,
    },
    /// Sync the active segment if it was written since its last sync.
    Flush {
        /// Receives the outcome.
        reply: oneshot::Sender<Result<(), LogError>>,
    },
}

/// An append of the current batch.
struct PendingAppend {
    partition: u16,
    payload: Bytes,
    reply: oneshot::Sender<Result<Seq, LogError>>,
}

/// Where an append of the current batch was written.
struct Placed {
    seq: Seq,
    /// The segment's number.
    segment: u64,
    offset: u64,
}

/// The writer thread's state: it alone writes to, syncs and deletes segment files.
pub(crate) struct Writer {
    partitions: Arc<[Partition]>,
    /// The directory of the segment files.
    dir: PathBuf,
    /// Oldest first; the last one is active.
    segments: VecDeque<Arc<SegmentFile>>,
    /// Bytes written to the active segment, acknowledged or not.
    active_len: u64,
    /// The seq each partition's next append gets.
    next: Vec<Seq>,
    /// Each partition's entries below this seq may go.
    truncated: Vec<Seq>,
    policy: FsyncPolicy,
    segment_bytes: u64,
    /// The active segment was written since its last sync.
    dirty: bool,
    /// When the active segment first became dirty after the last sync (drives
    /// [`FsyncPolicy::Interval`]).
    dirty_since: Option<Instant>,
    /// Reused buffer of encoded frames.
    frames: Vec<u8>,
    /// Length of the active segment's file: its frames up to `active_len`, zeros after.
    allocated: u64,
}

/// How far ahead of its frames the writer extends the active segment with zeros. The file's
/// size and block map then change once per this many bytes, not with every batch, so the
/// `fdatasync` after a batch writes its data without the file's inode most of the time.
/// Recovery reads zeros after the last frame as the clean end of the log.
const PREALLOCATE_BYTES: u64 = 1 << 20;

/// Zeros written to extend the active segment.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl Writer {
    /// A writer appending after `active_len` bytes of the last of `segments` (in `dir`), each
    /// partition's numbering going on from its index.
    pub fn new(
        partitions: Arc<[Partition]>,
        dir: PathBuf,
        segments: Vec<Arc<SegmentFile>>,
        active_len: u64,
        policy: FsyncPolicy,
        segment_bytes: u64,
    ) -> Writer {
        let next = partitions
            .iter()
            .map(|partition| partition.index().bounds().last.next())
            .collect();
        let truncated = partitions
            .iter()
            .map(|partition| partition.index().bounds().first)
            .collect();
        // Zeros after the frames, as a writer before this one left them (or none).
        let allocated = segments
            .last()
            .and_then(|active| active.file.metadata().ok())
            .map_or(active_len, |m| m.len().max(active_len));
        Writer {
            partitions,
            dir,
            segments: segments.into(),
            active_len,
            allocated,
            next,
            truncated,
            policy,
            segment_bytes,
            dirty: false,
            dirty_since: None,
            frames: Vec::new(),
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

    /// When the active segment must be synced next, if the policy syncs on a timer and it is
    /// dirty.
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
        if !truncations.is_empty() {
            for (partition, before, _) in &truncations {
                let truncated = &mut self.truncated[usize::from(*partition)];
                *truncated = (*truncated).max(*before);
            }
            let result = self.remove_unused_segments();
            for (_, _, reply) in truncations {
                let _ = reply.send(copy_result(&result));
            }
        }
        if !flushes.is_empty() {
            let result = self.sync_dirty();
            for reply in flushes {
                let _ = reply.send(copy_result(&result));
            }
            result?;
        }
        Ok(())
    }

    /// Writes, syncs (per policy), publishes and acknowledges `appends`.
    fn append(&mut self, appends: Vec<PendingAppend>) -> Result<(), LogError> {
        let mut placed = Vec::with_capacity(appends.len());
        let mut result = self.write(&appends, &mut placed);
        if result.is_ok() {
            result = self.sync_written();
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
        // Each partition's index is locked once: appends grouped by partition, in seq order.
        let mut order: Vec<usize> = (0..appends.len()).collect();
        order.sort_by_key(|i| appends[*i].partition);
        let oldest = self.segments.front().map_or(0, |s| s.number);
        for group in order.chunk_by(|a, b| appends[*a].partition == appends[*b].partition) {
            let shared = &self.partitions[usize::from(appends[group[0]].partition)];
            let mut last = Seq(0);
            {
                let mut index = shared.index_mut();
                for i in group {
                    let (append, at) = (&appends[*i], &placed[*i]);
                    let segment = &self.segments[(at.segment - oldest) as usize];
                    let len = u32::try_from(append.payload.len())
                        .expect("payload sizes are checked against the limit");
                    index.push(
                        segment,
                        at.seq,
                        at.offset,
                        len,
                        Some(append.payload.clone()),
                    );
                    last = at.seq;
                }
            }
            shared.acked.send_replace(last);
        }
        for (append, at) in appends.into_iter().zip(placed) {
            let _ = append.reply.send(Ok(at.seq));
        }
        Ok(())
    }

    /// Numbers the appends, encodes their frames and writes them to the active segment,
    /// rolling to a new segment when it is full; notes in `placed` where each went.
    fn write(&mut self, appends: &[PendingAppend], placed: &mut Vec<Placed>) -> io::Result<()> {
        self.frames.clear();
        let header = segment::header_len(self.next.len());
        for append in appends {
            let written = self.active_len + self.frames.len() as u64;
            if written >= self.segment_bytes && written > header {
                self.write_frames()?;
                self.roll()?;
            }
            let partition = usize::from(append.partition);
            let seq = self.next[partition];
            placed.push(Placed {
                seq,
                segment: self.active().number,
                offset: self.active_len + self.frames.len() as u64,
            });
            frame::encode(&mut self.frames, append.partition, seq, &append.payload);
            self.next[partition] = seq.next();
        }
        self.write_frames()
    }

    fn active(&self) -> &Arc<SegmentFile> {
        self.segments
            .back()
            .expect("there is always an active segment")
    }

    /// Writes the buffered frames at the end of the active segment.
    fn write_frames(&mut self) -> io::Result<()> {
        if self.frames.is_empty() {
            return Ok(());
        }
        let end = self.active_len + self.frames.len() as u64;
        if end > self.allocated {
            self.preallocate(end)?;
        }
        let active = self.active();
        active
            .file
            .write_all_at(&self.frames, self.active_len)
            .map_err(segment::with_path(&active.path))?;
        self.active_len += self.frames.len() as u64;
        self.frames.clear();
        self.dirty = true;
        Ok(())
    }

    /// Extends the active segment with zeros from `end` (where the frames about to be written
    /// end) to `PREALLOCATE_BYTES` past it, within the segment's size. Synced with the frames.
    fn preallocate(&mut self, end: u64) -> io::Result<()> {
        let target = end.max((end + PREALLOCATE_BYTES).min(self.segment_bytes));
        let active = self.active();
        let mut at = end;
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64);
            active
                .file
                .write_all_at(&ZEROS[..n as usize], at)
                .map_err(segment::with_path(&active.path))?;
            at += n;
        }
        self.allocated = target;
        Ok(())
    }

    /// Seals the active segment (cut to its frames and synced, so that no newer segment exists
    /// before it is complete on disk) and starts the next one, whose header records every
    /// partition's next seq.
    fn roll(&mut self) -> io::Result<()> {
        let active = self.active();
        active
            .file
            .set_len(self.active_len)
            .map_err(segment::with_path(&active.path))?;
        self.sync_active()?;
        let number = self.active().number + 1;
        let next = SegmentFile::create(&self.dir, number, &self.next)?;
        self.segments.push_back(Arc::new(next));
        self.active_len = segment::header_len(self.next.len());
        self.allocated = self.active_len;
        Ok(())
    }

    /// Syncs the active segment if the policy asks for it before acknowledging; otherwise
    /// notes that it is dirty.
    fn sync_written(&mut self) -> io::Result<()> {
        match self.policy {
            FsyncPolicy::Always => self.sync_active()?,
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => {
                if self.dirty_since.is_none() {
                    self.dirty_since = Some(Instant::now());
                }
            }
        }
        Ok(())
    }

    /// Syncs the active segment if it was written since its last sync (sealed segments were
    /// synced when sealed).
    fn sync_dirty(&mut self) -> Result<(), LogError> {
        if self.dirty {
            self.sync_active()?;
        }
        self.dirty_since = None;
        Ok(())
    }

    /// Syncs the active segment's data.
    fn sync_active(&mut self) -> io::Result<()> {
        let active = self.active();
        active
            .file
            .sync_data()
            .map_err(segment::with_path(&active.path))?;
        self.dirty = false;
        Ok(())
    }

    /// Deletes the sealed segments that hold no entry any partition still keeps, and drops
    /// their entries from the partitions' indexes: a partition keeps what a reopen would find.
    fn remove_unused_segments(&mut self) -> Result<(), LogError> {
        let active = self.active().number;
        let keep_from = self
            .partitions
            .iter()
            .zip(&self.truncated)
            .filter_map(|(partition, before)| partition.index().segment_needed_from(*before))
            .min()
            .unwrap_or(active)
            .min(active);
        if self.segments.front().is_none_or(|s| s.number >= keep_from) {
            return Ok(());
        }
        for partition in self.partitions.iter() {
            partition.index_mut().forget_segments_before(keep_from);
        }
        let mut removed = 0;
        while let Some(oldest) = self.segments.front().filter(|s| s.number < keep_from) {
            fs::remove_file(&oldest.path).map_err(segment::with_path(&oldest.path))?;
            self.segments.pop_front();
            removed += 1;
        }
        segment::sync_dir(&self.dir)?;
        tracing::debug!(dir = %self.dir.display(), segments = removed, "deleted log segments");
        Ok(())
    }
}

/// Payload bytes a command brings into a batch.
fn command_bytes(command: &Command) -> usize {
    match command {
        Command::Append { payload, .. } => payload.len() + frame::FRAME_HEADER_BYTES,
        Command::Truncate { .. } | Command::Flush { .. } => 0,
    }
}

/// A copy of `result` for another waiter.
fn copy_result(result: &Result<(), LogError>) -> Result<(), LogError> {
    result.as_ref().map_err(copy_error).copied()
}

/// A copy of `error` for another waiter (I/O errors are not `Clone`).
fn copy_error(error: &LogError) -> LogError {
    match error {
        LogError::Io(io) => LogError::Io(io::Error::new(io.kind(), io.to_string())),
        _ => LogError::Closed,
    }
}
