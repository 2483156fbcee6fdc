//! The order-preserving, prefix-safe key encoding.
//!
//! A key is a tuple of [`Element`]s described by a schema (`&[KeyElement]`). Its encoding is the
//! concatenation of each element's encoding, with no type tags and no lengths: the schema gives
//! every type. Two properties hold for every schema:
//!
//! - **Order.** Comparing two encodings bytewise (`memcmp`, as RocksDB does) gives the same result
//!   as [`compare_tuples`](crate::compare_tuples) on the tuples, including tuples of different
//!   lengths (a proper prefix sorts first).
//! - **Prefix.** The encoding of a tuple's first `k` elements is a byte prefix of the encoding of
//!   the tuple, so a tuple prefix is scanned as the byte range
//!   `[encode(prefix), prefix_successor(encode(prefix)))`.
//!
//! Each element is encoded in ascending form:
//!
//! | type | ascending encoding |
//! | --- | --- |
//! | i64, timestamp | 8 bytes big-endian, sign bit flipped |
//! | f64 | 8 bytes big-endian of the bits: if the sign bit is set all inverted, else sign flipped |
//! | bool | one byte, `0x00` false, `0x01` true |
//! | string (UTF-8), bytes | each `0x00` written as `0x00 0xFF`, then the terminator `0x00 0x01` |
//!
//! A [`Order::Desc`] element is its ascending encoding with every byte inverted (`!b`).
//!
//! The two-byte terminator sorts below every escaped or literal byte that may follow a common
//! prefix, so a shorter string sorts before a longer one whatever follows it, in both orders
//! (a one-byte terminator would break descending order). It also makes every string encoding
//! self-delimiting, which is what makes concatenation preserve tuple order.
//!
//! **Floats.** -0.0 and 0.0 are the same key: -0.0 is encoded as 0.0, and decoding rejects the
//! bytes -0.0 would have had. NaN has no place in a total key order: [`encode_tuple`] rejects it
//! with [`TypesError::NaN`] naming the field, and decoding rejects every NaN encoding. -inf and
//! +inf are valid keys, below and above every finite value.
//!
//! **Canonical form.** Decoding accepts exactly the bytes encoding produces: besides NaN and -0.0
//! it rejects bool bytes other than 0/1, escapes other than `0x00 0xFF`/`0x00 0x01`, invalid UTF-8
//! in strings, truncated elements and bytes after the last schema element. So
//! `decode(encode(t)) == t`, and `encode(decode(b)) == b` whenever decoding `b` succeeds.

use crate::element::{normalise_zero, Element, ElementType, KeyElement, Order};
use crate::error::TypesError;

/// Sign bit of a 64-bit word.
const SIGN: u64 = 1 << 63;
/// An escaped `0x00` inside a string or bytes element: `0x00` then this byte.
const ESCAPED_ZERO: u8 = 0xFF;
/// The second byte of the `0x00 0x01` terminator of a string or bytes element.
const TERMINATOR: u8 = 0x01;

/// Appends `value` encoded in `order` to `out`.
///
/// The caller has checked `value` against the schema ([`encode_tuple`] does): in particular an
/// f64 value is not NaN. Passing NaN is a logic error: debug builds panic, release builds write
/// bytes that decoding rejects.
pub fn encode_element(out: &mut Vec<u8>, value: &Element, order: Order) {
    encode_element_ref(out, value.as_ref(), order)
}

