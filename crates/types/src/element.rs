//! Key elements: their types, their sort order, their values, the JSON form of those values, and
//! the reference tuple order that the codec (`crate::codec`) reproduces byte for byte.

use crate::codec::ElementRef;
use crate::error::TypesError;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

/// Microseconds from the Unix epoch to 10000-01-01T00:00:00Z: timestamps from 0 up to this bound
/// display as RFC 3339, others as a number of microseconds.
const RFC3339_DISPLAY_LIMIT_MICROS: i64 = 253_402_300_800_000_000;

/// Longest JSON string quoted verbatim in an error message; longer ones are described by length.
const MAX_QUOTED_LEN: usize = 40;

/// The type of one key element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElementType {
    /// Arbitrary bytes; base64 (standard alphabet, padded) in JSON.
    Bytes,
    /// A UTF-8 string.
    String,
    /// A signed 64-bit integer.
    I64,
    /// A 64-bit float; NaN is not a valid key and -0.0 equals 0.0.
    F64,
    /// A boolean; false sorts before true.
    Bool,
    /// Microseconds since the Unix epoch (UTC), signed.
    Timestamp,
}

impl ElementType {
    /// Every element type, in declaration order.
    pub const ALL: [ElementType; 6] = [
        ElementType::Bytes,
        ElementType::String,
        ElementType::I64,
        ElementType::F64,
        ElementType::Bool,
        ElementType::Timestamp,
    ];

    /// The type's name as written in schemas: "bytes", "string", "i64", "f64", "bool",
    /// "timestamp".
    pub fn name(&self) -> &'static str {
        match self {
            ElementType::Bytes => "bytes",
            ElementType::String => "string",
            ElementType::I64 => "i64",
            ElementType::F64 => "f64",
            ElementType::Bool => "bool",
            ElementType::Timestamp => "timestamp",
        }
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ElementType {
    type Err = TypesError;

    /// Parses a name returned by [`ElementType::name`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ElementType::ALL
            .into_iter()
            .find(|ty| ty.name() == s)
            .ok_or_else(|| {
                TypesError::Schema(format!(
                    "element type must be one of bytes, string, i64, f64, bool, timestamp, found {}",
                    quote(s)
                ))
            })
    }
}

/// The direction one key element sorts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Ascending: smallest first.
    #[default]
    Asc,
    /// Descending: largest first.
    Desc,
}

impl Order {
    /// The order's name as written in schemas: "asc" or "desc".
    pub fn name(&self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Order {
    type Err = TypesError;

    /// Parses "asc" or "desc".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "asc" => Ok(Order::Asc),
            "desc" => Ok(Order::Desc),
            _ => Err(TypesError::Schema(format!(
                "order must be asc or desc, found {}",
                quote(s)
            ))),
        }
    }
}

/// One position of a keyspace's key: its name, type and sort order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyElement {
    /// The element's name, unique within the key.
    pub name: String,
    /// The element's type (`"type"` in JSON).
    #[serde(rename = "type")]
    pub ty: ElementType,
    /// The element's sort order; ascending when absent.
    #[serde(default)]
    pub order: Order,
}

impl KeyElement {
    /// A key element with the given name, type and order.
    pub fn new(name: impl Into<String>, ty: ElementType, order: Order) -> Self {
        KeyElement {
            name: name.into(),
            ty,
            order,
        }
    }
}

/// The value of one key element.
#[derive(Clone, Debug, PartialEq)]
pub enum Element {
    /// Arbitrary bytes.
    Bytes(Vec<u8>),
    /// A UTF-8 string.
    String(String),
    /// A signed 64-bit integer.
    I64(i64),
    /// A float; keys reject NaN, and -0.0 is the same key as 0.0.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// Microseconds since the Unix epoch (UTC).
    Timestamp(i64),
}

impl Element {
    /// The value's type.
    pub fn element_type(&self) -> ElementType {
        self.as_ref().element_type()
    }

