use notadb_log::LogError;
use notadb_storage::StorageError;
use notadb_types::TypesError;
use thiserror::Error;

/// What went wrong with a request, classified by what the caller must do. The server maps each
/// variant to one gRPC code (in one place); messages are shown to users as they are.
#[derive(Clone, Debug, Error)]
pub enum NodeError {
    /// The request is wrong and will stay wrong; nothing was written.
    #[error("{0}")]
    InvalidArgument(String),
    /// A named thing (keyspace, handler) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Creating something that exists with another definition.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request's deadline passed (e.g. waiting for a token to be applied).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Retry later (shutting down, a partition stopped, the log failing transiently).
    #[error("{0}")]
    Unavailable(String),
    /// The node, its configuration or its data forbid this (no sequencer log for a
    /// multi-partition transaction, a cache's loader not registered, storage that does not go
    /// with the log): retrying does not help until an operator acts.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A limit of the node was reached by a valid request.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A bug or corruption; details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl NodeError {
    /// Shorthand for an invalid argument.
    pub fn invalid(message: impl Into<String>) -> NodeError {
        NodeError::InvalidArgument(message.into())
    }

    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            NodeError::Unavailable(_) | NodeError::DeadlineExceeded(_)
        )
    }
}

impl From<TypesError> for NodeError {
    fn from(e: TypesError) -> Self {
        NodeError::InvalidArgument(e.to_string())
    }
}

impl From<StorageError> for NodeError {
    fn from(e: StorageError) -> Self {
        // A memory-only view's refusal is not a failure: the read runs again (`on_view`).
        if !matches!(e, StorageError::WouldBlock) {
            tracing::error!(error = %e, "storage error");
        }
        NodeError::Internal(e.to_string())
    }
}

impl From<LogError> for NodeError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::EntryTooLarge { .. } => NodeError::InvalidArgument(e.to_string()),
            e if e.is_retryable() => NodeError::Unavailable(format!("log: {e}")),
            e => {
                tracing::error!(error = %e, "log error");
                NodeError::Internal(format!("log: {e}"))
            }
        }
    }
}

impl From<tokio::task::JoinError> for NodeError {
    fn from(e: tokio::task::JoinError) -> Self {
        NodeError::Internal(format!("task failed: {e}"))
    }
}
