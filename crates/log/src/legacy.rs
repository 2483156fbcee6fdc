//! The first on-disk format, a directory of segment files per partition, and its conversion
//! into the current one (segments shared by every partition).
//!
//! ```text
//! p00000/00000000000000000001.seg    partition 0's segments, named by their first seq
//! p00001/...
//! ```
//!
//! A legacy frame is `len u32 LE | crc32 u32 LE | seq u64 LE | payload`, the CRC over seq and
//! payload. Conversion writes every partition's entries, with their seqs, into one new segment
//! under a temporary directory, syncs it, renames it into place, and only then rewrites
//! `LOG_META`; the partition directories are deleted last. A crash at any point leaves either
//! the old log (converted again at the next open) or the new one (whose leftover partition
//! directories the next open deletes).

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use notadb_types::Seq;

use crate::segment::{self, sync_dir, with_path, WAL_DIR};
use crate::{frame, meta, LogError};

/// Prefix of partition directory names; the rest is the partition number in 5 digits.
const PARTITION_DIR_PREFIX: char = 'p';

/// Digits of the partition number in a partition directory name.
const PARTITION_DIR_DIGITS: usize = 5;

/// Suffix of legacy segment file names; the stem is the segment's first seq in 20 digits.
const SEGMENT_SUFFIX: &str = ".seg";

/// Bytes of a legacy frame header.
const HEADER_BYTES: usize = 16;

/// Where the converted segment is written before it is renamed to `wal`.
const CONVERTING_DIR: &str = "wal.converting";

/// Whether `name` is a legacy partition directory name.
pub(crate) fn is_partition_dir_name(name: &str) -> bool {
    name.strip_prefix(PARTITION_DIR_PREFIX)
        .is_some_and(|digits| {
            digits.len() == PARTITION_DIR_DIGITS && digits.bytes().all(|b| b.is_ascii_digit())
        })
}

/// The directory of partition `partition` in the legacy layout.
fn partition_dir(dir: &Path, partition: u16) -> PathBuf {
    dir.join(format!(
        "{PARTITION_DIR_PREFIX}{partition:0width$}",
        width = PARTITION_DIR_DIGITS
    ))
}

/// Converts the legacy log in `dir` (whose `LOG_META` says format 1) to the current format.
pub(crate) fn convert(dir: &Path, partitions: u16) -> Result<(), LogError> {
    tracing::info!(dir = %dir.display(), "converting the log to shared segments");
    let converting = dir.join(CONVERTING_DIR);
    // What an interrupted conversion left; the legacy log is intact until LOG_META changes.
    for stale in [converting.clone(), dir.join(WAL_DIR)] {
        match fs::remove_dir_all(&stale) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(with_path(&stale)(error).into()),
        }
    }
    let mut segments = Vec::with_capacity(usize::from(partitions));
    for partition in 0..partitions {
        segments.push(legacy_segments(&partition_dir(dir, partition))?);
    }
    let starts: Vec<Seq> = segments
        .iter()
        .map(|files| files.first().map_or(Seq(1), |(first, _)| *first))
        .collect();
    fs::create_dir(&converting).map_err(with_path(&converting))?;
    let path = converting.join(segment::file_name(1));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(with_path(&path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&segment::encode_header(1, &starts))
        .map_err(with_path(&path))?;
    let mut frames = Vec::new();
    for (partition, files) in (0..partitions).zip(&segments) {
        let mut next = starts[usize::from(partition)];
        for (i, (first, file)) in files.iter().enumerate() {
            if *first != next {
                return Err(LogError::Corrupt(format!(
                    "{}: expected the segment after seq {} to start at seq {}",
                    file.display(),
                    next.0 - 1,
                    next.0
                )));
            }
            let last = i + 1 == files.len();
            frames.clear();
            next = convert_segment(file, partition, next, last, &mut frames)?;
            out.write_all(&frames).map_err(with_path(&path))?;
        }
    }
    out.into_inner()
        .map_err(|e| with_path(&path)(e.into_error()))?
        .sync_all()
        .map_err(with_path(&path))?;
    sync_dir(&converting)?;
    let wal = dir.join(WAL_DIR);
    fs::rename(&converting, &wal).map_err(with_path(&converting))?;
    sync_dir(dir)?;
    meta::write(dir, partitions)?;
    remove_leftovers(dir)
}