/// [`encode_element`] of a borrowed element.
pub fn encode_element_ref(out: &mut Vec<u8>, value: ElementRef<'_>, order: Order) {
    let start = out.len();
    match value {
        ElementRef::Bytes(b) => encode_escaped(out, b),
        ElementRef::String(s) => encode_escaped(out, s.as_bytes()),
        ElementRef::I64(n) | ElementRef::Timestamp(n) => {
            out.extend_from_slice(&(n as u64 ^ SIGN).to_be_bytes())
        }
        ElementRef::F64(x) => {
            debug_assert!(!x.is_nan(), "NaN reached encode_element");
            let bits = normalise_zero(x).to_bits();
            let ordered = if bits & SIGN != 0 { !bits } else { bits ^ SIGN };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        ElementRef::Bool(b) => out.push(u8::from(b)),
    }
    if order == Order::Desc {
        out[start..].iter_mut().for_each(|b| *b = !*b);
    }
}

/// One key element read from its encoding by [`decode_element_ref`]: numbers and bools by
/// value, a string's or bytes element's content borrowed from the caller's scratch buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ElementRef<'a> {
    /// Arbitrary bytes.
    Bytes(&'a [u8]),
    /// A UTF-8 string.
    String(&'a str),
    /// A signed 64-bit integer.
    I64(i64),
    /// A float (never NaN in a key).
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// Microseconds since the Unix epoch (UTC).
    Timestamp(i64),
}

impl ElementRef<'_> {
    /// The element's type.
    pub fn element_type(&self) -> ElementType {
        match self {
            ElementRef::Bytes(_) => ElementType::Bytes,
            ElementRef::String(_) => ElementType::String,
            ElementRef::I64(_) => ElementType::I64,
            ElementRef::F64(_) => ElementType::F64,
            ElementRef::Bool(_) => ElementType::Bool,
            ElementRef::Timestamp(_) => ElementType::Timestamp,
        }
    }

    /// The element, owned.
    pub fn to_element(self) -> Element {
        match self {
            ElementRef::Bytes(b) => Element::Bytes(b.to_vec()),
            ElementRef::String(s) => Element::String(s.to_owned()),
            ElementRef::I64(n) => Element::I64(n),
            ElementRef::F64(x) => Element::F64(x),
            ElementRef::Bool(b) => Element::Bool(b),
            ElementRef::Timestamp(n) => Element::Timestamp(n),
        }
    }
}

/// Decodes one element of type `ty` in `order` from the start of `input`, returning it with the
/// number of bytes it took. Rejects truncated and non-canonical input with
/// [`TypesError::Decode`]; never panics.
pub fn decode_element(
    input: &[u8],
    ty: ElementType,
    order: Order,
) -> Result<(Element, usize), TypesError> {
    let mut content = Vec::new();
    let (value, used) = decode_value(input, ty, order, &mut content)?;
    let element = match value {
        Decoded::Content if ty == ElementType::Bytes => Element::Bytes(content),
        Decoded::Content => Element::String(String::from_utf8(content).map_err(|e| {
            decode_err(format!(
                "expected utf-8 in a string, found {}",
                e.utf8_error()
            ))
        })?),
        Decoded::Scalar(e) => e.to_element(),
    };
    Ok((element, used))
}

/// [`decode_element`] without allocating: a string's or bytes element's content is written
/// into `scratch` (cleared first) and borrowed from it. The same checks, the same errors.
pub fn decode_element_ref<'s>(
    input: &[u8],
    ty: ElementType,
    order: Order,
    scratch: &'s mut Vec<u8>,
) -> Result<(ElementRef<'s>, usize), TypesError> {
    scratch.clear();
    let (value, used) = decode_value(input, ty, order, scratch)?;
    let element = match value {
        Decoded::Content if ty == ElementType::Bytes => ElementRef::Bytes(scratch),
        Decoded::Content => ElementRef::String(
            std::str::from_utf8(scratch)
                .map_err(|e| decode_err(format!("expected utf-8 in a string, found {e}")))?,
        ),
        Decoded::Scalar(e) => e,
    };
    Ok((element, used))
}

