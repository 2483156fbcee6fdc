//! Range scans over a read view: one partition at a time, merged across partitions.

use super::filter::Filters;
use super::range::ResolvedRange;
use crate::request::Row;
use crate::NodeError;
use notadb_storage::{value, ReadView};
use notadb_types::{KeyspaceId, KeyspaceSchema, PartitionId};

/// A scan ready to run: everything validated.
pub struct ScanPlan<'a> {
    pub keyspace: KeyspaceId,
    pub schema: &'a KeyspaceSchema,
    pub range: &'a ResolvedRange,
    pub filters: &'a Filters,
    pub limit: usize,
    /// Key and value bytes one partition may return (at least one row always fits).
    pub max_bytes: usize,
    pub reverse: bool,
    pub now_micros: i64,
    /// Keep each row's encoded key, for merging with other partitions' rows.
    pub keep_keys: bool,
}

/// Rows of one partition with their encoded keys (for merging; empty when the plan does not
/// keep them), and whether the limit or the byte budget cut the scan short.
pub struct PartitionRows {
    pub rows: Vec<(Vec<u8>, Row)>,
    pub more: bool,
}

/// Scans one partition.
pub fn scan_partition(
    view: &ReadView<'_>,
    plan: &ScanPlan<'_>,
    p: PartitionId,
) -> Result<PartitionRows, NodeError> {
    let mut rows = Vec::with_capacity(plan.limit.min(64));
    if plan.range.is_empty() || plan.limit == 0 {
        return Ok(PartitionRows { rows, more: false });
    }
    let mut cursor = view.cursor(
        p,
        plan.keyspace,
        &plan.range.lower,
        plan.range.upper.as_deref(),
    );
    if plan.reverse {
        cursor.seek_to_last();
    } else {
        cursor.seek_to_first();
    }
    let mut more = false;
    let mut bytes = 0usize;
    while let Some((encoded, stored)) = cursor.entry() {
        if rows.len() == plan.limit || (bytes >= plan.max_bytes && !rows.is_empty()) {
            more = true;
            break;
        }
        if let Some(user) = value::live(stored, plan.now_micros) {
            if !plan.filters.needs_value() || plan.filters.matches_value(user) {
                let key = plan
                    .schema
                    .decode_key(encoded)
                    .map_err(|e| NodeError::Internal(format!("stored key does not decode: {e}")))?;
                if plan.filters.matches_key(&key) {
                    bytes += encoded.len() + user.len();
                    rows.push((
                        if plan.keep_keys {
                            encoded.to_vec()
                        } else {
                            Vec::new()
                        },
                        Row {
                            key,
                            value: user.to_vec(),
                        },
                    ));
                }
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
pub fn merge(mut parts: Vec<PartitionRows>, limit: usize, reverse: bool) -> (Vec<Row>, bool) {
    if parts.len() == 1 {
        // One partition's rows are already in order and within the limit.
        let part = parts.pop().expect("one part");
        let mut rows: Vec<Row> = part.rows.into_iter().map(|(_, row)| row).collect();
        let more = part.more || rows.len() > limit;
        rows.truncate(limit);
        return (rows, more);
    }
    let mut more = parts.iter().any(|p| p.more);
    let cut: Option<Vec<u8>> = parts
        .iter()
        .filter(|p| p.more)
        .filter_map(|p| p.rows.last().map(|(k, _)| k.clone()))
        .reduce(|a, b| if reverse { a.max(b) } else { a.min(b) });
    let mut all: Vec<(Vec<u8>, Row)> = parts.into_iter().flat_map(|p| p.rows).collect();
    if let Some(cut) = cut {
        all.retain(|(k, _)| if reverse { *k >= cut } else { *k <= cut });
    }
    if reverse {
        all.sort_by(|a, b| b.0.cmp(&a.0));
    } else {
        all.sort_by(|a, b| a.0.cmp(&b.0));
    }
    if all.len() > limit {
        all.truncate(limit);
        more = true;
    }
    (all.into_iter().map(|(_, row)| row).collect(), more)
}
