//! Unit tests of the key codec.

use super::*;
use crate::element::compare_tuples;
use std::cmp::Ordering;

fn enc(value: Element, order: Order) -> Vec<u8> {
    let mut out = Vec::new();
    encode_element(&mut out, &value, order);
    out
}

fn schema(types: &[(ElementType, Order)]) -> Vec<KeyElement> {
    let named = types.iter().enumerate();
    named
        .map(|(i, (ty, o))| KeyElement::new(format!("e{i}"), *ty, *o))
        .collect()
}

/// Asserts that `values` (sorted ascending) encode strictly increasing in `Asc` and strictly
/// decreasing in `Desc`, and that each decodes back.
fn assert_sorted(values: &[Element]) {
    for order in [Order::Asc, Order::Desc] {
        let encoded: Vec<Vec<u8>> = values.iter().map(|v| enc(v.clone(), order)).collect();
        for (pair, vals) in encoded.windows(2).zip(values.windows(2)) {
            let want = if order == Order::Asc {
                Ordering::Less
            } else {
                Ordering::Greater
            };
            assert_eq!(
                pair[0].cmp(&pair[1]),
                want,
                "{order}: {:?} vs {:?}",
                vals[0],
                vals[1]
            );
        }
        for (bytes, v) in encoded.iter().zip(values) {
            let got = decode_element(bytes, v.element_type(), order).expect("decodes");
            assert_eq!(got, (v.clone(), bytes.len()));
        }
    }
}