    /// The element, borrowed.
    pub fn as_ref(&self) -> ElementRef<'_> {
        match self {
            Element::Bytes(b) => ElementRef::Bytes(b),
            Element::String(s) => ElementRef::String(s),
            Element::I64(n) => ElementRef::I64(*n),
            Element::F64(x) => ElementRef::F64(*x),
            Element::Bool(b) => ElementRef::Bool(*b),
            Element::Timestamp(n) => ElementRef::Timestamp(*n),
        }
    }

    /// Reads a JSON value as an element of type `ty`; `field` names the value in errors.
    ///
    /// Accepted forms: bytes, a base64 string (standard alphabet, padded); string, a JSON
    /// string; i64, a JSON integer in range; f64, any JSON number; bool, a JSON boolean;
    /// timestamp, a JSON integer of microseconds since the Unix epoch or an RFC 3339 UTC string
    /// (`"2026-11-22T10:00:00Z"`, `"2026-11-22T10:00:00.123456Z"`, year 1970 or later, at
    /// most microsecond precision).
    pub fn from_json(ty: ElementType, v: &Value, field: &str) -> Result<Element, TypesError> {
        let fail = |expected: &str| TypesError::Json {
            field: field.to_owned(),
            message: format!("expected {expected}, found {}", describe(v)),
        };
        match ty {
            ElementType::Bytes => {
                let s = v.as_str().ok_or_else(|| fail("a base64 string"))?;
                BASE64
                    .decode(s)
                    .map(Element::Bytes)
                    .map_err(|e| TypesError::Json {
                        field: field.to_owned(),
                        message: format!(
                            "expected a base64 string (standard alphabet, padded), found {} ({e})",
                            describe(v)
                        ),
                    })
            }
            ElementType::String => v
                .as_str()
                .map(|s| Element::String(s.to_owned()))
                .ok_or_else(|| fail("a string")),
            ElementType::I64 => v
                .as_i64()
                .map(Element::I64)
                .ok_or_else(|| fail("an integer between -2^63 and 2^63-1")),
            ElementType::F64 => v.as_f64().map(Element::F64).ok_or_else(|| fail("a number")),
            ElementType::Bool => v
                .as_bool()
                .map(Element::Bool)
                .ok_or_else(|| fail("a boolean")),
            ElementType::Timestamp => match v {
                Value::String(s) => {
                    parse_rfc3339_micros(s)
                        .map(Element::Timestamp)
                        .map_err(|why| TypesError::Json {
                            field: field.to_owned(),
                            message: format!(
                            "expected an rfc 3339 utc timestamp such as \"2026-11-22T10:00:00Z\", \
                             found {} ({why})",
                            describe(v)
                        ),
                        })
                }
                _ => v.as_i64().map(Element::Timestamp).ok_or_else(|| {
                    fail("integer microseconds since the unix epoch or an rfc 3339 string")
                }),
            },
        }
    }

    /// The value's JSON form, as accepted by [`Element::from_json`]: bytes become a base64
    /// string, timestamps integer microseconds. A non-finite f64 (±inf) becomes `null`, since
    /// JSON has no such number.
    pub fn to_json(&self) -> Value {
        match self {
            Element::Bytes(b) => Value::String(BASE64.encode(b)),
            Element::String(s) => Value::String(s.clone()),
            Element::I64(n) | Element::Timestamp(n) => Value::from(*n),
            Element::F64(x) => Value::from(*x),
            Element::Bool(b) => Value::Bool(*b),
        }
    }

    /// Appends the JSON text of [`Element::to_json`] to `out`; numbers and booleans without
    /// building a `Value`.
    pub fn write_json(&self, out: &mut String) {
        use fmt::Write as _;
        match self {
            Element::I64(n) | Element::Timestamp(n) => {
                let _ = write!(out, "{n}");
            }
            Element::F64(x) => match serde_json::Number::from_f64(*x) {
                Some(n) => {
                    let _ = write!(out, "{n}");
                }
                None => out.push_str("null"),
            },
            Element::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Element::String(_) | Element::Bytes(_) => {
                let _ = write!(out, "{}", self.to_json());
            }
        }
    }
}

