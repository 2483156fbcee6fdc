//! Finding one field of a stored JSON value without parsing the rest of it.
//!
//! Values of a JSON keyspace are checked to be JSON when they are written, so a scan or an
//! aggregate that filters on a field only has to walk to it: skip the bytes of every other
//! member (strings, nested objects and arrays are skipped by counting brackets outside
//! strings) and hand back the raw text of the one value it wants. Nothing is allocated for a
//! field that is a number, a bool, null, or a string without escapes; anything else (a
//! member name or a string with escapes, an object or array value, bytes that are not JSON
//! after all) falls back to serde_json, so the answer is always the one a full parse gives.

use serde_json::Value;
use std::cmp::Ordering;

/// The outcome of a walk to a field.
#[derive(Debug, PartialEq)]
pub enum Raw<'a> {
    /// The raw text of the value at the path (a string keeps its quotes).
    Found(&'a [u8]),
    /// The document has no value at the path.
    Missing,
    /// The walk met something it does not decide on its own; ask serde_json.
    Unsure,
}

fn ws(doc: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = doc.get(i) {
        i += 1;
    }
    i
}

/// The index just past the string starting (with its quote) at `i`, and whether it holds an
/// escape.
fn string_end(doc: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        match *doc.get(j)? {
            b'"' => return Some((j + 1, escaped)),
            b'\\' => {
                escaped = true;
                j += 2;
            }
            _ => j += 1,
        }
    }
}

