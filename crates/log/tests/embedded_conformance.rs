//! The conformance suite against [`EmbeddedLog`], for each fsync policy.

use std::time::Duration;

use notadb_log::conformance::{self, LogHarness};
use notadb_log::{EmbeddedLog, EmbeddedLogOptions, FsyncPolicy};

/// Small segments, so that the suite's truncations delete files and its appends roll segments.
const SEGMENT_BYTES: u64 = 4096;

/// Opens each log name in its own directory under one temporary directory.
struct Harness {
    dir: tempfile::TempDir,
    options: EmbeddedLogOptions,
}

impl Harness {
    fn new(fsync: FsyncPolicy) -> Harness {
        Harness {
            dir: tempfile::tempdir().expect("create a temporary directory"),
            options: EmbeddedLogOptions {
                fsync,
                segment_bytes: SEGMENT_BYTES,
                ..EmbeddedLogOptions::default()
            },
        }
    }
}

#[async_trait::async_trait]
impl LogHarness for Harness {
    type L = EmbeddedLog;

    async fn open(&self, name: &str, partitions: u16) -> EmbeddedLog {
        let dir = self.dir.path().join(name);
        EmbeddedLog::open(&dir, partitions, self.options.clone())
            .unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
    }
}

macro_rules! conformance_tests {
    ($policy_module:ident, $policy:expr, [$($check:ident),* $(,)?]) => {
        mod $policy_module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    conformance::$check(&Harness::new($policy)).await;
                }
            )*
        }
    };
}

macro_rules! all_checks {
    ($policy_module:ident, $policy:expr) => {
        conformance_tests!(
            $policy_module,
            $policy,
            [
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
            ]
        );
    };
}

all_checks!(always, FsyncPolicy::Always);
all_checks!(interval, FsyncPolicy::Interval(Duration::from_millis(20)));

/// `run_all` itself, with default options (64 MiB segments) and the remaining policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_with_default_segments_and_never_policy() {
    let harness = Harness {
        dir: tempfile::tempdir().expect("create a temporary directory"),
        options: EmbeddedLogOptions {
            fsync: FsyncPolicy::Never,
            ..EmbeddedLogOptions::default()
        },
    };
    conformance::run_all(&harness).await;
}