/// The legacy segment files of one partition directory with their first seqs, in order (none
/// if the directory is missing).
fn legacy_segments(dir: &Path) -> Result<Vec<(Seq, PathBuf)>, LogError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(with_path(dir)(error).into()),
    };
    let mut found = Vec::new();
    for entry in entries {
        let name = entry.map_err(with_path(dir))?.file_name();
        let name = name.to_string_lossy();
        let Some(digits) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        let first = (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten()
            .filter(|first| *first > 0)
            .ok_or_else(|| {
                LogError::Corrupt(format!(
                    "{}: expected segment files named by a positive 20-digit seq, found {name:?}",
                    dir.display()
                ))
            })?;
        found.push((Seq(first), dir.join(&*name)));
    }
    found.sort();
    Ok(found)
}

/// Re-frames the entries of legacy segment `path` (from seq `first`) into `out`; returns the
/// seq after its last entry. A damaged frame ends the partition's `last` segment (a torn
/// tail, dropped with a warning) and is corrupt anywhere else.
fn convert_segment(
    path: &Path,
    partition: u16,
    first: Seq,
    last: bool,
    out: &mut Vec<u8>,
) -> Result<Seq, LogError> {
    let bytes = fs::read(path).map_err(with_path(path))?;
    let mut at = 0usize;
    let mut next = first;
    while at < bytes.len() {
        let frame = bytes.get(at..at + HEADER_BYTES).and_then(|header| {
            let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
            let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
            let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
            let payload = bytes.get(at + HEADER_BYTES..at + HEADER_BYTES + len)?;
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&seq.to_le_bytes());
            hasher.update(payload);
            (hasher.finalize() == crc).then_some((Seq(seq), payload))
        });
        let Some((seq, payload)) = frame else {
            if !last {
                return Err(LogError::Corrupt(format!(
                    "{}: expected a complete frame at offset {at}",
                    path.display()
                )));
            }
            tracing::warn!(path = %path.display(), offset = at, "dropping the torn tail of a legacy log segment");
            break;
        };
        if seq != next {
            return Err(LogError::Corrupt(format!(
                "{}: expected seq {} at offset {at}, found seq {}",
                path.display(),
                next.0,
                seq.0
            )));
        }
        frame::encode(out, partition, seq, payload);
        next = next.next();
        at += HEADER_BYTES + payload.len();
    }
    Ok(next)
}

