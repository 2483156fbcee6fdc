//! Answers written as protobuf straight from stored bytes, for the frame protocol: the bytes
//! prost writes for the same message, without building the message first. A scan's rows go
//! from the scan's one buffer into the output buffer with each key's elements decoded on the
//! way (no `Element`s, no `String`s, no `Row` messages, no second walk to size them); a
//! `MultiGet`'s values from the read's one buffer.

use bytes::{BufMut, BytesMut};
use notadb_node::{MultiGetValues, RawScan, ScanResult};
use notadb_proto::v1;
use notadb_types::{visit_tuple_from, ElementRef, TypesError, ValueFormat};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

/// Field numbers of the messages written here (`proto/notadb/v1`).
mod field {
    /// `ScanResponse.rows`, `Row.key`, `Tuple.elements`, `MultiGetResponse.results`,
    /// `GetResponse.found`.
    pub const FIRST: u32 = 1;
    /// `ScanResponse.more`, `Row.value`, `GetResponse.value`.
    pub const SECOND: u32 = 2;
    /// `Value.bytes`, `Value.json`.
    pub const VALUE_BYTES: u32 = 1;
    pub const VALUE_JSON: u32 = 2;
    /// `Element.kind`.
    pub const BYTES: u32 = 1;
    pub const STRING: u32 = 2;
    pub const I64: u32 = 3;
    pub const F64: u32 = 4;
    pub const BOOL: u32 = 5;
    pub const TIMESTAMP: u32 = 6;
}

/// Appends the `ScanResponse` of `scan` to `out`. A stored key that does not decode fails
/// the whole answer, with `out` left as it was.
pub fn scan_response(scan: &RawScan, out: &mut BytesMut) -> Result<(), TypesError> {
    let start = out.len();
    let written = write_rows(scan, out);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

fn write_rows(scan: &RawScan, out: &mut BytesMut) -> Result<(), TypesError> {
    let schema = &scan.def.schema;
    // One row's `Tuple`, written first to learn its length, and the previous row's; a string
    // element's content.
    let (mut tuple, mut previous_tuple) = (Vec::with_capacity(128), Vec::with_capacity(128));
    let mut content = Vec::new();
    // Rows of a range mostly share their leading elements (a prefix scan's prefix): those a
    // row shares with the previous one are copied from its `Tuple`, not decoded again. Per
    // element of the previous row, where it ends in its stored key and in its `Tuple`.
    let mut ends: Vec<(usize, usize)> = Vec::with_capacity(schema.key.len());
    let mut previous: &[u8] = &[];
    for (key, value) in scan.rows.iter() {
        let same = key.iter().zip(previous).take_while(|(a, b)| a == b).count();
        let shared = ends.iter().take_while(|(end, _)| *end <= same).count();
        ends.truncate(shared);
        let (at, tuple_at) = ends.last().copied().unwrap_or((0, 0));
        tuple.clear();
        tuple.extend_from_slice(&previous_tuple[..tuple_at]);
        visit_tuple_from(
            &schema.key,
            key,
            (shared, at),
            &mut content,
            |_, element, end| {
                write_element(element, &mut tuple);
                ends.push((end, tuple.len()));
            },
        )?;
        let value_field = value_field(schema.value_format, value);
        let value_len = 1 + delimited_len(value.len());
        let row_len = 1 + delimited_len(tuple.len()) + 1 + delimited_len(value_len);
        out.reserve(1 + delimited_len(row_len));
        encode_key(field::FIRST, WireType::LengthDelimited, out);
        encode_varint(row_len as u64, out);
        put_delimited(field::FIRST, &tuple, out);
        encode_key(field::SECOND, WireType::LengthDelimited, out);
        encode_varint(value_len as u64, out);
        put_delimited(value_field, value, out);
        std::mem::swap(&mut tuple, &mut previous_tuple);
        previous = key;
    }
    if scan.more {
        encode_key(field::SECOND, WireType::Varint, out);
        encode_varint(1, out);
    }
    Ok(())
}

/// Appends the `MultiGetResponse` of `values`: one `GetResponse` per key, in order.
pub fn multi_get_response(values: &MultiGetValues, out: &mut BytesMut) {
    for i in 0..values.len() {
        let Some(value) = values.get(i) else {
            // `GetResponse { found: false, value: None }`: the empty message.
            put_delimited(field::FIRST, &[], out);
            continue;
        };
        let value_field = value_field(values.format(), value);
        let value_len = 1 + delimited_len(value.len());
        // `found: true` (two bytes), then `value`.
        let get_len = 2 + 1 + delimited_len(value_len);
        out.reserve(1 + delimited_len(get_len));
        encode_key(field::FIRST, WireType::LengthDelimited, out);
        encode_varint(get_len as u64, out);
        encode_key(field::FIRST, WireType::Varint, out);
        encode_varint(1, out);
        encode_key(field::SECOND, WireType::LengthDelimited, out);
        encode_varint(value_len as u64, out);
        put_delimited(value_field, value, out);
    }
}

/// The `Value` field a stored value goes in: a JSON keyspace's value as `json` when it is
/// UTF-8 (it always is: writes are checked), as `bytes` otherwise, like
/// `convert::value_to_proto`.
fn value_field(format: ValueFormat, value: &[u8]) -> u32 {
    match format {
        ValueFormat::Json if std::str::from_utf8(value).is_ok() => field::VALUE_JSON,
        _ => field::VALUE_BYTES,
    }
}

/// Appends one `Tuple.elements` entry: an `Element` message of one field.
fn write_element(element: ElementRef<'_>, out: &mut Vec<u8>) {
    encode_key(field::FIRST, WireType::LengthDelimited, out);
    let varint = |number: u32, v: u64, out: &mut Vec<u8>| {
        encode_varint((1 + encoded_len_varint(v)) as u64, out);
        encode_key(number, WireType::Varint, out);
        encode_varint(v, out);
    };
    let delimited = |number: u32, bytes: &[u8], out: &mut Vec<u8>| {
        encode_varint((1 + delimited_len(bytes.len())) as u64, out);
        put_delimited(number, bytes, out);
    };
    match element {
        ElementRef::Bytes(b) => delimited(field::BYTES, b, out),
        ElementRef::String(s) => delimited(field::STRING, s.as_bytes(), out),
        ElementRef::I64(n) => varint(field::I64, n as u64, out),
        ElementRef::Timestamp(n) => varint(field::TIMESTAMP, n as u64, out),
        ElementRef::Bool(b) => varint(field::BOOL, u64::from(b), out),
        ElementRef::F64(x) => {
            encode_varint(9, out);
            encode_key(field::F64, WireType::SixtyFourBit, out);
            out.put_u64_le(x.to_bits());
        }
    }
}

/// Bytes of a length-delimited field's length and content (its key not counted; every field
/// here has a number below 16, so a one-byte key).
fn delimited_len(len: usize) -> usize {
    encoded_len_varint(len as u64) + len
}

/// Appends a length-delimited field: key, length, bytes.
fn put_delimited(number: u32, bytes: &[u8], out: &mut impl BufMut) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.put_slice(bytes);
}

