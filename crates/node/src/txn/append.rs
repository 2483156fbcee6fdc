//! Appends that must happen: retried until done or the node shuts down.

use std::time::Duration;

use bytes::Bytes;
use notadb_log::Log;
use notadb_types::{PartitionId, Seq};

/// Pause before retrying a failed append of the forwarder or of remote reads.
pub(crate) const APPEND_RETRY: Duration = Duration::from_millis(100);

/// Appends `payload` to partition `p` (deduplicated by `id` when given), retrying retryable
/// failures until it is done (its seq) or the node shuts down (None). A failure retrying
/// cannot fix (an entry over the log's size limit) is returned.
pub(crate) async fn append_until_done(
    log: &dyn Log,
    p: PartitionId,
    id: Option<&str>,
    payload: &[u8],
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Seq>, notadb_log::LogError> {
    loop {
        let payload = Bytes::copy_from_slice(payload);
        let appended = match id {
            Some(id) => log.append_deduplicated(p, id, payload).await,
            None => log.append(p, payload).await,
        };
        match appended {
            Ok(seq) => return Ok(Some(seq)),
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => {
                tracing::warn!(partition = %p, error = %e, "a transaction append failed, retrying");
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return Ok(None),
                    _ = tokio::time::sleep(APPEND_RETRY) => {}
                }
            }
        }
    }
}
