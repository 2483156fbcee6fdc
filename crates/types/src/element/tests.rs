//! Unit tests of key elements and the reference tuple order.

use super::*;
use serde_json::json;

#[test]
fn type_and_order_names_round_trip() {
    for ty in ElementType::ALL {
        assert_eq!(ty.name().parse::<ElementType>(), Ok(ty));
        assert_eq!(
            serde_json::to_value(ty).expect("serialise"),
            json!(ty.name())
        );
    }
    assert_eq!("asc".parse::<Order>(), Ok(Order::Asc));
    assert_eq!("desc".parse::<Order>(), Ok(Order::Desc));
    let err = "int".parse::<ElementType>().expect_err("int is not a type");
    assert!(err.to_string().contains("found \"int\""), "{err}");
    let err = "down".parse::<Order>().expect_err("down is not an order");
    assert_eq!(err.to_string(), "order must be asc or desc, found \"down\"");
}

#[test]
fn key_element_json_defaults_to_ascending() {
    let e: KeyElement =
        serde_json::from_value(json!({"name": "score", "type": "f64"})).expect("parse");
    assert_eq!(e, KeyElement::new("score", ElementType::F64, Order::Asc));
    let e: KeyElement =
        serde_json::from_value(json!({"name": "ts", "type": "timestamp", "order": "desc"}))
            .expect("parse");
    assert_eq!(e.order, Order::Desc);
}

#[test]
fn from_json_accepts_every_type() {
    let cases = [
        (
            ElementType::Bytes,
            json!("AP8="),
            Element::Bytes(vec![0, 255]),
        ),
        (ElementType::String, json!("shoes"), Element::from("shoes")),
        (ElementType::I64, json!(i64::MIN), Element::I64(i64::MIN)),
        (ElementType::F64, json!(7), Element::F64(7.0)),
        (ElementType::F64, json!(-0.5), Element::F64(-0.5)),
        (ElementType::Bool, json!(true), Element::Bool(true)),
        (ElementType::Timestamp, json!(-5), Element::Timestamp(-5)),
        (
            ElementType::Timestamp,
            json!("2026-11-22T10:00:00Z"),
            Element::Timestamp(1_795_341_600_000_000),
        ),
        (
            ElementType::Timestamp,
            json!("1970-01-01T00:00:01.25Z"),
            Element::Timestamp(1_250_000),
        ),
    ];
    for (ty, v, want) in cases {
        let got = Element::from_json(ty, &v, "f").expect("valid json");
        assert_eq!(got, want, "{ty} from {v}");
        assert_eq!(got.element_type(), ty);
    }
}

#[test]
fn from_json_errors_name_the_field() {
    let cases = [
        (
            ElementType::Bytes,
            json!(3),
            "expected a base64 string, found 3",
        ),
        (
            ElementType::Bytes,
            json!("not base64!"),
            "found \"not base64!\"",
        ),
        (
            ElementType::String,
            json!(null),
            "expected a string, found null",
        ),
        (ElementType::I64, json!(1.5), "found 1.5"),
        (
            ElementType::I64,
            json!(u64::MAX),
            "found 18446744073709551615",
        ),
        (
            ElementType::F64,
            json!("1"),
            "expected a number, found \"1\"",
        ),
        (
            ElementType::Bool,
            json!([true]),
            "expected a boolean, found an array",
        ),
        (ElementType::Timestamp, json!({}), "found an object"),
        (ElementType::Timestamp, json!("2026-11-22"), "rfc 3339"),
        (
            ElementType::Timestamp,
            json!("1969-12-31T23:59:59Z"),
            "rfc 3339",
        ),
        (
            ElementType::Timestamp,
            json!("2026-11-22T10:00:00.0000001Z"),
            "microsecond",
        ),
    ];
    for (ty, v, needle) in cases {
        let err = Element::from_json(ty, &v, "score").expect_err("invalid json");
        assert!(matches!(&err, TypesError::Json { field, .. } if field == "score"));
        let msg = err.to_string();
        assert!(msg.starts_with("key element `score`: expected "), "{msg}");
        assert!(msg.contains(needle), "{msg} lacks {needle}");
    }
    let long = "x".repeat(1000);
    let err = Element::from_json(ElementType::I64, &json!(long), "n").expect_err("a string");
    assert!(err.to_string().contains("a string of 1000 bytes"), "{err}");
}

