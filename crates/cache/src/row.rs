//! How a cache shard is stored: rows under the cache's id in its partition's storage range,
//! written in the same batch as the partition's applied seq, so that restart, checkpoints and
//! digests cover the cache like any keyspace.
//!
//! ```text
//! 0x00 | key  → expires_at i64 | stamp u64 | kind u8 (1 value, 0 not found) | value
//! 0x01 | key  → (empty)                       the entry is marked visited
//! 0x02        → next_stamp u64 | hand u64     the shard's header
//! ```

use crate::shard::Entry;
use bytes::Bytes;

/// First byte of an entry row's key.
pub const ENTRY: u8 = 0;
/// First byte of a visited mark's key.
pub const VISITED: u8 = 1;
/// The header row's key.
pub const HEADER: u8 = 2;

/// The key of `key`'s entry row.
pub fn entry_key(key: &[u8]) -> Vec<u8> {
    [&[ENTRY][..], key].concat()
}

/// The key of `key`'s visited mark.
pub fn visited_key(key: &[u8]) -> Vec<u8> {
    [&[VISITED][..], key].concat()
}

/// The header row's key.
pub fn header_key() -> Vec<u8> {
    vec![HEADER]
}

/// The end (exclusive) of a shard's rows.
pub fn end_key() -> Vec<u8> {
    vec![HEADER + 1]
}

pub(crate) fn entry(e: &Entry) -> Vec<u8> {
    let value = e.value.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(17 + value.len());
    out.extend_from_slice(&e.expires_at.to_be_bytes());
    out.extend_from_slice(&e.stamp.to_be_bytes());
    out.push(u8::from(e.value.is_some()));
    out.extend_from_slice(value);
    out
}

pub(crate) fn header(next_stamp: u64, hand: u64) -> Vec<u8> {
    [next_stamp.to_be_bytes(), hand.to_be_bytes()].concat()
}

pub(crate) enum Row {
    Entry { key: Bytes, entry: Entry },
    Visited { key: Bytes },
    Header { next_stamp: u64, hand: u64 },
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn parse(key: &[u8], value: &[u8]) -> Result<Row, String> {
    match key.split_first() {
        Some((&ENTRY, k)) if value.len() >= 17 && value[16] <= 1 => Ok(Row::Entry {
            key: Bytes::copy_from_slice(k),
            entry: Entry {
                expires_at: u64_at(value, 0) as i64,
                stamp: u64_at(value, 8),
                value: (value[16] == 1).then(|| Bytes::copy_from_slice(&value[17..])),
                visited: false,
            },
        }),
        Some((&VISITED, k)) => Ok(Row::Visited {
            key: Bytes::copy_from_slice(k),
        }),
        Some((&HEADER, [])) if value.len() == 16 => Ok(Row::Header {
            next_stamp: u64_at(value, 0),
            hand: u64_at(value, 8),
        }),
        _ => Err(format!(
            "a cache row is malformed (key of {} bytes, value of {} bytes)",
            key.len(),
            value.len()
        )),
    }
}