/// What [`decode_value`] read.
enum Decoded {
    /// A string or bytes element, its content appended to the buffer given.
    Content,
    /// Any other element (never `Bytes` or `String`).
    Scalar(ElementRef<'static>),
}

/// The one decoder behind [`decode_element`] and [`decode_element_ref`].
fn decode_value(
    input: &[u8],
    ty: ElementType,
    order: Order,
    content: &mut Vec<u8>,
) -> Result<(Decoded, usize), TypesError> {
    let mask = mask(order);
    match ty {
        ElementType::Bytes | ElementType::String => {
            let mut append = |run: &[u8]| match order {
                Order::Asc => content.extend_from_slice(run),
                Order::Desc => content.extend(run.iter().map(|b| !b)),
            };
            // Most elements hold no zero byte: the first 0x00 is the terminator's, and the
            // content is copied in one piece.
            let first = input.iter().position(|&b| b == mask);
            let used = match first {
                Some(zero) if input.get(zero + 1).map(|b| b ^ mask) == Some(TERMINATOR) => {
                    append(&input[..zero]);
                    zero + 2
                }
                _ => walk_escaped(input, mask, append)?,
            };
            Ok((Decoded::Content, used))
        }
        ElementType::I64 | ElementType::Timestamp => {
            let n = (read_u64(input, ty, mask)? ^ SIGN) as i64;
            let value = if ty == ElementType::I64 {
                ElementRef::I64(n)
            } else {
                ElementRef::Timestamp(n)
            };
            Ok((Decoded::Scalar(value), 8))
        }
        ElementType::F64 => {
            let ordered = read_u64(input, ty, mask)?;
            let bits = if ordered & SIGN != 0 {
                ordered ^ SIGN
            } else {
                !ordered
            };
            let x = f64::from_bits(bits);
            if x.is_nan() {
                return Err(decode_err("expected a number in an f64, found nan".into()));
            }
            if bits == SIGN {
                return Err(decode_err(
                    "expected 0.0 in canonical form, found -0.0".into(),
                ));
            }
            Ok((Decoded::Scalar(ElementRef::F64(x)), 8))
        }
        ElementType::Bool => match input.first().map(|b| b ^ mask) {
            Some(0) => Ok((Decoded::Scalar(ElementRef::Bool(false)), 1)),
            Some(1) => Ok((Decoded::Scalar(ElementRef::Bool(true)), 1)),
            Some(other) => Err(decode_err(format!(
                "expected 0x00 or 0x01 for a bool, found 0x{other:02x}"
            ))),
            None => Err(decode_err(
                "expected 1 byte for a bool, found end of input".into(),
            )),
        },
    }
}

/// Decodes the elements of a full or prefix key (as [`decode_tuple`] does) one at a time
/// without allocating, passing each to `visit` with its schema element; string and bytes
/// contents go through `scratch`.
pub fn visit_tuple(
    schema: &[KeyElement],
    input: &[u8],
    scratch: &mut Vec<u8>,
    mut visit: impl FnMut(&KeyElement, ElementRef<'_>),
) -> Result<(), TypesError> {
    visit_tuple_from(schema, input, (0, 0), scratch, |el, value, _| {
        visit(el, value)
    })
}

/// [`visit_tuple`] of the elements after the first `skip`, which end at byte `at` of `input`
/// (as an earlier visit of these bytes, or of a key sharing them, reported): `visit` gets
/// each element and the byte where it ends.
pub fn visit_tuple_from(
    schema: &[KeyElement],
    input: &[u8],
    (skip, at): (usize, usize),
    scratch: &mut Vec<u8>,
    mut visit: impl FnMut(&KeyElement, ElementRef<'_>, usize),
) -> Result<(), TypesError> {
    let mut pos = at;
    for el in schema.iter().skip(skip) {
        let rest = input.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            return Ok(());
        }
        let (value, used) =
            decode_element_ref(rest, el.ty, el.order, scratch).map_err(|e| in_field(e, el))?;
        pos += used;
        visit(el, value, pos);
    }
    match input.get(pos..).unwrap_or_default() {
        [] => Ok(()),
        rest => Err(trailing(schema.len(), rest.len())),
    }
}

/// Appends the encoding of `values`, the first `values.len()` elements of the key described by
/// `schema`. Checks first, so on error `out` is unchanged: more values than schema elements is
/// [`TypesError::ElementCount`], a value of the wrong type [`TypesError::ElementType`], an f64 NaN
/// [`TypesError::NaN`].
pub fn encode_tuple(
    out: &mut Vec<u8>,
    schema: &[KeyElement],
    values: &[Element],
) -> Result<(), TypesError> {
    encode_tuple_refs(out, schema, values.iter().map(Element::as_ref))
}

/// [`encode_tuple`] of borrowed elements.
pub fn encode_tuple_refs<'v>(
    out: &mut Vec<u8>,
    schema: &[KeyElement],
    values: impl ExactSizeIterator<Item = ElementRef<'v>> + Clone,
) -> Result<(), TypesError> {
    if values.len() > schema.len() {
        return Err(TypesError::ElementCount {
            expected: format!("at most {}", schema.len()),
            found: values.len(),
        });
    }
    for (el, v) in schema.iter().zip(values.clone()) {
        let found = v.element_type();
        if found != el.ty {
            return Err(TypesError::ElementType {
                field: el.name.clone(),
                expected: el.ty,
                found,
            });
        }
        if matches!(v, ElementRef::F64(x) if x.is_nan()) {
            return Err(TypesError::NaN {
                field: el.name.clone(),
            });
        }
    }
    for (el, v) in schema.iter().zip(values) {
        encode_element_ref(out, v, el.order);
    }
    Ok(())
}

/// Decodes elements of the key described by `schema` until `input` is exhausted: a full key gives
/// every element, an encoded prefix the prefix tuple, empty input the empty tuple. A truncated or
/// non-canonical element, or bytes left after the last schema element, is [`TypesError::Decode`]
/// naming the element.
pub fn decode_tuple(schema: &[KeyElement], input: &[u8]) -> Result<Vec<Element>, TypesError> {
    let mut values = Vec::with_capacity(schema.len());
    let mut rest = input;
    for el in schema {
        if rest.is_empty() {
            return Ok(values);
        }
        let (value, used) = decode_element(rest, el.ty, el.order).map_err(|e| in_field(e, el))?;
        values.push(value);
        rest = rest.get(used..).unwrap_or_default();
    }
    if !rest.is_empty() {
        return Err(trailing(schema.len(), rest.len()));
    }
    Ok(values)
}

/// The error for bytes after a key's last schema element.
fn trailing(elements: usize, extra: usize) -> TypesError {
    decode_err(format!(
        "expected the key to end after its {elements} elements, found {extra} more bytes"
    ))
}

/// The byte length of the first `n` encoded elements of `input`, without allocating.
///
/// Checks the structure only (lengths, escapes, terminators), not the values (UTF-8, bool bytes,
/// canonical floats): use [`decode_tuple`] to validate. `n` greater than `schema.len()` is
/// [`TypesError::ElementCount`]; input holding fewer than `n` elements, or a truncated one, is
/// [`TypesError::Decode`].
pub fn skip_elements(schema: &[KeyElement], input: &[u8], n: usize) -> Result<usize, TypesError> {
    match skip_at_most(schema, input, n)? {
        Skipped::All(len) => Ok(len),
        Skipped::Fewer(found) => Err(decode_err(format!(
            "expected at least {n} encoded elements, found {found}"
        ))),
    }
}

/// The smallest byte string greater than every byte string that starts with `key`: `key` without
/// its trailing `0xFF` bytes, last byte incremented. `None` when there is no such string (`key`
/// empty or all `0xFF`): the range of keys starting with `key` is then unbounded above.
pub fn prefix_successor(key: &[u8]) -> Option<Vec<u8>> {
    let last = key.iter().rposition(|&b| b != 0xFF)?;
    let mut successor = key[..=last].to_vec();
    successor[last] += 1;
    Some(successor)
}

/// What [`skip_at_most`] found.
pub(crate) enum Skipped {
    /// All requested elements, taking this many bytes.
    All(usize),
    /// The input ended cleanly after this many (fewer) elements.
    Fewer(usize),
}

/// Walks the first `n` elements of `input`, telling a clean end of input before `n` elements
/// (a short prefix) apart from malformed bytes.
pub(crate) fn skip_at_most(
    schema: &[KeyElement],
    input: &[u8],
    n: usize,
) -> Result<Skipped, TypesError> {
    let Some(elements) = schema.get(..n) else {
        return Err(TypesError::ElementCount {
            expected: format!("at most {}", schema.len()),
            found: n,
        });
    };
    let mut pos = 0;
    for (i, el) in elements.iter().enumerate() {
        let rest = input.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            return Ok(Skipped::Fewer(i));
        }
        pos += element_len(rest, el).map_err(|e| in_field(e, el))?;
    }
    Ok(Skipped::All(pos))
}

