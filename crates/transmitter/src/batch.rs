//! The transmitter's deterministic core: log entries in, one coalesced, key-sorted batch of
//! row changes out, with the positions it covers. No I/O and no clock.

use crate::mapping::{hex, render_micros, Table};
use notadb_record::{Op, Record};
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
    /// The partition whose log holds the change.
    pub partition: PartitionId,
    /// The seq of the entry that made the change.
    pub seq: Seq,
    /// What the change does to the row.
    pub op: RowOp,
}

/// A change the database refused, or the transmitter could not turn into a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The keyspace's name.
    pub keyspace: String,
    /// The table, as `"schema"."table"`.
    pub table: String,
    /// The partition whose log holds the change.
    pub partition: PartitionId,
    /// The seq of the entry that made the change.
    pub seq: Seq,
    /// The key as a JSON array of its elements.
    pub key: String,
    /// The value's text, if the change had one.
    pub value: Option<String>,
    /// Why the change was not written.
    pub error: String,
    /// The database's SQLSTATE when it refused the row; `None` when the transmitter could not
    /// make a row of the change.
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
    /// Per partition, the append time of the first entry covered.
    first_ts: BTreeMap<PartitionId, i64>,
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
        self.first_ts.entry(partition).or_insert(ts_micros);
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
                // Caches are not transmitted.
                Op::CacheSet { .. }
                | Op::CacheDelete { .. }
                | Op::CacheTouch { .. }
                | Op::CacheClear { .. } => continue,
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

    /// Changes that cannot become rows, found while decoding.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead
    }

    /// Per partition, the last entry covered.
    pub fn advances(&self) -> &BTreeMap<PartitionId, Advance> {
        &self.advances
    }

    /// Append time of the first entry covered of `partition`.
    pub fn first_ts(&self, partition: PartitionId) -> Option<i64> {
        self.first_ts.get(&partition).copied()
    }

    /// Append time of the oldest entry covered.
    pub fn oldest_ts(&self) -> Option<i64> {
        self.first_ts.values().min().copied()
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
        Op::DeleteRange { .. }
        | Op::CacheSet { .. }
        | Op::CacheDelete { .. }
        | Op::CacheTouch { .. }
        | Op::CacheClear { .. } => {
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
            let (expires, user) = notadb_record::value::decode(stored)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{ColumnInfo, TableInfo};
    use crate::TableMapping;
    use notadb_record::KeyspaceDef;
    use notadb_types::{Element, ElementType, KeyElement, KeyspaceSchema, Order, ValueFormat};
    use std::collections::BTreeSet;

    fn table() -> Table {
        let def = KeyspaceDef {
            id: KeyspaceId(3),
            schema: KeyspaceSchema {
                name: "items".into(),
                key: vec![KeyElement::new("k", ElementType::String, Order::Asc)],
                partition_by: 1,
                value_format: ValueFormat::Json,
                ttl: None,
            },
        };
        let mapping: TableMapping = toml::from_str(
            "keyspace = \"items\"\ntable = \"items\"\nfields = { name = \"name\", qty = \"qty\" }",
        )
        .expect("mapping");
        let col = |name: &str, ty: &str| ColumnInfo {
            name: name.into(),
            sql_type: ty.into(),
            not_null: false,
            has_default: false,
        };
        let info = TableInfo {
            columns: vec![
                col("k", "text"),
                col("name", "text"),
                col("qty", "integer"),
                col("notadb_seq", "bigint"),
            ],
            unique_keys: vec![BTreeSet::from(["k".to_string()])],
        };
        mapping.resolve("public", &def, &info).expect("resolves")
    }

    fn key(k: &str) -> Vec<u8> {
        table()
            .schema
            .encode_key(&[Element::String(k.into())])
            .expect("key")
            .bytes
    }

    fn put(k: &str, json: &str) -> Op {
        Op::Put {
            keyspace: KeyspaceId(3),
            key: key(k),
            stored: notadb_record::value::encode(None, json.as_bytes()),
        }
    }

    fn entry(ts: i64, ops: Vec<Op>) -> Record {
        Record::Batch { ts_micros: ts, ops }
    }

    #[test]
    fn keeps_the_last_change_per_key_in_key_order_and_the_positions_covered() {
        let tables = vec![table()];
        let by = BTreeMap::from([(KeyspaceId(3), 0)]);
        let (p0, p1) = (PartitionId(0), PartitionId(1));
        let other = Op::Put {
            keyspace: KeyspaceId(9),
            key: key("x"),
            stored: notadb_record::value::encode(None, b"{}"),
        };
        let mut b = Batch::new();
        b.add(
            p0,
            Seq(1),
            Some(&entry(10, vec![put("b", r#"{"name":"old","qty":1}"#)])),
            &tables,
            &by,
        );
        b.add(
            p1,
            Seq(7),
            Some(&entry(11, vec![put("a", r#"{"name":"a","qty":2}"#), other])),
            &tables,
            &by,
        );
        b.add(
            p0,
            Seq(2),
            Some(&entry(12, vec![put("b", r#"{"name":"new","qty":null}"#)])),
            &tables,
            &by,
        );
        b.add(
            p0,
            Seq(3),
            Some(&entry(
                13,
                vec![Op::Delete {
                    keyspace: KeyspaceId(3),
                    key: key("c"),
                }],
            )),
            &tables,
            &by,
        );
        b.add(p1, Seq(8), None, &tables, &by);
        let rows: Vec<_> = b
            .rows()
            .map(|r| (r.key[0].clone(), r.seq, r.op.clone()))
            .collect();
        assert_eq!(
            rows,
            vec![
                (
                    "a".into(),
                    Seq(7),
                    RowOp::Upsert(vec![Some("a".into()), Some("2".into())])
                ),
                (
                    "b".into(),
                    Seq(2),
                    RowOp::Upsert(vec![Some("new".into()), None])
                ),
                ("c".into(), Seq(3), RowOp::Delete),
            ]
        );
        assert_eq!(b.entry_count(), 5);
        assert_eq!(b.oldest_ts(), Some(10));
        assert_eq!(
            b.advances()[&p0],
            Advance {
                seq: Seq(3),
                ts_micros: 13
            }
        );
        assert_eq!(
            b.advances()[&p1],
            Advance {
                seq: Seq(8),
                ts_micros: 0
            }
        );
        assert!(b.dead_letters().is_empty());
    }

    #[test]
    fn range_deletes_become_dead_letters_with_a_reason() {
        let tables = vec![table()];
        let by = BTreeMap::from([(KeyspaceId(3), 0)]);
        let mut b = Batch::new();
        let range = Op::DeleteRange {
            keyspace: KeyspaceId(3),
            start: key("a"),
            end: key("z"),
        };
        b.add(
            PartitionId(2),
            Seq(4),
            Some(&entry(1, vec![range])),
            &tables,
            &by,
        );
        assert_eq!(b.row_count(), 0);
        let d = &b.dead_letters()[0];
        assert_eq!(
            (d.partition, d.seq, d.key.as_str()),
            (PartitionId(2), Seq(4), r#"["a"]"#)
        );
        assert!(
            d.error.contains("range deletes are not transmitted"),
            "{}",
            d.error
        );
    }
}
