//! The crate's error type.

use notadb_log::LogError;
use notadb_node::NodeError;

/// A failure to join, run or leave a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The configuration is wrong, or disagrees with the cluster's.
    #[error("{0}")]
    Config(String),
    /// NATS or JetStream did not answer as expected.
    #[error("nats: {0}")]
    Nats(String),
    /// A conditional write found another revision than it expected.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A checkpoint could not be stored or restored.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The node failed.
    #[error("{0}")]
    Node(#[from] NodeError),
    /// The log failed.
    #[error("{0}")]
    Log(#[from] LogError),
}

impl From<ClusterError> for NodeError {
    fn from(e: ClusterError) -> NodeError {
        match e {
            ClusterError::Node(e) => e,
            ClusterError::Config(m) => NodeError::InvalidArgument(m),
            other => NodeError::Unavailable(other.to_string()),
        }
    }
}

/// Wraps any NATS error.
pub(crate) fn nats(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Nats(format!("{what}: {e}"))
}