/// Deletes the legacy partition directories a finished conversion left behind.
pub(crate) fn remove_leftovers(dir: &Path) -> Result<(), LogError> {
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(with_path(dir))? {
        let entry = entry.map_err(with_path(dir))?;
        if is_partition_dir_name(&entry.file_name().to_string_lossy()) {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(with_path(&path))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Writes a legacy log (tests of the conversion): `entries[p]` are partition `p`'s payloads
/// from seq `starts[p]`, `per_segment` to a segment file.
#[cfg(test)]
pub(crate) fn write_legacy(
    dir: &Path,
    starts: &[Seq],
    entries: &[Vec<Vec<u8>>],
    per_segment: usize,
) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(
        dir.join("LOG_META"),
        format!("notadb-log\nformat 1\npartitions {}\n", starts.len()),
    )?;
    for (p, (start, payloads)) in starts.iter().zip(entries).enumerate() {
        let pdir = partition_dir(dir, u16::try_from(p).expect("few partitions"));
        fs::create_dir_all(&pdir)?;
        let mut seq = start.0;
        let chunks: Vec<&[Vec<u8>]> = if payloads.is_empty() {
            vec![&[]]
        } else {
            payloads.chunks(per_segment).collect()
        };
        for chunk in chunks {
            let mut file = fs::File::create(pdir.join(format!("{seq:020}{SEGMENT_SUFFIX}")))?;
            for payload in chunk {
                let mut hasher = crc32fast::Hasher::new();
                hasher.update(&seq.to_le_bytes());
                hasher.update(payload);
                file.write_all(&(payload.len() as u32).to_le_bytes())?;
                file.write_all(&hasher.finalize().to_le_bytes())?;
                file.write_all(&seq.to_le_bytes())?;
                file.write_all(payload)?;
                seq += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use notadb_types::PartitionId;

    use super::*;
    use crate::{EmbeddedLog, EmbeddedLogOptions, Log};

    fn payloads(partition: usize, count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| format!("partition {partition} entry {i}").into_bytes())
            .collect()
    }

    async fn read_all(log: &EmbeddedLog, partition: u16) -> (Seq, Vec<Bytes>) {
        let bounds = log.bounds(PartitionId(partition)).await.expect("bounds");
        let mut out = Vec::new();
        let mut next = bounds.first;
        while next <= bounds.last {
            let entries = log
                .read(PartitionId(partition), next, 1000, Duration::ZERO)
                .await
                .expect("read");
            for entry in entries {
                assert_eq!(entry.seq, next);
                out.push(entry.payload);
                next = next.next();
            }
        }
        (bounds.first, out)
    }

    /// A legacy log: partition 0 empty, partition 1 truncated to start at seq 5 with ten entries
    /// over four segments, partition 2 with three entries and a torn tail.
    fn legacy_log(dir: &Path) -> Vec<Vec<Vec<u8>>> {
        let entries = vec![payloads(0, 0), payloads(1, 10), payloads(2, 3)];
        write_legacy(dir, &[Seq(1), Seq(5), Seq(1)], &entries, 3).expect("write the legacy log");
        let torn = partition_dir(dir, 2).join(format!("{:020}.seg", 1));
        let mut file = OpenOptions::new()
            .append(true)
            .open(torn)
            .expect("open the last segment");
        file.write_all(&[9, 0, 0, 0, 1, 2]).expect("a torn tail");
        entries
    }

    async fn check_converted(dir: &Path, entries: &[Vec<Vec<u8>>]) {
        let log = EmbeddedLog::open(dir, 3, EmbeddedLogOptions::default()).expect("open");
        for (partition, first) in [(0u16, Seq(1)), (1, Seq(5)), (2, Seq(1))] {
            let (found_first, found) = read_all(&log, partition).await;
            assert_eq!(found_first, first, "partition {partition}");
            let expected: Vec<Bytes> = entries[usize::from(partition)]
                .iter()
                .map(|p| Bytes::from(p.clone()))
                .collect();
            assert_eq!(found, expected, "partition {partition}");
        }
        let seq = log
            .append(PartitionId(1), Bytes::from_static(b"after"))
            .await
            .expect("append");
        assert_eq!(
            seq,
            Seq(15),
            "numbering goes on after the converted entries"
        );
        assert!(
            !partition_dir(dir, 1).exists(),
            "the legacy directories are gone"
        );
        let meta = fs::read_to_string(dir.join("LOG_META")).expect("meta");
        assert!(meta.contains("format 2"), "{meta}");
    }

    #[tokio::test]
    async fn a_legacy_log_is_converted_with_its_seqs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let entries = legacy_log(dir.path());
        check_converted(dir.path(), &entries).await;
    }

    #[tokio::test]
    async fn an_interrupted_conversion_starts_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let entries = legacy_log(dir.path());
        // What a crash after the rename but before LOG_META changed leaves: a complete new
        // segment directory beside the legacy log, and a stale temporary directory.
        fs::create_dir(dir.path().join(WAL_DIR)).expect("mkdir");
        fs::write(dir.path().join(WAL_DIR).join(segment::file_name(1)), b"x").expect("write");
        fs::create_dir(dir.path().join(CONVERTING_DIR)).expect("mkdir");
        check_converted(dir.path(), &entries).await;
    }

    #[tokio::test]
    async fn a_damaged_older_legacy_segment_is_corrupt_and_nothing_changes() {
        let dir = tempfile::tempdir().expect("temp dir");
        legacy_log(dir.path());
        let victim = partition_dir(dir.path(), 1).join(format!("{:020}.seg", 5));
        let mut bytes = fs::read(&victim).expect("read");
        bytes[20] ^= 0x40;
        fs::write(&victim, bytes).expect("write");
        let error = EmbeddedLog::open(dir.path(), 3, EmbeddedLogOptions::default())
            .expect_err("a damaged legacy segment");
        assert!(matches!(error, LogError::Corrupt(_)), "{error}");
        assert!(victim.exists(), "the legacy log is left as it was");
        let meta = fs::read_to_string(dir.path().join("LOG_META")).expect("meta");
        assert!(meta.contains("format 1"), "{meta}");
    }
}
