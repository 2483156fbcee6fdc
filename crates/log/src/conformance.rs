//! The conformance suite every [`Log`] implementation runs.
//!
//! An implementation provides a [`LogHarness`] and calls [`run_all`], or declares each check as
//! its own `#[tokio::test]` with [`conformance_tests!`](crate::conformance_tests) (the
//! multi-threaded runtime: some checks spawn tasks). Every check
//! opens its own log name and panics with a message naming the check on failure.
//!
//! [`Log::truncate_before`] may keep entries, so the truncation checks can only demand
//! [`LogError::Truncated`] for what an implementation actually dropped; harnesses should
//! configure their log (small segments, say) so that truncation drops something.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use notadb_types::{PartitionId, Seq};

use crate::{Log, LogBounds, LogEntry, LogError};

/// How long a check's reads wait for entries that are known to exist (they return as soon as
/// the entries are there).
const READ_WAIT: Duration = Duration::from_secs(5);

/// How long reads past the end wait before they return empty.
const EMPTY_WAIT: Duration = Duration::from_millis(200);

/// How long a reader woken by an append waits at most; the append comes long before.
const WAKE_WAIT: Duration = Duration::from_secs(60);

/// Entries per read when a check reads a whole range back.
const READ_BATCH: usize = 1000;

/// Opens logs for the conformance checks.
#[async_trait::async_trait]
pub trait LogHarness: Send + Sync {
    /// The implementation under test.
    type L: Log;

    /// Opens the log named `name` with `partitions` partitions; opening the same name again
    /// (after dropping the previous handle) must reopen the same durable log.
    async fn open(&self, name: &str, partitions: u16) -> Self::L;
}

/// Declares one `#[tokio::test]` (multi-threaded) per check of the suite, each against a
/// harness built anew by the expression `$harness`; an implementation's test file calls it
/// once (or once per `mod`, for several configurations). Needs `tokio` with `macros` and
/// `rt-multi-thread` in the caller's dev-dependencies.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(
            @each $harness;
            seqs_start_at_one_and_are_contiguous,
            reads_respect_from_and_max,
            waiting_reader_is_woken_by_append,
            concurrent_appends_get_unique_contiguous_seqs,
            payloads_round_trip_exactly,
            unknown_partition_is_an_error,
            truncate_before_keeps_numbering,
            reopen_keeps_acknowledged_entries,
            bounds_track_appends_and_truncation,
            flush_succeeds,
            deduplicated_appends_are_stored_once_or_in_order
        );
    };
    (@each $harness:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::conformance::$check(&$harness).await;
            }
        )*
    };
}

/// Runs every check, each on its own log name.
pub async fn run_all<H: LogHarness>(harness: &H) {
    seqs_start_at_one_and_are_contiguous(harness).await;
    reads_respect_from_and_max(harness).await;
    waiting_reader_is_woken_by_append(harness).await;
    concurrent_appends_get_unique_contiguous_seqs(harness).await;
    payloads_round_trip_exactly(harness).await;
    unknown_partition_is_an_error(harness).await;
    truncate_before_keeps_numbering(harness).await;
    reopen_keeps_acknowledged_entries(harness).await;
    bounds_track_appends_and_truncation(harness).await;
    flush_succeeds(harness).await;
    deduplicated_appends_are_stored_once_or_in_order(harness).await;
}

/// Seqs of each partition start at 1 and are contiguous; partitions are independent.
pub async fn seqs_start_at_one_and_are_contiguous<H: LogHarness>(harness: &H) {
    const CHECK: &str = "seqs_start_at_one_and_are_contiguous";
    let log = harness.open("contiguous", 3).await;
    assert_eq!(log.partitions(), 3, "{CHECK}: partitions()");
    for i in 1..=10u64 {
        let seq = append(&log, CHECK, 0, payload("a", i)).await;
        assert_eq!(seq, Seq(i), "{CHECK}: append {i} to partition 0");
        if i % 2 == 0 {
            let seq = append(&log, CHECK, 1, payload("b", i / 2)).await;
            assert_eq!(seq, Seq(i / 2), "{CHECK}: append {} to partition 1", i / 2);
        }
    }
    expect_bounds(&log, CHECK, 0, 1, 10).await;
    expect_bounds(&log, CHECK, 1, 1, 5).await;
    expect_bounds(&log, CHECK, 2, 1, 0).await;
    expect_payloads(&log, CHECK, 0, "a", 1, 10).await;
    expect_payloads(&log, CHECK, 1, "b", 1, 5).await;
}

