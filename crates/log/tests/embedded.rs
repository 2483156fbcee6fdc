//! Behaviour specific to [`EmbeddedLog`]: its files, recovery and limits.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use notadb_log::{EmbeddedLog, EmbeddedLogOptions, FsyncPolicy, Log, LogBounds, LogError};
use notadb_types::{PartitionId, Seq};

const P0: PartitionId = PartitionId(0);

fn options(segment_bytes: u64) -> EmbeddedLogOptions {
    EmbeddedLogOptions {
        fsync: FsyncPolicy::Always,
        segment_bytes,
        ..EmbeddedLogOptions::default()
    }
}

fn open(dir: &Path, partitions: u16, segment_bytes: u64) -> EmbeddedLog {
    EmbeddedLog::open(dir, partitions, options(segment_bytes)).expect("open the log")
}

fn payload(i: u64) -> Bytes {
    Bytes::from(format!("entry {i} {}", "y".repeat((i % 50) as usize)))
}

async fn append_range(log: &EmbeddedLog, partition: PartitionId, from: u64, to: u64) {
    for i in from..=to {
        let seq = log.append(partition, payload(i)).await.expect("append");
        assert_eq!(seq, Seq(i));
    }
}

/// Asserts that partition 0 holds exactly `payload(i)` at seq `i` for `first..=last`.
async fn expect_entries(log: &EmbeddedLog, first: u64, last: u64) {
    let mut next = first;
    while next <= last {
        let entries = log
            .read(P0, Seq(next), 1000, Duration::ZERO)
            .await
            .expect("read");
        assert!(!entries.is_empty(), "no entries from seq {next}");
        for entry in entries {
            assert_eq!(entry.seq, Seq(next));
            assert_eq!(entry.payload, payload(next), "payload of seq {next}");
            next += 1;
        }
    }
    assert_eq!(next, last + 1, "read past the expected last seq {last}");
}

/// The log's segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .expect("list the segment directory")
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    files
}

/// A frame as the log writes it: `len | crc32 | partition | 0 | seq | payload`.
fn frame(partition: u16, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut covered = Vec::new();
    covered.extend_from_slice(&partition.to_le_bytes());
    covered.extend_from_slice(&[0, 0]);
    covered.extend_from_slice(&seq.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&covered);
    crc.update(payload);
    let mut out = Vec::new();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&covered);
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn reopening_with_another_partition_count_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path(), 4, 1 << 20);
    log.append(PartitionId(3), Bytes::from_static(b"x"))
        .await
        .expect("append");
    drop(log);
    match EmbeddedLog::open(dir.path(), 8, options(1 << 20)) {
        Err(LogError::PartitionCount {
            expected: 8,
            found: 4,
        }) => {}
        other => panic!("expected PartitionCount {{ 8, 4 }}, got {other:?}"),
    }
    let log = open(dir.path(), 4, 1 << 20);
    let bounds = log.bounds(PartitionId(3)).await.expect("bounds");
    assert_eq!(bounds.last, Seq(1));
}

#[tokio::test]
async fn torn_tails_are_cut_off_on_reopen() {
    // A frame with a bad checksum, a partial header, half of a valid frame, and zeros.
    let mut half_frame = frame(0, 11, b"the eleventh entry, never acknowledged");
    half_frame.truncate(half_frame.len() / 2 + 3);
    let mut bad_checksum = frame(0, 11, b"junk");
    bad_checksum[5] ^= 1;
    let zeros = [0u8; 64];
    let tails: [&[u8]; 4] = [&bad_checksum, b"garbage", &half_frame, &zeros];
    for tail in tails {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = open(dir.path(), 1, 1 << 20);
        append_range(&log, P0, 1, 10).await;
        drop(log);
        let last = segments(dir.path()).pop().expect("a segment");
        // The writer leaves zeros after its frames (the last payload ends in a non-zero byte).
        let bytes = fs::read(&last).expect("read the segment");
        let frames_end = bytes.iter().rposition(|b| *b != 0).expect("frames") as u64 + 1;
        assert!(bytes.len() as u64 > frames_end, "no zeros written ahead");
        OpenOptions::new()
            .append(true)
            .open(&last)
            .and_then(|mut file| file.write_all(tail))
            .expect("append a torn tail");

        let log = open(dir.path(), 1, 1 << 20);
        // Zeros after the frames are the clean end and stay; anything else after them is cut.
        let expected_len = if tail.iter().all(|b| *b == 0) {
            (bytes.len() + tail.len()) as u64
        } else {
            frames_end
        };
        assert_eq!(fs::metadata(&last).expect("metadata").len(), expected_len);
        let bounds = log.bounds(P0).await.expect("bounds");
        assert_eq!(
            bounds,
            LogBounds {
                first: Seq(1),
                last: Seq(10)
            }
        );
        expect_entries(&log, 1, 10).await;
        append_range(&log, P0, 11, 12).await;
        drop(log);
        let log = open(dir.path(), 1, 1 << 20);
        expect_entries(&log, 1, 12).await;
    }
}

