//! The framework API: named query handlers that run on the partition owning their data, over
//! one consistent snapshot, with typed range iteration.

use crate::query::range::{resolve, Partitions};
use crate::request::{KeyRange, Row};
use crate::NodeError;
use notadb_record::value;
use notadb_record::KeyspaceDef;
use notadb_storage::{Cursor, Freshness, ReadView};
use notadb_types::{
    decode_tuple, skip_elements, Element, KeyspaceSchema, PartitionId, Partitioner, ValueFormat,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A query a framework user registers by name; clients call it with `Query(name, args)`.
///
/// It runs on the replica that owns the call's partition key, over one RocksDB snapshot.
/// Like every read, it runs first on the async worker that received the call, over a view of
/// memory only (memtables and block cache) that allows `notadb_storage::MEMORY_VIEW_BUDGET`
/// reads; if it needs the disk or more reads, its answer is thrown away and it runs again,
/// from the start, on a blocking thread. So a handler must not have side effects, and should
/// do little work besides its reads (a long computation would hold the worker). Closures
/// `Fn(&QueryContext, &serde_json::Value) -> Result<Value, NodeError>` implement it.
pub trait QueryHandler: Send + Sync + 'static {
    /// Answers one call.
    fn run(
        &self,
        ctx: &QueryContext<'_>,
        args: &serde_json::Value,
    ) -> Result<serde_json::Value, NodeError>;

    /// Answers one call as JSON text, which is what a client receives. The default
    /// serializes `run`'s value; [`JsonHandler`] writes the text itself.
    fn run_json(
        &self,
        ctx: &QueryContext<'_>,
        args: &serde_json::Value,
    ) -> Result<String, NodeError> {
        let value = self.run(ctx, args)?;
        serde_json::to_string(&value)
            .map_err(|e| NodeError::Internal(format!("the handler's answer: {e}")))
    }
}

/// A handler that writes its answer as JSON text instead of building a `serde_json::Value`:
/// rows' stored JSON ([`RawRow::json_text`]) goes into the answer without being parsed,
/// copied into a tree and serialized again. `F` is
/// `Fn(&QueryContext, &serde_json::Value) -> Result<String, NodeError>`; the text is checked
/// to be one JSON value before it is sent (a handler bug becomes an error, not a broken
/// answer).
pub struct JsonHandler<F>(pub F);

impl<F> QueryHandler for JsonHandler<F>
where
    F: Fn(&QueryContext<'_>, &serde_json::Value) -> Result<String, NodeError>
        + Send
        + Sync
        + 'static,
{
    fn run(
        &self,
        ctx: &QueryContext<'_>,
        args: &serde_json::Value,
    ) -> Result<serde_json::Value, NodeError> {
        let text = (self.0)(ctx, args)?;
        serde_json::from_str(&text).map_err(not_json)
    }

    fn run_json(
        &self,
        ctx: &QueryContext<'_>,
        args: &serde_json::Value,
    ) -> Result<String, NodeError> {
        let text = (self.0)(ctx, args)?;
        serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(not_json)?;
        Ok(text)
    }
}

fn undecodable(e: impl std::fmt::Display) -> NodeError {
    NodeError::Internal(format!("stored key does not decode: {e}"))
}

fn not_json(e: serde_json::Error) -> NodeError {
    NodeError::Internal(format!("the handler's answer is not one JSON value: {e}"))
}

impl<F> QueryHandler for F
where
    F: Fn(&QueryContext<'_>, &serde_json::Value) -> Result<serde_json::Value, NodeError>
        + Send
        + Sync
        + 'static,
{
    fn run(
        &self,
        ctx: &QueryContext<'_>,
        args: &serde_json::Value,
    ) -> Result<serde_json::Value, NodeError> {
        self(ctx, args)
    }
}

/// What a handler sees: its partition, the time, and reads confined to its partition.
pub struct QueryContext<'a> {
    pub(crate) view: &'a ReadView<'a>,
    pub(crate) keyspaces: &'a BTreeMap<String, Arc<KeyspaceDef>>,
    pub(crate) partitioner: &'a Partitioner,
    pub(crate) partition: PartitionId,
    pub(crate) partition_key: &'a [Element],
    pub(crate) now_micros: i64,
}

impl<'a> QueryContext<'a> {
    /// The partition this call runs on.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// The partition key the client sent.
    pub fn partition_key(&self) -> &[Element] {
        self.partition_key
    }

    /// The serving node's clock when the call started, microseconds since the epoch.
    pub fn now_micros(&self) -> i64 {
        self.now_micros
    }

    fn keyspace(&self, name: &str) -> Result<&'a Arc<KeyspaceDef>, NodeError> {
        self.keyspaces
            .get(name)
            .ok_or_else(|| NodeError::NotFound(format!("keyspace `{name}` does not exist")))
    }

    fn outside(&self, name: &str) -> NodeError {
        NodeError::invalid(format!(
            "the handler read keyspace `{name}` outside partition {} of this call; include the partition key in the key or prefix",
            self.partition
        ))
    }

    /// The value of one key of this partition, if live.
    pub fn get(&self, keyspace: &str, key: &[Element]) -> Result<Option<Vec<u8>>, NodeError> {
        let def = self.keyspace(keyspace)?;
        let encoded = def.schema.encode_key(key)?;
        if self.partitioner.partition_of(encoded.partition_key()) != self.partition {
            return Err(self.outside(keyspace));
        }
        let stored = self.view.get(self.partition, def.id, &encoded.bytes)?;
        Ok(stored.and_then(|s| value::live(&s, self.now_micros).map(<[u8]>::to_vec)))
    }

    /// Live rows of a range of this partition, in key order (or reversed).
    pub fn scan(
        &self,
        keyspace: &str,
        range: &KeyRange,
        reverse: bool,
    ) -> Result<Rows<'a>, NodeError> {
        let def = self.keyspace(keyspace)?;
        let resolved = resolve(&def.schema, self.partitioner, range)?;
        if resolved.partitions != Partitions::One(self.partition) {
            return Err(self.outside(keyspace));
        }
        // A handler may read several ranges and keys in one view: the row cache answers only
        // with its snapshot's rows.
        let mut cursor = self.view.group_cursor(
            self.partition,
            def.id,
            &def.schema,
            (&resolved.lower, resolved.upper.as_deref()),
            Freshness::Snapshot,
        );
        let empty = resolved.is_empty();
        if reverse {
            cursor.seek_to_last();
        } else {
            cursor.seek_to_first();
        }
        Ok(Rows {
            cursor,
            schema: &def.schema,
            reverse,
            now_micros: self.now_micros,
            done: empty,
            started: false,
        })
    }
}

