//! [`PartitionIndex`]: where each acknowledged entry of one partition is, and the newest
//! entries themselves.
//!
//! Entries `first..next` are described by runs, one per segment they lie in. The newest
//! entries are also kept in memory (up to a byte budget per partition), so that the apply
//! loop, which reads what was just appended, gets the appended bytes back without a system
//! call or a copy.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use notadb_types::Seq;

use crate::frame;
use crate::read::ReadChunk;
use crate::segment::SegmentFile;
use crate::{LogBounds, LogEntry};

/// Frames of a partition closer together than this in a segment are read with one `pread`,
/// the other partitions' frames between them included. Copying a gap (and zeroing the buffer
/// first) costs about as much as another `pread` at a few KiB; with 32 KiB, a reader of one of
/// 64 evenly written partitions copied every partition's bytes, and the transmitter draining a
/// backlog of 1,000,000 writes went 215-218k -> 246-268k rows/s at 4 KiB.
pub(crate) const READ_GAP_BYTES: u64 = 4 << 10;

/// Where one entry's frame is.
#[derive(Clone, Copy, Debug)]
struct Loc {
    offset: u64,
    /// Payload bytes.
    len: u32,
}

/// Consecutive entries of a partition in one segment.
#[derive(Debug)]
struct Run {
    segment: Arc<SegmentFile>,
    first: Seq,
    frames: VecDeque<Loc>,
}

/// What a read of a partition finds.
pub(crate) enum Planned {
    /// The entries, from memory.
    Memory(Vec<LogEntry>),
    /// Byte ranges of segment files to read.
    Files(Vec<ReadChunk>),
}

/// One partition's acknowledged entries.
#[derive(Debug)]
pub(crate) struct PartitionIndex {
    /// The oldest readable seq.
    first: Seq,
    /// The seq the next entry gets.
    next: Seq,
    runs: VecDeque<Run>,
    /// The newest entries' payloads: those of `next - tail.len()..next`.
    tail: VecDeque<Bytes>,
    tail_bytes: usize,
    tail_budget: usize,
}

impl PartitionIndex {
    /// An empty index whose next entry is `next`, keeping up to `tail_budget` bytes of the
    /// newest entries in memory.
    pub fn new(next: Seq, tail_budget: usize) -> PartitionIndex {
        PartitionIndex {
            first: next,
            next,
            runs: VecDeque::new(),
            tail: VecDeque::new(),
            tail_bytes: 0,
            tail_budget,
        }
    }

    /// The seqs the partition holds.
    pub fn bounds(&self) -> LogBounds {
        LogBounds {
            first: self.first,
            last: Seq(self.next.0 - 1),
        }
    }

    /// Notes entry `seq` (which must be the next) at `offset` of `segment`, `len` payload bytes,
    /// keeping `payload` in memory when given (the oldest kept ones beyond the budget go). An
    /// entry not kept empties the tail, which holds only the newest entries, without a gap.
    pub fn push(
        &mut self,
        segment: &Arc<SegmentFile>,
        seq: Seq,
        offset: u64,
        len: u32,
        payload: Option<Bytes>,
    ) {
        assert_eq!(seq, self.next, "entries are indexed in seq order");
        let loc = Loc { offset, len };
        match self.runs.back_mut() {
            Some(run) if run.segment.number == segment.number => run.frames.push_back(loc),
            _ => self.runs.push_back(Run {
                segment: segment.clone(),
                first: seq,
                frames: VecDeque::from([loc]),
            }),
        }
        self.next = seq.next();
        match payload {
            Some(payload) => {
                self.tail_bytes += payload.len();
                self.tail.push_back(payload);
                while self.tail_bytes > self.tail_budget && self.drop_oldest_kept() {}
            }
            None => {
                self.tail.clear();
                self.tail_bytes = 0;
            }
        }
    }

    /// The seq of the oldest entry kept in memory (`next` when none is).
    fn tail_first(&self) -> Seq {
        Seq(self.next.0 - self.tail.len() as u64)
    }

    /// Drops the oldest entry kept in memory; false if none is.
    fn drop_oldest_kept(&mut self) -> bool {
        match self.tail.pop_front() {
            Some(oldest) => {
                self.tail_bytes -= oldest.len();
                true
            }
            None => false,
        }
    }

