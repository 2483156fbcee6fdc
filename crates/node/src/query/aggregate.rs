//! Aggregates over a range: count, sum, min, max, grouped by one key element, top-k.

use super::filter::Filters;
use super::json::field_number;
use super::range::ResolvedRange;
use super::scan::range_cursor;
use crate::request::{AggregateFunction, Group};
use crate::NodeError;
use notadb_record::value;
use notadb_storage::ReadView;
use notadb_types::{encode_element, Element, KeyspaceId, KeyspaceSchema, Order, PartitionId};
use std::collections::BTreeMap;

/// An aggregate ready to run: everything validated.
pub struct AggregatePlan<'a> {
    /// The keyspace aggregated.
    pub keyspace: KeyspaceId,
    /// Its schema.
    pub schema: &'a KeyspaceSchema,
    /// The encoded range and the partitions it spans.
    pub range: &'a ResolvedRange,
    /// Conditions every counted row meets.
    pub filters: &'a Filters,
    /// What to compute.
    pub function: AggregateFunction,
    /// Path of the JSON field summed or compared; `None` for count.
    pub field: Option<Vec<String>>,
    /// Index of the key element to group by; `None` makes one group.
    pub group_by: Option<usize>,
    /// Index of a timestamp element and the window `[from, to)` its value must fall in.
    pub window: Option<(usize, i64, i64)>,
    /// Most rows the request may visit, over all partitions.
    pub max_rows: u64,
    /// Most groups the request may hold.
    pub max_groups: usize,
    /// The read's clock, in microseconds since the Unix epoch: rows expired by then are
    /// skipped.
    pub now_micros: i64,
}

/// Partial state of one group.
#[derive(Clone, Debug)]
pub struct Acc {
    /// The group's value of the `group_by` element; `None` when there is no `group_by`.
    pub key: Option<Element>,
    /// The aggregate so far.
    pub value: f64,
    /// Rows folded in so far.
    pub rows: u64,
}

/// Groups keyed by the encoded group element, so iteration order is the key order.
#[derive(Debug, Default)]
pub struct Groups {
    /// Each group's state, by its encoded group element (empty when there is no `group_by`).
    pub groups: BTreeMap<Vec<u8>, Acc>,
    /// Rows visited, counted or not.
    pub rows_scanned: u64,
}

fn fold(function: AggregateFunction, acc: &mut Acc, x: f64) {
    acc.value = match function {
        AggregateFunction::Count | AggregateFunction::Sum => acc.value + x,
        AggregateFunction::Min if acc.rows == 0 => x,
        AggregateFunction::Max if acc.rows == 0 => x,
        AggregateFunction::Min => acc.value.min(x),
        AggregateFunction::Max => acc.value.max(x),
    };
}

impl Groups {
    fn add(&mut self, function: AggregateFunction, group: Vec<u8>, key: Option<Element>, x: f64) {
        let acc = self.groups.entry(group).or_insert(Acc {
            key,
            value: 0.0,
            rows: 0,
        });
        fold(function, acc, x);
        acc.rows += 1;
    }

    /// Folds another partition's groups into these; fails past `max_groups` groups.
    pub fn merge(
        &mut self,
        function: AggregateFunction,
        other: Groups,
        max_groups: usize,
    ) -> Result<(), NodeError> {
        self.rows_scanned += other.rows_scanned;
        for (k, acc) in other.groups {
            match self.groups.get_mut(&k) {
                None => {
                    self.groups.insert(k, acc);
                }
                Some(mine) => {
                    mine.value = match function {
                        AggregateFunction::Count | AggregateFunction::Sum => mine.value + acc.value,
                        AggregateFunction::Min => mine.value.min(acc.value),
                        AggregateFunction::Max => mine.value.max(acc.value),
                    };
                    mine.rows += acc.rows;
                }
            }
        }
        if self.groups.len() > max_groups {
            return Err(too_many_groups(max_groups));
        }
        Ok(())
    }

