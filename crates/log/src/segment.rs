//! [`Segment`]: one file of a partition's log, and its index of record offsets.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notadb_types::Seq;

use crate::frame::{FrameHeader, FRAME_HEADER_BYTES};
use crate::LogError;

/// Suffix of segment file names; the stem is the segment's first seq in 20 digits.
const SEGMENT_SUFFIX: &str = ".seg";

/// Digits of the first seq in a segment file name (enough for any `u64`).
const SEGMENT_NAME_DIGITS: usize = 20;

/// Read buffer used when scanning a segment at open.
const SCAN_BUFFER_BYTES: usize = 1 << 20;

/// One segment file as readers see it: the records `first..next_seq()` and where they are.
///
/// The writer also builds values of this type to describe what it appended to a segment; see
/// [`PartitionIndex::commit`](crate::index::PartitionIndex::commit).
#[derive(Debug)]
pub(crate) struct Segment {
    /// Seq of the segment's first record; also its file name.
    pub first: Seq,
    /// The segment file.
    pub path: Arc<Path>,
    /// The open file, shared by the writer and every reader (positional I/O only).
    pub file: Arc<File>,
    /// `offsets[i]` is the byte offset of record `first + i`.
    pub offsets: Vec<u64>,
    /// The byte offset just past the last record in `offsets`.
    pub end: u64,
}

impl Segment {
    /// The seq the next record of this segment would get.
    pub fn next_seq(&self) -> Seq {
        Seq(self.first.0 + self.offsets.len() as u64)
    }

    /// Byte range `[start, end)` of the records with indexes `from..to` (`to` exclusive,
    /// `from < to <= offsets.len()`).
    pub fn byte_range(&self, from: usize, to: usize) -> (u64, u64) {
        let end = self.offsets.get(to).copied().unwrap_or(self.end);
        (self.offsets[from], end)
    }

    /// Creates the empty segment starting at `first` in the partition directory `dir`, and
    /// makes its directory entry durable.
    pub fn create(dir: &Path, first: Seq) -> io::Result<Segment> {
        let path = dir.join(file_name(first));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(with_path(&path))?;
        sync_dir(dir)?;
        Ok(Segment {
            first,
            path: path.into(),
            file: Arc::new(file),
            offsets: Vec::new(),
            end: 0,
        })
    }

    /// Opens an existing segment that should start at `first`, verifying every record.
    ///
    /// A partial or corrupt frame ends the segment: in the partition's `last` segment that is
    /// what a crash mid-write leaves, and the file is cut there (with a warning); in any other
    /// segment it is [`LogError::Corrupt`]. A record with an unexpected seq is always corrupt.
    pub fn recover(path: PathBuf, first: Seq, last: bool) -> Result<Segment, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(with_path(&path))?;
        let file_len = file.metadata().map_err(with_path(&path))?.len();
        let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, &file);
        let mut offsets = Vec::new();
        let mut offset = 0u64;
        let mut payload = Vec::new();
        let problem = loop {
            let expected = Seq(first.0 + offsets.len() as u64);
            let left = file_len - offset;
            if left == 0 {
                break None;
            }
            if left < FRAME_HEADER_BYTES as u64 {
                break Some(format!("a partial frame header of {left} bytes"));
            }
            let mut header = [0u8; FRAME_HEADER_BYTES];
            reader.read_exact(&mut header).map_err(with_path(&path))?;
            let header = FrameHeader::decode(&header);
            if header.frame_len() > left {
                break Some(format!(
                    "a frame of {} bytes with only {left} bytes left in the file",
                    header.frame_len()
                ));
            }
            payload.resize(header.len as usize, 0);
            reader.read_exact(&mut payload).map_err(with_path(&path))?;
            if !header.matches(&payload) {
                break Some("a frame whose checksum does not match".to_string());
            }
            if header.seq != expected {
                return Err(LogError::Corrupt(format!(
                    "{}: expected seq {} at offset {offset}, found seq {}",
                    path.display(),
                    expected.0,
                    header.seq.0
                )));
            }
            offsets.push(offset);
            offset += header.frame_len();
        };
        if let Some(problem) = problem {
            if !last {
                return Err(LogError::Corrupt(format!(
                    "{}: expected a complete frame at offset {offset}, found {problem}",
                    path.display()
                )));
            }
            tracing::warn!(
                path = %path.display(),
                offset,
                dropped_bytes = file_len - offset,
                "cutting off the torn tail of a partition's last log segment: found {problem}"
            );
            file.set_len(offset)
                .and_then(|()| file.sync_all())
                .map_err(with_path(&path))?;
        }
        Ok(Segment {
            first,
            path: path.into(),
            file: Arc::new(file),
            offsets,
            end: offset,
        })
    }
}

/// The file name of the segment starting at `first`.
pub(crate) fn file_name(first: Seq) -> String {
    format!(
        "{:0width$}{SEGMENT_SUFFIX}",
        first.0,
        width = SEGMENT_NAME_DIGITS
    )
}

/// The first seq named by a segment file name, or `None` if `name` is not one.
pub(crate) fn parse_file_name(name: &str) -> Option<Seq> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Seq)
}

/// Whether `name` looks like a segment file name (right suffix), valid or not.
pub(crate) fn is_segment_name(name: &str) -> bool {
    name.ends_with(SEGMENT_SUFFIX)
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

/// Removes a segment file that is no longer needed.
pub(crate) fn remove(segment: &Segment) -> io::Result<()> {
    fs::remove_file(&segment.path).map_err(with_path(&segment.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_sort_by_seq() {
        assert_eq!(file_name(Seq(1)), "00000000000000000001.seg");
        assert_eq!(
            parse_file_name(&file_name(Seq(u64::MAX))),
            Some(Seq(u64::MAX))
        );
        assert!(file_name(Seq(9)) < file_name(Seq(10)));
        for bad in [
            "1.seg",
            "0000000000000000000a.seg",
            "00000000000000000001.tmp",
            "99999999999999999999.seg",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }
}
