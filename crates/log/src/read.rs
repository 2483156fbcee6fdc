//! Reading entries back from segment files, verified frame by frame.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use notadb_types::Seq;

use crate::frame::{FrameHeader, FRAME_HEADER_BYTES};
use crate::segment::SegmentFile;
use crate::{LogEntry, LogError};

/// A read returns about this many bytes at most (but always at least one entry).
pub(crate) const MAX_READ_BYTES: u64 = 16 << 20;

/// Reads of up to this many bytes run on the calling task; larger ones on the blocking pool.
pub(crate) const INLINE_READ_BYTES: u64 = 64 << 10;

/// One positional read: bytes `start..end` of a segment, holding the frames of consecutive
/// entries of one partition from seq `first` at the offsets `frames` (other partitions'
/// frames may lie between them).
#[derive(Debug)]
pub(crate) struct ReadChunk {
    pub segment: Arc<SegmentFile>,
    pub start: u64,
    pub end: u64,
    pub first: Seq,
    pub frames: Vec<u64>,
}

/// Reads the entries `chunks` describe, inline or on the blocking pool by size.
pub(crate) async fn read_entries(
    partition: u16,
    chunks: Vec<ReadChunk>,
) -> Result<Vec<LogEntry>, LogError> {
    let bytes: u64 = chunks.iter().map(|c| c.end - c.start).sum();
    if bytes <= INLINE_READ_BYTES {
        return read_chunks(partition, &chunks);
    }
    match tokio::task::spawn_blocking(move || read_chunks(partition, &chunks)).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(LogError::Closed),
    }
}

/// Reads and verifies the entries of `partition` that `chunks` describe.
pub(crate) fn read_chunks(partition: u16, chunks: &[ReadChunk]) -> Result<Vec<LogEntry>, LogError> {
    let mut entries = Vec::with_capacity(chunks.iter().map(|c| c.frames.len()).sum());
    for chunk in chunks {
        let len = usize::try_from(chunk.end - chunk.start)
            .expect("read plans are capped far below usize::MAX bytes");
        let mut buffer = vec![0u8; len];
        chunk.segment.file.read_exact_at(&mut buffer, chunk.start)?;
        let buffer = Bytes::from(buffer);
        for (i, offset) in chunk.frames.iter().enumerate() {
            let expected = Seq(chunk.first.0 + i as u64);
            let corrupt = |found: &str| {
                LogError::Corrupt(format!(
                    "{}: expected the frame of seq {} of partition {partition} at offset {offset}, \
                     found {found}",
                    chunk.segment.path.display(),
                    expected.0,
                ))
            };
            let at = (offset - chunk.start) as usize;
            let header: &[u8; FRAME_HEADER_BYTES] = buffer
                .get(at..at + FRAME_HEADER_BYTES)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| corrupt("the end of the indexed range"))?;
            let header = FrameHeader::decode(header);
            let payload_at = at + FRAME_HEADER_BYTES;
            let payload_end = payload_at + header.len as usize;
            if payload_end > buffer.len() {
                return Err(corrupt("a frame running past the indexed range"));
            }
            if (header.partition, header.seq) != (partition, expected) {
                return Err(corrupt(&format!(
                    "seq {} of partition {}",
                    header.seq.0, header.partition
                )));
            }
            let payload = buffer.slice(payload_at..payload_end);
            if !header.matches(&payload) {
                return Err(corrupt("a checksum mismatch"));
            }
            entries.push(LogEntry {
                seq: expected,
                payload,
            });
        }
    }
    Ok(entries)
}