    /// Groups as returned by another node (all of its groups, not cut to a top-k).
    pub fn from_result(result: crate::request::AggregateResult) -> Groups {
        let mut groups = BTreeMap::new();
        for g in result.groups {
            let mut k = Vec::new();
            if let Some(e) = &g.key {
                encode_element(&mut k, e, Order::Asc);
            }
            groups.insert(
                k,
                Acc {
                    key: g.key,
                    value: g.value,
                    rows: g.rows,
                },
            );
        }
        Groups {
            groups,
            rows_scanned: result.rows_scanned,
        }
    }

    /// The k groups with the largest aggregate (ties: group key order); all when k is 0.
    pub fn top(self, k: usize) -> Vec<Group> {
        let mut all: Vec<(Vec<u8>, Acc)> = self.groups.into_iter().collect();
        all.sort_by(|a, b| b.1.value.total_cmp(&a.1.value).then_with(|| a.0.cmp(&b.0)));
        if k > 0 {
            all.truncate(k);
        }
        all.into_iter()
            .map(|(_, a)| Group {
                key: a.key,
                value: a.value,
                rows: a.rows,
            })
            .collect()
    }
}

/// Aggregates one partition; `rows_before` rows of the same request were visited in other
/// partitions (the row limit is per request).
pub fn aggregate_partition(
    view: &ReadView<'_>,
    plan: &AggregatePlan<'_>,
    p: PartitionId,
    rows_before: u64,
) -> Result<Groups, NodeError> {
    let mut out = Groups::default();
    if plan.range.is_empty() {
        return Ok(out);
    }
    let mut cursor = range_cursor(view, plan.keyspace, plan.schema, plan.range, p);
    cursor.seek_to_first();
    let mut group_bytes = Vec::new();
    while let Some((encoded, stored)) = cursor.entry() {
        out.rows_scanned += 1;
        if rows_before + out.rows_scanned > plan.max_rows {
            return Err(NodeError::ResourceExhausted(format!(
                "aggregate visited more than {} rows (limit max_aggregate_rows); narrow the range",
                plan.max_rows
            )));
        }
        if let Some((group_key, x)) = row_value(plan, encoded, stored)? {
            group_bytes.clear();
            if let Some(k) = &group_key {
                encode_element(&mut group_bytes, k, Order::Asc);
            }
            if !out.groups.contains_key(&group_bytes) && out.groups.len() >= plan.max_groups {
                return Err(too_many_groups(plan.max_groups));
            }
            out.add(plan.function, group_bytes.clone(), group_key, x);
        }
        cursor.next();
    }
    cursor.status()?;
    Ok(out)
}

/// The group and the value one row contributes, or `None` when the row does not count.
fn row_value(
    plan: &AggregatePlan<'_>,
    encoded: &[u8],
    stored: &[u8],
) -> Result<Option<(Option<Element>, f64)>, NodeError> {
    let Some(user) = value::live(stored, plan.now_micros) else {
        return Ok(None);
    };
    let key = plan
        .schema
        .decode_key(encoded)
        .map_err(|e| NodeError::Internal(format!("stored key does not decode: {e}")))?;
    if let Some((i, from, to)) = plan.window {
        match key.get(i) {
            Some(Element::Timestamp(t)) if *t >= from && *t < to => {}
            _ => return Ok(None),
        }
    }
    if !plan.filters.matches_key(&key)
        || (plan.filters.needs_value() && !plan.filters.matches_value(user))
    {
        return Ok(None);
    }
    let x = match (&plan.field, plan.function) {
        (_, AggregateFunction::Count) => 1.0,
        (Some(path), _) => match field_number(user, path) {
            Some(x) => x,
            None => return Ok(None),
        },
        (None, _) => {
            return Err(NodeError::invalid(
                "field: sum, min and max need a JSON field",
            ))
        }
    };
    Ok(Some((plan.group_by.and_then(|i| key.get(i).cloned()), x)))
}

fn too_many_groups(max: usize) -> NodeError {
    NodeError::ResourceExhausted(format!(
        "aggregate has more than {max} groups (limit max_aggregate_groups)"
    ))
}