/// Bytes as base64, strings as they are, timestamps as RFC 3339 with microseconds (from 1970 to
/// year 9999, else as `<n>us`).
impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Bytes(b) => f.write_str(&BASE64.encode(b)),
            Element::String(s) => f.write_str(s),
            Element::I64(n) => write!(f, "{n}"),
            Element::F64(x) => write!(f, "{x}"),
            Element::Bool(b) => write!(f, "{b}"),
            Element::Timestamp(m) => match u64::try_from(*m) {
                Ok(micros) if *m < RFC3339_DISPLAY_LIMIT_MICROS => {
                    let t = UNIX_EPOCH + Duration::from_micros(micros);
                    write!(f, "{}", humantime::format_rfc3339_micros(t))
                }
                _ => write!(f, "{m}us"),
            },
        }
    }
}

impl From<&str> for Element {
    fn from(s: &str) -> Self {
        Element::String(s.to_owned())
    }
}

impl From<String> for Element {
    fn from(s: String) -> Self {
        Element::String(s)
    }
}

impl From<Vec<u8>> for Element {
    fn from(b: Vec<u8>) -> Self {
        Element::Bytes(b)
    }
}

impl From<i64> for Element {
    fn from(n: i64) -> Self {
        Element::I64(n)
    }
}

impl From<f64> for Element {
    fn from(x: f64) -> Self {
        Element::F64(x)
    }
}

impl From<bool> for Element {
    fn from(b: bool) -> Self {
        Element::Bool(b)
    }
}

/// Compares two elements of the same type in their natural ascending order: bytes and strings
/// bytewise, numbers numerically, false before true. For f64, -0.0 equals 0.0, then
/// [`f64::total_cmp`] (-inf smallest, +inf largest). Elements of different types (a caller bug)
/// compare by type, in [`ElementType::ALL`] order, so the function never panics.
pub fn compare_elements(a: &Element, b: &Element) -> Ordering {
    match (a, b) {
        (Element::Bytes(x), Element::Bytes(y)) => x.cmp(y),
        (Element::String(x), Element::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Element::I64(x), Element::I64(y)) => x.cmp(y),
        (Element::Timestamp(x), Element::Timestamp(y)) => x.cmp(y),
        (Element::F64(x), Element::F64(y)) => normalise_zero(*x).total_cmp(&normalise_zero(*y)),
        (Element::Bool(x), Element::Bool(y)) => x.cmp(y),
        _ => type_rank(a.element_type()).cmp(&type_rank(b.element_type())),
    }
}

/// Compares two tuples of the key described by `schema`: element by element, each reversed when
/// its order is [`Order::Desc`]; when one tuple is a proper prefix of the other, the shorter sorts
/// first. Positions beyond `schema` compare ascending. This is the order of the encoded bytes.
pub fn compare_tuples(schema: &[KeyElement], a: &[Element], b: &[Element]) -> Ordering {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let ord = compare_elements(x, y);
        let ord = match schema.get(i).map(|e| e.order) {
            Some(Order::Desc) => ord.reverse(),
            _ => ord,
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// Maps -0.0 to +0.0 (they are the same key) and leaves every other value alone.
pub(crate) fn normalise_zero(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x
    }
}

fn type_rank(ty: ElementType) -> usize {
    ElementType::ALL
        .iter()
        .position(|t| *t == ty)
        .expect("ALL lists every element type")
}

/// Parses a strict RFC 3339 UTC timestamp into microseconds since the Unix epoch.
fn parse_rfc3339_micros(s: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339(s).map_err(|e| e.to_string())?;
    let d = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "before the unix epoch".to_owned())?;
    if d.subsec_nanos() % 1_000 != 0 {
        return Err("finer than microsecond precision".to_owned());
    }
    i64::try_from(d.as_micros()).map_err(|_| "out of range".to_owned())
}

/// A short description of a JSON value for error messages, never echoing a long string.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// `s` quoted when short, else "a string of N bytes".
pub(crate) fn quote(s: &str) -> String {
    if s.len() <= MAX_QUOTED_LEN {
        format!("{s:?}")
    } else {
        format!("a string of {} bytes", s.len())
    }
}

#[cfg(test)]
mod tests;
