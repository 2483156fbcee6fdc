//! Property tests of the key codec against the reference tuple order: random schemas of 1 to 4
//! elements (every type, both orders) and random tuples biased towards the hard cases (0x00 and
//! 0xFF bytes, equal leading elements, extreme numbers, -0.0, infinities).

use notadb_types::{
    compare_elements, compare_tuples, decode_tuple, encode_tuple, prefix_successor, skip_elements,
    Element, ElementType, KeyElement, Order,
};
use proptest::collection::vec;
use proptest::prelude::*;
use std::cmp::Ordering;

/// Cases per property, at least; `PROPTEST_CASES` may ask for more.
const CASES: u32 = 1024;

fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: default.cases.max(CASES),
        ..default
    }
}

fn schema() -> impl Strategy<Value = Vec<KeyElement>> {
    let ty = prop::sample::select(ElementType::ALL.to_vec());
    let order = prop_oneof![Just(Order::Asc), Just(Order::Desc)];
    vec((ty, order), 1..=4).prop_map(|elements| {
        let named = elements.into_iter().enumerate();
        named
            .map(|(i, (ty, order))| KeyElement::new(format!("e{i}"), ty, order))
            .collect()
    })
}

fn tricky_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(0x00u8),
        3 => Just(0xFF),
        1 => Just(0x01),
        1 => Just(0xFE),
        2 => b'a'..=b'c',
        2 => any::<u8>(),
    ]
}

fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => Just('\0'),
        3 => prop::char::range('a', 'c'),
        1 => Just('\u{1}'),
        1 => Just('\u{7f}'),
        1 => Just('\u{ff}'),
        1 => Just('\u{10FFFF}'),
        1 => any::<char>(),
    ]
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![Just(i64::MIN), Just(i64::MAX), -2i64..=2, any::<i64>(),]
}

fn float() -> impl Strategy<Value = f64> {
    let subnormal = f64::from_bits(1);
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(-f64::MIN_POSITIVE),
        Just(subnormal),
        Just(-subnormal),
        (-2i8..=2).prop_map(f64::from),
        any::<f64>().prop_map(|x| if x.is_nan() { 0.0 } else { x }),
    ]
}

fn element(ty: ElementType) -> BoxedStrategy<Element> {
    match ty {
        ElementType::Bytes => vec(tricky_byte(), 0..6).prop_map(Element::Bytes).boxed(),
        ElementType::String => vec(tricky_char(), 0..6)
            .prop_map(|chars| Element::String(chars.into_iter().collect()))
            .boxed(),
        ElementType::I64 => int().prop_map(Element::I64).boxed(),
        ElementType::Timestamp => int().prop_map(Element::Timestamp).boxed(),
        ElementType::F64 => float().prop_map(Element::F64).boxed(),
        ElementType::Bool => any::<bool>().prop_map(Element::Bool).boxed(),
    }
}

/// A full tuple of `schema`.
fn tuple(schema: &[KeyElement]) -> Vec<BoxedStrategy<Element>> {
    schema.iter().map(|el| element(el.ty)).collect()
}

/// A schema and two full tuples of it, the second sharing a random number of leading elements
/// with the first, and two lengths up to the schema's.
type Pair = (Vec<KeyElement>, Vec<Element>, Vec<Element>, usize, usize);

fn pair() -> impl Strategy<Value = Pair> {
    schema().prop_flat_map(|s| {
        let n = s.len();
        (Just(s.clone()), tuple(&s), tuple(&s), 0..=n, 0..=n, 0..=n).prop_map(
            |(s, a, mut b, share, la, lb)| {
                b[..share].clone_from_slice(&a[..share]);
                (s, a, b, la, lb)
            },
        )
    })
}

fn encode(schema: &[KeyElement], values: &[Element]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_tuple(&mut out, schema, values).expect("generated tuples match their schema");
    out
}

/// The ascending-form bytes of one element of type `ty`, often valid, else corrupted in a way a
/// lenient decoder might accept: -0.0 and NaN floats, bool bytes above 1, short numbers, bad
/// escapes, missing terminators, invalid UTF-8.
fn element_bytes(ty: ElementType) -> BoxedStrategy<Vec<u8>> {
    let word = |w: u64| Just(w.to_be_bytes().to_vec());
    let corrupt = match ty {
        ElementType::F64 => prop_oneof![
            word(0x7FFF_FFFF_FFFF_FFFF), // -0.0
            word(0xFFF8_0000_0000_0000), // NaN
            word(0x0007_FFFF_FFFF_FFFF), // -NaN
            word(0xFFF0_0000_0000_0001), // signalling NaN
            any::<u64>().prop_map(|w| w.to_be_bytes().to_vec()),
        ]
        .boxed(),
        ElementType::Bool => any::<u8>().prop_map(|b| vec![b]).boxed(),
        ElementType::I64 | ElementType::Timestamp => vec(any::<u8>(), 0..8).boxed(),
        ElementType::Bytes | ElementType::String => {
            let suffix = prop::sample::select(vec![
                vec![0x00, 0x01],
                vec![0x00, 0x00],
                vec![0x00, 0x02],
                vec![0x00, 0xFE],
                vec![0x00],
                vec![0xC3, 0x00, 0x01],
                vec![0xFF, 0x00, 0x01],
                vec![],
            ]);
            (vec(tricky_byte(), 0..5), suffix)
                .prop_map(|(mut content, suffix)| {
                    content.extend(suffix);
                    content
                })
                .boxed()
        }
    };
    let valid = element(ty)
        .prop_map(|v| {
            let mut out = Vec::new();
            notadb_types::encode_element(&mut out, &v, Order::Asc);
            out
        })
        .boxed();
    prop_oneof![2 => valid, 1 => corrupt].boxed()
}

