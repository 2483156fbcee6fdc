//! The `[transmitter]` table of the configuration file.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Default rows (after coalescing) at which a batch closes.
pub const DEFAULT_BATCH_MAX_ROWS: usize = 5_000;
/// Default longest a change waits in a batch before the batch is written, milliseconds.
pub const DEFAULT_BATCH_MAX_DELAY_MS: u64 = 20;

/// Where and how the transmitter writes. Loaded from the `[transmitter]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransmitterConfig {
    /// PostgreSQL connection string, e.g. `postgres://user:pass@127.0.0.1:5432/app`.
    pub url: String,
    /// The transmitter's name: its positions and dead letters are stored under it, so two
    /// clusters can write into one database.
    pub name: String,
    /// Schema of the mapped tables and of the transmitter's own two tables.
    pub schema: String,
    /// Database connections, each writing the partitions `p` with `p mod connections == i`.
    pub connections: usize,
    /// Rows (after coalescing repeated keys) at which a batch closes; one batch may pass it by
    /// the entries of one log read.
    pub batch_max_rows: usize,
    /// Longest a change waits before its batch is written, milliseconds.
    pub batch_max_delay_ms: u64,
    /// Most log entries read from one partition at a time.
    pub read_max_entries: usize,
    /// First pause after a transient database error, milliseconds; doubles up to the cap.
    pub retry_initial_ms: u64,
    /// Longest pause between retries, milliseconds.
    pub retry_max_ms: u64,
    /// Longest a `TransmitterFlush` may ask to wait, milliseconds; a longer one is refused.
    pub max_flush_timeout_ms: u64,
    /// Keyspace → table mappings.
    pub tables: Vec<TableMapping>,
}

impl Default for TransmitterConfig {
    fn default() -> Self {
        TransmitterConfig {
            url: String::new(),
            name: "notadb".into(),
            schema: "public".into(),
            connections: 2,
            batch_max_rows: DEFAULT_BATCH_MAX_ROWS,
            batch_max_delay_ms: DEFAULT_BATCH_MAX_DELAY_MS,
            read_max_entries: 1024,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            max_flush_timeout_ms: 60_000,
            tables: Vec::new(),
        }
    }
}

/// What a delete in the keyspace does to the table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteMode {
    /// `DELETE` the row.
    #[default]
    Delete,
    /// Set the `soft_delete_column` (boolean) to true and keep the row.
    Soft,
}

/// One keyspace written to one table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableMapping {
    /// The keyspace whose changes are written.
    pub keyspace: String,
    /// The table (in the transmitter's schema).
    pub table: String,
    /// Key element → column; an element not named here goes to the column of its own name.
    /// The key columns are the table's primary key.
    #[serde(default)]
    pub key_columns: BTreeMap<String, String>,
    /// JSON value field → column, for keyspaces with JSON values. Missing fields are NULL.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// A column that receives the whole value: `jsonb`/`json`/`text` for JSON values,
    /// `bytea` for byte values.
    #[serde(default)]
    pub value_column: Option<String>,
    /// The `bigint` column holding the seq of the change that wrote the row; a row is only
    /// overwritten by a newer seq.
    #[serde(default = "default_seq_column")]
    pub seq_column: String,
    /// `delete` (the default) or `soft`.
    #[serde(default)]
    pub delete: DeleteMode,
    /// The boolean column a soft delete sets; required with `delete = "soft"`.
    #[serde(default)]
    pub soft_delete_column: Option<String>,
    /// A `timestamptz` (or `bigint`, microseconds) column receiving the entry's expiry, for
    /// keyspaces with a TTL. PostgreSQL does not expire rows; readers filter on it.
    #[serde(default)]
    pub expires_column: Option<String>,
}

fn default_seq_column() -> String {
    "notadb_seq".into()
}