/// The index just past the value starting at `i` (no leading whitespace).
fn value_end(doc: &[u8], i: usize) -> Option<usize> {
    match *doc.get(i)? {
        b'"' => string_end(doc, i).map(|(end, _)| end),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *doc.get(j)? {
                    b'"' => {
                        j = string_end(doc, j)?.0;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(b) = doc.get(j) {
                if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// Walks `doc` to the value at `path` (member names, outermost first).
pub fn raw_field<'a, S: AsRef<str>>(doc: &'a [u8], path: &[S]) -> Raw<'a> {
    walk(doc, path.iter().map(AsRef::as_ref)).unwrap_or(Raw::Unsure)
}

fn walk<'a, 'p>(doc: &'a [u8], path: impl Iterator<Item = &'p str>) -> Option<Raw<'a>> {
    let mut i = ws(doc, 0);
    let mut path = path.peekable();
    while let Some(name) = path.next() {
        match doc.get(i)? {
            b'{' => {}
            // A scalar or an array has no members (and an array is never walked into).
            b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9' => return Some(Raw::Missing),
            _ => return None,
        }
        i = ws(doc, i + 1);
        let mut found = None;
        if doc.get(i)? != &b'}' {
            loop {
                if doc.get(i)? != &b'"' {
                    return None;
                }
                let (key_end, escaped) = string_end(doc, i)?;
                let matches = if escaped {
                    // Rare: a member name with escapes is decoded to compare.
                    let key: String = serde_json::from_slice(&doc[i..key_end]).ok()?;
                    key == name
                } else {
                    &doc[i + 1..key_end - 1] == name.as_bytes()
                };
                i = ws(doc, key_end);
                if doc.get(i)? != &b':' {
                    return None;
                }
                i = ws(doc, i + 1);
                let end = value_end(doc, i)?;
                // The first member of a name counts, as in a full parse.
                if matches {
                    found = Some((i, end));
                    break;
                }
                i = ws(doc, end);
                match doc.get(i)? {
                    b',' => i = ws(doc, i + 1),
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        let Some((start, end)) = found else {
            return Some(Raw::Missing);
        };
        if path.peek().is_none() {
            return Some(Raw::Found(&doc[start..end]));
        }
        i = start;
    }
    // An empty path is the whole document.
    let end = value_end(doc, i)?;
    Some(Raw::Found(&doc[i..end]))
}

/// A filter's value, prepared to compare with raw JSON text.
#[derive(Debug, Clone)]
pub enum Expected {
    /// JSON `null`.
    Null,
    /// A JSON boolean.
    Bool(bool),
    /// A JSON number, as an `f64`.
    Number(f64),
    /// A JSON string.
    String(String),
    /// An array or an object: compared after a full parse.
    Other(Value),
}

impl Expected {
    /// `value` prepared for comparison.
    pub fn new(value: &Value) -> Expected {
        match value {
            Value::Null => Expected::Null,
            Value::Bool(b) => Expected::Bool(*b),
            Value::Number(n) => match n.as_f64() {
                Some(x) => Expected::Number(x),
                None => Expected::Other(value.clone()),
            },
            Value::String(s) => Expected::String(s.clone()),
            other => Expected::Other(other.clone()),
        }
    }

    fn value(&self) -> Value {
        match self {
            Expected::Null => Value::Null,
            Expected::Bool(b) => Value::Bool(*b),
            Expected::Number(x) => serde_json::Number::from_f64(*x)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Expected::String(s) => Value::String(s.clone()),
            Expected::Other(v) => v.clone(),
        }
    }

    /// How the raw value `found` orders against this one, as `filter::compare_json` orders
    /// the parsed values; `None` across kinds.
    pub fn compare_raw(&self, found: &[u8]) -> Option<Ordering> {
        match (found.first()?, self) {
            (b'n', Expected::Null) => Some(Ordering::Equal),
            (b't', Expected::Bool(b)) => Some(true.cmp(b)),
            (b'f', Expected::Bool(b)) => Some(false.cmp(b)),
            (b'-' | b'0'..=b'9', Expected::Number(y)) => number(found)?.partial_cmp(y),
            (b'"', Expected::String(s)) => {
                let inner = &found[1..found.len() - 1];
                if inner.contains(&b'\\') {
                    let text: String = serde_json::from_slice(found).ok()?;
                    Some(text.as_str().cmp(s.as_str()))
                } else {
                    Some(inner.cmp(s.as_bytes()))
                }
            }
            (b'[' | b'{', _) | (_, Expected::Other(_)) => {
                let parsed: Value = serde_json::from_slice(found).ok()?;
                super::filter::compare_json(&parsed, &self.value())
            }
            _ => None,
        }
    }
}

/// The value at the dot-separated `path` in `doc`, parsed; `None` when there is none.
pub fn field_value(doc: &[u8], path: &str) -> Option<Value> {
    match walk(doc, path.split('.')) {
        Some(Raw::Found(raw)) => serde_json::from_slice(raw).ok(),
        Some(Raw::Missing) => None,
        Some(Raw::Unsure) | None => {
            let path: Vec<String> = path.split('.').map(str::to_owned).collect();
            super::filter::json_field(doc, &path)
        }
    }
}

/// The number at `path` in `doc`, if it holds one.
pub fn field_number(doc: &[u8], path: &[String]) -> Option<f64> {
    match raw_field(doc, path) {
        Raw::Found(raw) => number(raw),
        Raw::Missing => None,
        Raw::Unsure => super::filter::json_field(doc, path).and_then(|v| v.as_f64()),
    }
}

/// The number a raw JSON number denotes, as serde_json reads it.
pub fn number(raw: &[u8]) -> Option<f64> {
    match raw.first()? {
        b'-' | b'0'..=b'9' => serde_json::from_slice(raw).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::filter::{compare_json, json_field};
    use serde_json::json;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    const DOC: &[u8] = br#" { "a" : [1, {"x": "]"}], "b": {"c": true, "d": "s\"q", "e": {}},
        "n": -1.5e2, "s": "plain", "z": null, "a2": 1, "dup": 1, "dup": 2, "esc\"k": 3 } "#;

    #[test]
    fn walks_to_fields_and_agrees_with_a_full_parse() {
        let paths = [
            "a", "b", "b.c", "b.d", "b.e", "b.e.x", "n", "s", "z", "a2", "dup", "missing", "a.x",
            "n.x", "s.x", "b.c.x", "esc\"k", "zz",
        ];
        for p in paths {
            let want = json_field(DOC, &path(p));
            let got = match raw_field(DOC, &path(p)) {
                Raw::Found(raw) => Some(serde_json::from_slice::<Value>(raw).expect(p)),
                Raw::Missing => None,
                Raw::Unsure => panic!("{p}: unsure"),
            };
            assert_eq!(got, want, "{p}");
        }
        assert_eq!(raw_field(DOC, &path("n")), Raw::Found(b"-1.5e2"));
        assert_eq!(raw_field(DOC, &path("s")), Raw::Found(b"\"plain\""));
    }

    #[test]
    fn malformed_documents_have_no_fields() {
        for doc in [
            &b"not json"[..],
            b"{",
            b"{\"a\"",
            b"{\"a\":",
            b"{\"a\" 1}",
            b"{1:2}",
        ] {
            // (Stored values are JSON; these only must not be taken for a field.)
            let found = raw_field(doc, &path("a"));
            assert!(
                matches!(found, Raw::Unsure | Raw::Missing),
                "{doc:?}: {found:?}"
            );
            assert_eq!(json_field(doc, &path("a")), None);
        }
        assert_eq!(raw_field(b"[1]", &path("a")), Raw::Missing);
        assert_eq!(raw_field(b"{}", &path("a")), Raw::Missing);
    }

    #[test]
    fn raw_comparisons_match_parsed_ones() {
        let expected = [
            json!(null),
            json!(true),
            json!(false),
            json!(1),
            json!(-150.0),
            json!("plain"),
            json!("s\"q"),
            json!("a"),
            json!([1]),
            json!({}),
        ];
        let found = [
            &br#"null"#[..],
            b"true",
            b"false",
            b"1",
            b"-1.5e2",
            b"18446744073709551615",
            br#""plain""#,
            br#""s\"q""#,
            br#""b""#,
            b"[1]",
            b"{}",
        ];
        for e in &expected {
            for f in found {
                let parsed: Value = serde_json::from_slice(f).expect("json");
                assert_eq!(
                    Expected::new(e).compare_raw(f),
                    compare_json(&parsed, e),
                    "{e} vs {}",
                    String::from_utf8_lossy(f)
                );
            }
        }
    }
}
