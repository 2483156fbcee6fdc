//! Keyspace schemas: the key's elements, the partition rule, the value format and the TTL rule.

use crate::codec::{
    decode_tuple, encode_tuple, encode_tuple_refs, skip_at_most, ElementRef, Skipped,
};
use crate::element::{quote, Element, ElementType, KeyElement};
use crate::error::TypesError;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// The most elements a key may have.
pub const MAX_KEY_ELEMENTS: usize = 32;

/// The longest keyspace or key element name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// How a keyspace's values are stored and returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// Opaque bytes.
    #[default]
    Bytes,
    /// A JSON document, validated on write.
    Json,
}

impl ValueFormat {
    /// The format's name as written in schemas: "bytes" or "json".
    pub fn name(&self) -> &'static str {
        match self {
            ValueFormat::Bytes => "bytes",
            ValueFormat::Json => "json",
        }
    }
}

impl fmt::Display for ValueFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ValueFormat {
    type Err = TypesError;

    /// Parses "bytes" or "json".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bytes" => Ok(ValueFormat::Bytes),
            "json" => Ok(ValueFormat::Json),
            _ => Err(TypesError::Schema(format!(
                "value_format must be bytes or json, found {}",
                quote(s)
            ))),
        }
    }
}

/// When a keyspace's entries expire. The clock is always one carried in the data or fixed in the
/// log, never a replica's own, so every replica expires the same keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum TtlSpec {
    /// `ttl_micros` after the value of a timestamp key element.
    Element {
        /// The name of the timestamp key element.
        element: String,
        /// Lifetime in microseconds, greater than 0.
        ttl_micros: u64,
    },
    /// `ttl_micros` after the entry was appended to the log (the log entry's own timestamp).
    Append {
        /// Lifetime in microseconds, greater than 0.
        ttl_micros: u64,
    },
}

impl TtlSpec {
    /// The lifetime in microseconds.
    pub fn ttl_micros(&self) -> u64 {
        match self {
            TtlSpec::Element { ttl_micros, .. } | TtlSpec::Append { ttl_micros } => *ttl_micros,
        }
    }
}

/// A keyspace's definition: a named table with a typed key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceSchema {
    /// The keyspace's name, matching `[A-Za-z][A-Za-z0-9_-]{0,63}`.
    pub name: String,
    /// The key's elements, in order; 1 to [`MAX_KEY_ELEMENTS`].
    pub key: Vec<KeyElement>,
    /// How many leading key elements form the partition key (1 to `key.len()`).
    pub partition_by: usize,
    /// How values are stored; bytes when absent.
    #[serde(default)]
    pub value_format: ValueFormat,
    /// When entries expire; never when absent.
    #[serde(default)]
    pub ttl: Option<TtlSpec>,
}

/// An encoded key, with the length of its partition key prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EncodedKey {
    /// The encoded key.
    pub bytes: Vec<u8>,
    /// The byte length of the encoded partition key, a prefix of `bytes`.
    pub partition_key_len: usize,
}

impl EncodedKey {
    /// The encoded partition key: the bytes the partition is hashed from. Clamped to `bytes` if
    /// `partition_key_len` is too large.
    pub fn partition_key(&self) -> &[u8] {
        self.bytes
            .get(..self.partition_key_len)
            .unwrap_or(&self.bytes)
    }
}

impl KeyspaceSchema {
    /// The most elements a key may have (same as [`MAX_KEY_ELEMENTS`]).
    pub const MAX_KEY_ELEMENTS: usize = MAX_KEY_ELEMENTS;

    /// Checks the schema, returning the first violation as [`TypesError::Schema`] naming the
    /// field: the name's form, the key's length, the key element names' form and uniqueness,
    /// `partition_by`, and the TTL rule (an existing timestamp element, a lifetime above 0).
    pub fn validate(&self) -> Result<(), TypesError> {
        let invalid = |m: String| Err(TypesError::Schema(m));
        if !is_valid_name(&self.name) {
            return invalid(format!(
                "name must match [A-Za-z][A-Za-z0-9_-]{{0,63}}, found {}",
                quote(&self.name)
            ));
        }
        let n = self.key.len();
        if n == 0 || n > MAX_KEY_ELEMENTS {
            return invalid(format!(
                "key must have between 1 and {MAX_KEY_ELEMENTS} elements, found {n}"
            ));
        }
        let mut seen = HashSet::with_capacity(n);
        for (i, el) in self.key.iter().enumerate() {
            if !is_valid_name(&el.name) {
                return invalid(format!(
                    "key[{i}].name must match [A-Za-z][A-Za-z0-9_-]{{0,63}}, found {}",
                    quote(&el.name)
                ));
            }
            if !seen.insert(el.name.as_str()) {
                return invalid(format!(
                    "key[{i}].name must be unique, found {} a second time",
                    quote(&el.name)
                ));
            }
        }
        if self.partition_by == 0 || self.partition_by > n {
            return invalid(format!(
                "partition_by must be between 1 and {n} (the number of key elements), found {}",
                self.partition_by
            ));
        }
        match &self.ttl {
            None => {}
            Some(TtlSpec::Element { element, .. }) => match self.element_index(element) {
                None => {
                    return invalid(format!(
                        "ttl.element must name a key element, found {}",
                        quote(element)
                    ))
                }
                Some(i) if self.key[i].ty != ElementType::Timestamp => {
                    return invalid(format!(
                        "ttl.element {} must have type timestamp, found {}",
                        quote(element),
                        self.key[i].ty
                    ))
                }
                Some(_) => {}
            },
            Some(TtlSpec::Append { .. }) => {}
        }
        if let Some(ttl) = &self.ttl {
            if ttl.ttl_micros() == 0 {
                return invalid("ttl.ttl_micros must be greater than 0, found 0".to_owned());
            }
            if ttl.ttl_micros() > i64::MAX as u64 {
                return invalid(format!(
                    "ttl.ttl_micros must be at most {} (about 292,000 years), found {}",
                    i64::MAX,
                    ttl.ttl_micros()
                ));
            }
        }
        Ok(())
    }

