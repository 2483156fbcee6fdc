use notadb_log::LogError;
use thiserror::Error;

/// What stopped the transmitter from writing, classified by what it does next.
#[derive(Debug, Error)]
pub enum TransmitterError {
    /// The configuration or the mapping does not fit the keyspaces or the tables. Retried
    /// with backoff (a table can be fixed while the node runs), and shown in the status.
    #[error("{0}")]
    Config(String),
    /// The database failed (connection lost, restarting, serialization failure, …): the batch
    /// is retried with backoff, in order.
    #[error("{what}: {message}")]
    Database {
        /// What the transmitter was doing.
        what: String,
        /// The server's message and SQLSTATE, or the client's error.
        message: String,
    },
    /// A row the database refuses for good; the batch is written again with every such row
    /// isolated into the dead-letter table.
    #[error("refused row: {0}")]
    Poison(String),
    /// Another transmitter moved a position this one was about to move: it reloads them.
    #[error("another transmitter wrote these partitions; positions reloaded")]
    Fenced,
    /// A request the transmitter refuses (a flush asking to wait past its limit).
    #[error("{0}")]
    Invalid(String),
    /// `flush` did not see its tokens in the database in time.
    #[error("{0}")]
    Timeout(String),
    /// Reading a transaction's effects from this replica failed (it had not applied the
    /// transaction in time, or its storage failed): retried with backoff.
    #[error("reading a transaction's effects: {0}")]
    Replica(String),
    /// Reading the log failed.
    #[error("reading the log: {0}")]
    Log(#[from] LogError),
}

impl TransmitterError {
    /// A database error while doing `what`, with the server's message when it sent one.
    pub fn from_pg(what: &str, e: tokio_postgres::Error) -> TransmitterError {
        let message = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        TransmitterError::Database {
            what: what.to_string(),
            message,
        }
    }
}
