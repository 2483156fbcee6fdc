//! A keyspace's definition as every node's catalog holds it.

use notadb_types::{KeyspaceId, KeyspaceSchema};
use serde::{Deserialize, Serialize};

/// A keyspace: its schema and the id its data is stored and logged under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyspaceDef {
    /// The id log entries and stored rows name the keyspace by.
    pub id: KeyspaceId,
    /// The keyspace's name, key and value.
    pub schema: KeyspaceSchema,
}
