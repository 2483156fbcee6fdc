//! The fuzz checks of notadb's decoders: every parser of bytes read from disk or the network.
//! Each check takes arbitrary bytes, must never panic, and asserts what a decoder that
//! accepted them owes: what it decoded encodes to bytes that decode to the same value.
//!
//! - [`key`]: the order-preserving key codec (`notadb-types`).
//! - [`record`]: log entries (`notadb-record`).
//! - [`txn_entry`], [`txn_report`]: transaction inputs, remote reads and reports
//!   (`notadb-txn`).
//! - [`cache_rows`]: a cache shard's stored rows (`notadb-cache`).
//! - [`log_segment`]: an embedded log segment file, through recovery and reads (`notadb-log`).
//!
//! `fuzz_targets/` runs each under libFuzzer (`cargo +nightly fuzz run record`); the stable
//! test `tests/corpus.rs` runs each over the checked-in corpus and mutations of its seeds
//! ([`seeds`]), in CI.

mod key;
pub mod seeds;

pub use key::key;

use notadb_log::{EmbeddedLog, EmbeddedLogOptions, FsyncPolicy, Log};
use notadb_record::Record;
use notadb_txn::{decode_report, encode_report, Entry};
use notadb_types::{PartitionId, Seq};
use std::time::Duration;

/// A check: arbitrary bytes in, a panic when the code under test misbehaves.
pub type Check = fn(&[u8]);

/// Every check, by the name its corpus directory and fuzz target carry.
pub const CHECKS: &[(&str, Check)] = &[
    ("key", key),
    ("record", record),
    ("txn_entry", txn_entry),
    ("txn_report", txn_report),
    ("cache_rows", cache_rows),
    ("log_segment", log_segment),
];

/// A log entry that decodes encodes to bytes that decode to the same entry.
pub fn record(data: &[u8]) {
    let Ok(record) = Record::decode(data) else {
        return;
    };
    let again = Record::decode(&record.encode()).expect("an encoded record decodes");
    assert_eq!(again, record);
    assert_eq!(Record::is_txn(data), matches!(record, Record::Txn { .. }));
}

/// A transaction entry (a transaction's input, or remote reads) that decodes encodes to bytes
/// that decode to the same entry.
pub fn txn_entry(data: &[u8]) {
    let Ok(entry) = Entry::decode(data) else {
        return;
    };
    let encoded = match &entry {
        Entry::Txn { input, sequenced } => Entry::encode_txn(input, *sequenced),
        Entry::Reads(reads) => Entry::encode_reads(reads),
        Entry::Write(_) | Entry::Barrier(_) => panic!("decode returned a driver-made entry"),
    };
    assert_eq!(
        Entry::decode(&encoded).expect("an encoded entry decodes"),
        entry
    );
}

/// A transaction report that decodes encodes to bytes that decode to the same report.
pub fn txn_report(data: &[u8]) {
    let Ok((partition, finished)) = decode_report(data) else {
        return;
    };
    let refs: Vec<_> = finished.iter().collect();
    let again = decode_report(&encode_report(partition, &refs)).expect("an encoded report decodes");
    assert_eq!(again, (partition, finished));
}

/// A cache shard restored from stored rows (the input, split into `key len u8 | key | value
/// len u16 BE | value` rows) is either refused or a shard whose byte count covers its entries.
pub fn cache_rows(data: &[u8]) {
    let mut rows = Vec::new();
    let mut rest = data;
    while let Some((&key_len, tail)) = rest.split_first() {
        let Some((key, tail)) = split(tail, usize::from(key_len)) else {
            break;
        };
        let Some((len, tail)) = split(tail, 2) else {
            break;
        };
        let Some((value, tail)) = split(tail, usize::from(u16::from_be_bytes([len[0], len[1]])))
        else {
            break;
        };
        rows.push((key, value));
        rest = tail;
    }
    if let Ok(shard) = notadb_cache::CacheShard::restore(rows.iter().copied()) {
        assert!(shard.bytes() >= shard.len() as u64 * notadb_cache::ENTRY_OVERHEAD);
    }
}

fn split(bytes: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (bytes.len() >= n).then(|| bytes.split_at(n))
}

/// Partitions of the log [`log_segment`] opens.
const SEGMENT_PARTITIONS: u16 = 2;

/// The input as the only segment file of an embedded log of two partitions: opening it either
/// fails with an error or recovers, and then every partition reads from its first entry to
/// its last, in seq order, without an error.
pub fn log_segment(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = EmbeddedLogOptions {
        fsync: FsyncPolicy::Never,
        ..EmbeddedLogOptions::default()
    };
    // A fresh log lays out its metadata and first segment; the input replaces that segment.
    drop(EmbeddedLog::open(dir.path(), SEGMENT_PARTITIONS, options.clone()).expect("a new log"));
    let segment = std::fs::read_dir(dir.path().join("wal"))
        .expect("the segment directory")
        .flatten()
        .map(|e| e.path())
        .next()
        .expect("a new log has a segment");
    std::fs::write(&segment, data).expect("write the segment");
    let Ok(log) = EmbeddedLog::open(dir.path(), SEGMENT_PARTITIONS, options) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        for p in (0..SEGMENT_PARTITIONS).map(PartitionId) {
            let bounds = log.bounds(p).await.expect("bounds of a recovered log");
            let mut next = bounds.first.max(Seq(1));
            while next <= bounds.last {
                let entries = log
                    .read(p, next, 1024, Duration::ZERO)
                    .await
                    .expect("a recovered log reads its entries");
                assert!(!entries.is_empty(), "no entry at {next:?} below {bounds:?}");
                for e in &entries {
                    assert_eq!(e.seq, next, "entries come in seq order");
                    next = next.next();
                }
            }
        }
    });
}