#[test]
fn golden_bytes() {
    assert_eq!(enc(Element::I64(i64::MIN), Order::Asc), [0; 8]);
    assert_eq!(enc(Element::I64(i64::MAX), Order::Asc), [0xFF; 8]);
    assert_eq!(
        enc(Element::I64(1), Order::Asc),
        [0x80, 0, 0, 0, 0, 0, 0, 1]
    );
    assert_eq!(
        enc(Element::Timestamp(-1), Order::Asc),
        [0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
    );
    assert_eq!(
        enc(Element::F64(1.0), Order::Asc),
        [0xBF, 0xF0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        enc(Element::F64(-1.0), Order::Asc),
        [0x40, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
    );
    assert_eq!(
        enc(Element::F64(0.0), Order::Asc),
        [0x80, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(enc(Element::Bool(true), Order::Asc), [1]);
    assert_eq!(enc(Element::Bool(true), Order::Desc), [0xFE]);
    assert_eq!(enc(Element::from(""), Order::Asc), [0, 1]);
    assert_eq!(
        enc(Element::from("a\0b"), Order::Asc),
        [0x61, 0, 0xFF, 0x62, 0, 1]
    );
    assert_eq!(enc(Element::from("a"), Order::Desc), [0x9E, 0xFF, 0xFE]);
    assert_eq!(
        enc(Element::Bytes(vec![0xFF, 0]), Order::Asc),
        [0xFF, 0, 0xFF, 0, 1]
    );
}

#[test]
fn integers_sort() {
    let ns = [
        i64::MIN,
        i64::MIN + 1,
        -256,
        -1,
        0,
        1,
        255,
        256,
        i64::MAX - 1,
        i64::MAX,
    ];
    assert_sorted(&ns.map(Element::I64));
    assert_sorted(&ns.map(Element::Timestamp));
}

#[test]
fn floats_sort_and_negative_zero_is_zero() {
    let subnormal = f64::from_bits(1);
    let xs = [
        f64::NEG_INFINITY,
        f64::MIN,
        -1.5,
        -1.0,
        -f64::MIN_POSITIVE,
        -subnormal,
        0.0,
        subnormal,
        f64::MIN_POSITIVE,
        0.87,
        1.0,
        f64::MAX,
        f64::INFINITY,
    ];
    assert_sorted(&xs.map(Element::F64));
    for order in [Order::Asc, Order::Desc] {
        let neg = enc(Element::F64(-0.0), order);
        assert_eq!(neg, enc(Element::F64(0.0), order));
        let (x, _) = decode_element(&neg, ElementType::F64, order).expect("decodes");
        assert!(
            matches!(x, Element::F64(z) if z.to_bits() == 0),
            "{x:?} is +0.0"
        );
    }
}

#[test]
fn strings_and_bytes_sort_with_zero_and_ff_bytes() {
    let bytes: [&[u8]; 11] = [
        b"",
        b"\0",
        b"\0\0",
        b"\0\x01",
        b"\0\xFF",
        b"\x01",
        b"a",
        b"a\0",
        b"a\0b",
        b"ab",
        b"\xFF\xFF",
    ];
    assert_sorted(&bytes.map(|b| Element::Bytes(b.to_vec())));
    let strings = [
        "",
        "\0",
        "\0\0",
        "\u{1}",
        "a",
        "a\0",
        "ab",
        "a\u{7f}",
        "ä",
        "\u{10FFFF}",
    ];
    assert_sorted(&strings.map(Element::from));
}

#[test]
fn bools_sort() {
    assert_sorted(&[Element::Bool(false), Element::Bool(true)]);
}

#[test]
fn decode_rejects_non_canonical_bytes() {
    let nan_words = [
        f64::NAN.to_bits(),
        (-f64::NAN).to_bits(),
        0x7FF0_0000_0000_0001,
    ];
    for order in [Order::Asc, Order::Desc] {
        let m = mask(order);
        for bits in nan_words {
            let ordered = if bits & SIGN != 0 { !bits } else { bits ^ SIGN };
            let bytes = ordered.to_be_bytes().map(|b| b ^ m);
            let err = decode_element(&bytes, ElementType::F64, order).expect_err("nan");
            assert!(err.to_string().contains("found nan"), "{err}");
        }
        let neg_zero = (!(-0.0f64).to_bits()).to_be_bytes().map(|b| b ^ m);
        let err = decode_element(&neg_zero, ElementType::F64, order).expect_err("-0.0");
        assert!(err.to_string().contains("found -0.0"), "{err}");
        let cases: [(&[u8], ElementType, &str); 7] = [
            (&[2], ElementType::Bool, "found 0x02"),
            (&[], ElementType::Bool, "end of input"),
            (
                &[1, 2, 3],
                ElementType::I64,
                "expected 8 bytes for type i64, found 3",
            ),
            (b"a\0", ElementType::String, "terminator"),
            (b"a", ElementType::Bytes, "terminator"),
            (b"a\0\x02", ElementType::Bytes, "found 0x02 at byte 2"),
            (b"\xC3\0\x01", ElementType::String, "utf-8"),
        ];
        for (input, ty, needle) in cases {
            let masked: Vec<u8> = input.iter().map(|b| b ^ m).collect();
            let err = decode_element(&masked, ty, order).expect_err("malformed");
            assert!(matches!(err, TypesError::Decode(_)), "{err:?}");
            assert!(
                err.to_string().contains(needle),
                "{order} {ty}: {err} lacks {needle}"
            );
        }
    }
}

#[test]
fn decode_element_never_panics_on_short_input() {
    let inputs = (0..=u16::MAX)
        .map(|n| n.to_be_bytes().to_vec())
        .chain((0..=u8::MAX).map(|b| vec![b]))
        .chain([vec![]]);
    for input in inputs {
        for ty in ElementType::ALL {
            for order in [Order::Asc, Order::Desc] {
                let owned = decode_element(&input, ty, order);
                if let Ok((v, used)) = &owned {
                    assert_eq!(enc(v.clone(), order), input[..*used]);
                }
                // The borrowing decoder accepts and rejects the same bytes, alike.
                let mut scratch = vec![9];
                let borrowed = decode_element_ref(&input, ty, order, &mut scratch)
                    .map(|(v, used)| (v.to_element(), used));
                assert_eq!(borrowed, owned, "{ty} {order} {input:?}");
            }
        }
    }
}

#[test]
fn encode_tuple_checks_before_writing() {
    let s = schema(&[
        (ElementType::String, Order::Asc),
        (ElementType::F64, Order::Desc),
    ]);
    let mut out = vec![7];
    let err = encode_tuple(&mut out, &s, &[Element::from("x"), Element::from("0.5")]);
    assert_eq!(
        err.expect_err("wrong type").to_string(),
        "key element `e1`: expected f64, found string"
    );
    let err = encode_tuple(&mut out, &s, &[Element::from("x"), Element::F64(f64::NAN)]);
    assert_eq!(err, Err(TypesError::NaN { field: "e1".into() }));
    let three = [Element::from("x"), Element::F64(1.0), Element::Bool(true)];
    let err = encode_tuple(&mut out, &s, &three).expect_err("too many");
    assert_eq!(err.to_string(), "expected at most 2 key elements, found 3");
    assert_eq!(out, [7], "out unchanged on error");
    encode_tuple(&mut out, &s, &three[..2]).expect("valid");
    assert_eq!(
        out[1..],
        [b'x', 0, 1, 0x40, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
    );
}

#[test]
fn decode_tuple_decodes_prefixes_and_rejects_trailing_bytes() {
    let s = schema(&[
        (ElementType::Bytes, Order::Desc),
        (ElementType::I64, Order::Asc),
    ]);
    let t = [Element::Bytes(vec![0, 0xFF]), Element::I64(-3)];
    let mut full = Vec::new();
    encode_tuple(&mut full, &s, &t).expect("valid");
    assert_eq!(decode_tuple(&s, &full), Ok(t.to_vec()));
    let first = skip_elements(&s, &full, 1).expect("one element");
    assert_eq!(first, 5, "00 ff ff 00 01, inverted");
    assert_eq!(decode_tuple(&s, &full[..first]), Ok(t[..1].to_vec()));
    assert_eq!(decode_tuple(&s, &[]), Ok(vec![]));
    let err = decode_tuple(&s, &full[..full.len() - 1]).expect_err("truncated");
    assert!(
        err.to_string()
            .starts_with("malformed encoded key: key element `e1`: expected 8"),
        "{err}"
    );
    let mut long = full.clone();
    long.push(0);
    // `visit_tuple` sees the same elements and fails alike, without allocating per element.
    let visit = |input: &[u8]| {
        let mut seen = Vec::new();
        visit_tuple(&s, input, &mut Vec::new(), |el, v| {
            seen.push((el.name.clone(), v.to_element()))
        })
        .map(|()| seen)
    };
    let names = |t: &[Element]| -> Vec<(String, Element)> {
        t.iter()
            .enumerate()
            .map(|(i, e)| (format!("e{i}"), e.clone()))
            .collect()
    };
    assert_eq!(visit(&full), Ok(names(&t)));
    assert_eq!(visit(&full[..first]), Ok(names(&t[..1])));
    for bad in [&full[..full.len() - 1], &long[..]] {
        assert_eq!(
            visit(bad).expect_err("malformed"),
            decode_tuple(&s, bad).expect_err("malformed")
        );
    }
    let err = decode_tuple(&s, &long).expect_err("trailing byte");
    assert!(
        err.to_string()
            .contains("after its 2 elements, found 1 more bytes"),
        "{err}"
    );
}

#[test]
fn skip_elements_measures_without_validating_values() {
    let s = schema(&[
        (ElementType::String, Order::Asc),
        (ElementType::Bool, Order::Desc),
    ]);
    assert_eq!(skip_elements(&s, b"ab\0\x01\xFE", 0), Ok(0));
    assert_eq!(skip_elements(&s, b"ab\0\x01\xFE", 1), Ok(4));
    assert_eq!(skip_elements(&s, b"ab\0\x01\xFE", 2), Ok(5));
    assert_eq!(
        skip_elements(&s, b"\xC3\0\x01\x07", 2),
        Ok(4),
        "structure only"
    );
    let err = skip_elements(&s, b"ab\0\x01", 2).expect_err("one element only");
    assert_eq!(
        err.to_string(),
        "malformed encoded key: expected at least 2 encoded elements, found 1"
    );
    let err = skip_elements(&s, b"ab\0", 1).expect_err("truncated");
    assert!(err.to_string().contains("key element `e0`"), "{err}");
    let err = skip_elements(&s, b"", 3).expect_err("beyond schema");
    assert_eq!(
        err,
        TypesError::ElementCount {
            expected: "at most 2".into(),
            found: 3
        }
    );
}

#[test]
fn prefix_successor_bounds_the_prefix_range() {
    assert_eq!(prefix_successor(b""), None);
    assert_eq!(prefix_successor(b"\xFF\xFF"), None);
    assert_eq!(prefix_successor(b"\x01\xFF"), Some(vec![2]));
    assert_eq!(prefix_successor(b"a\0"), Some(b"a\x01".to_vec()));
    let s = schema(&[
        (ElementType::String, Order::Desc),
        (ElementType::I64, Order::Asc),
    ]);
    let mut p = Vec::new();
    encode_tuple(&mut p, &s, &[Element::from("a")]).expect("valid");
    let end = prefix_successor(&p).expect("bounded");
    for (second, inside) in [(i64::MIN, true), (i64::MAX, true)] {
        let mut k = Vec::new();
        encode_tuple(&mut k, &s, &[Element::from("a"), Element::I64(second)]).expect("valid");
        assert_eq!(p <= k && k < end, inside);
    }
    for other in ["", "a\0", "ab", "b"] {
        let mut k = Vec::new();
        encode_tuple(&mut k, &s, &[Element::from(other), Element::I64(0)]).expect("valid");
        assert!(k < p || k >= end, "{other:?} is outside the prefix range");
        let ord = compare_tuples(&s, &[Element::from(other)], &[Element::from("a")]);
        assert_eq!(k.as_slice().cmp(&p), ord, "{other:?} sorts like its tuple");
    }
}