#[tokio::test]
async fn a_flipped_byte_in_an_older_segment_is_corrupt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path(), 1, 256);
    append_range(&log, P0, 1, 40).await;
    drop(log);
    let files = segments(dir.path());
    assert!(
        files.len() >= 3,
        "expected several segments, found {files:?}"
    );
    let victim = &files[1];
    let mut bytes = fs::read(victim).expect("read segment");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    fs::write(victim, bytes).expect("write segment");
    match EmbeddedLog::open(dir.path(), 1, options(256)) {
        Err(LogError::Corrupt(message)) => {
            let name = victim.file_name().and_then(|n| n.to_str()).expect("name");
            assert!(message.contains(name), "{message}");
            assert!(message.contains("offset"), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_middle_segment_is_corrupt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path(), 1, 256);
    append_range(&log, P0, 1, 40).await;
    drop(log);
    let files = segments(dir.path());
    assert!(
        files.len() >= 3,
        "expected several segments, found {files:?}"
    );
    fs::remove_file(&files[1]).expect("remove a segment");
    match EmbeddedLog::open(dir.path(), 1, options(256)) {
        Err(LogError::Corrupt(message)) => {
            let next = files[2].file_name().and_then(|n| n.to_str()).expect("name");
            assert!(message.contains(next), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn segments_roll_and_truncation_deletes_them() {
    const SEGMENT_BYTES: u64 = 1024;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path(), 1, SEGMENT_BYTES);
    append_range(&log, P0, 1, 100).await;
    let files = segments(dir.path());
    assert!(
        files.len() >= 4,
        "expected rolled segments, found {files:?}"
    );
    for sealed in &files[..files.len() - 1] {
        let bytes = fs::read(sealed).expect("read a sealed segment");
        let len = bytes.len() as u64;
        assert!(
            (SEGMENT_BYTES..SEGMENT_BYTES + 100).contains(&len),
            "{} holds {len} bytes",
            sealed.display()
        );
        // Cut to its last frame: none of the zeros written ahead stay.
        assert_ne!(bytes.last(), Some(&0), "{} ends in zeros", sealed.display());
    }

    log.truncate_before(P0, Seq(50)).await.expect("truncate");
    let kept = segments(dir.path());
    assert!(kept.len() < files.len(), "no segment was deleted");
    assert_eq!(kept.last(), files.last(), "the newest segments stay");
    // The partition keeps what the remaining segments hold: from 50 or a little earlier (the
    // oldest remaining segment may start before it).
    let first = log.bounds(P0).await.expect("bounds").first;
    assert!(first <= Seq(50) && first > Seq(30), "{first:?}");
    match log.read(P0, Seq(first.0 - 1), 10, Duration::ZERO).await {
        Err(LogError::Truncated {
            requested,
            first: reported,
            ..
        }) => {
            assert_eq!((requested, reported), (Seq(first.0 - 1), first));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    expect_entries(&log, first.0, 100).await;
    drop(log);

    let log = open(dir.path(), 1, SEGMENT_BYTES);
    assert_eq!(
        log.bounds(P0).await.expect("bounds").first,
        first,
        "the same after a reopen"
    );
    expect_entries(&log, first.0, 100).await;
    log.truncate_before(P0, Seq(u64::MAX))
        .await
        .expect("truncate");
    let active = segments(dir.path());
    assert_eq!(active.len(), 1, "only the active segment stays: {active:?}");
    let bounds = log.bounds(P0).await.expect("bounds");
    assert_eq!(bounds.last, Seq(100));
    append_range(&log, P0, 101, 101).await;
    drop(log);
    let log = open(dir.path(), 1, SEGMENT_BYTES);
    assert_eq!(
        log.bounds(P0).await.expect("bounds"),
        LogBounds {
            first: bounds.first,
            last: Seq(101)
        }
    );
    expect_entries(&log, bounds.first.0, 101).await;
}

#[tokio::test]
async fn partitions_share_segments_and_keep_their_numbering() {
    const SEGMENT_BYTES: u64 = 2048;
    let dir = tempfile::tempdir().expect("temp dir");
    let options = EmbeddedLogOptions {
        tail_bytes: 0,
        ..options(SEGMENT_BYTES)
    };
    let log = EmbeddedLog::open(dir.path(), 3, options.clone()).expect("open");
    // Interleaved appends to three partitions, concurrently, in one file until it rolls.
    let appends = (1..=60u64).map(|i| {
        let log = log.clone();
        async move {
            let partition = PartitionId((i % 3) as u16);
            let seq = log.append(partition, payload(i)).await.expect("append");
            (partition, seq, i)
        }
    });
    let acked = futures::future::join_all(appends).await;
    assert!(
        segments(dir.path()).len() > 1,
        "the appends should fill several segments"
    );
    let log_of = |partition: PartitionId| {
        let mut mine: Vec<(Seq, u64)> = acked
            .iter()
            .filter(|(p, _, _)| *p == partition)
            .map(|(_, seq, i)| (*seq, *i))
            .collect();
        mine.sort();
        mine
    };
    for p in 0..3 {
        let mine = log_of(PartitionId(p));
        let seqs: Vec<u64> = mine.iter().map(|(seq, _)| seq.0).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "partition {p}");
        // Read from the files (no tail kept in memory), a few entries at a time.
        let entries = log
            .read(PartitionId(p), Seq(1), 100, Duration::ZERO)
            .await
            .expect("read");
        let payloads: Vec<Bytes> = entries.iter().map(|e| e.payload.clone()).collect();
        let expected: Vec<Bytes> = mine.iter().map(|(_, i)| payload(*i)).collect();
        assert_eq!(payloads, expected, "partition {p}");
    }

    // Partition 0 stops writing; the others go on and are truncated to their ends. The
    // segments holding partition 0's entries stay until it is truncated too.
    let before = segments(dir.path());
    append_range_of(&log, PartitionId(1), 21, 80).await;
    log.truncate_before(PartitionId(1), Seq(81))
        .await
        .expect("truncate");
    log.truncate_before(PartitionId(2), Seq(21))
        .await
        .expect("truncate");
    assert_eq!(
        segments(dir.path())[0],
        before[0],
        "partition 0 still needs the oldest segment"
    );
    log.truncate_before(P0, Seq(21)).await.expect("truncate");
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "every sealed segment is unused"
    );
    drop(log);

    // The segments that held partitions 0 and 2 are gone (the active one may hold the last
    // entries of partition 1), yet every partition's numbering goes on.
    let log = EmbeddedLog::open(dir.path(), 3, options).expect("reopen");
    for (p, last) in [(0, 20), (1, 80), (2, 20)] {
        let bounds = log.bounds(PartitionId(p)).await.expect("bounds");
        assert_eq!(bounds.last, Seq(last), "partition {p}");
        if p != 1 {
            assert_eq!(bounds.first, Seq(last + 1), "partition {p}");
        }
        let seq = log
            .append(PartitionId(p), payload(0))
            .await
            .expect("append");
        assert_eq!(seq, Seq(last + 1), "partition {p}");
    }
}

async fn append_range_of(log: &EmbeddedLog, partition: PartitionId, from: u64, to: u64) {
    for i in from..=to {
        let seq = log.append(partition, payload(i)).await.expect("append");
        assert_eq!(seq, Seq(i));
    }
}

#[tokio::test]
async fn a_newest_segment_without_a_complete_header_is_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path(), 2, 1 << 20);
    append_range(&log, P0, 1, 5).await;
    drop(log);
    let files = segments(dir.path());
    let torn = files[0].with_file_name("00000000000000000002.wal");
    fs::write(&torn, b"notadbWL\x02\x00").expect("write a torn header");
    let log = open(dir.path(), 2, 1 << 20);
    assert!(!torn.exists(), "the unfinished segment is removed");
    expect_entries(&log, 1, 5).await;
    append_range(&log, P0, 6, 6).await;
}

#[tokio::test]
async fn oversized_entries_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = EmbeddedLogOptions {
        max_entry_bytes: 1000,
        ..EmbeddedLogOptions::default()
    };
    let log = EmbeddedLog::open(dir.path(), 1, options).expect("open");
    match log.append(P0, Bytes::from(vec![0; 1001])).await {
        Err(LogError::EntryTooLarge {
            size: 1001,
            max: 1000,
        }) => {}
        other => panic!("expected EntryTooLarge, got {other:?}"),
    }
    assert_eq!(
        log.append(P0, Bytes::from(vec![0; 1000]))
            .await
            .expect("append"),
        Seq(1),
        "a refused entry takes no seq"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_reads_are_capped_in_bytes_but_return_at_least_one_entry() {
    const ENTRY_BYTES: usize = 6 << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EmbeddedLog::open(dir.path(), 1, EmbeddedLogOptions::default()).expect("open");
    for i in 0..3u8 {
        log.append(P0, Bytes::from(vec![i; ENTRY_BYTES]))
            .await
            .expect("append");
    }
    let entries = log
        .read(P0, Seq(1), 10, Duration::ZERO)
        .await
        .expect("read");
    assert!(
        (1..3).contains(&entries.len()),
        "a read of 18 MiB should be cut short, got {} entries",
        entries.len()
    );
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.payload.len(), ENTRY_BYTES);
        assert!(entry.payload.iter().all(|b| usize::from(*b) == i));
    }
    let last = log
        .read(P0, Seq(3), 10, Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].payload[0], 2);
}

#[tokio::test]
async fn clones_share_one_log_and_survive_the_original() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path(), 2, 1 << 20);
    let clone = log.clone();
    assert_eq!(clone.dir(), dir.path());
    drop(log);
    append_range(&clone, P0, 1, 3).await;
    let other = clone.clone();
    expect_entries(&other, 1, 3).await;
    assert_eq!(
        other.bounds(PartitionId(1)).await.expect("bounds").last,
        Seq(0)
    );
}

#[tokio::test]
async fn stray_segment_names_are_corrupt() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(open(dir.path(), 1, 1 << 20));
    fs::write(dir.path().join("wal").join("12.wal"), b"").expect("write");
    match EmbeddedLog::open(dir.path(), 1, options(1 << 20)) {
        Err(LogError::Corrupt(message)) => assert!(message.contains("12.wal"), "{message}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
