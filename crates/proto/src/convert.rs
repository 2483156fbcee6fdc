//! Conversions between protobuf messages and `notadb-types` values.

use crate::v1;
use notadb_types::{
    Element, ElementType, KeyElement, KeyspaceSchema, Order, PartitionId, Seq, Token, TtlSpec,
    ValueFormat,
};
use std::fmt;

/// A message that cannot become a typed value; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError(pub String);

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConvertError {}

/// A typed element from its message; `None` when it has no value.
fn element_of(element: &v1::Element) -> Option<Element> {
    use v1::element::Kind;
    Some(match element.kind.as_ref()? {
        Kind::Bytes(b) => Element::Bytes(b.clone()),
        Kind::String(s) => Element::String(s.clone()),
        Kind::I64(v) => Element::I64(*v),
        Kind::F64(v) => Element::F64(*v),
        Kind::Bool(v) => Element::Bool(*v),
        Kind::TimestampMicros(v) => Element::Timestamp(*v),
    })
}

/// A typed element from its message; `field` names it in errors.
pub fn element_from_proto(element: &v1::Element, field: &str) -> Result<Element, ConvertError> {
    element_of(element).ok_or_else(|| ConvertError(format!("{field}: element has no value")))
}

/// The message of an element.
pub fn element_to_proto(element: &Element) -> v1::Element {
    element_into_proto(element.clone())
}

/// The message of an element, taking its bytes rather than copying them.
pub fn element_into_proto(element: Element) -> v1::Element {
    use v1::element::Kind;
    let kind = match element {
        Element::Bytes(b) => Kind::Bytes(b),
        Element::String(s) => Kind::String(s),
        Element::I64(v) => Kind::I64(v),
        Element::F64(v) => Kind::F64(v),
        Element::Bool(v) => Kind::Bool(v),
        Element::Timestamp(v) => Kind::TimestampMicros(v),
    };
    v1::Element { kind: Some(kind) }
}

/// A typed tuple from its message (absent: the empty tuple); `field` names it in errors (the
/// label is only built for an error).
pub fn tuple_from_proto(
    tuple: Option<&v1::Tuple>,
    field: impl std::fmt::Display,
) -> Result<Vec<Element>, ConvertError> {
    let Some(tuple) = tuple else {
        return Ok(Vec::new());
    };
    tuple
        .elements
        .iter()
        .enumerate()
        .map(|(i, e)| {
            element_of(e).ok_or_else(|| ConvertError(format!("{field}[{i}]: element has no value")))
        })
        .collect()
}

/// The message of a tuple.
pub fn tuple_to_proto(tuple: &[Element]) -> v1::Tuple {
    v1::Tuple {
        elements: tuple.iter().map(element_to_proto).collect(),
    }
}

/// The message of a tuple, taking its elements' bytes rather than copying them.
pub fn tuple_into_proto(tuple: Vec<Element>) -> v1::Tuple {
    v1::Tuple {
        elements: tuple.into_iter().map(element_into_proto).collect(),
    }
}

/// A token from its message.
pub fn token_from_proto(token: &v1::Token) -> Result<Token, ConvertError> {
    let partition = u16::try_from(token.partition).map_err(|_| {
        ConvertError(format!(
            "tokens: partition must fit in 16 bits, found {}",
            token.partition
        ))
    })?;
    Ok(Token {
        partition: PartitionId(partition),
        seq: Seq(token.seq),
    })
}

/// The message of a token.
pub fn token_to_proto(token: Token) -> v1::Token {
    v1::Token {
        partition: u32::from(token.partition.0),
        seq: token.seq.0,
    }
}

fn element_type_from_proto(value: i32, field: &str) -> Result<ElementType, ConvertError> {
    match v1::ElementType::try_from(value) {
        Ok(v1::ElementType::Bytes) => Ok(ElementType::Bytes),
        Ok(v1::ElementType::String) => Ok(ElementType::String),
        Ok(v1::ElementType::I64) => Ok(ElementType::I64),
        Ok(v1::ElementType::F64) => Ok(ElementType::F64),
        Ok(v1::ElementType::Bool) => Ok(ElementType::Bool),
        Ok(v1::ElementType::Timestamp) => Ok(ElementType::Timestamp),
        Ok(v1::ElementType::Unspecified) | Err(_) => Err(ConvertError(format!(
            "{field}: expected an element type (bytes, string, i64, f64, bool, timestamp), found {value}"
        ))),
    }
}

fn element_type_to_proto(ty: ElementType) -> v1::ElementType {
    match ty {
        ElementType::Bytes => v1::ElementType::Bytes,
        ElementType::String => v1::ElementType::String,
        ElementType::I64 => v1::ElementType::I64,
        ElementType::F64 => v1::ElementType::F64,
        ElementType::Bool => v1::ElementType::Bool,
        ElementType::Timestamp => v1::ElementType::Timestamp,
    }
}

