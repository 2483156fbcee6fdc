//! Range scans over a read view: one partition at a time, merged across partitions.

use super::filter::Filters;
use super::range::{Partitions, ResolvedRange};
use crate::request::{Row, ScanResult};
use crate::NodeError;
use notadb_record::value;
use notadb_record::KeyspaceDef;
use notadb_storage::{Cursor, Freshness, ReadView};
use notadb_types::{Element, KeyspaceId, KeyspaceSchema, PartitionId};
use std::sync::Arc;

/// A scan ready to run: everything validated.
pub struct ScanPlan<'a> {
    /// The keyspace scanned.
    pub keyspace: KeyspaceId,
    /// Its schema.
    pub schema: &'a KeyspaceSchema,
    /// The encoded range and the partitions it spans.
    pub range: &'a ResolvedRange,
    /// Conditions every returned row meets.
    pub filters: &'a Filters,
    /// Most rows one partition may return.
    pub limit: usize,
    /// Key and value bytes one partition may return (at least one row always fits).
    pub max_bytes: usize,
    /// Read from the end of the range backwards.
    pub reverse: bool,
    /// The read's clock, in microseconds since the Unix epoch: rows expired by then are
    /// skipped.
    pub now_micros: i64,
}

/// Rows as stored, in one buffer: each row's encoded key, then its value (expiry header
/// removed). A scan copies each row once, into this buffer, and decodes keys only when its
/// caller asks (`RawScan::decode`), or not at all when the server encodes the answer
/// straight from these bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawRows {
    bytes: Vec<u8>,
    /// Per row, where its key ends and where its value ends in `bytes`; its key starts where
    /// the previous row's value ends.
    ends: Vec<(usize, usize)>,
}

impl RawRows {
    /// Room for `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        RawRows {
            bytes: Vec::with_capacity(rows * 64),
            ends: Vec::with_capacity(rows),
        }
    }

    /// Appends a row.
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        self.bytes.reserve(key.len() + value.len());
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.ends.push((key_end, self.bytes.len()));
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Row `i`: its encoded key and its value.
    pub fn get(&self, i: usize) -> (&[u8], &[u8]) {
        let start = i.checked_sub(1).map_or(0, |prev| self.ends[prev].1);
        let (key_end, end) = self.ends[i];
        (&self.bytes[start..key_end], &self.bytes[key_end..end])
    }

    /// The rows in order: encoded key, value.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Keeps the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.ends.truncate(n);
            self.bytes
                .truncate(n.checked_sub(1).map_or(0, |last| self.ends[last].1));
        }
    }
}

/// A scan's answer before its keys are decoded.
#[derive(Clone, Debug)]
pub struct RawScan {
    /// The keyspace scanned (its schema decodes the keys).
    pub def: Arc<KeyspaceDef>,
    /// The rows, in encoded key order (descending for a reverse scan).
    pub rows: RawRows,
    /// The limit stopped the scan before the end of the range.
    pub more: bool,
}

impl RawScan {
    /// The rows with decoded keys.
    pub fn decode(self) -> Result<ScanResult, NodeError> {
        decode_rows(&self.def.schema, &self.rows, self.more)
    }
}

/// Rows as stored, with their keys decoded.
pub fn decode_rows(
    schema: &KeyspaceSchema,
    rows: &RawRows,
    more: bool,
) -> Result<ScanResult, NodeError> {
    let rows = rows
        .iter()
        .map(|(key, value)| {
            Ok(Row {
                key: decode_stored_key(schema, key)?,
                value: value.to_vec(),
            })
        })
        .collect::<Result<Vec<_>, NodeError>>()?;
    Ok(ScanResult {
        format: schema.value_format,
        rows,
        more,
    })
}

/// A stored key decoded; one that does not decode is a bug or a damaged store.
fn decode_stored_key(schema: &KeyspaceSchema, key: &[u8]) -> Result<Vec<Element>, NodeError> {
    schema
        .decode_key(key)
        .map_err(|e| NodeError::Internal(format!("stored key does not decode: {e}")))
}

/// Rows of one partition, and whether the limit or the byte budget cut the scan short.
pub struct PartitionRows {
    /// The partition's rows, in scan order.
    pub rows: RawRows,
    /// Whether the limit or the byte budget stopped the scan before the end of the range.
    pub more: bool,
}

/// A cursor over a request's range in partition `p`, for a view that reads nothing else:
/// through the row cache when the range lies inside one partition key (see
/// `ReadView::group_cursor`), else over RocksDB.
pub fn range_cursor<'v>(
    view: &'v ReadView<'_>,
    keyspace: KeyspaceId,
    schema: &KeyspaceSchema,
    range: &ResolvedRange,
    p: PartitionId,
) -> Cursor<'v> {
    let upper = range.upper.as_deref();
    match range.partitions {
        Partitions::One(_) => view.group_cursor(
            p,
            keyspace,
            schema,
            (&range.lower, upper),
            Freshness::Newest,
        ),
        Partitions::All => view.cursor(p, keyspace, &range.lower, upper),
    }
}

