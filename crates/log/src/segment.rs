//! [`SegmentFile`]: one file of the node-wide log, and how a directory of them is recovered.
//!
//! Every partition appends to the same active segment, so one `fdatasync` makes a whole batch
//! of appends durable whatever partitions they went to. A segment starts with a header that
//! records, for every partition, the seq its next entry gets: once older segments are deleted
//! the oldest one left still says where each partition's numbering stands.
//!
//! Header: `magic "notadbWL" | partitions u16 LE | 0u16 | 0u32 | number u64 LE |
//! next seq u64 LE per partition | crc32 u32 LE` (the CRC covers everything before it). Frames
//! (see the `frame` module) follow. The active segment's file runs on past its last frame with
//! zeros that the writer wrote ahead (so that its size does not change with every sync); a
//! sealed segment is cut to its last frame.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notadb_types::Seq;

use crate::frame::{FrameHeader, FRAME_HEADER_BYTES};
use crate::index::PartitionIndex;
use crate::LogError;

/// The directory of segment files inside a log directory.
pub(crate) const WAL_DIR: &str = "wal";

/// Suffix of segment file names; the stem is the segment's number in 20 digits.
const SEGMENT_SUFFIX: &str = ".wal";

/// Digits of the number in a segment file name (enough for any `u64`).
const SEGMENT_NAME_DIGITS: usize = 20;

/// First bytes of every segment.
const MAGIC: &[u8; 8] = b"notadbWL";

/// Read buffer used when scanning a segment at open.
const SCAN_BUFFER_BYTES: usize = 1 << 20;

/// One segment file, shared by the writer and every reader (positional I/O only).
#[derive(Debug)]
pub(crate) struct SegmentFile {
    /// The segment's number: segments are numbered 1, 2, ... in the order they were started.
    pub number: u64,
    pub path: PathBuf,
    pub file: File,
}

/// Bytes of the header of a segment of a log with `partitions` partitions.
pub(crate) fn header_len(partitions: usize) -> u64 {
    (24 + 8 * partitions + 4) as u64
}

