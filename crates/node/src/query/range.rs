//! Turning a typed `KeyRange` into encoded bounds and the partitions to visit.

use crate::request::KeyRange;
use crate::NodeError;
use notadb_types::{prefix_successor, Element, KeyspaceSchema, PartitionId, Partitioner};
use std::cmp::Ordering;

/// Partitions a read visits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partitions {
    /// The range's prefix covers the partition key: one partition holds all of it.
    One(PartitionId),
    /// The range spans partition keys: every partition is visited and results merged.
    All,
}

/// Encoded bounds of a range within one keyspace: `[lower, upper)`, `upper` `None` = to the
/// end of the keyspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedRange {
    /// The partitions the range spans.
    pub partitions: Partitions,
    /// The first encoded key in the range (included).
    pub lower: Vec<u8>,
    /// The encoded key the range stops before; `None`: the end of the keyspace.
    pub upper: Option<Vec<u8>>,
}

impl ResolvedRange {
    /// Whether no key can fall in the range.
    pub fn is_empty(&self) -> bool {
        self.upper
            .as_ref()
            .is_some_and(|upper| self.lower >= *upper)
    }

    /// Whether an encoded key lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.lower.as_slice() && self.upper.as_ref().is_none_or(|u| key < u.as_slice())
    }
}

fn joined(prefix: &[Element], rest: &[Element]) -> Vec<Element> {
    prefix.iter().chain(rest).cloned().collect()
}

fn encode_bound(
    schema: &KeyspaceSchema,
    prefix: &[Element],
    bound: &[Element],
    field: &str,
) -> Result<Vec<u8>, NodeError> {
    if prefix.len() + bound.len() > schema.key.len() {
        return Err(NodeError::invalid(format!(
            "{field}: the prefix and the bound have {} elements together, keyspace `{}` keys have {}",
            prefix.len() + bound.len(),
            schema.name,
            schema.key.len()
        )));
    }
    schema
        .encode_prefix(&joined(prefix, bound))
        .map_err(|e| NodeError::invalid(format!("{field}: {e}")))
}

/// Resolves `range` against a keyspace's schema.
pub fn resolve(
    schema: &KeyspaceSchema,
    partitioner: &Partitioner,
    range: &KeyRange,
) -> Result<ResolvedRange, NodeError> {
    if range.prefix.len() > schema.key.len() {
        return Err(NodeError::invalid(format!(
            "range.prefix: has {} elements, keyspace `{}` keys have {}",
            range.prefix.len(),
            schema.name,
            schema.key.len()
        )));
    }
    let prefix = schema
        .encode_prefix(&range.prefix)
        .map_err(|e| NodeError::invalid(format!("range.prefix: {e}")))?;
    let partitions = if range.prefix.len() >= schema.partition_by {
        let len = schema.partition_key_len(&prefix)?;
        Partitions::One(partitioner.partition_of(&prefix[..len]))
    } else {
        Partitions::All
    };
    let start = match &range.start {
        Some(b) => Some((
            encode_bound(schema, &range.prefix, &b.key, "range.start")?,
            b.inclusive,
        )),
        None => None,
    };
    let end = match &range.end {
        Some(b) => Some((
            encode_bound(schema, &range.prefix, &b.key, "range.end")?,
            b.inclusive,
        )),
        None => None,
    };
    if let (Some((s, _)), Some((e, _))) = (&start, &end) {
        if s.cmp(e) == Ordering::Greater {
            return Err(NodeError::invalid(
                "range: start is after end (for descending elements, the larger value comes first)",
            ));
        }
    }
    let lower = match start {
        None => prefix.clone(),
        Some((key, true)) => key,
        // Nothing sorts after every extension of an all-0xff key: the range is empty.
        Some((key, false)) => match prefix_successor(&key) {
            Some(next) => next,
            None => {
                return Ok(ResolvedRange {
                    partitions,
                    lower: key.clone(),
                    upper: Some(key),
                })
            }
        },
    };
    let upper = match end {
        None => prefix_successor(&prefix),
        Some((key, true)) => prefix_successor(&key),
        Some((key, false)) => Some(key),
    };
    Ok(ResolvedRange {
        partitions,
        lower,
        upper,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Bound;
    use notadb_types::{ElementType, KeyElement, Order, ValueFormat};

    fn schema() -> KeyspaceSchema {
        let el = |name: &str, ty, order| KeyElement {
            name: name.into(),
            ty,
            order,
        };
        KeyspaceSchema {
            name: "t".into(),
            key: vec![
                el("a", ElementType::String, Order::Asc),
                el("b", ElementType::I64, Order::Desc),
            ],
            partition_by: 1,
            value_format: ValueFormat::Bytes,
            ttl: None,
        }
    }

    fn key(a: &str, b: i64) -> Vec<u8> {
        schema()
            .encode_key(&[Element::String(a.into()), Element::I64(b)])
            .expect("valid")
            .bytes
    }

    fn bound(b: i64, inclusive: bool) -> Option<Bound> {
        Some(Bound {
            key: vec![Element::I64(b)],
            inclusive,
        })
    }

    #[test]
    fn bounds_follow_descending_order() {
        let p = Partitioner::new(8).expect("valid");
        let range = KeyRange {
            prefix: vec![Element::String("x".into())],
            start: bound(9, true),
            end: bound(5, false),
        };
        let r = resolve(&schema(), &p, &range).expect("valid");
        assert!(matches!(r.partitions, Partitions::One(_)));
        assert!(r.contains(&key("x", 9)));
        assert!(r.contains(&key("x", 6)));
        assert!(!r.contains(&key("x", 5)));
        assert!(!r.contains(&key("x", 10)));
        assert!(!r.contains(&key("y", 7)));
    }

    #[test]
    fn exclusive_start_and_inclusive_end() {
        let p = Partitioner::new(8).expect("valid");
        let range = KeyRange {
            prefix: vec![Element::String("x".into())],
            start: bound(9, false),
            end: bound(5, true),
        };
        let r = resolve(&schema(), &p, &range).expect("valid");
        assert!(!r.contains(&key("x", 9)));
        assert!(r.contains(&key("x", 8)));
        assert!(r.contains(&key("x", 5)));
        assert!(!r.contains(&key("x", 4)));
    }

    #[test]
    fn reversed_range_is_rejected() {
        let p = Partitioner::new(8).expect("valid");
        let range = KeyRange {
            prefix: vec![Element::String("x".into())],
            start: bound(1, true),
            end: bound(5, true),
        };
        let err = resolve(&schema(), &p, &range).unwrap_err();
        assert!(err.to_string().contains("start is after end"), "{err}");
    }

    #[test]
    fn short_prefix_visits_all_partitions_and_bad_types_name_the_field() {
        let p = Partitioner::new(8).expect("valid");
        let r = resolve(&schema(), &p, &KeyRange::default()).expect("valid");
        assert_eq!(r.partitions, Partitions::All);
        assert!(r.contains(&key("any", 1)));
        let range = KeyRange {
            prefix: vec![Element::I64(1)],
            ..KeyRange::default()
        };
        let err = resolve(&schema(), &p, &range).unwrap_err().to_string();
        assert!(
            err.starts_with("range.prefix:") && err.contains("`a`"),
            "{err}"
        );
    }
}
