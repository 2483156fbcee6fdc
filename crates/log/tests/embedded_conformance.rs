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

mod always {
    use super::*;
    notadb_log::conformance_tests!(Harness::new(FsyncPolicy::Always));
}

mod interval {
    use super::*;
    notadb_log::conformance_tests!(Harness::new(FsyncPolicy::Interval(Duration::from_millis(
        20
    ))));
}

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