/// Reads start at `from`, return at most `max`, and return empty after waiting past the end.
pub async fn reads_respect_from_and_max<H: LogHarness>(harness: &H) {
    const CHECK: &str = "reads_respect_from_and_max";
    let log = harness.open("reads", 1).await;
    for i in 1..=20 {
        append(&log, CHECK, 0, payload("r", i)).await;
    }
    let middle = read(&log, CHECK, 0, Seq(7), 5, READ_WAIT).await;
    assert!(
        !middle.is_empty() && middle.len() <= 5,
        "{CHECK}: read from 7 with max 5 returned {} entries",
        middle.len()
    );
    expect_run(CHECK, &middle, "r", 7);
    let one = read(&log, CHECK, 0, Seq(1), 1, READ_WAIT).await;
    assert_eq!(one.len(), 1, "{CHECK}: read with max 1");
    expect_run(CHECK, &one, "r", 1);
    let from_zero = read(&log, CHECK, 0, Seq(0), 1, READ_WAIT).await;
    assert_eq!(from_zero.len(), 1, "{CHECK}: read from seq 0 with max 1");
    expect_run(CHECK, &from_zero, "r", 1);
    let tail = read(&log, CHECK, 0, Seq(20), 10, READ_WAIT).await;
    assert_eq!(tail.len(), 1, "{CHECK}: read from the last seq");
    expect_run(CHECK, &tail, "r", 20);
    expect_payloads(&log, CHECK, 0, "r", 1, 20).await;
    for from in [21, 30] {
        let past = read(&log, CHECK, 0, Seq(from), 10, EMPTY_WAIT).await;
        assert!(
            past.is_empty(),
            "{CHECK}: read from {from} past the end returned {past:?}"
        );
    }
    let none = read(&log, CHECK, 0, Seq(1), 0, READ_WAIT).await;
    assert!(
        none.is_empty(),
        "{CHECK}: read with max 0 returned {none:?}"
    );
}

/// A reader waiting on an empty partition (or past its end) is woken by a later append.
pub async fn waiting_reader_is_woken_by_append<H: LogHarness>(harness: &H) {
    const CHECK: &str = "waiting_reader_is_woken_by_append";
    let log = Arc::new(harness.open("wakeup", 2).await);
    for (from, text) in [(1, "first"), (2, "second")] {
        let appender = {
            let log = log.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                append(&*log, CHECK, 0, Bytes::from_static(b"other partition")).await;
                append(&*log, CHECK, 1, Bytes::from_static(text.as_bytes())).await
            })
        };
        let entries = read(&*log, CHECK, 1, Seq(from), 10, WAKE_WAIT).await;
        let appended = appender
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: appender task failed: {e}"));
        assert_eq!(appended, Seq(from), "{CHECK}: seq of the appended entry");
        assert_eq!(
            entries,
            vec![LogEntry {
                seq: Seq(from),
                payload: Bytes::from_static(text.as_bytes()),
            }],
            "{CHECK}: the waiting reader (from seq {from}) got the wrong entries"
        );
    }
}

/// Concurrent appenders get unique contiguous seqs, each task's entries in its append order.
pub async fn concurrent_appends_get_unique_contiguous_seqs<H: LogHarness>(harness: &H) {
    const CHECK: &str = "concurrent_appends_get_unique_contiguous_seqs";
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 100;
    let log = Arc::new(harness.open("concurrent", 1).await);
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..PER_TASK {
                    let text = format!("task {task} entry {i}");
                    seqs.push(append(&*log, CHECK, 0, Bytes::from(text)).await);
                }
                seqs
            })
        })
        .collect();
    let mut by_seq = vec![None; (TASKS * PER_TASK) as usize + 1];
    for (task, handle) in tasks.into_iter().enumerate() {
        let seqs = handle
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: task {task} failed: {e}"));
        for (i, seq) in seqs.into_iter().enumerate() {
            let slot = by_seq
                .get_mut(seq.0 as usize)
                .filter(|_| seq.0 > 0)
                .unwrap_or_else(|| panic!("{CHECK}: seq {} out of 1..=1600", seq.0));
            assert!(slot.is_none(), "{CHECK}: seq {} returned twice", seq.0);
            *slot = Some((task as u64, i as u64));
        }
    }
    let entries = read_range(&*log, CHECK, 0, Seq(1), Seq(TASKS * PER_TASK)).await;
    let mut next_of_task = vec![0u64; TASKS as usize];
    for entry in entries {
        let (task, i) = by_seq[entry.seq.0 as usize]
            .unwrap_or_else(|| panic!("{CHECK}: seq {} was never returned", entry.seq.0));
        let expected = format!("task {task} entry {i}");
        assert_eq!(
            entry.payload,
            expected.as_bytes(),
            "{CHECK}: payload of seq {}",
            entry.seq.0
        );
        assert_eq!(
            i, next_of_task[task as usize],
            "{CHECK}: task {task}'s entries out of append order at seq {}",
            entry.seq.0
        );
        next_of_task[task as usize] += 1;
    }
    expect_bounds(&*log, CHECK, 0, 1, TASKS * PER_TASK).await;
}

