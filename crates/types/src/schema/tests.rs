//! Unit tests of keyspace schemas.

use super::*;
use crate::codec::{decode_tuple, prefix_successor};
use crate::element::Order;
use serde_json::json;

fn items() -> KeyspaceSchema {
    serde_json::from_value(json!({
        "name": "items",
        "key": [
            {"name": "store", "type": "string"},
            {"name": "product", "type": "string"},
            {"name": "score", "type": "f64", "order": "desc"},
            {"name": "item", "type": "string"},
        ],
        "partition_by": 2,
    }))
    .expect("valid schema json")
}

fn views() -> KeyspaceSchema {
    KeyspaceSchema {
        name: "user-views_1".into(),
        key: vec![
            KeyElement::new("user", ElementType::String, Order::Asc),
            KeyElement::new("ts", ElementType::Timestamp, Order::Desc),
            KeyElement::new("item", ElementType::String, Order::Asc),
        ],
        partition_by: 1,
        value_format: ValueFormat::Json,
        ttl: Some(TtlSpec::Element {
            element: "ts".into(),
            ttl_micros: 3_600_000_000,
        }),
    }
}

fn item_key(store: &str, score: f64, item: &str) -> Vec<Element> {
    vec![store.into(), "shoes".into(), score.into(), item.into()]
}

#[test]
fn json_form_and_defaults() {
    let s = items();
    assert_eq!(s.value_format, ValueFormat::Bytes);
    assert_eq!(s.ttl, None);
    assert_eq!(s.key[2].order, Order::Desc);
    s.validate().expect("valid");
    let v = views();
    let value = serde_json::to_value(&v).expect("serialise");
    assert_eq!(
        value["ttl"],
        json!({"from": "element", "element": "ts", "ttl_micros": 3_600_000_000u64})
    );
    assert_eq!(value["value_format"], json!("json"));
    assert_eq!(
        value["key"][1],
        json!({"name": "ts", "type": "timestamp", "order": "desc"})
    );
    let back: KeyspaceSchema = serde_json::from_value(value).expect("parse");
    assert_eq!(back, v);
    let append: TtlSpec =
        serde_json::from_value(json!({"from": "append", "ttl_micros": 5})).expect("parse");
    assert_eq!(append, TtlSpec::Append { ttl_micros: 5 });
    assert_eq!("json".parse::<ValueFormat>(), Ok(ValueFormat::Json));
    let err = "xml".parse::<ValueFormat>().expect_err("not a format");
    assert_eq!(
        err.to_string(),
        "value_format must be bytes or json, found \"xml\""
    );
}

#[test]
fn validate_names_the_field() {
    type Edit = fn(&mut KeyspaceSchema);
    let cases: [(Edit, &str); 11] = [
        (
            |s| s.name = "9lives".into(),
            "name must match [A-Za-z][A-Za-z0-9_-]{0,63}, found \"9lives\"",
        ),
        (
            |s| s.name = "a".repeat(65),
            "name must match [A-Za-z][A-Za-z0-9_-]{0,63}, found a string of 65 bytes",
        ),
        (|s| s.name = "sp ace".into(), "found \"sp ace\""),
        (
            |s| s.key.clear(),
            "key must have between 1 and 32 elements, found 0",
        ),
        (
            |s| {
                s.key = (0..33)
                    .map(|i| KeyElement::new(format!("k{i}"), ElementType::I64, Order::Asc))
                    .collect()
            },
            "key must have between 1 and 32 elements, found 33",
        ),
        (
            |s| s.key[1].name = String::new(),
            "key[1].name must match [A-Za-z][A-Za-z0-9_-]{0,63}, found \"\"",
        ),
        (
            |s| s.key[2].name = "user".into(),
            "key[2].name must be unique, found \"user\" a second time",
        ),
        (
            |s| s.partition_by = 4,
            "partition_by must be between 1 and 3 (the number of key elements), found 4",
        ),
        (
            |s| s.partition_by = 0,
            "partition_by must be between 1 and 3 (the number of key elements), found 0",
        ),
        (
            |s| {
                s.ttl = Some(TtlSpec::Element {
                    element: "item".into(),
                    ttl_micros: 1,
                })
            },
            "ttl.element \"item\" must have type timestamp, found string",
        ),
        (
            |s| s.ttl = Some(TtlSpec::Append { ttl_micros: 0 }),
            "ttl.ttl_micros must be greater than 0, found 0",
        ),
    ];
    for (edit, want) in cases {
        let mut s = views();
        s.validate().expect("the base schema is valid");
        edit(&mut s);
        let err = s.validate().expect_err(want);
        assert!(matches!(err, TypesError::Schema(_)), "{err:?}");
        assert!(err.to_string().contains(want), "{err} lacks {want}");
    }
    let mut s = views();
    s.ttl = Some(TtlSpec::Element {
        element: "when".into(),
        ttl_micros: 1,
    });
    let err = s.validate().expect_err("no such element");
    assert_eq!(
        err.to_string(),
        "ttl.element must name a key element, found \"when\""
    );
    s.name = format!("a{}", "-_9Z".repeat(15) + "xyz");
    s.ttl = None;
    assert_eq!(s.name.len(), 64);
    s.validate()
        .expect("64-byte name with every allowed character class");
}