#[test]
fn to_json_round_trips_through_from_json() {
    let values = [
        Element::Bytes(vec![0, 1, 255]),
        Element::from("ä\0b"),
        Element::I64(i64::MAX),
        Element::F64(-1.25e300),
        Element::Bool(false),
        Element::Timestamp(i64::MIN),
    ];
    for v in values {
        let back = Element::from_json(v.element_type(), &v.to_json(), "f").expect("round trip");
        assert_eq!(back, v);
    }
    assert_eq!(Element::Timestamp(42).to_json(), json!(42));
    assert_eq!(Element::F64(f64::INFINITY).to_json(), Value::Null);
}

#[test]
fn write_json_prints_what_to_json_prints() {
    let values = [
        Element::Bytes(vec![0, 1, 255]),
        Element::from("a \"quoted\"\n\u{1}ä"),
        Element::I64(i64::MIN),
        Element::F64(-1.25e300),
        Element::F64(3.0),
        Element::F64(f64::NEG_INFINITY),
        Element::Bool(true),
        Element::Timestamp(42),
    ];
    for v in values {
        let mut out = String::from("[");
        v.write_json(&mut out);
        assert_eq!(out, format!("[{}", v.to_json()), "{v:?}");
    }
}

#[test]
fn display() {
    assert_eq!(Element::Bytes(vec![0, 255]).to_string(), "AP8=");
    assert_eq!(Element::from("shoes").to_string(), "shoes");
    assert_eq!(Element::F64(0.87).to_string(), "0.87");
    assert_eq!(
        Element::Timestamp(1_795_341_600_000_001).to_string(),
        "2026-11-22T10:00:00.000001Z"
    );
    assert_eq!(Element::Timestamp(-1).to_string(), "-1us");
    assert_eq!(
        Element::Timestamp(i64::MAX).to_string(),
        format!("{}us", i64::MAX)
    );
}

#[test]
fn element_order() {
    use Element as E;
    let lt = |a: E, b: E| assert_eq!(compare_elements(&a, &b), Ordering::Less, "{a:?} < {b:?}");
    lt(E::I64(i64::MIN), E::I64(-1));
    lt(E::I64(-1), E::I64(i64::MAX));
    lt(E::F64(f64::NEG_INFINITY), E::F64(f64::MIN));
    lt(E::F64(-1.0), E::F64(-f64::MIN_POSITIVE));
    lt(E::F64(0.0), E::F64(f64::from_bits(1)));
    lt(E::F64(f64::MAX), E::F64(f64::INFINITY));
    lt(E::from(""), E::from("\0"));
    lt(E::from("a"), E::from("a\0"));
    lt(E::from("a\u{10FFFF}"), E::from("b"));
    lt(E::Bytes(vec![0xFE]), E::Bytes(vec![0xFF]));
    lt(E::Bool(false), E::Bool(true));
    lt(E::Timestamp(-1), E::Timestamp(0));
    let eq = compare_elements(&E::F64(-0.0), &E::F64(0.0));
    assert_eq!(eq, Ordering::Equal);
    assert_eq!(
        compare_elements(&E::Bytes(vec![]), &E::I64(0)),
        Ordering::Less
    );
}

#[test]
fn tuple_order_applies_desc_and_prefixes() {
    let schema = [
        KeyElement::new("a", ElementType::String, Order::Asc),
        KeyElement::new("b", ElementType::F64, Order::Desc),
    ];
    let t = |a: &str, b: f64| vec![Element::from(a), Element::F64(b)];
    assert_eq!(
        compare_tuples(&schema, &t("x", 2.0), &t("x", 1.0)),
        Ordering::Less
    );
    assert_eq!(
        compare_tuples(&schema, &t("x", 1.0), &t("y", 2.0)),
        Ordering::Less
    );
    assert_eq!(
        compare_tuples(&schema, &t("x", 0.0), &t("x", -0.0)),
        Ordering::Equal
    );
    assert_eq!(
        compare_tuples(&schema, &t("x", 1.0)[..1], &t("x", 1.0)),
        Ordering::Less
    );
    assert_eq!(
        compare_tuples(&schema, &[], &t("", 0.0)[..1]),
        Ordering::Less
    );
    assert_eq!(
        compare_tuples(&schema, &t("y", 1.0)[..1], &t("x", 1.0)),
        Ordering::Greater
    );
}