impl TransmitterConfig {
    /// Checks what can be checked without the database or the keyspaces.
    pub fn validate(&self) -> Result<(), String> {
        if self.url.is_empty() {
            return Err("transmitter.url: a PostgreSQL connection string is required".into());
        }
        if !is_identifier(&self.name) {
            return Err(format!(
                "transmitter.name: expected letters, digits and _ , found {:?}",
                self.name
            ));
        }
        if self.max_flush_timeout_ms == 0 {
            return Err("transmitter.max_flush_timeout_ms: expected a positive number".into());
        }
        if self.connections == 0 || self.connections > 64 {
            return Err(format!(
                "transmitter.connections: expected 1 to 64, found {}",
                self.connections
            ));
        }
        if self.batch_max_rows == 0 || self.read_max_entries == 0 {
            return Err("transmitter.batch_max_rows and read_max_entries must be above 0".into());
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return Err(
                "transmitter: retry_initial_ms must be above 0 and at most retry_max_ms".into(),
            );
        }
        if self.tables.is_empty() {
            return Err("transmitter.tables: map at least one keyspace to a table".into());
        }
        let mut keyspaces = std::collections::BTreeSet::new();
        let mut tables = std::collections::BTreeSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            let at = format!("transmitter.tables[{i}]");
            if !keyspaces.insert(&t.keyspace) {
                return Err(format!("{at}: keyspace {:?} is mapped twice", t.keyspace));
            }
            if !tables.insert(&t.table) {
                return Err(format!("{at}: table {:?} is mapped twice", t.table));
            }
            if t.fields.is_empty() && t.value_column.is_none() {
                return Err(format!(
                    "{at}: give `fields` (JSON field → column) or `value_column`, or both"
                ));
            }
            match (&t.delete, &t.soft_delete_column) {
                (DeleteMode::Soft, None) => {
                    return Err(format!("{at}: delete = \"soft\" needs soft_delete_column"))
                }
                (DeleteMode::Delete, Some(_)) => {
                    return Err(format!(
                        "{at}: soft_delete_column is only used with delete = \"soft\""
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The first pause after a transient error.
    pub fn retry_initial(&self) -> Duration {
        Duration::from_millis(self.retry_initial_ms)
    }

    /// The longest pause between retries.
    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms)
    }

    /// The longest a change waits in a batch.
    pub fn batch_max_delay(&self) -> Duration {
        Duration::from_millis(self.batch_max_delay_ms)
    }

    /// Which connection writes partition `p`.
    pub fn connection_of(&self, p: u16) -> usize {
        usize::from(p) % self.connections
    }
}

/// Whether `s` is a plain SQL identifier the transmitter's own names may use.
fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 48 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> TableMapping {
        TableMapping {
            keyspace: "items".into(),
            table: "items".into(),
            key_columns: BTreeMap::new(),
            fields: BTreeMap::from([("title".into(), "title".into())]),
            value_column: None,
            seq_column: default_seq_column(),
            delete: DeleteMode::Delete,
            soft_delete_column: None,
            expires_column: None,
        }
    }

    #[test]
    fn validation_names_the_field() {
        let ok = TransmitterConfig {
            url: "postgres://x".into(),
            tables: vec![mapping()],
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let mut twice = ok.clone();
        twice.tables.push(mapping());
        assert!(twice.validate().unwrap_err().contains("mapped twice"));
        let mut soft = ok.clone();
        soft.tables[0].delete = DeleteMode::Soft;
        assert!(soft.validate().unwrap_err().contains("soft_delete_column"));
        let mut nothing = ok.clone();
        nothing.tables[0].fields.clear();
        assert!(nothing.validate().unwrap_err().contains("value_column"));
        let no_url = TransmitterConfig {
            url: String::new(),
            ..ok
        };
        assert!(no_url.validate().unwrap_err().contains("url"));
    }

    #[test]
    fn parses_from_toml_and_rejects_unknown_keys() {
        let text = r#"
            url = "postgres://u:p@127.0.0.1/app"
            [[tables]]
            keyspace = "items"
            table = "items"
            fields = { title = "title", price = "price_cents" }
            delete = "soft"
            soft_delete_column = "deleted"
        "#;
        let c: TransmitterConfig = toml::from_str(text).expect("parses");
        assert_eq!(c.tables[0].delete, DeleteMode::Soft);
        assert_eq!(c.tables[0].seq_column, "notadb_seq");
        assert_eq!(c.validate(), Ok(()));
        let bad = format!("{text}\nbatch_rows = 3");
        assert!(toml::from_str::<TransmitterConfig>(&bad).is_err());
    }
}