/// The header of segment `number`, whose partitions' next seqs are `next`.
pub(crate) fn encode_header(number: u64, next: &[Seq]) -> Vec<u8> {
    let partitions = u16::try_from(next.len()).expect("at most 65535 partitions");
    let mut out = Vec::with_capacity(header_len(next.len()) as usize);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&partitions.to_le_bytes());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&number.to_le_bytes());
    for seq in next {
        out.extend_from_slice(&seq.0.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The next seqs a header records, or what is wrong with it.
fn decode_header(bytes: &[u8], number: u64, partitions: usize) -> Result<Vec<Seq>, String> {
    if bytes.len() as u64 != header_len(partitions) {
        return Err(format!("a header of only {} bytes", bytes.len()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("a header whose checksum does not match".to_string());
    }
    if &body[..8] != MAGIC {
        return Err(format!("the magic bytes {:?}", &body[..8]));
    }
    let found = usize::from(u16::from_le_bytes([body[8], body[9]]));
    if found != partitions {
        return Err(format!("a header for {found} partitions"));
    }
    let word = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    if word(16) != number {
        return Err(format!("the number {} in its header", word(16)));
    }
    Ok((0..partitions).map(|p| Seq(word(24 + 8 * p))).collect())
}

impl SegmentFile {
    /// Creates segment `number` in `dir`, its header recording `next`, and makes the file and
    /// its directory entry durable before returning.
    pub fn create(dir: &Path, number: u64, next: &[Seq]) -> io::Result<SegmentFile> {
        let path = dir.join(file_name(number));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(with_path(&path))?;
        file.write_all_at(&encode_header(number, next), 0)
            .and_then(|()| file.sync_data())
            .map_err(with_path(&path))?;
        sync_dir(dir)?;
        Ok(SegmentFile { number, path, file })
    }
}

/// What a log directory holds after recovery.
pub(crate) struct Recovered {
    /// The segments, oldest first; the last one is active.
    pub segments: Vec<Arc<SegmentFile>>,
    /// Bytes of the active segment (its header and intact frames).
    pub active_len: u64,
    /// Every partition's index of its entries in `segments`.
    pub indexes: Vec<PartitionIndex>,
}

/// Opens the segments in `dir` (creating the first if there is none), verifies every frame,
/// cuts a torn tail off the newest segment (logging a warning) and indexes each partition's
/// entries. `tail_bytes` is each partition's budget of entries kept in memory.
pub(crate) fn recover(
    dir: &Path,
    partitions: usize,
    tail_bytes: usize,
) -> Result<Recovered, LogError> {
    fs::create_dir_all(dir).map_err(with_path(dir))?;
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(with_path(dir))? {
        let name = entry.map_err(with_path(dir))?.file_name();
        let name = name.to_string_lossy();
        if let Some(number) = parse_file_name(&name).filter(|n| *n > 0) {
            numbers.push(number);
        } else if name.ends_with(SEGMENT_SUFFIX) {
            return Err(LogError::Corrupt(format!(
                "{}: expected segment files named by a positive 20-digit number, found {name:?}",
                dir.display()
            )));
        }
    }
    numbers.sort_unstable();
    for pair in numbers.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(LogError::Corrupt(format!(
                "{}: expected segment {} after segment {}, found {}",
                dir.display(),
                file_name(pair[0] + 1),
                pair[0],
                file_name(pair[1])
            )));
        }
    }
    // A crash while a segment was created can leave it without a complete header; nothing was
    // written to it yet, so it goes.
    if let Some(&newest) = numbers.last() {
        let path = dir.join(file_name(newest));
        let header = read_header(&path, partitions)?;
        if let Err(problem) = decode_header(&header, newest, partitions) {
            if numbers.len() == 1 && newest != 1 {
                return Err(LogError::Corrupt(format!(
                    "{}: expected a segment header, found {problem}",
                    path.display()
                )));
            }
            tracing::warn!(path = %path.display(), "removing a log segment whose creation did not finish: found {problem}");
            fs::remove_file(&path).map_err(with_path(&path))?;
            sync_dir(dir)?;
            numbers.pop();
        }
    }
    if numbers.is_empty() {
        let next = vec![Seq(1); partitions];
        let segment = Arc::new(SegmentFile::create(dir, 1, &next)?);
        return Ok(Recovered {
            active_len: header_len(partitions),
            segments: vec![segment],
            indexes: (0..partitions)
                .map(|_| PartitionIndex::new(Seq(1), tail_bytes))
                .collect(),
        });
    }
    let mut next: Vec<Seq> = Vec::new();
    let mut indexes: Vec<PartitionIndex> = Vec::new();
    let mut segments = Vec::with_capacity(numbers.len());
    let mut active_len = 0;
    for (i, number) in numbers.iter().enumerate() {
        let path = dir.join(file_name(*number));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(with_path(&path))?;
        let segment = Arc::new(SegmentFile {
            number: *number,
            path,
            file,
        });
        let last = i + 1 == numbers.len();
        active_len = scan(
            &segment,
            partitions,
            last,
            &mut next,
            &mut indexes,
            tail_bytes,
        )?;
        segments.push(segment);
    }
    Ok(Recovered {
        segments,
        active_len,
        indexes,
    })
}

/// The first bytes of `path`, as many as a header has (fewer if the file is shorter).
fn read_header(path: &Path, partitions: usize) -> Result<Vec<u8>, LogError> {
    let mut header = Vec::new();
    File::open(path)
        .and_then(|file| file.take(header_len(partitions)).read_to_end(&mut header))
        .map_err(with_path(path))?;
    Ok(header)
}

/// Verifies and indexes one segment; returns the bytes it holds up to its last intact frame.
/// The first segment's header sets `next` and creates `indexes`; a later one must agree with
/// where the segments before it left each partition.
fn scan(
    segment: &Arc<SegmentFile>,
    partitions: usize,
    last: bool,
    next: &mut Vec<Seq>,
    indexes: &mut Vec<PartitionIndex>,
    tail_bytes: usize,
) -> Result<u64, LogError> {
    let path = &segment.path;
    let corrupt = |what: String| LogError::Corrupt(format!("{}: {what}", path.display()));
    let file_len = segment.file.metadata().map_err(with_path(path))?.len();
    let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, &segment.file);
    let mut header = vec![0u8; header_len(partitions).min(file_len) as usize];
    reader.read_exact(&mut header).map_err(with_path(path))?;
    let starts = decode_header(&header, segment.number, partitions)
        .map_err(|problem| corrupt(format!("expected a segment header, found {problem}")))?;
    if indexes.is_empty() {
        *indexes = starts
            .iter()
            .map(|seq| PartitionIndex::new(*seq, tail_bytes))
            .collect();
        next.clone_from(&starts);
    } else if let Some(p) = (0..partitions).find(|p| starts[*p] != next[*p]) {
        return Err(corrupt(format!(
            "expected the header to start partition {p} at seq {}, found seq {}",
            next[p].0, starts[p].0
        )));
    }
    let mut offset = header_len(partitions);
    let mut payload = Vec::new();
    let problem = loop {
        let left = file_len - offset;
        if left == 0 {
            break None;
        }
        let mut bytes = [0u8; FRAME_HEADER_BYTES];
        let head = &mut bytes[..left.min(FRAME_HEADER_BYTES as u64) as usize];
        reader.read_exact(head).map_err(with_path(path))?;
        if head.iter().all(|b| *b == 0) {
            // The writer extends the file with zeros ahead of its frames: zeros up to the end
            // are the clean end of the segment (no frame starts with a zero length and CRC).
            let rest = left - head.len() as u64;
            if zeros_only(&mut reader, rest).map_err(with_path(path))? {
                break None;
            }
            break Some("zeros followed by other bytes".to_string());
        }
        if left < FRAME_HEADER_BYTES as u64 {
            break Some(format!("a partial frame header of {left} bytes"));
        }
        let frame = FrameHeader::decode(&bytes);
        if frame.frame_len() > left {
            break Some(format!(
                "a frame of {} bytes with only {left} bytes left in the file",
                frame.frame_len()
            ));
        }
        payload.resize(frame.len as usize, 0);
        reader.read_exact(&mut payload).map_err(with_path(path))?;
        if !frame.matches(&payload) {
            break Some("a frame whose checksum does not match".to_string());
        }
        let p = usize::from(frame.partition);
        let Some(expected) = next.get(p).copied() else {
            return Err(corrupt(format!(
                "expected a frame of a partition below {partitions} at offset {offset}, found \
                 one of partition {p}"
            )));
        };
        if frame.seq != expected {
            return Err(corrupt(format!(
                "expected seq {} of partition {p} at offset {offset}, found seq {}",
                expected.0, frame.seq.0
            )));
        }
        indexes[p].push(segment, frame.seq, offset, frame.len, None);
        next[p] = expected.next();
        offset += frame.frame_len();
    };
    if let Some(problem) = problem {
        if !last {
            return Err(corrupt(format!(
                "expected a complete frame at offset {offset}, found {problem}"
            )));
        }
        tracing::warn!(
            path = %path.display(),
            offset,
            dropped_bytes = file_len - offset,
            "cutting off the torn tail of the log's newest segment: found {problem}"
        );
        segment
            .file
            .set_len(offset)
            .and_then(|()| segment.file.sync_all())
            .map_err(with_path(path))?;
    }
    Ok(offset)
}

/// Whether the next `len` bytes of `reader` are all zero (reads them).
fn zeros_only(reader: &mut impl Read, len: u64) -> io::Result<bool> {
    let mut buffer = [0u8; 8 << 10];
    let mut left = len;
    while left > 0 {
        let n = left.min(buffer.len() as u64) as usize;
        reader.read_exact(&mut buffer[..n])?;
        if buffer[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

/// The file name of segment `number`.
pub(crate) fn file_name(number: u64) -> String {
    format!(
        "{number:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    )
}

/// The number a segment file name gives, or `None` if `name` is not one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Makes the entries of directory `dir` (created, renamed and removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(with_path(dir))
}

/// Prefixes an I/O error's message with the path it concerns.
pub(crate) fn with_path(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |error| io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_sort_by_number() {
        assert_eq!(file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert!(file_name(9) < file_name(10));
        for bad in [
            "1.wal",
            "0000000000000000000a.wal",
            "00000000000000000001.tmp",
            "99999999999999999999.wal",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn headers_round_trip_and_refuse_damage() {
        let next = [Seq(1), Seq(7), Seq(u64::MAX)];
        let bytes = encode_header(5, &next);
        assert_eq!(bytes.len() as u64, header_len(3));
        assert_eq!(decode_header(&bytes, 5, 3), Ok(next.to_vec()));
        assert!(decode_header(&bytes, 6, 3).is_err(), "another number");
        assert!(decode_header(&bytes[..10], 5, 3).is_err(), "short");
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert!(decode_header(&flipped, 5, 3).is_err(), "flipped byte");
        let other = encode_header(5, &next[..2]);
        assert!(decode_header(&other, 5, 2).is_ok());
        assert!(
            decode_header(&bytes, 5, 2).is_err(),
            "another partition count"
        );
    }
}