/// The message `scan_response` writes, built as a message (the gRPC answer; tests compare
/// the two byte for byte).
pub fn scan_message(scan: RawScan) -> Result<v1::ScanResponse, notadb_node::NodeError> {
    Ok(scan_result_message(scan.decode()?))
}

/// A scan's decoded rows as a message.
pub fn scan_result_message(result: ScanResult) -> v1::ScanResponse {
    let format = result.format;
    v1::ScanResponse {
        rows: result
            .rows
            .into_iter()
            .map(|row| v1::Row {
                key: Some(notadb_proto::tuple_into_proto(row.key)),
                value: Some(crate::convert::value_to_proto(format, row.value)),
            })
            .collect(),
        more: result.more,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notadb_node::{KeyspaceDef, RawRows};
    use notadb_types::{Element, ElementType, KeyElement, KeyspaceId, KeyspaceSchema, Order};
    use prost::Message;
    use std::sync::Arc;

    fn def(types: &[ElementType], order: Order, format: ValueFormat) -> Arc<KeyspaceDef> {
        let key = types
            .iter()
            .enumerate()
            .map(|(i, ty)| KeyElement::new(format!("e{i}"), *ty, order))
            .collect();
        Arc::new(KeyspaceDef {
            id: KeyspaceId(7),
            schema: KeyspaceSchema {
                name: "t".into(),
                key,
                partition_by: 1,
                value_format: format,
                ttl: None,
            },
        })
    }

    /// Values of every type, the hard cases among them: zero bytes (escaped in keys), long
    /// contents (two-byte lengths), negative numbers (ten-byte varints), infinities.
    fn values(ty: ElementType) -> Vec<Element> {
        match ty {
            ElementType::Bytes => vec![
                Element::Bytes(vec![]),
                Element::Bytes(vec![0, 0xFF, 0]),
                Element::Bytes(vec![7; 300]),
            ],
            ElementType::String => vec![
                Element::String(String::new()),
                Element::String("a\0b".into()),
                Element::String("é".repeat(100)),
            ],
            ElementType::I64 => vec![Element::I64(0), Element::I64(-1), Element::I64(i64::MAX)],
            ElementType::F64 => vec![
                Element::F64(0.0),
                Element::F64(-2.5),
                Element::F64(f64::INFINITY),
            ],
            ElementType::Bool => vec![Element::Bool(false), Element::Bool(true)],
            ElementType::Timestamp => vec![Element::Timestamp(0), Element::Timestamp(i64::MIN)],
        }
    }

    fn scan(def: &Arc<KeyspaceDef>, rows: &[(Vec<Element>, Vec<u8>)], more: bool) -> RawScan {
        let mut raw = RawRows::default();
        for (key, value) in rows {
            raw.push(&def.schema.encode_key(key).expect("valid key").bytes, value);
        }
        RawScan {
            def: def.clone(),
            rows: raw,
            more,
        }
    }

    fn encoded(scan: &RawScan) -> Vec<u8> {
        let mut out = BytesMut::from(&b"head"[..]);
        scan_response(scan, &mut out).expect("encodes");
        assert_eq!(&out[..4], b"head", "appended");
        out[4..].to_vec()
    }

    #[test]
    fn scan_answers_are_what_prost_writes() {
        let values_of: [&[u8]; 4] = [b"", br#"{"a":1}"#, b"\xC3 not utf-8", &[b'x'; 200]];
        for format in [ValueFormat::Json, ValueFormat::Bytes] {
            for order in [Order::Asc, Order::Desc] {
                for ty in ElementType::ALL {
                    // Each value of the type, behind a string and before an i64, so elements
                    // follow one another in the key.
                    let def = def(&[ElementType::String, ty, ElementType::I64], order, format);
                    let rows: Vec<_> = values(ty)
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let key = vec![Element::String("p\0q".into()), v, Element::I64(-5)];
                            (key, values_of[i % values_of.len()].to_vec())
                        })
                        .collect();
                    for more in [false, true] {
                        let raw = scan(&def, &rows, more);
                        let want = scan_message(raw.clone()).expect("decodes").encode_to_vec();
                        assert_eq!(encoded(&raw), want, "{format:?} {order} {ty} more={more}");
                    }
                }
            }
        }
        let empty = scan(
            &def(&[ElementType::I64], Order::Asc, ValueFormat::Json),
            &[],
            false,
        );
        assert!(
            encoded(&empty).is_empty(),
            "no rows, no more: the empty message"
        );
    }

    #[test]
    fn rows_sharing_leading_elements_answer_as_prost_writes() {
        // Neighbours sharing none, one or two elements, and bytes that end inside an element
        // ("a" and "ab" share the byte `a`, not the element).
        for order in [Order::Asc, Order::Desc] {
            let def = def(
                &[ElementType::String, ElementType::String, ElementType::I64],
                order,
                ValueFormat::Bytes,
            );
            let key = |a: &str, b: &str, n: i64| {
                vec![
                    Element::String(a.into()),
                    Element::String(b.into()),
                    Element::I64(n),
                ]
            };
            let rows: Vec<_> = [
                key("a", "x", 1),
                key("a", "x", 2),
                key("a", "xy", 2),
                key("ab", "xy", 2),
                key("ab", "xy", 2),
                key("b", "", 0),
                key("a", "x", 1),
            ]
            .into_iter()
            .map(|k| (k, b"v".to_vec()))
            .collect();
            let raw = scan(&def, &rows, false);
            let want = scan_message(raw.clone()).expect("decodes").encode_to_vec();
            assert_eq!(encoded(&raw), want, "{order}");
        }
    }

    #[test]
    fn a_key_that_does_not_decode_fails_the_answer_and_writes_nothing() {
        let def = def(&[ElementType::Bool], Order::Asc, ValueFormat::Json);
        let mut rows = RawRows::default();
        rows.push(&[1], b"{}");
        rows.push(&[2], b"{}");
        let raw = RawScan {
            def,
            rows,
            more: false,
        };
        let mut out = BytesMut::from(&b"head"[..]);
        let err = scan_response(&raw, &mut out).expect_err("0x02 is no bool");
        assert!(err.to_string().contains("found 0x02"), "{err}");
        assert_eq!(&out[..], b"head");
    }
}
