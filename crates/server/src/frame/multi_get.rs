//! `MultiGet` over frames without building messages: the request's keys go from its protobuf
//! bytes straight into one buffer of encoded keys, and the answer from the read's one buffer
//! of values straight into the frame (`encode::multi_get_response`). A request of 100 keys
//! otherwise allocates for every key about six times (the decoded `Tuple` and its strings, the
//! typed tuple, the encoded key, the value, the answer's messages).
//!
//! Only the common case takes this path: every key of the request valid and served here.
//! Anything else (a field it does not expect, a key that does not fit the schema, an unknown
//! keyspace, a key of another shard group) declines, and the request runs through the gRPC
//! method like every other, which gives the same answer and the same errors as before.

use notadb_node::{EncodedKeys, KeyspaceDef, Node};
use notadb_proto::v1;
use notadb_types::ElementRef;
use prost::encoding::{decode_key, decode_varint, WireType};
use prost::Message;
use std::sync::Arc;

/// A `MultiGetRequest` read for the direct path.
pub struct Parsed {
    pub def: Arc<KeyspaceDef>,
    pub keys: EncodedKeys,
    pub tokens: Vec<v1::Token>,
}

/// Reads `body` (a `MultiGetRequest`), or `None` to decline (see the module documentation).
pub fn parse(node: &Node, body: &[u8]) -> Option<Parsed> {
    let mut keyspace = "";
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut tokens = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (field, bytes) = delimited(&mut rest)?;
        match field {
            1 => keyspace = std::str::from_utf8(bytes).ok()?,
            2 => keys.push(bytes),
            3 => tokens.push(v1::Token::decode(bytes).ok()?),
            _ => return None,
        }
    }
    let def = node.keyspace(keyspace).ok()?;
    let partitioner = node.partitioner();
    let mut encoded = EncodedKeys::with_capacity(keys.len());
    let mut elements = Vec::with_capacity(def.schema.key.len());
    for tuple in keys {
        elements.clear();
        let mut rest = tuple;
        while !rest.is_empty() {
            let (1, element) = delimited(&mut rest)? else {
                return None;
            };
            elements.push(element_ref(element)?);
        }
        let values = elements.iter().copied();
        encoded.push(&def.schema, &partitioner, values).ok()?;
    }
    Some(Parsed {
        def,
        keys: encoded,
        tokens,
    })
}

/// The next field of a message, which must be length-delimited: its number and bytes.
fn delimited<'a>(rest: &mut &'a [u8]) -> Option<(u32, &'a [u8])> {
    let (field, wire) = decode_key(rest).ok()?;
    if wire != WireType::LengthDelimited {
        return None;
    }
    let len = usize::try_from(decode_varint(rest).ok()?).ok()?;
    let bytes = rest.get(..len)?;
    *rest = &rest[len..];
    Some((field, bytes))
}

/// An `Element` message of exactly one field, read as prost reads it.
fn element_ref(mut body: &[u8]) -> Option<ElementRef<'_>> {
    let (field, wire) = decode_key(&mut body).ok()?;
    let element = match (field, wire) {
        (1 | 2, WireType::LengthDelimited) => {
            let len = usize::try_from(decode_varint(&mut body).ok()?).ok()?;
            let bytes = body.get(..len)?;
            body = &body[len..];
            if field == 1 {
                ElementRef::Bytes(bytes)
            } else {
                ElementRef::String(std::str::from_utf8(bytes).ok()?)
            }
        }
        (3 | 5 | 6, WireType::Varint) => {
            let v = decode_varint(&mut body).ok()?;
            match field {
                3 => ElementRef::I64(v as i64),
                5 => ElementRef::Bool(v != 0),
                _ => ElementRef::Timestamp(v as i64),
            }
        }
        (4, WireType::SixtyFourBit) => {
            let bits = body.first_chunk::<8>()?;
            let x = f64::from_le_bytes(*bits);
            body = &body[8..];
            ElementRef::F64(x)
        }
        _ => return None,
    };
    // A second field (prost would keep the last) declines.
    body.is_empty().then_some(element)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notadb_proto::v1::element::Kind;

    fn bytes(kind: Option<Kind>) -> Vec<u8> {
        v1::Element { kind }.encode_to_vec()
    }

    #[test]
    fn elements_read_as_prost_reads_them() {
        let kinds = [
            Kind::Bytes(vec![0, 1]),
            Kind::String("é".into()),
            Kind::I64(-3),
            Kind::F64(-0.5),
            Kind::Bool(true),
            Kind::TimestampMicros(i64::MIN),
        ];
        for kind in kinds {
            let encoded = bytes(Some(kind.clone()));
            let read = element_ref(&encoded).expect("one field").to_element();
            let element = notadb_proto::element_from_proto(&v1::Element { kind: Some(kind) }, "e")
                .expect("valid");
            assert_eq!(read, element);
        }
    }

    #[test]
    fn anything_unusual_declines() {
        // No field, two fields, a field of the wrong wire type, a string not UTF-8, a
        // truncated length: each declines (the gRPC method then answers).
        let mut two = bytes(Some(Kind::I64(1)));
        two.extend(bytes(Some(Kind::Bool(true))));
        let cases: [&[u8]; 5] = [
            &[],
            &two,
            &[0x18 | 2, 1, 0],
            &[0x12, 1, 0xFF],
            &[0x12, 5, b'a'],
        ];
        for case in cases {
            assert_eq!(element_ref(case), None, "{case:?}");
        }
        let mut rest: &[u8] = &[0x10, 1];
        assert_eq!(
            delimited(&mut rest),
            None,
            "a varint where a message is expected"
        );
    }
}
