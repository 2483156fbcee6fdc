//! The key codec: the first input byte picks a schema, the rest is decoded.

use notadb_types::{
    compare_tuples, decode_tuple, encode_tuple, skip_elements, ElementType, KeyElement,
    KeyspaceSchema, Order, ValueFormat,
};
use std::cmp::Ordering;

/// Key schemas covering every element type in both orders, and prefixes of several elements.
const SCHEMAS: &[&[(ElementType, Order)]] = {
    use ElementType::*;
    use Order::*;
    &[
        &[(Bytes, Asc)],
        &[(Bytes, Desc)],
        &[(String, Asc), (String, Desc)],
        &[(I64, Asc), (I64, Desc), (Bool, Asc)],
        &[(F64, Asc), (F64, Desc), (Bool, Desc)],
        &[(Timestamp, Asc), (Timestamp, Desc), (String, Asc)],
        &[(String, Asc), (String, Asc), (F64, Desc), (String, Asc)],
        &[
            (String, Asc),
            (Timestamp, Desc),
            (String, Asc),
            (Bytes, Desc),
        ],
        &[
            (Bool, Asc),
            (Bytes, Asc),
            (I64, Asc),
            (F64, Asc),
            (Timestamp, Asc),
            (String, Asc),
        ],
        &[
            (Bool, Desc),
            (Bytes, Desc),
            (I64, Desc),
            (F64, Desc),
            (Timestamp, Desc),
            (String, Desc),
        ],
    ]
};

fn keyspace(i: usize, elements: &[(ElementType, Order)]) -> KeyspaceSchema {
    KeyspaceSchema {
        name: format!("fuzz{i}"),
        key: elements
            .iter()
            .enumerate()
            .map(|(j, (ty, order))| KeyElement::new(format!("e{j}"), *ty, *order))
            .collect(),
        partition_by: 1,
        value_format: ValueFormat::Bytes,
        ttl: None,
    }
}

/// Decoding never panics and accepts only canonical bytes: whatever it accepts re-encodes to
/// exactly the input, and `skip_elements` agrees with it on every element boundary.
pub fn key(data: &[u8]) {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let index = usize::from(pick) % SCHEMAS.len();
    let schema = keyspace(index, SCHEMAS[index]);
    assert_eq!(schema.validate(), Ok(()));
    let key = &schema.key;

    let skipped: Vec<_> = (0..=key.len())
        .map(|n| skip_elements(key, input, n))
        .collect();
    let partition_key_len = schema.partition_key_len(input);
    let full = schema.decode_key(input);

    let Ok(values) = decode_tuple(key, input) else {
        assert!(
            full.is_err(),
            "decode_key accepted what decode_tuple rejected"
        );
        return;
    };
    let mut encoded = Vec::new();
    encode_tuple(&mut encoded, key, &values).expect("decoded values match their schema");
    assert_eq!(encoded, input, "decoding accepted non-canonical bytes");
    assert_eq!(compare_tuples(key, &values, &values), Ordering::Equal);
    assert_eq!(full.is_ok(), values.len() == key.len());

    for (n, len) in skipped.iter().enumerate() {
        if n <= values.len() {
            let mut prefix = Vec::new();
            encode_tuple(&mut prefix, key, &values[..n]).expect("a prefix of valid values");
            assert_eq!(len.as_ref().ok(), Some(&prefix.len()), "skip_elements({n})");
        } else {
            assert!(
                len.is_err(),
                "skip_elements({n}) beyond {} elements",
                values.len()
            );
        }
    }
    if !values.is_empty() {
        assert_eq!(partition_key_len.as_ref().ok(), skipped[1].as_ref().ok());
    } else {
        assert!(partition_key_len.is_err());
    }
}
