//! The crate's one error type.

use notadb_types::{PartitionId, Seq};

/// Everything a [`Log`](crate::Log) operation can fail with.
///
/// Callers decide what to do with [`LogError::is_retryable`]: retryable errors may succeed if the
/// same call is repeated later (possibly against a reopened log); the others will fail again.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The partition is not one of the log's `0..partitions`.
    #[error("unknown partition {}: expected a partition below {partitions}", partition.0)]
    UnknownPartition {
        /// The partition the caller named.
        partition: PartitionId,
        /// The number of partitions the log has.
        partitions: u16,
    },
    /// A read started below the oldest entry the log still keeps.
    #[error(
        "partition {} was truncated: requested seq {}, expected a seq of at least {}",
        partition.0,
        requested.0,
        first.0
    )]
    Truncated {
        /// The partition read.
        partition: PartitionId,
        /// The seq the read asked to start at.
        requested: Seq,
        /// The oldest seq the partition still keeps.
        first: Seq,
    },
    /// An appended payload is larger than the log accepts.
    #[error("entry of {size} bytes is too large: expected at most {max} bytes")]
    EntryTooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The largest payload the log accepts, in bytes.
        max: usize,
    },
    /// An existing log was opened with a partition count other than the one it was created with.
    #[error("expected a log with {expected} partitions, found one with {found}")]
    PartitionCount {
        /// The partition count the caller asked for.
        expected: u16,
        /// The partition count the existing log was created with.
        found: u16,
    },
    /// The log's durable data is damaged or not in the expected format; the message names the
    /// file and offset.
    #[error("corrupt log: {0}")]
    Corrupt(String),
    /// An operating-system I/O error.
    #[error("log i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The log was closed, or stopped accepting writes after an earlier I/O failure; reopen it.
    #[error("log is closed: expected a running log writer, found none")]
    Closed,
    /// The log's backend (a NATS server, say) could not be reached or did not answer in time;
    /// an append that fails this way may still have been written.
    #[error("log backend unavailable: {0}")]
    Unavailable(String),
    /// The log's backend refused the request, and will refuse it again: an existing stream
    /// that does not look like one of this log's, say.
    #[error("log backend refused the request: {0}")]
    Rejected(String),
    /// The options the log was opened with are invalid; the message names the option.
    #[error("invalid log options: {0}")]
    InvalidOptions(String),
}

impl LogError {
    /// Whether repeating the same call later (possibly after reopening the log) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LogError::Io(_) | LogError::Closed | LogError::Unavailable(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_io_closed_and_unavailable_are_retryable() {
        assert!(LogError::Closed.is_retryable());
        assert!(LogError::Unavailable("timed out".into()).is_retryable());
        assert!(!LogError::Rejected("stream exists".into()).is_retryable());
        assert!(!LogError::InvalidOptions("name".into()).is_retryable());
        assert!(LogError::Io(std::io::Error::other("disk")).is_retryable());
        assert!(!LogError::Corrupt("x".into()).is_retryable());
        assert!(!LogError::EntryTooLarge { size: 2, max: 1 }.is_retryable());
        assert!(!LogError::PartitionCount {
            expected: 1,
            found: 2
        }
        .is_retryable());
        let unknown = LogError::UnknownPartition {
            partition: PartitionId(9),
            partitions: 4,
        };
        assert!(!unknown.is_retryable());
        assert_eq!(
            unknown.to_string(),
            "unknown partition 9: expected a partition below 4"
        );
        assert!(!LogError::Truncated {
            partition: PartitionId(0),
            requested: Seq(1),
            first: Seq(5)
        }
        .is_retryable());
    }
}