/// Payload bytes round-trip exactly, including empty and 1 MiB payloads.
pub async fn payloads_round_trip_exactly<H: LogHarness>(harness: &H) {
    const CHECK: &str = "payloads_round_trip_exactly";
    let log = harness.open("payloads", 1).await;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let random: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let payloads = [
        Bytes::new(),
        Bytes::from_static(&[0]),
        Bytes::from_static(&[0xFF]),
        Bytes::from((0..=255u8).collect::<Vec<_>>()),
        Bytes::from(random),
        Bytes::from(vec![0u8; 64 << 10]),
        Bytes::new(),
    ];
    for (i, payload) in payloads.iter().enumerate() {
        let seq = append(&log, CHECK, 0, payload.clone()).await;
        assert_eq!(seq, Seq(i as u64 + 1), "{CHECK}: seq of payload {i}");
    }
    let all = read_range(&log, CHECK, 0, Seq(1), Seq(payloads.len() as u64)).await;
    for (i, payload) in payloads.iter().enumerate() {
        assert!(
            all[i].payload == payload,
            "{CHECK}: payload {i} ({} bytes) came back as {} different bytes",
            payload.len(),
            all[i].payload.len()
        );
        let single = read(&log, CHECK, 0, Seq(i as u64 + 1), 1, READ_WAIT).await;
        assert!(
            single.len() == 1 && single[0].payload == payload,
            "{CHECK}: payload {i} read alone"
        );
    }
}

/// Every operation on a partition outside `0..partitions` is `UnknownPartition`.
pub async fn unknown_partition_is_an_error<H: LogHarness>(harness: &H) {
    const CHECK: &str = "unknown_partition_is_an_error";
    let log = harness.open("unknown", 2).await;
    for p in [2, u16::MAX] {
        let partition = PartitionId(p);
        let results = [
            ("append", log.append(partition, Bytes::new()).await.err()),
            (
                "read",
                log.read(partition, Seq(1), 1, Duration::ZERO).await.err(),
            ),
            (
                "truncate_before",
                log.truncate_before(partition, Seq(1)).await.err(),
            ),
            ("bounds", log.bounds(partition).await.err()),
        ];
        for (operation, error) in results {
            match error {
                Some(LogError::UnknownPartition {
                    partition: found,
                    partitions: 2,
                }) if found == partition => {}
                other => panic!(
                    "{CHECK}: {operation} on partition {p} of 2: expected UnknownPartition, \
                     got {other:?}"
                ),
            }
        }
    }
}

/// After `truncate_before`, reads below the first kept seq are `Truncated`, reads from it work
/// and appends continue the numbering.
pub async fn truncate_before_keeps_numbering<H: LogHarness>(harness: &H) {
    const CHECK: &str = "truncate_before_keeps_numbering";
    let log = harness.open("truncate", 1).await;
    let filler = "x".repeat(200);
    for i in 1..=100 {
        append(&log, CHECK, 0, payload(&filler, i)).await;
    }
    for before in [0, 1] {
        truncate(&log, CHECK, 0, Seq(before)).await;
        expect_bounds(&log, CHECK, 0, 1, 100).await;
    }
    truncate(&log, CHECK, 0, Seq(51)).await;
    let kept = bounds(&log, CHECK, 0).await;
    assert!(
        (1..=51).contains(&kept.first.0) && kept.last == Seq(100),
        "{CHECK}: bounds after truncate_before(51): {kept:?}"
    );
    expect_truncated_below(&log, CHECK, kept.first).await;
    expect_run(
        CHECK,
        &read(&log, CHECK, 0, kept.first, 1, READ_WAIT).await,
        &filler,
        kept.first.0,
    );
    expect_payloads(&log, CHECK, 0, &filler, 51, 100).await;
    assert_eq!(
        append(&log, CHECK, 0, payload(&filler, 101)).await,
        Seq(101),
        "{CHECK}: append after truncation"
    );
    truncate(&log, CHECK, 0, Seq(102)).await;
    let after_all = bounds(&log, CHECK, 0).await;
    assert!(
        after_all.first >= kept.first && after_all.first <= Seq(102),
        "{CHECK}: bounds after truncate_before(102): {after_all:?}"
    );
    assert_eq!(
        after_all.last,
        Seq(101),
        "{CHECK}: last after truncating all"
    );
    expect_truncated_below(&log, CHECK, after_all.first).await;
    assert_eq!(
        append(&log, CHECK, 0, payload(&filler, 102)).await,
        Seq(102),
        "{CHECK}: append after truncating everything"
    );
    expect_payloads(&log, CHECK, 0, &filler, after_all.first.0, 102).await;
}

