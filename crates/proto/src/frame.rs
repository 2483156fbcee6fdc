//! The frame protocol: notadb's lean second API for the hot calls, beside gRPC.
//!
//! gRPC over HTTP/2 costs a server more CPU per request than the request itself (HPACK,
//! stream bookkeeping, a task per stream). The frame protocol carries the same protobuf
//! messages as the gRPC methods it mirrors, in length-prefixed frames over one TCP
//! connection, pipelined and matched by request id: a server reads a batch of requests with
//! one `read`, answers those it can at once on the same thread, and writes their responses
//! with one `write`. `docs/performance.md` describes it for implementers in other languages.
//!
//! A connection opens with the client sending `PREAMBLE`; the server answers with it too.
//! Then, every integer little-endian:
//!
//! ```text
//! request:  len u32 | id u32 | method u16 | timeout_ms u32 | protobuf request message
//! response: len u32 | id u32 | code u16   | protobuf response message (code 0), or UTF-8 error text
//! ```
//!
//! `len` counts the bytes after itself. `code` is a gRPC status code (0 = OK). `timeout_ms`
//! 0 means no deadline. Responses may come in any order. A frame the server cannot read
//! (too long, unknown framing) is answered with an error for id 0 and the connection closes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What each side sends first: `NOTADB`, a zero byte and the protocol version.
pub const PREAMBLE: &[u8; 8] = b"NOTADB\x00\x01";

/// Bytes before the message of a request frame.
pub const REQUEST_HEADER: usize = 14;
/// Bytes before the message of a response frame.
pub const RESPONSE_HEADER: usize = 10;
/// The `len` field.
const LEN: usize = 4;

/// The calls the frame protocol carries, each with its gRPC method's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Method {
    /// `Data.Put`
    Put = 1,
    /// `Data.Delete`
    Delete = 2,
    /// `Data.DeleteRange`
    DeleteRange = 3,
    /// `Data.Write`
    Write = 4,
    /// `Data.Get`
    Get = 5,
    /// `Data.MultiGet`
    MultiGet = 6,
    /// `Data.Scan`
    Scan = 7,
    /// `Data.Aggregate`
    Aggregate = 8,
    /// `Data.Query`
    Query = 9,
    /// `Cache.CacheGet`
    CacheGet = 20,
    /// `Cache.CacheSet`
    CacheSet = 21,
    /// `Cache.CacheDel`
    CacheDel = 22,
}

impl Method {
    /// Every method, for documentation and tests.
    pub const ALL: [Method; 12] = [
        Method::Put,
        Method::Delete,
        Method::DeleteRange,
        Method::Write,
        Method::Get,
        Method::MultiGet,
        Method::Scan,
        Method::Aggregate,
        Method::Query,
        Method::CacheGet,
        Method::CacheSet,
        Method::CacheDel,
    ];

    /// The method of a wire number, `None` for one this version does not know.
    pub fn from_u16(n: u16) -> Option<Method> {
        Method::ALL.into_iter().find(|m| *m as u16 == n)
    }

    /// The gRPC method it mirrors, as in metrics and errors.
    pub fn name(self) -> &'static str {
        match self {
            Method::Put => "Put",
            Method::Delete => "Delete",
            Method::DeleteRange => "DeleteRange",
            Method::Write => "Write",
            Method::Get => "Get",
            Method::MultiGet => "MultiGet",
            Method::Scan => "Scan",
            Method::Aggregate => "Aggregate",
            Method::Query => "Query",
            Method::CacheGet => "CacheGet",
            Method::CacheSet => "CacheSet",
            Method::CacheDel => "CacheDel",
        }
    }
}

/// The header of a request frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub id: u32,
    /// The wire number; `Method::from_u16` names it.
    pub method: u16,
    /// Milliseconds the caller waits; 0: no deadline.
    pub timeout_ms: u32,
}

/// The header of a response frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub id: u32,
    /// gRPC status code; 0 is OK.
    pub code: u16,
}

/// A frame that cannot be read: the connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {len} bytes is over the limit of {limit} bytes")]
    TooLong { len: usize, limit: usize },
    #[error("a frame of {len} bytes is shorter than its {header}-byte header")]
    TooShort { len: usize, header: usize },
}

/// Appends a request frame carrying `message`.
pub fn encode_request(head: RequestHead, message: &impl prost::Message, out: &mut BytesMut) {
    let body = message.encoded_len();
    out.reserve(REQUEST_HEADER + body);
    out.put_u32_le((REQUEST_HEADER - LEN + body) as u32);
    out.put_u32_le(head.id);
    out.put_u16_le(head.method);
    out.put_u32_le(head.timeout_ms);
    message
        .encode(out)
        .expect("the buffer was reserved for the message");
}

/// Appends a successful response frame carrying `message`.
pub fn encode_response(id: u32, message: &impl prost::Message, out: &mut BytesMut) {
    let body = message.encoded_len();
    out.reserve(RESPONSE_HEADER + body);
    out.put_u32_le((RESPONSE_HEADER - LEN + body) as u32);
    out.put_u32_le(id);
    out.put_u16_le(0);
    message
        .encode(out)
        .expect("the buffer was reserved for the message");
}

