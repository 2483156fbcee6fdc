//! The transmitter's deterministic core: log entries in, one coalesced, key-sorted batch of
//! row changes out, with the positions it covers. No I/O and no clock.

use crate::mapping::{hex, render_micros, Table};
use notadb_node::record::{Op, Record};
use notadb_types::{KeyspaceId, PartitionId, Seq};
use std::collections::BTreeMap;

/// What one change does to its row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowOp {
    /// Insert or update: the text of each value column, in `Table::value_columns` order.
    Upsert(Vec<Option<String>>),
    /// Delete (or soft-delete) the row.
    Delete,
}

/// The last change of one key within a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowChange {
    /// Index of the table among the transmitter's tables.
    pub table: usize,
    /// The text of each key column, in key order.
    pub key: Vec<String>,
    pub partition: PartitionId,
    pub seq: Seq,
    pub op: RowOp,
}

/// A change the database refused, or the transmitter could not turn into a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub keyspace: String,
    pub table: String,
    pub partition: PartitionId,
    pub seq: Seq,
    /// The key as a JSON array of its elements.
    pub key: String,
    /// The value's text, if the change had one.
    pub value: Option<String>,
    pub error: String,
    pub sqlstate: Option<String>,
}

/// How far a batch takes one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advance {
    /// The last seq covered.
    pub seq: Seq,
    /// Its append time.
    pub ts_micros: i64,
}

/// Changes gathered for one transaction: the last change per key, ordered by table and
/// encoded key (so concurrent writers lock rows in one order), and the positions covered.
#[derive(Debug, Default)]
pub struct Batch {
    rows: BTreeMap<(usize, Vec<u8>), RowChange>,
    dead: Vec<DeadLetter>,
    advances: BTreeMap<PartitionId, Advance>,
    entries: usize,
    oldest_ts: Option<i64>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Adds the entry `seq` of `partition` (`None`: an entry that does not decode, which
    /// replicas skip too). Entries of one partition must come in seq order. `by_keyspace` maps
    /// keyspace ids to the index of their table; other keyspaces are skipped.
    pub fn add(
        &mut self,
        partition: PartitionId,
        seq: Seq,
        record: Option<&Record>,
        tables: &[Table],
        by_keyspace: &BTreeMap<KeyspaceId, usize>,
    ) {
        self.entries += 1;
        let ts_micros = record.map_or(0, Record::ts_micros);
        self.oldest_ts.get_or_insert(ts_micros);
        self.advances.insert(partition, Advance { seq, ts_micros });
        let Some(Record::Batch { ops, .. }) = record else {
            // A dropped keyspace leaves its table as it is.
            return;
        };
        for op in ops {
            let (keyspace, key) = match &op {
                Op::Put { keyspace, key, .. } | Op::Delete { keyspace, key } => (keyspace, key),
                Op::DeleteRange {
                    keyspace, start, ..
                } => (keyspace, start),
            };
            let Some(&index) = by_keyspace.get(keyspace) else {
                continue;
            };
            let table = &tables[index];
            match row_of(table, index, partition, seq, op) {
                Ok(row) => {
                    self.rows.insert((index, key.clone()), row);
                }
                Err((error, value)) => self.dead.push(DeadLetter {
                    keyspace: table.keyspace.clone(),
                    table: table.qualified.clone(),
                    partition,
                    seq,
                    key: key_json(table, key),
                    value,
                    error,
                    sqlstate: None,
                }),
            }
        }
    }

    /// Rows to write (one per key), in table and key order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &RowChange> {
        self.rows.values()
    }

    /// Number of rows to write.
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// Log entries the batch covers.
    pub fn entry_count(&self) -> usize {
        self.entries
    }

    /// Whether the batch covers no entry.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Changes that cannot become rows, found while decoding.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead
    }

    /// Per partition, the last entry covered.
    pub fn advances(&self) -> &BTreeMap<PartitionId, Advance> {
        &self.advances
    }

    /// Append time of the oldest entry covered.
    pub fn oldest_ts(&self) -> Option<i64> {
        self.oldest_ts
    }
}

/// The key as a JSON array of its elements (for dead letters), or its bytes when it does not
/// decode.
pub fn key_json(table: &Table, key: &[u8]) -> String {
    match table.schema.decode_key(key) {
        Ok(elements) => {
            serde_json::Value::Array(elements.iter().map(|e| e.to_json()).collect()).to_string()
        }
        Err(_) => serde_json::Value::String(hex(key)).to_string(),
    }
}

/// The row change one op makes, or why it cannot be written (and the value's text).
fn row_of(
    table: &Table,
    index: usize,
    partition: PartitionId,
    seq: Seq,
    op: &Op,
) -> Result<RowChange, (String, Option<String>)> {
    let (key, stored) = match op {
        Op::Put { key, stored, .. } => (key, Some(stored)),
        Op::Delete { key, .. } => (key, None),
        Op::DeleteRange { .. } => {
            return Err((
                "range deletes are not transmitted: delete the rows in PostgreSQL, or delete keys one by one".into(),
                None,
            ))
        }
    };
    let elements = table
        .schema
        .decode_key(key)
        .map_err(|e| (format!("key does not decode: {e}"), None))?;
    let key = table
        .key
        .iter()
        .zip(&elements)
        .map(|(c, e)| Table::render_element(c, e))
        .collect();
    let op = match stored {
        None => RowOp::Delete,
        Some(stored) => {
            let (expires, user) = notadb_storage::value::decode(stored)
                .ok_or_else(|| ("stored value header is malformed".to_string(), None))?;
            RowOp::Upsert(values_of(table, expires, user)?)
        }
    };
    Ok(RowChange {
        table: index,
        key,
        partition,
        seq,
        op,
    })
}

/// The text of each value column for one value.
fn values_of(
    table: &Table,
    expires: Option<i64>,
    user: &[u8],
) -> Result<Vec<Option<String>>, (String, Option<String>)> {
    let mut out = Vec::with_capacity(table.fields.len() + 2);
    let text = || String::from_utf8_lossy(user).into_owned();
    if !table.fields.is_empty() {
        let doc: serde_json::Value = serde_json::from_slice(user)
            .map_err(|e| (format!("value is not JSON: {e}"), Some(text())))?;
        for (field, _) in &table.fields {
            out.push(match doc.get(field) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            });
        }
    }
    if table.value.is_some() {
        out.push(Some(match table.schema.value_format {
            notadb_types::ValueFormat::Json => text(),
            notadb_types::ValueFormat::Bytes => hex(user),
        }));
    }
    if let Some(c) = &table.expires {
        out.push(expires.map(|at| render_micros(c, at)));
    }
    Ok(out)
}