/// Typed rows of a handler's range read: an iterator of owned rows, or, through `next_raw`,
/// rows borrowed from storage that decode and copy only what the handler asks for.
pub struct Rows<'a> {
    cursor: Cursor<'a>,
    schema: &'a KeyspaceSchema,
    reverse: bool,
    now_micros: i64,
    done: bool,
    /// The cursor stands on the row returned last: step before reading.
    started: bool,
}

impl Rows<'_> {
    /// The next live row, borrowed until the next call. Cheaper than `next` when a handler
    /// skips rows by a field (`RawRow::field`) or needs only part of the key.
    pub fn next_raw(&mut self) -> Option<Result<RawRow<'_>, NodeError>> {
        loop {
            if self.done {
                return None;
            }
            if self.started {
                if self.reverse {
                    self.cursor.prev();
                } else {
                    self.cursor.next();
                }
            }
            self.started = true;
            match self.cursor.entry() {
                None => {
                    self.done = true;
                    return self.cursor.status().err().map(|e| Err(e.into()));
                }
                Some((_, stored)) if value::live(stored, self.now_micros).is_none() => continue,
                Some(_) => break,
            }
        }
        let (encoded, stored) = self.cursor.entry().expect("the cursor stands on a row");
        Some(Ok(RawRow {
            encoded,
            value: value::live(stored, self.now_micros).expect("a live row"),
            schema: self.schema,
        }))
    }
}

impl Iterator for Rows<'_> {
    type Item = Result<Row, NodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_raw()?.and_then(|row| row.to_row()))
    }
}

/// One live row of a handler's range read, borrowed from storage: nothing is decoded or
/// copied until asked for.
pub struct RawRow<'r> {
    encoded: &'r [u8],
    value: &'r [u8],
    schema: &'r KeyspaceSchema,
}

impl RawRow<'_> {
    /// The value bytes.
    pub fn value(&self) -> &[u8] {
        self.value
    }

    /// The key, decoded.
    pub fn key(&self) -> Result<Vec<Element>, NodeError> {
        self.schema.decode_key(self.encoded).map_err(undecodable)
    }

    /// The key's elements after its first `n` (which a handler that scanned a prefix of `n`
    /// elements knows already), decoded; the first `n` are stepped over, not decoded.
    /// `key_after(0)` is `key()`.
    pub fn key_after(&self, n: usize) -> Result<Vec<Element>, NodeError> {
        let elements = &self.schema.key;
        if n > elements.len() {
            return Err(NodeError::invalid(format!(
                "key_after({n}): keyspace `{}` has {} key elements",
                self.schema.name,
                elements.len()
            )));
        }
        let skipped = skip_elements(elements, self.encoded, n).map_err(undecodable)?;
        let rest = decode_tuple(&elements[n..], &self.encoded[skipped..]).map_err(undecodable)?;
        if rest.len() != elements.len() - n {
            return Err(undecodable(format!(
                "expected {} key elements after the first {n}, found {}",
                elements.len() - n,
                rest.len()
            )));
        }
        Ok(rest)
    }

    /// The value as the JSON text it is stored as (values of a JSON keyspace are checked
    /// to be JSON when written), to copy into a [`JsonHandler`]'s answer; an error for a
    /// keyspace of bytes values.
    pub fn json_text(&self) -> Result<&str, NodeError> {
        if self.schema.value_format != ValueFormat::Json {
            return Err(NodeError::invalid(format!(
                "keyspace `{}` stores bytes values, not JSON",
                self.schema.name
            )));
        }
        std::str::from_utf8(self.value)
            .map_err(|e| NodeError::Internal(format!("a stored JSON value is not UTF-8: {e}")))
    }

    /// The value parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(self.value)
    }

    /// The JSON value at a dot-separated field path of the value (`"price"`, `"stock.count"`),
    /// found without parsing the rest of the value; `None` when there is none (or the value
    /// is not JSON).
    pub fn field(&self, path: &str) -> Option<serde_json::Value> {
        crate::query::json::field_value(self.value, path)
    }

    /// An owned copy: decoded key and value bytes.
    pub fn to_row(&self) -> Result<Row, NodeError> {
        Ok(Row {
            key: self.key()?,
            value: self.value.to_vec(),
        })
    }
}
