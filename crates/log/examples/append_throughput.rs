//! Append throughput of the embedded log: 100,000 64-byte entries from 64 concurrent tasks,
//! each awaiting its own appends one at a time, per fsync policy.
//!
//! `cargo run -p notadb-log --release --example append_throughput [-- <partitions>...]`
//! (default: 64 partitions; task `t` appends to partition `t % partitions`). The log lives in a
//! temporary directory under `$TMPDIR` (or `/tmp`).

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use notadb_log::{EmbeddedLog, EmbeddedLogOptions, FsyncPolicy};

/// Entries appended per run.
const ENTRIES: u64 = 100_000;
/// Concurrent appending tasks.
const TASKS: u64 = 64;
/// Payload size in bytes.
const PAYLOAD_BYTES: usize = 64;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let partition_counts: Vec<u16> = std::env::args()
        .skip(1)
        .map(|arg| arg.parse())
        .collect::<Result<_, _>>()?;
    let partition_counts = if partition_counts.is_empty() {
        vec![64]
    } else {
        partition_counts
    };
    println!("| fsync policy | partitions | entries | seconds | entries/s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for partitions in partition_counts {
        for policy in [
            FsyncPolicy::Always,
            FsyncPolicy::Interval(Duration::from_millis(100)),
        ] {
            let (seconds, rate) = run(policy, partitions).await?;
            println!("| {policy} | {partitions} | {ENTRIES} | {seconds:.2} | {rate:.0} |");
        }
    }
    Ok(())
}

async fn run(policy: FsyncPolicy, partitions: u16) -> Result<(f64, f64), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let options = EmbeddedLogOptions {
        fsync: policy,
        ..EmbeddedLogOptions::default()
    };
    let log = Arc::new(EmbeddedLog::open(dir.path(), partitions, options)?);
    let seconds =
        notadb_testkit::load::append_from_tasks(log, partitions, ENTRIES, TASKS, PAYLOAD_BYTES)
            .await?;
    Ok((seconds, ENTRIES as f64 / seconds))
}