/// Appends a response frame whose message `write` appends itself (as protobuf). When `write`
/// fails, `out` is left as it was and its error returned.
pub fn encode_response_with<E>(
    id: u32,
    out: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<(), E> {
    let start = out.len();
    out.reserve(RESPONSE_HEADER);
    out.put_u32_le(0);
    out.put_u32_le(id);
    out.put_u16_le(0);
    if let Err(e) = write(out) {
        out.truncate(start);
        return Err(e);
    }
    let len = (out.len() - start - LEN) as u32;
    out[start..start + LEN].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Appends an error response frame: a non-zero gRPC code and its message.
pub fn encode_error(id: u32, code: u16, message: &str, out: &mut BytesMut) {
    debug_assert_ne!(code, 0, "an error frame has a non-zero code");
    out.reserve(RESPONSE_HEADER + message.len());
    out.put_u32_le((RESPONSE_HEADER - LEN + message.len()) as u32);
    out.put_u32_le(id);
    out.put_u16_le(code);
    out.put_slice(message.as_bytes());
}

/// The length of the first frame in `buf` once all of it has arrived.
fn whole_frame(buf: &BytesMut, header: usize, limit: usize) -> Result<Option<usize>, FrameError> {
    let Some(len) = buf.get(..LEN) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
    if len > limit {
        return Err(FrameError::TooLong { len, limit });
    }
    if len < header - LEN {
        return Err(FrameError::TooShort { len, header });
    }
    Ok((buf.len() >= LEN + len).then_some(LEN + len))
}

/// Takes the first request frame off `buf` when all of it has arrived. `limit` bounds the
/// frame's length (a longer one is an error before it is read).
pub fn decode_request(
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<(RequestHead, Bytes)>, FrameError> {
    let Some(total) = whole_frame(buf, REQUEST_HEADER, limit)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(total);
    frame.advance(LEN);
    let head = RequestHead {
        id: frame.get_u32_le(),
        method: frame.get_u16_le(),
        timeout_ms: frame.get_u32_le(),
    };
    Ok(Some((head, frame.freeze())))
}

/// Takes the first response frame off `buf` when all of it has arrived.
pub fn decode_response(
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<(ResponseHead, Bytes)>, FrameError> {
    let Some(total) = whole_frame(buf, RESPONSE_HEADER, limit)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(total);
    frame.advance(LEN);
    let head = ResponseHead {
        id: frame.get_u32_le(),
        code: frame.get_u16_le(),
    };
    Ok(Some((head, frame.freeze())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{GetRequest, GetResponse, Value};
    use prost::Message;

    #[test]
    fn requests_round_trip_and_arrive_whole_or_not_at_all() {
        let message = GetRequest {
            keyspace: "kv".into(),
            key: None,
            tokens: vec![],
        };
        let head = RequestHead {
            id: 7,
            method: Method::Get as u16,
            timeout_ms: 250,
        };
        let mut wire = BytesMut::new();
        encode_request(head, &message, &mut wire);
        encode_request(RequestHead { id: 8, ..head }, &message, &mut wire);
        let first_len = wire.len() / 2;
        // Byte by byte: nothing is taken until a whole frame is there.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some((h, body)) = decode_request(&mut buf, 1 << 20).expect("valid") {
                got.push((h, GetRequest::decode(body).expect("decodes")));
            }
            if got.is_empty() {
                assert!(buf.len() <= first_len);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (head, message.clone()));
        assert_eq!(got[1].0.id, 8);
        assert!(buf.is_empty());
    }

    #[test]
    fn responses_carry_a_message_or_an_error() {
        let mut wire = BytesMut::new();
        let ok = GetResponse {
            found: true,
            value: Some(Value {
                kind: Some(crate::v1::value::Kind::Bytes(b"v".to_vec())),
            }),
        };
        encode_response(3, &ok, &mut wire);
        encode_error(4, 5, "not found: keyspace `x`", &mut wire);
        let (h, body) = decode_response(&mut wire, 1 << 20)
            .expect("ok")
            .expect("whole");
        assert_eq!(h, ResponseHead { id: 3, code: 0 });
        assert_eq!(GetResponse::decode(body).expect("decodes"), ok);
        let (h, body) = decode_response(&mut wire, 1 << 20)
            .expect("ok")
            .expect("whole");
        assert_eq!(h, ResponseHead { id: 4, code: 5 });
        assert_eq!(&body[..], b"not found: keyspace `x`");
        assert_eq!(decode_response(&mut wire, 1 << 20), Ok(None));
        // A message written by the caller: the same frame; a failed one: nothing.
        let mut by_hand = BytesMut::new();
        encode_response_with(3, &mut by_hand, |out| {
            ok.encode(out).map_err(|e| e.to_string())
        })
        .expect("written");
        encode_response(3, &ok, &mut wire);
        assert_eq!(by_hand, wire);
        let failed = encode_response_with(9, &mut by_hand, |out| {
            out.put_slice(b"partial");
            Err("no")
        });
        assert_eq!(failed, Err("no"));
        assert_eq!(by_hand, wire, "unchanged");
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut buf = BytesMut::new();
        buf.put_u32_le(1 << 30);
        assert_eq!(
            decode_request(&mut buf, 1 << 20),
            Err(FrameError::TooLong {
                len: 1 << 30,
                limit: 1 << 20
            })
        );
        let mut buf = BytesMut::new();
        buf.put_u32_le(3);
        buf.put_slice(&[0, 0, 0]);
        assert!(matches!(
            decode_request(&mut buf, 1 << 20),
            Err(FrameError::TooShort { len: 3, .. })
        ));
    }

    #[test]
    fn method_numbers_are_stable() {
        for m in Method::ALL {
            assert_eq!(Method::from_u16(m as u16), Some(m));
        }
        assert_eq!(Method::Get as u16, 5);
        assert_eq!(Method::CacheGet as u16, 20);
        assert_eq!(Method::from_u16(0), None);
        assert_eq!(Method::from_u16(99), None);
    }
}