/// Scans one partition.
pub fn scan_partition(
    view: &ReadView<'_>,
    plan: &ScanPlan<'_>,
    p: PartitionId,
) -> Result<PartitionRows, NodeError> {
    let mut rows = RawRows::with_capacity(plan.limit.min(64));
    if plan.range.is_empty() || plan.limit == 0 {
        return Ok(PartitionRows { rows, more: false });
    }
    let mut cursor = range_cursor(view, plan.keyspace, plan.schema, plan.range, p);
    if plan.reverse {
        cursor.seek_to_last();
    } else {
        cursor.seek_to_first();
    }
    let mut more = false;
    while let Some((encoded, stored)) = cursor.entry() {
        if rows.len() == plan.limit || (rows.bytes.len() >= plan.max_bytes && !rows.is_empty()) {
            more = true;
            break;
        }
        if let Some(user) = value::live(stored, plan.now_micros) {
            if (!plan.filters.needs_value() || plan.filters.matches_value(user))
                && (!plan.filters.needs_key()
                    || plan
                        .filters
                        .matches_key(&decode_stored_key(plan.schema, encoded)?))
            {
                rows.push(encoded, user);
            }
        }
        if plan.reverse {
            cursor.prev();
        } else {
            cursor.next();
        }
    }
    cursor.status()?;
    Ok(PartitionRows { rows, more })
}

/// Merges per-partition results into one ordered result of at most `limit` rows.
///
/// A partition cut short knows nothing past its last row, so the result stops there: rows of
/// other partitions beyond the earliest such cut are dropped (and `more` is set). The result
/// is therefore always a prefix of the full ordered answer.
pub fn merge(mut parts: Vec<PartitionRows>, limit: usize, reverse: bool) -> (RawRows, bool) {
    if parts.len() == 1 {
        // One partition's rows are already in order and within the limit.
        let mut part = parts.pop().expect("one part");
        let more = part.more || part.rows.len() > limit;
        part.rows.truncate(limit);
        return (part.rows, more);
    }
    let mut more = parts.iter().any(|p| p.more);
    let cut: Option<&[u8]> = parts
        .iter()
        .filter(|p| p.more && !p.rows.is_empty())
        .map(|p| p.rows.get(p.rows.len() - 1).0)
        .reduce(|a, b| if reverse { a.max(b) } else { a.min(b) });
    let mut all: Vec<(&[u8], &[u8])> = parts.iter().flat_map(|p| p.rows.iter()).collect();
    if let Some(cut) = cut {
        all.retain(|(k, _)| if reverse { *k >= cut } else { *k <= cut });
    }
    if reverse {
        all.sort_by(|a, b| b.0.cmp(a.0));
    } else {
        all.sort_by(|a, b| a.0.cmp(b.0));
    }
    if all.len() > limit {
        all.truncate(limit);
        more = true;
    }
    let mut rows = RawRows::with_capacity(all.len());
    for (key, value) in all {
        rows.push(key, value);
    }
    (rows, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(keys: &[&str], more: bool) -> PartitionRows {
        let mut rows = RawRows::default();
        for k in keys {
            rows.push(k.as_bytes(), format!("v-{k}").as_bytes());
        }
        PartitionRows { rows, more }
    }

    fn keys(rows: &RawRows) -> Vec<String> {
        rows.iter()
            .map(|(k, v)| {
                assert_eq!(v, format!("v-{}", String::from_utf8_lossy(k)).as_bytes());
                String::from_utf8_lossy(k).into_owned()
            })
            .collect()
    }

    #[test]
    fn raw_rows_keep_keys_and_values_apart() {
        let mut rows = part(&["a", "bb", ""], false).rows;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.get(1), (&b"bb"[..], &b"v-bb"[..]));
        assert_eq!(rows.get(2), (&b""[..], &b"v-"[..]));
        rows.truncate(5);
        assert_eq!(rows.len(), 3);
        rows.truncate(1);
        assert_eq!(keys(&rows), ["a"]);
        rows.push(b"c", b"v-c");
        assert_eq!(keys(&rows), ["a", "c"], "no bytes left of the rows cut");
    }

    #[test]
    fn merge_orders_cuts_and_limits() {
        let (rows, more) = merge(vec![part(&["a", "b", "c"], true)], 2, false);
        assert_eq!((keys(&rows), more), (vec!["a".into(), "b".into()], true));
        // The second partition stopped at "c": nothing past it is known, so "d" is dropped.
        let parts = || vec![part(&["a", "d", "e"], false), part(&["b", "c"], true)];
        let (rows, more) = merge(parts(), 10, false);
        assert_eq!(
            (keys(&rows), more),
            (vec!["a".into(), "b".into(), "c".into()], true)
        );
        let (rows, more) = merge(parts(), 2, false);
        assert_eq!((keys(&rows), more), (vec!["a".into(), "b".into()], true));
        let parts = vec![part(&["e", "b"], false), part(&["d", "c"], true)];
        let (rows, more) = merge(parts, 10, true);
        assert_eq!(
            (keys(&rows), more),
            (vec!["e".into(), "d".into(), "c".into()], true)
        );
        let (rows, more) = merge(vec![part(&["b"], false), part(&["a"], false)], 10, false);
        assert_eq!((keys(&rows), more), (vec!["a".into(), "b".into()], false));
    }
}