/// A keyspace schema from its message (not yet validated: see `KeyspaceSchema::validate`).
pub fn schema_from_proto(schema: &v1::KeyspaceSchema) -> Result<KeyspaceSchema, ConvertError> {
    let key = schema
        .key
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let order = match v1::SortOrder::try_from(e.order) {
                Ok(v1::SortOrder::Asc) => Order::Asc,
                Ok(v1::SortOrder::Desc) => Order::Desc,
                Err(_) => {
                    return Err(ConvertError(format!(
                        "schema.key[{i}].order: expected asc or desc, found {}",
                        e.order
                    )))
                }
            };
            Ok(KeyElement {
                name: e.name.clone(),
                ty: element_type_from_proto(e.r#type, &format!("schema.key[{i}].type"))?,
                order,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let value_format = match v1::ValueFormat::try_from(schema.value_format) {
        Ok(v1::ValueFormat::Bytes) => ValueFormat::Bytes,
        Ok(v1::ValueFormat::Json) => ValueFormat::Json,
        Err(_) => {
            return Err(ConvertError(format!(
                "schema.value_format: expected bytes or json, found {}",
                schema.value_format
            )))
        }
    };
    let ttl = match &schema.ttl {
        None => None,
        Some(ttl) => Some(match v1::TtlFrom::try_from(ttl.from) {
            Ok(v1::TtlFrom::Element) => TtlSpec::Element {
                element: ttl.element.clone(),
                ttl_micros: ttl.ttl_micros,
            },
            Ok(v1::TtlFrom::Append) => TtlSpec::Append {
                ttl_micros: ttl.ttl_micros,
            },
            Ok(v1::TtlFrom::Unspecified) | Err(_) => {
                return Err(ConvertError(format!(
                    "schema.ttl.from: expected element or append, found {}",
                    ttl.from
                )))
            }
        }),
    };
    Ok(KeyspaceSchema {
        name: schema.name.clone(),
        key,
        partition_by: schema.partition_by as usize,
        value_format,
        ttl,
    })
}

/// The message of a keyspace schema.
pub fn schema_to_proto(schema: &KeyspaceSchema) -> v1::KeyspaceSchema {
    v1::KeyspaceSchema {
        name: schema.name.clone(),
        key: schema
            .key
            .iter()
            .map(|e| v1::KeyElementSpec {
                name: e.name.clone(),
                r#type: element_type_to_proto(e.ty) as i32,
                order: match e.order {
                    Order::Asc => v1::SortOrder::Asc as i32,
                    Order::Desc => v1::SortOrder::Desc as i32,
                },
            })
            .collect(),
        partition_by: schema.partition_by as u32,
        value_format: match schema.value_format {
            ValueFormat::Bytes => v1::ValueFormat::Bytes as i32,
            ValueFormat::Json => v1::ValueFormat::Json as i32,
        },
        ttl: schema.ttl.as_ref().map(|ttl| match ttl {
            TtlSpec::Element {
                element,
                ttl_micros,
            } => v1::TtlSpec {
                from: v1::TtlFrom::Element as i32,
                element: element.clone(),
                ttl_micros: *ttl_micros,
            },
            TtlSpec::Append { ttl_micros } => v1::TtlSpec {
                from: v1::TtlFrom::Append as i32,
                element: String::new(),
                ttl_micros: *ttl_micros,
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_round_trip() {
        let tuple = vec![
            Element::Bytes(vec![0, 255]),
            Element::String("s".into()),
            Element::I64(-3),
            Element::F64(1.5),
            Element::Bool(true),
            Element::Timestamp(42),
        ];
        let back = tuple_from_proto(Some(&tuple_to_proto(&tuple)), "key").expect("valid");
        assert_eq!(back, tuple);
    }

    #[test]
    fn empty_element_names_its_field() {
        let tuple = v1::Tuple {
            elements: vec![v1::Element { kind: None }],
        };
        let err = tuple_from_proto(Some(&tuple), "key").unwrap_err();
        assert_eq!(err.0, "key[0]: element has no value");
    }

    #[test]
    fn schema_round_trips_and_rejects_unspecified_type() {
        let schema = KeyspaceSchema {
            name: "items".into(),
            key: vec![
                KeyElement {
                    name: "store".into(),
                    ty: ElementType::String,
                    order: Order::Asc,
                },
                KeyElement {
                    name: "score".into(),
                    ty: ElementType::F64,
                    order: Order::Desc,
                },
            ],
            partition_by: 1,
            value_format: ValueFormat::Json,
            ttl: Some(TtlSpec::Append { ttl_micros: 5 }),
        };
        let proto = schema_to_proto(&schema);
        assert_eq!(schema_from_proto(&proto).expect("valid"), schema);
        let mut bad = proto;
        bad.key[1].r#type = 0;
        let err = schema_from_proto(&bad).unwrap_err();
        assert!(err.0.starts_with("schema.key[1].type"), "{err}");
    }

    #[test]
    fn token_partition_must_fit() {
        let err = token_from_proto(&v1::Token {
            partition: 70_000,
            seq: 1,
        })
        .unwrap_err();
        assert!(err.0.contains("70000"));
    }
}