/// Bytes to decode: random bytes; a valid encoding with a few bytes overwritten and possibly
/// truncated or extended; or a sequence of per-element chunks, valid or subtly corrupted.
fn decode_input() -> impl Strategy<Value = (Vec<KeyElement>, Vec<u8>)> {
    schema().prop_flat_map(|s| {
        let random = vec(tricky_byte(), 0..40).boxed();
        let edits = vec((any::<usize>(), tricky_byte()), 0..3);
        let tail = || vec(tricky_byte(), 0..3);
        let mutated = (tuple(&s), edits, any::<usize>(), tail())
            .prop_map({
                let s = s.clone();
                move |(t, edits, cut, tail)| {
                    let mut bytes = encode(&s, &t);
                    for (at, b) in edits {
                        if !bytes.is_empty() {
                            let i = at % bytes.len();
                            bytes[i] = b;
                        }
                    }
                    bytes.truncate(cut % (bytes.len() + 2));
                    bytes.extend(tail);
                    bytes
                }
            })
            .boxed();
        let chunks: Vec<_> = s.iter().map(|el| element_bytes(el.ty)).collect();
        let masks: Vec<u8> = s
            .iter()
            .map(|el| if el.order == Order::Desc { 0xFF } else { 0 })
            .collect();
        let chunked = (
            chunks,
            0..=s.len(),
            prop_oneof![3 => Just(Vec::<u8>::new()), 1 => tail()],
        )
            .prop_map(move |(chunks, n, tail)| {
                let mut bytes = Vec::new();
                for (chunk, mask) in chunks.iter().zip(&masks).take(n) {
                    bytes.extend(chunk.iter().map(|b| b ^ mask));
                }
                bytes.extend(tail);
                bytes
            })
            .boxed();
        (
            Just(s),
            prop_oneof![1 => random, 1 => mutated, 2 => chunked],
        )
    })
}

proptest! {
    #![proptest_config(config())]

    /// (a) Byte order is tuple order, for tuples of any lengths (prefixes included).
    #[test]
    fn byte_order_is_tuple_order((s, a, b, la, lb) in pair()) {
        let (a, b) = (&a[..la], &b[..lb]);
        let want = compare_tuples(&s, a, b);
        prop_assert_eq!(encode(&s, a).cmp(&encode(&s, b)), want, "{:?} vs {:?}", a, b);
        prop_assert_eq!(compare_tuples(&s, b, a), want.reverse());
    }

    /// (b) The encoding of a tuple prefix is a byte prefix of the tuple's encoding.
    #[test]
    fn prefix_encodes_to_byte_prefix((s, t, _, k, _) in pair()) {
        let full = encode(&s, &t);
        let prefix = encode(&s, &t[..k]);
        prop_assert!(full.starts_with(&prefix));
        prop_assert_eq!(skip_elements(&s, &full, k), Ok(prefix.len()));
    }

    /// (c) Decoding inverts encoding, for full tuples and prefixes; -0.0 comes back as +0.0.
    #[test]
    fn decode_inverts_encode((s, t, _, k, _) in pair()) {
        let t = &t[..k];
        let decoded = decode_tuple(&s, &encode(&s, t));
        prop_assert_eq!(decoded.as_deref(), Ok(t));
        for v in decoded.iter().flatten() {
            if let Element::F64(x) = v {
                prop_assert!(!(*x == 0.0 && x.is_sign_negative()), "-0.0 decoded");
            }
        }
    }

    /// (d) Every key with tuple prefix p lies in [encode(p), prefix_successor(encode(p))), and a
    /// key without that prefix lies outside.
    #[test]
    fn prefix_range_holds_exactly_the_prefixed_keys((s, t, u, k, _) in pair()) {
        let p = &t[..k];
        let start = encode(&s, p);
        let end = prefix_successor(&start);
        let in_range =
            |key: &[u8]| start.as_slice() <= key && end.as_deref().is_none_or(|e| key < e);
        prop_assert!(in_range(&encode(&s, &t)));
        let same = |(x, y): (&Element, &Element)| compare_elements(x, y) == Ordering::Equal;
        let has_prefix = u[..k].iter().zip(p).all(same);
        prop_assert_eq!(in_range(&encode(&s, &u)), has_prefix, "{:?} with prefix {:?}", u, p);
    }

    /// (e) Decoding arbitrary bytes never panics, and accepts only canonical encodings.
    #[test]
    fn decode_accepts_only_canonical_bytes((s, bytes) in decode_input()) {
        let skipped: Vec<_> = (0..=s.len()).map(|n| skip_elements(&s, &bytes, n)).collect();
        if let Ok(values) = decode_tuple(&s, &bytes) {
            prop_assert_eq!(encode(&s, &values), bytes.clone());
            for (n, len) in skipped.iter().enumerate() {
                if n <= values.len() {
                    prop_assert_eq!(len, &Ok(encode(&s, &values[..n]).len()));
                } else {
                    prop_assert!(len.is_err(), "skipped {} of {} elements", n, values.len());
                }
            }
        }
    }
}