/// The byte length of the element of type `el.ty` at the start of `input`, structure only.
fn element_len(input: &[u8], el: &KeyElement) -> Result<usize, TypesError> {
    match el.ty {
        ElementType::Bytes | ElementType::String => walk_escaped(input, mask(el.order), |_| {}),
        ElementType::I64 | ElementType::Timestamp | ElementType::F64 => {
            read_u64(input, el.ty, 0).map(|_| 8)
        }
        ElementType::Bool if input.is_empty() => Err(decode_err(
            "expected 1 byte for a bool, found end of input".into(),
        )),
        ElementType::Bool => Ok(1),
    }
}

/// Appends `bytes` escaped and terminated (ascending form).
fn encode_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    let mut rest = bytes;
    while let Some(zero) = rest.iter().position(|&b| b == 0) {
        out.extend_from_slice(&rest[..=zero]);
        out.push(ESCAPED_ZERO);
        rest = &rest[zero + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(&[0x00, TERMINATOR]);
}

/// Walks one escaped, terminated element at the start of `input` (every byte XORed with `mask`
/// to get the ascending form), passing each run of content bytes, still masked, to `run`.
/// Returns the element's length, terminator included.
fn walk_escaped(input: &[u8], mask: u8, mut run: impl FnMut(&[u8])) -> Result<usize, TypesError> {
    let unterminated = || {
        decode_err(format!(
            "expected the terminator 0x00 0x01 of a string or bytes element, \
             found end of input after {} bytes",
            input.len()
        ))
    };
    let mut pos = 0;
    loop {
        let rest = input.get(pos..).unwrap_or_default();
        let zero = rest
            .iter()
            .position(|&b| b == mask)
            .ok_or_else(unterminated)?;
        run(&rest[..zero]);
        match rest.get(zero + 1).map(|b| b ^ mask) {
            Some(ESCAPED_ZERO) => {
                run(&rest[zero..=zero]);
                pos += zero + 2;
            }
            Some(TERMINATOR) => return Ok(pos + zero + 2),
            Some(other) => {
                return Err(decode_err(format!(
                    "expected 0xff or 0x01 after 0x00 in a string or bytes element, \
                     found 0x{other:02x} at byte {}",
                    pos + zero + 1
                )))
            }
            None => return Err(unterminated()),
        }
    }
}

/// Reads the 8-byte word of an i64, timestamp or f64 element, unmasked to ascending form.
fn read_u64(input: &[u8], ty: ElementType, mask: u8) -> Result<u64, TypesError> {
    let word = input.first_chunk::<8>().ok_or_else(|| {
        decode_err(format!(
            "expected 8 bytes for type {ty}, found {} bytes",
            input.len()
        ))
    })?;
    Ok(u64::from_be_bytes(word.map(|b| b ^ mask)))
}

/// The byte every encoded byte is XORed with to get its ascending form.
fn mask(order: Order) -> u8 {
    match order {
        Order::Asc => 0x00,
        Order::Desc => 0xFF,
    }
}

fn decode_err(message: String) -> TypesError {
    TypesError::Decode(message)
}

/// Prefixes a decode error with the key element it happened in.
fn in_field(e: TypesError, el: &KeyElement) -> TypesError {
    match e {
        TypesError::Decode(m) => decode_err(format!("key element `{}`: {m}", el.name)),
        other => other,
    }
}

#[cfg(test)]
mod tests;