#[test]
fn element_indexes() {
    let v = views();
    assert_eq!(v.element_index("item"), Some(2));
    assert_eq!(v.element_index("nope"), None);
    assert_eq!(v.ttl_element_index(), Some(1));
    assert_eq!(items().ttl_element_index(), None);
    let mut append = views();
    append.ttl = Some(TtlSpec::Append { ttl_micros: 1 });
    assert_eq!(append.ttl_element_index(), None);
}

#[test]
fn encode_key_marks_the_partition_key() {
    let s = items();
    let values = item_key("store-42", 0.87, "item-00123");
    let key = s.encode_key(&values).expect("valid key");
    let prefix = s.encode_prefix(&values[..2]).expect("valid prefix");
    assert_eq!(key.partition_key(), prefix.as_slice());
    assert_eq!(
        key.partition_key_len,
        "store-42".len() + 2 + "shoes".len() + 2
    );
    assert_eq!(s.partition_key_len(&key.bytes), Ok(key.partition_key_len));
    assert_eq!(s.partition_key_len(&prefix), Ok(prefix.len()));
    assert_eq!(s.decode_key(&key.bytes), Ok(values.clone()));
    let end = prefix_successor(&prefix).expect("bounded");
    assert!(prefix <= key.bytes && key.bytes < end);

    let better = s
        .encode_key(&item_key("store-42", 0.95, "item-9"))
        .expect("valid");
    assert!(better.bytes < key.bytes, "higher score sorts first (desc)");
    let other = s
        .encode_key(&item_key("store-42\0", 0.95, "a"))
        .expect("valid");
    assert!(
        other.bytes >= end,
        "another partition key sorts after the prefix range"
    );
}

#[test]
fn key_errors() {
    let s = items();
    let values = item_key("s", 1.0, "i");
    let err = s.encode_key(&values[..3]).expect_err("short");
    assert_eq!(err.to_string(), "expected exactly 4 key elements, found 3");
    let mut long = values.clone();
    long.push(Element::Bool(true));
    let err = s.encode_prefix(&long).expect_err("long");
    assert_eq!(err.to_string(), "expected at most 4 key elements, found 5");
    let mut wrong = values.clone();
    wrong[2] = Element::I64(1);
    let err = s.encode_key(&wrong).expect_err("wrong type");
    assert_eq!(
        err.to_string(),
        "key element `score`: expected f64, found i64"
    );
    wrong[2] = Element::F64(f64::NAN);
    assert_eq!(
        s.encode_key(&wrong),
        Err(TypesError::NaN {
            field: "score".into()
        })
    );

    let prefix = s.encode_prefix(&values[..1]).expect("valid prefix");
    let err = s
        .partition_key_len(&prefix)
        .expect_err("shorter than the partition key");
    assert_eq!(err.to_string(), "expected at least 2 key elements, found 1");
    let err = s
        .partition_key_len(&prefix[..prefix.len() - 1])
        .expect_err("truncated");
    assert!(matches!(err, TypesError::Decode(_)), "{err:?}");
    let three = s.encode_prefix(&values[..3]).expect("valid prefix");
    let err = s.decode_key(&three).expect_err("a prefix is not a key");
    assert_eq!(
        err.to_string(),
        "malformed encoded key: expected 4 key elements, found 3"
    );
    assert_eq!(decode_tuple(&s.key, &three), Ok(values[..3].to_vec()));
}

#[test]
fn encoded_key_partition_key_is_clamped() {
    let k = EncodedKey {
        bytes: vec![1, 2],
        partition_key_len: 5,
    };
    assert_eq!(k.partition_key(), &[1, 2]);
}