/// Reopening keeps every acknowledged entry, the bounds, and the numbering.
pub async fn reopen_keeps_acknowledged_entries<H: LogHarness>(harness: &H) {
    const CHECK: &str = "reopen_keeps_acknowledged_entries";
    let log = harness.open("reopen", 2).await;
    for i in 1..=30 {
        append(&log, CHECK, 0, payload("zero", i)).await;
    }
    for i in 1..=7 {
        append(&log, CHECK, 1, payload("one", i)).await;
    }
    truncate(&log, CHECK, 0, Seq(11)).await;
    let before = [bounds(&log, CHECK, 0).await, bounds(&log, CHECK, 1).await];
    drop(log);
    let log = harness.open("reopen", 2).await;
    let after = [bounds(&log, CHECK, 0).await, bounds(&log, CHECK, 1).await];
    assert_eq!(after, before, "{CHECK}: bounds across reopen");
    expect_payloads(&log, CHECK, 0, "zero", after[0].first.0, 30).await;
    expect_payloads(&log, CHECK, 1, "one", 1, 7).await;
    assert_eq!(append(&log, CHECK, 0, payload("zero", 31)).await, Seq(31));
    assert_eq!(append(&log, CHECK, 1, payload("one", 8)).await, Seq(8));
    drop(log);
    let log = harness.open("reopen", 2).await;
    expect_payloads(&log, CHECK, 0, "zero", after[0].first.0, 31).await;
    expect_payloads(&log, CHECK, 1, "one", 1, 8).await;
}

/// `bounds()` follows appends and truncation.
pub async fn bounds_track_appends_and_truncation<H: LogHarness>(harness: &H) {
    const CHECK: &str = "bounds_track_appends_and_truncation";
    let log = harness.open("bounds", 2).await;
    expect_bounds(&log, CHECK, 0, 1, 0).await;
    for i in 1..=3 {
        append(&log, CHECK, 0, payload("b", i)).await;
    }
    expect_bounds(&log, CHECK, 0, 1, 3).await;
    expect_bounds(&log, CHECK, 1, 1, 0).await;
    for before in [3, 4] {
        truncate(&log, CHECK, 0, Seq(before)).await;
        let found = bounds(&log, CHECK, 0).await;
        assert!(
            (1..=before).contains(&found.first.0) && found.last == Seq(3),
            "{CHECK}: bounds after truncate_before({before}): {found:?}"
        );
    }
    append(&log, CHECK, 0, payload("b", 4)).await;
    let found = bounds(&log, CHECK, 0).await;
    assert!(
        found.first <= Seq(4) && found.last == Seq(4),
        "{CHECK}: bounds after appending past a truncation: {found:?}"
    );
}

/// `flush` succeeds on an empty and a written log, and flushed entries survive a reopen.
pub async fn flush_succeeds<H: LogHarness>(harness: &H) {
    const CHECK: &str = "flush_succeeds";
    let log = harness.open("flush", 2).await;
    log.flush()
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: flush of an empty log: {e}"));
    for i in 1..=5 {
        append(&log, CHECK, i as u16 % 2, payload("f", i)).await;
    }
    log.flush()
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: flush: {e}"));
    drop(log);
    let log = harness.open("flush", 2).await;
    expect_bounds(&log, CHECK, 0, 1, 2).await;
    expect_bounds(&log, CHECK, 1, 1, 3).await;
}

/// An entry appended twice under one id is stored once (a deduplicating backend answers the
/// retry with the first seq) or twice in a row; either way the numbering stays contiguous and
/// a different id is a different entry.
pub async fn deduplicated_appends_are_stored_once_or_in_order<H: LogHarness>(harness: &H) {
    const CHECK: &str = "deduplicated_appends_are_stored_once_or_in_order";
    let log = harness.open("dedup", 2).await;
    let mut seqs = Vec::new();
    for (id, tag) in [("a", "x"), ("a", "x"), ("b", "y")] {
        let seq = log
            .append_deduplicated(PartitionId(1), id, payload(tag, 1))
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: append_deduplicated({id}): {e}"));
        seqs.push(seq);
    }
    let once = seqs == [Seq(1), Seq(1), Seq(2)];
    let twice = seqs == [Seq(1), Seq(2), Seq(3)];
    assert!(once || twice, "{CHECK}: seqs {seqs:?}");
    let last = seqs[2].0;
    let entries = read_range(&log, CHECK, 1, Seq(1), Seq(last)).await;
    let tags: Vec<Bytes> = entries.into_iter().map(|e| e.payload).collect();
    let mut want = vec![payload("x", 1); last as usize - 1];
    want.push(payload("y", 1));
    assert_eq!(tags, want, "{CHECK}: payloads");
    expect_bounds(&log, CHECK, 0, 1, 0).await;
}