    /// The number of the oldest segment a reader from seq `from` needs, if any.
    pub fn segment_needed_from(&self, from: Seq) -> Option<u64> {
        let from = from.max(self.first);
        if from >= self.next {
            return None;
        }
        let at = self.runs.partition_point(|run| run.first <= from) - 1;
        Some(self.runs[at].segment.number)
    }

    /// Forgets the entries in segments numbered below `number` (deleted): what a reopen would
    /// no longer find.
    pub fn forget_segments_before(&mut self, number: u64) {
        while self
            .runs
            .front()
            .is_some_and(|run| run.segment.number < number)
        {
            self.runs.pop_front();
        }
        self.first = self.runs.front().map_or(self.next, |run| run.first);
        while self.tail_first() < self.first && self.drop_oldest_kept() {}
    }

    /// How to read up to `max` entries from `from` (within the bounds), about `max_bytes` at
    /// most but at least one entry: from memory when the tail holds `from`.
    pub fn plan_read(&self, from: Seq, max: usize, max_bytes: u64) -> Planned {
        debug_assert!(self.first <= from && from < self.next && max > 0);
        let tail_first = self.tail_first();
        if from >= tail_first && !self.tail.is_empty() {
            let mut bytes = 0u64;
            let entries = self
                .tail
                .range((from.0 - tail_first.0) as usize..)
                .take(max)
                .take_while(|payload| {
                    let first = bytes == 0;
                    bytes += frame::frame_len(payload.len());
                    first || bytes <= max_bytes
                })
                .enumerate()
                .map(|(i, payload)| LogEntry {
                    seq: Seq(from.0 + i as u64),
                    payload: payload.clone(),
                })
                .collect();
            return Planned::Memory(entries);
        }
        let start = self.runs.partition_point(|run| run.first <= from) - 1;
        let mut chunks: Vec<ReadChunk> = Vec::new();
        let mut seq = from;
        let mut left = max;
        let mut bytes = 0u64;
        'runs: for run in self.runs.range(start..) {
            let skip = (seq.0 - run.first.0) as usize;
            for loc in run.frames.range(skip..) {
                let end = loc.offset + frame::frame_len(loc.len as usize);
                let joins = chunks.last().is_some_and(|chunk| {
                    chunk.segment.number == run.segment.number
                        && loc.offset.saturating_sub(chunk.end) <= READ_GAP_BYTES
                });
                let added = if joins {
                    end - chunks.last().map_or(end, |chunk| chunk.end)
                } else {
                    end - loc.offset
                };
                if bytes > 0 && bytes + added > max_bytes {
                    break 'runs;
                }
                bytes += added;
                match chunks.last_mut() {
                    Some(chunk) if joins => {
                        chunk.end = end;
                        chunk.frames.push(loc.offset);
                    }
                    _ => chunks.push(ReadChunk {
                        segment: run.segment.clone(),
                        start: loc.offset,
                        end,
                        first: seq,
                        frames: vec![loc.offset],
                    }),
                }
                seq = seq.next();
                left -= 1;
                if left == 0 {
                    break 'runs;
                }
            }
        }
        Planned::Files(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of header before each payload.
    const HEADER: u64 = crate::frame::FRAME_HEADER_BYTES as u64;

    fn segment(number: u64) -> Arc<SegmentFile> {
        Arc::new(SegmentFile {
            number,
            path: format!("{number}.wal").into(),
            file: tempfile::tempfile().expect("temp file"),
        })
    }

    /// An index of entries 1..=n, entry i of `len(i)` payload bytes at `offset(i)` in
    /// segment `segment_of(i)`.
    fn index(
        n: u64,
        segment_of: impl Fn(u64) -> u64,
        offset: impl Fn(u64) -> u64,
    ) -> PartitionIndex {
        let mut index = PartitionIndex::new(Seq(1), 0);
        let mut segments: Vec<Arc<SegmentFile>> = Vec::new();
        for i in 1..=n {
            let number = segment_of(i);
            if segments.last().is_none_or(|s| s.number != number) {
                segments.push(segment(number));
            }
            index.push(
                segments.last().expect("pushed"),
                Seq(i),
                offset(i),
                10,
                None,
            );
        }
        index
    }

    fn chunks(planned: Planned) -> Vec<(u64, u64, u64, u64, usize)> {
        match planned {
            Planned::Files(chunks) => chunks
                .iter()
                .map(|c| (c.segment.number, c.first.0, c.start, c.end, c.frames.len()))
                .collect(),
            Planned::Memory(_) => panic!("expected a plan of file reads"),
        }
    }

    #[test]
    fn bounds_follow_pushes_and_deleted_segments() {
        let mut idx = PartitionIndex::new(Seq(5), 0);
        assert_eq!(
            idx.bounds(),
            LogBounds {
                first: Seq(5),
                last: Seq(4)
            }
        );
        let (one, two) = (segment(1), segment(2));
        idx.push(&one, Seq(5), 100, 1, None);
        idx.push(&two, Seq(6), 200, 1, None);
        assert_eq!(
            idx.bounds(),
            LogBounds {
                first: Seq(5),
                last: Seq(6)
            }
        );
        idx.forget_segments_before(2);
        assert_eq!(
            idx.bounds(),
            LogBounds {
                first: Seq(6),
                last: Seq(6)
            }
        );
        idx.forget_segments_before(3);
        assert_eq!(
            idx.bounds(),
            LogBounds {
                first: Seq(7),
                last: Seq(6)
            }
        );
        assert_eq!(idx.segment_needed_from(Seq(1)), None);
    }

    #[test]
    fn nearby_frames_share_a_read_and_segments_split_reads() {
        // Entries 1..=6 in segment 1, 7..=9 in segment 2; entry 4 lies far from entry 3.
        let idx = index(
            9,
            |i| if i <= 6 { 1 } else { 2 },
            |i| match i {
                1..=3 => 100 * i,
                4..=6 => 1_000_000 + 100 * i,
                _ => 100 * i,
            },
        );
        assert_eq!(
            chunks(idx.plan_read(Seq(2), 100, u64::MAX)),
            vec![
                (1, 2, 200, 300 + HEADER + 10, 2),
                (1, 4, 1_000_400, 1_000_600 + HEADER + 10, 3),
                (2, 7, 700, 900 + HEADER + 10, 3),
            ]
        );
        assert_eq!(
            chunks(idx.plan_read(Seq(5), 3, u64::MAX)),
            vec![
                (1, 5, 1_000_500, 1_000_600 + HEADER + 10, 2),
                (2, 7, 700, 700 + HEADER + 10, 1)
            ]
        );
    }

    #[test]
    fn reads_stop_at_the_byte_cap_but_return_one_entry() {
        let idx = index(3, |_| 1, |i| 1_000_000 * i);
        assert_eq!(chunks(idx.plan_read(Seq(1), 10, 1)).len(), 1);
        assert_eq!(
            chunks(idx.plan_read(Seq(1), 10, 2 * (HEADER + 10))).len(),
            2
        );
    }

    #[test]
    fn the_segment_a_reader_needs_and_forgetting_deleted_ones() {
        // Entries 1..=3 in segment 1, 4..=6 in segment 2, 7..=9 in segment 3.
        let mut idx = index(9, |i| i.div_ceil(3), |i| 100 * i);
        assert_eq!(idx.segment_needed_from(Seq(1)), Some(1));
        assert_eq!(idx.segment_needed_from(Seq(4)), Some(2));
        assert_eq!(idx.segment_needed_from(Seq(9)), Some(3));
        assert_eq!(idx.segment_needed_from(Seq(10)), None);
        idx.forget_segments_before(2);
        assert_eq!(idx.bounds().first, Seq(4));
        assert_eq!(idx.segment_needed_from(Seq(1)), Some(2));
        assert_eq!(
            chunks(idx.plan_read(Seq(5), 100, u64::MAX))[0],
            (2, 5, 500, 600 + HEADER + 10, 2)
        );
    }

    #[test]
    fn the_tail_serves_the_newest_entries_within_its_budget() {
        let mut idx = PartitionIndex::new(Seq(1), 25);
        let s = segment(1);
        for i in 1..=4u64 {
            idx.push(
                &s,
                Seq(i),
                100 * i,
                10,
                Some(Bytes::from(vec![i as u8; 10])),
            );
        }
        // Budget 25 bytes: entries 3 and 4 stay in memory.
        match idx.plan_read(Seq(3), 10, u64::MAX) {
            Planned::Memory(entries) => {
                let seqs: Vec<u64> = entries.iter().map(|e| e.seq.0).collect();
                assert_eq!(seqs, vec![3, 4]);
                assert_eq!(entries[1].payload, Bytes::from(vec![4u8; 10]));
            }
            Planned::Files(_) => panic!("entry 3 is in memory"),
        }
        assert_eq!(
            chunks(idx.plan_read(Seq(2), 10, u64::MAX)).len(),
            1,
            "entry 2 is not"
        );
    }
}
