//! [`PartitionIndex`]: where each acknowledged record of a partition is.

use std::collections::VecDeque;

use notadb_types::Seq;

use crate::read::ReadChunk;
use crate::segment::Segment;
use crate::LogBounds;

/// A partition's segments, oldest first, holding only acknowledged records.
///
/// Never empty: the last segment is the one the writer appends to, and it is never removed.
#[derive(Debug)]
pub(crate) struct PartitionIndex {
    segments: VecDeque<Segment>,
}

impl PartitionIndex {
    /// An index over `segments`, which must be contiguous, oldest first, and not empty.
    pub fn new(segments: VecDeque<Segment>) -> PartitionIndex {
        assert!(!segments.is_empty(), "a partition always has a segment");
        PartitionIndex { segments }
    }

    /// The newest segment: the one the writer appends to.
    pub fn active(&self) -> &Segment {
        self.segments
            .back()
            .expect("a partition always has a segment")
    }

    /// The seqs this partition holds.
    pub fn bounds(&self) -> LogBounds {
        let front = self
            .segments
            .front()
            .expect("a partition always has a segment");
        LogBounds {
            first: front.first,
            last: Seq(self.active().next_seq().0 - 1),
        }
    }

    /// The byte ranges holding records `from..` (at most `max` of them, and no more than
    /// `max_bytes` of frames unless one record alone is larger). `from` must be within
    /// [`bounds`](Self::bounds) and `max` positive.
    pub fn plan_read(&self, from: Seq, max: usize, max_bytes: u64) -> Vec<ReadChunk> {
        let start = self.segments.partition_point(|s| s.first <= from) - 1;
        let mut chunks = Vec::new();
        let mut seq = from;
        let mut left = max;
        let mut bytes = 0u64;
        for segment in self.segments.range(start..) {
            let from_index = (seq.0 - segment.first.0) as usize;
            let mut to_index = from_index;
            while to_index < segment.offsets.len() && left > 0 {
                let (begin, end) = segment.byte_range(to_index, to_index + 1);
                if bytes > 0 && bytes + (end - begin) > max_bytes {
                    left = 0;
                    break;
                }
                bytes += end - begin;
                to_index += 1;
                left -= 1;
            }
            if to_index > from_index {
                let (begin, end) = segment.byte_range(from_index, to_index);
                chunks.push(ReadChunk {
                    file: segment.file.clone(),
                    path: segment.path.clone(),
                    start: begin,
                    end,
                    first: seq,
                    count: to_index - from_index,
                });
                seq = Seq(seq.0 + (to_index - from_index) as u64);
            }
            if left == 0 {
                break;
            }
        }
        chunks
    }

    /// Makes the records the writer appended (described by `appended`: the segment's first
    /// seq, file, and the new records' offsets) visible to readers. `appended` extends the
    /// active segment or starts the next one.
    pub fn commit(&mut self, appended: Segment) {
        let active = self
            .segments
            .back_mut()
            .expect("a partition always has a segment");
        if active.first == appended.first {
            debug_assert!(appended.offsets.first().is_none_or(|o| *o == active.end));
            active.offsets.extend_from_slice(&appended.offsets);
            active.end = appended.end;
        } else {
            debug_assert_eq!(appended.first, active.next_seq());
            self.segments.push_back(appended);
        }
    }

    /// Removes, oldest first, the segments whose records all have seq < `before`, never the
    /// active one, and returns them.
    pub fn remove_before(&mut self, before: Seq) -> Vec<Segment> {
        let sealed = self.segments.len() - 1;
        let count = self
            .segments
            .iter()
            .take(sealed)
            .take_while(|s| s.next_seq() <= before)
            .count();
        self.segments.drain(..count).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;

    /// A segment starting at `first` whose records are `sizes` bytes long (frames included).
    fn segment(first: u64, sizes: &[u64]) -> Segment {
        let mut offsets = Vec::new();
        let mut end = 0;
        for size in sizes {
            offsets.push(end);
            end += size;
        }
        Segment {
            first: Seq(first),
            path: Arc::from(Path::new("test.seg")),
            file: Arc::new(tempfile::tempfile().expect("temp file")),
            offsets,
            end,
        }
    }

    fn index(segments: Vec<Segment>) -> PartitionIndex {
        PartitionIndex::new(segments.into())
    }

    fn summary(chunks: &[ReadChunk]) -> Vec<(u64, usize, u64, u64)> {
        chunks
            .iter()
            .map(|c| (c.first.0, c.count, c.start, c.end))
            .collect()
    }

    #[test]
    fn bounds_of_empty_full_and_truncated_partitions() {
        let empty = index(vec![segment(1, &[])]);
        assert_eq!(
            empty.bounds(),
            LogBounds {
                first: Seq(1),
                last: Seq(0)
            }
        );
        let mut two = index(vec![segment(1, &[10, 10]), segment(3, &[10])]);
        assert_eq!(
            two.bounds(),
            LogBounds {
                first: Seq(1),
                last: Seq(3)
            }
        );
        two.remove_before(Seq(100));
        assert_eq!(
            two.bounds(),
            LogBounds {
                first: Seq(3),
                last: Seq(3)
            }
        );
    }

    #[test]
    fn reads_span_segments_and_stop_at_max() {
        let idx = index(vec![
            segment(1, &[10, 20, 30]),
            segment(4, &[40, 50]),
            segment(6, &[60]),
        ]);
        assert_eq!(
            summary(&idx.plan_read(Seq(2), 10, u64::MAX)),
            vec![(2, 2, 10, 60), (4, 2, 0, 90), (6, 1, 0, 60)]
        );
        assert_eq!(
            summary(&idx.plan_read(Seq(3), 2, u64::MAX)),
            vec![(3, 1, 30, 60), (4, 1, 0, 40)]
        );
        assert_eq!(
            summary(&idx.plan_read(Seq(6), 1, u64::MAX)),
            vec![(6, 1, 0, 60)]
        );
    }

    #[test]
    fn reads_stop_at_the_byte_cap_but_return_one_entry() {
        let idx = index(vec![segment(1, &[100, 100, 100])]);
        assert_eq!(
            summary(&idx.plan_read(Seq(1), 10, 250)),
            vec![(1, 2, 0, 200)]
        );
        assert_eq!(
            summary(&idx.plan_read(Seq(1), 10, 50)),
            vec![(1, 1, 0, 100)]
        );
    }

    #[test]
    fn commit_extends_the_active_segment_or_starts_the_next() {
        let mut idx = index(vec![segment(1, &[10])]);
        let mut more = segment(1, &[]);
        more.offsets = vec![10, 25];
        more.end = 40;
        idx.commit(more);
        idx.commit(segment(4, &[5]));
        assert_eq!(idx.bounds().last, Seq(4));
        assert_eq!(
            summary(&idx.plan_read(Seq(1), 10, u64::MAX)),
            vec![(1, 3, 0, 40), (4, 1, 0, 5)]
        );
    }

    #[test]
    fn truncation_removes_only_whole_sealed_segments() {
        let mut idx = index(vec![
            segment(1, &[1, 1]),
            segment(3, &[1, 1]),
            segment(5, &[1]),
        ]);
        assert!(
            idx.remove_before(Seq(2)).is_empty(),
            "seq 2 is still needed"
        );
        let removed = idx.remove_before(Seq(3));
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].first, Seq(1));
        let removed = idx.remove_before(Seq(u64::MAX));
        assert_eq!(removed.len(), 1, "the active segment stays");
        assert_eq!(idx.bounds().first, Seq(5));
    }
}