/// The payload of entry `i` of a run tagged `tag`.
fn payload(tag: &str, i: u64) -> Bytes {
    Bytes::from(format!("{tag} {i}"))
}

async fn append(log: &impl Log, check: &str, partition: u16, payload: Bytes) -> Seq {
    log.append(PartitionId(partition), payload)
        .await
        .unwrap_or_else(|e| panic!("{check}: append to partition {partition}: {e}"))
}

async fn read(
    log: &impl Log,
    check: &str,
    partition: u16,
    from: Seq,
    max: usize,
    wait: Duration,
) -> Vec<LogEntry> {
    log.read(PartitionId(partition), from, max, wait)
        .await
        .unwrap_or_else(|e| panic!("{check}: read partition {partition} from {}: {e}", from.0))
}

async fn bounds(log: &impl Log, check: &str, partition: u16) -> LogBounds {
    log.bounds(PartitionId(partition))
        .await
        .unwrap_or_else(|e| panic!("{check}: bounds of partition {partition}: {e}"))
}

async fn truncate(log: &impl Log, check: &str, partition: u16, before: Seq) {
    log.truncate_before(PartitionId(partition), before)
        .await
        .unwrap_or_else(|e| panic!("{check}: truncate_before({}): {e}", before.0))
}

/// Reads `from..=to` of `partition`, looping over short reads.
async fn read_range(
    log: &impl Log,
    check: &str,
    partition: u16,
    from: Seq,
    to: Seq,
) -> Vec<LogEntry> {
    let mut entries = Vec::new();
    let mut next = from;
    while next <= to {
        let batch = read(log, check, partition, next, READ_BATCH, READ_WAIT).await;
        assert!(
            !batch.is_empty(),
            "{check}: read of partition {partition} from {} returned nothing, expected entries \
             up to {}",
            next.0,
            to.0
        );
        for entry in batch {
            assert_eq!(
                entry.seq, next,
                "{check}: seqs read from partition {partition}"
            );
            if next <= to {
                entries.push(entry);
            }
            next = next.next();
        }
    }
    entries
}

async fn expect_bounds(log: &impl Log, check: &str, partition: u16, first: u64, last: u64) {
    let expected = LogBounds {
        first: Seq(first),
        last: Seq(last),
    };
    let found = bounds(log, check, partition).await;
    assert_eq!(found, expected, "{check}: bounds of partition {partition}");
}

/// Asserts that `partition` holds exactly `payload(tag, i)` at seq `i` for `first..=last`.
async fn expect_payloads(
    log: &impl Log,
    check: &str,
    partition: u16,
    tag: &str,
    first: u64,
    last: u64,
) {
    let entries = read_range(log, check, partition, Seq(first), Seq(last)).await;
    expect_run(check, &entries, tag, first);
}

/// Asserts that `entries` are `payload(tag, i)` at seq `i` from `first` on.
fn expect_run(check: &str, entries: &[LogEntry], tag: &str, first: u64) {
    for (i, entry) in entries.iter().enumerate() {
        let seq = first + i as u64;
        assert_eq!(
            entry,
            &LogEntry {
                seq: Seq(seq),
                payload: payload(tag, seq),
            },
            "{check}: entry {i} of a read from seq {first}"
        );
    }
}

/// Asserts that partition 0 reads below `first` fail with `Truncated`.
async fn expect_truncated_below(log: &impl Log, check: &str, first: Seq) {
    let requested: HashSet<u64> = [1, first.0.saturating_sub(1)].into_iter().collect();
    for requested in requested.into_iter().filter(|r| *r >= 1 && *r < first.0) {
        match log
            .read(PartitionId(0), Seq(requested), 10, Duration::ZERO)
            .await
        {
            Err(LogError::Truncated {
                partition: PartitionId(0),
                requested: found_requested,
                first: found_first,
            }) if found_requested == Seq(requested) && found_first == first => {}
            other => panic!(
                "{check}: read from {requested} below first {}: expected Truncated, got \
                 {other:?}",
                first.0
            ),
        }
    }
}
