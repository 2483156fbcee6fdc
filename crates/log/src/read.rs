//! Reading planned byte ranges of segment files back into entries.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use notadb_types::Seq;

use crate::frame::{FrameHeader, FRAME_HEADER_BYTES};
use crate::{LogEntry, LogError};

/// Most frame bytes one read returns (it returns at least one entry, however large).
pub(crate) const MAX_READ_BYTES: u64 = 16 << 20;

/// Reads of at most this many bytes run inline on the async worker (a positional read of a
/// recently written, page-cached range takes microseconds); larger ones go to
/// `spawn_blocking`.
pub(crate) const INLINE_READ_BYTES: u64 = 64 << 10;

/// Contiguous records of one segment to read: bytes `start..end` hold `count` frames, the
/// first with seq `first`.
#[derive(Debug)]
pub(crate) struct ReadChunk {
    /// The segment file; kept open even if the segment is deleted meanwhile.
    pub file: Arc<File>,
    /// The segment's path, for error messages.
    pub path: Arc<Path>,
    /// Offset of the first frame.
    pub start: u64,
    /// Offset just past the last frame.
    pub end: u64,
    /// Seq of the first frame.
    pub first: Seq,
    /// Number of frames.
    pub count: usize,
}

/// Reads `chunks`, inline or on the blocking pool depending on their size.
pub(crate) async fn read_entries(chunks: Vec<ReadChunk>) -> Result<Vec<LogEntry>, LogError> {
    let bytes: u64 = chunks.iter().map(|c| c.end - c.start).sum();
    if bytes <= INLINE_READ_BYTES {
        return read_chunks(&chunks);
    }
    match tokio::task::spawn_blocking(move || read_chunks(&chunks)).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(LogError::Closed),
    }
}

/// Reads `chunks` with positional reads and verifies every frame.
pub(crate) fn read_chunks(chunks: &[ReadChunk]) -> Result<Vec<LogEntry>, LogError> {
    let mut entries = Vec::with_capacity(chunks.iter().map(|c| c.count).sum());
    for chunk in chunks {
        let len = usize::try_from(chunk.end - chunk.start)
            .expect("read plans are capped far below usize::MAX bytes");
        let mut buffer = vec![0u8; len];
        chunk.file.read_exact_at(&mut buffer, chunk.start)?;
        let buffer = Bytes::from(buffer);
        let mut at = 0usize;
        for i in 0..chunk.count {
            let expected = Seq(chunk.first.0 + i as u64);
            let corrupt = |found: &str| {
                LogError::Corrupt(format!(
                    "{}: expected the frame of seq {} at offset {}, found {found}",
                    chunk.path.display(),
                    expected.0,
                    chunk.start + at as u64
                ))
            };
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
            if header.seq != expected {
                return Err(corrupt(&format!("seq {}", header.seq.0)));
            }
            let payload = buffer.slice(payload_at..payload_end);
            if !header.matches(&payload) {
                return Err(corrupt("a checksum mismatch"));
            }
            entries.push(LogEntry {
                seq: expected,
                payload,
            });
            at = payload_end;
        }
    }
    Ok(entries)
}