    /// The position of the key element called `name`.
    pub fn element_index(&self, name: &str) -> Option<usize> {
        self.key.iter().position(|el| el.name == name)
    }

    /// The position of the timestamp key element the TTL counts from, if the TTL has one.
    pub fn ttl_element_index(&self) -> Option<usize> {
        match &self.ttl {
            Some(TtlSpec::Element { element, .. }) => self.element_index(element),
            _ => None,
        }
    }

    /// Encodes a full key: exactly `key.len()` values of the schema's types.
    pub fn encode_key(&self, values: &[Element]) -> Result<EncodedKey, TypesError> {
        let mut bytes = Vec::with_capacity(encoded_size_hint(values));
        let partition_key_len =
            self.encode_key_into(&mut bytes, values.iter().map(Element::as_ref))?;
        Ok(EncodedKey {
            bytes,
            partition_key_len,
        })
    }

    /// [`encode_key`](Self::encode_key) of borrowed elements, appended to `out`: returns the
    /// byte length of its partition key. On error `out` is as it was.
    pub fn encode_key_into<'v>(
        &self,
        out: &mut Vec<u8>,
        values: impl ExactSizeIterator<Item = ElementRef<'v>> + Clone,
    ) -> Result<usize, TypesError> {
        if values.len() != self.key.len() {
            return Err(TypesError::ElementCount {
                expected: format!("exactly {}", self.key.len()),
                found: values.len(),
            });
        }
        let start = out.len();
        let split = self.partition_by.min(self.key.len());
        encode_tuple_refs(out, &self.key[..split], values.clone().take(split))?;
        let partition_key_len = out.len() - start;
        if let Err(e) = encode_tuple_refs(out, &self.key[split..], values.skip(split)) {
            out.truncate(start);
            return Err(e);
        }
        Ok(partition_key_len)
    }

    /// Encodes a key prefix: the first 0 to `key.len()` values. Every key starting with these
    /// values lies in `[prefix, prefix_successor(prefix))`.
    pub fn encode_prefix(&self, values: &[Element]) -> Result<Vec<u8>, TypesError> {
        let mut bytes = Vec::with_capacity(encoded_size_hint(values));
        encode_tuple(&mut bytes, &self.key, values)?;
        Ok(bytes)
    }

    /// Decodes a full key; a key prefix or malformed bytes is [`TypesError::Decode`]. Use
    /// [`decode_tuple`] with `&self.key` to decode a prefix.
    pub fn decode_key(&self, bytes: &[u8]) -> Result<Vec<Element>, TypesError> {
        let values = decode_tuple(&self.key, bytes)?;
        if values.len() != self.key.len() {
            return Err(TypesError::Decode(format!(
                "expected {} key elements, found {}",
                self.key.len(),
                values.len()
            )));
        }
        Ok(values)
    }

    /// The byte length of the encoded partition key (the first `partition_by` elements) of an
    /// encoded key or prefix. A well-formed prefix with fewer elements is
    /// [`TypesError::ElementCount`]; malformed bytes are [`TypesError::Decode`]. Checks structure
    /// only, like [`crate::codec::skip_elements`].
    pub fn partition_key_len(&self, encoded: &[u8]) -> Result<usize, TypesError> {
        let n = self.partition_by.min(self.key.len());
        match skip_at_most(&self.key, encoded, n)? {
            Skipped::All(len) => Ok(len),
            Skipped::Fewer(found) => Err(TypesError::ElementCount {
                expected: format!("at least {n}"),
                found,
            }),
        }
    }
}

/// Whether `s` matches `[A-Za-z][A-Za-z0-9_-]{0,63}`.
fn is_valid_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.len() <= MAX_NAME_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A capacity that usually fits the encoding of `values`, so encoding allocates once.
fn encoded_size_hint(values: &[Element]) -> usize {
    values
        .iter()
        .map(|v| match v {
            Element::Bytes(b) => b.len() + 4,
            Element::String(s) => s.len() + 4,
            Element::Bool(_) => 1,
            _ => 8,
        })
        .sum()
}

#[cfg(test)]
mod tests;
