//! Row filters, compiled once per request against the keyspace schema.

use super::json::{raw_field, Expected, Raw};
use crate::request::{Filter, FilterOp};
use crate::NodeError;
use notadb_types::{compare_elements, Element, KeyspaceSchema, ValueFormat};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use std::cmp::Ordering;
use std::fmt;

/// The filters of one request, resolved to element indexes and field paths.
#[derive(Debug, Default)]
pub struct Filters {
    elements: Vec<(usize, FilterOp, Element)>,
    fields: Vec<FieldFilter>,
}

#[derive(Debug)]
struct FieldFilter {
    path: Vec<String>,
    op: FilterOp,
    value: Value,
    expected: Expected,
}

fn holds(op: FilterOp, ord: Ordering) -> bool {
    match op {
        FilterOp::Eq => ord == Ordering::Equal,
        FilterOp::Ne => ord != Ordering::Equal,
        FilterOp::Lt => ord == Ordering::Less,
        FilterOp::Le => ord != Ordering::Greater,
        FilterOp::Gt => ord == Ordering::Greater,
        FilterOp::Ge => ord != Ordering::Less,
    }
}

/// Splits a dot-separated field path, rejecting empty segments.
pub fn field_path(path: &str, field: &str) -> Result<Vec<String>, NodeError> {
    let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
    if parts.iter().any(String::is_empty) {
        return Err(NodeError::invalid(format!(
            "{field}: expected a dot-separated JSON field path, found `{path}`"
        )));
    }
    Ok(parts)
}

impl Filters {
    /// Checks filters against the schema: element names exist and values have their type;
    /// field filters need a JSON keyspace.
    pub fn compile(schema: &KeyspaceSchema, filters: &[Filter]) -> Result<Filters, NodeError> {
        let mut out = Filters::default();
        for (i, filter) in filters.iter().enumerate() {
            match filter {
                Filter::Element { name, op, value } => {
                    let index = schema.element_index(name).ok_or_else(|| {
                        NodeError::invalid(format!(
                            "filters[{i}]: keyspace `{}` has no key element `{name}`",
                            schema.name
                        ))
                    })?;
                    let expected = schema.key[index].ty;
                    if value.element_type() != expected {
                        return Err(NodeError::invalid(format!(
                            "filters[{i}]: key element `{name}` is {}, the filter value is {}",
                            expected.name(),
                            value.element_type().name()
                        )));
                    }
                    if matches!(value, Element::F64(v) if v.is_nan()) {
                        return Err(NodeError::invalid(format!(
                            "filters[{i}]: NaN never matches"
                        )));
                    }
                    out.elements.push((index, *op, value.clone()));
                }
                Filter::Field { path, op, value } => {
                    if schema.value_format != ValueFormat::Json {
                        return Err(NodeError::invalid(format!(
                            "filters[{i}]: keyspace `{}` stores bytes; field filters need JSON values",
                            schema.name
                        )));
                    }
                    let ordered = !matches!(op, FilterOp::Eq | FilterOp::Ne);
                    let scalar = value.is_number() || value.is_string() || value.is_boolean();
                    if ordered && !scalar {
                        return Err(NodeError::invalid(format!(
                            "filters[{i}]: ordering comparisons need a number, string or bool, found {value}"
                        )));
                    }
                    out.fields.push(FieldFilter {
                        path: field_path(path, &format!("filters[{i}].field"))?,
                        op: *op,
                        value: value.clone(),
                        expected: Expected::new(value),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Whether any filter looks at values.
    pub fn needs_value(&self) -> bool {
        !self.fields.is_empty()
    }

    /// Whether there are key-element filters (a row's key must be decoded to check them).
    pub fn needs_key(&self) -> bool {
        !self.elements.is_empty()
    }

    /// Whether a row passes the key-element filters.
    pub fn matches_key(&self, key: &[Element]) -> bool {
        self.elements.iter().all(|(i, op, v)| {
            key.get(*i)
                .is_some_and(|k| holds(*op, compare_elements(k, v)))
        })
    }

    /// Whether a row's JSON value passes the field filters (walking to each field, see
    /// `json`).
    pub fn matches_value(&self, doc: &[u8]) -> bool {
        self.fields.iter().all(|f| {
            let ord = match raw_field(doc, &f.path) {
                Raw::Found(raw) => f.expected.compare_raw(raw),
                Raw::Missing => None,
                Raw::Unsure => json_field(doc, &f.path).and_then(|v| compare_json(&v, &f.value)),
            };
            ord.is_some_and(|ord| holds(f.op, ord))
        })
    }
}

/// Orders two JSON values of the same scalar kind; `None` across kinds.
pub fn compare_json(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (x, y) if x == y => Some(Ordering::Equal),
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
            Some(Ordering::Less)
        }
        _ => None,
    }
}

/// The value at `path` in a JSON document, parsing only what leads to it: other fields are
/// skipped without being built.
pub fn json_field(doc: &[u8], path: &[String]) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_slice(doc);
    FieldSeed { path }.deserialize(&mut de).ok().flatten()
}

struct FieldSeed<'p> {
    path: &'p [String],
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.path.split_first() {
            None => serde::Deserialize::deserialize(d).map(Some),
            Some(_) => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (head, rest) = self
            .path
            .split_first()
            .expect("visited only with a non-empty path");
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if found.is_none() && key == head.as_str() {
                found = map.next_value_seed(FieldSeed { path: rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &str) -> Vec<String> {
        field_path(p, "f").expect("valid")
    }

    #[test]
    fn extracts_nested_fields_and_skips_the_rest() {
        let doc = br#"{"a": [1, {"x": 2}], "b": {"c": true, "d": "s\"q"}, "n": 1.5}"#;
        assert_eq!(json_field(doc, &path("b.c")), Some(json!(true)));
        assert_eq!(json_field(doc, &path("b.d")), Some(json!("s\"q")));
        assert_eq!(json_field(doc, &path("n")), Some(json!(1.5)));
        assert_eq!(json_field(doc, &path("a")), Some(json!([1, {"x": 2}])));
        assert_eq!(json_field(doc, &path("a.x")), None);
        assert_eq!(json_field(doc, &path("missing")), None);
        assert_eq!(json_field(b"not json", &path("a")), None);
        assert!(field_path("a..b", "f").is_err());
    }

    #[test]
    fn json_comparisons_need_the_same_kind() {
        assert_eq!(compare_json(&json!(1), &json!(1.0)), Some(Ordering::Equal));
        assert_eq!(compare_json(&json!("a"), &json!("b")), Some(Ordering::Less));
        assert_eq!(compare_json(&json!(true), &json!(1)), None);
    }
}
