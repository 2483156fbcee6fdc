//! An append load on a log, for the log examples and benchmarks.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use notadb_log::{Log, LogError};
use notadb_types::PartitionId;

/// Appends `entries` entries of `payload_bytes` bytes from `tasks` concurrent tasks, each
/// awaiting its own appends one at a time, task `t` to partition `t % partitions`; returns the
/// seconds it took.
pub async fn append_from_tasks<L: Log>(
    log: Arc<L>,
    partitions: u16,
    entries: u64,
    tasks: u64,
    payload_bytes: usize,
) -> Result<f64, LogError> {
    let payload = Bytes::from(vec![0xAB; payload_bytes]);
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let log = log.clone();
            let payload = payload.clone();
            let count = entries / tasks + u64::from(task < entries % tasks);
            let partition = PartitionId((task % u64::from(partitions)) as u16);
            tokio::spawn(async move {
                for _ in 0..count {
                    log.append(partition, payload.clone()).await?;
                }
                Ok::<_, LogError>(())
            })
        })
        .collect();
    for handle in handles {
        handle
            .await
            .map_err(|e| LogError::Io(std::io::Error::other(e)))??;
    }
    Ok(started.elapsed().as_secs_f64())
}
