//! The crate's one error type.

use notadb_types::PartitionId;

/// What can go wrong with a transaction before it is logged (bad input: the caller fixes the
/// request), or while a partition executes its log (the replica must stop: executing on would
/// let it diverge from the other replicas).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// The request is malformed; nothing was logged.
    #[error("invalid transaction: {0}")]
    Invalid(String),
    /// No procedure of that name is registered.
    #[error("unknown procedure {name:?}")]
    UnknownProcedure {
        /// The name the request gave.
        name: String,
    },
    /// A logged entry could not be decoded: every replica meets the same bytes and skips
    /// them alike.
    #[error("malformed transaction entry: {0}")]
    Malformed(String),
    /// A logged entry of a newer format than this build reads: skipping it would diverge
    /// from replicas that can, so the partition stops until the node is upgraded.
    #[error("{what} format {found} is newer than this build reads ({known}): upgrade the node")]
    Newer {
        /// What was read (transaction input, report).
        what: &'static str,
        /// The entry's format version.
        found: u8,
        /// The newest version this build reads.
        known: u8,
    },
    /// The replica's own storage failed; not a transaction outcome.
    #[error("storage error in partition {partition}: {message}")]
    Storage {
        /// The executing partition.
        partition: PartitionId,
        /// What the storage reported.
        message: String,
    },
}

/// A [`TxnStore`](crate::TxnStore) failure: the replica's own storage failed (I/O,
/// corruption), or an entry holds changes this build cannot make (a newer format). Never a
/// transaction outcome: the executing partition stops rather than diverge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl From<notadb_types::WireError> for TxnError {
    /// The bytes end early or a count is out of bounds.
    fn from(e: notadb_types::WireError) -> TxnError {
        TxnError::Malformed(e.to_string())
    }
}
