//! The bytes of one log entry: what a replica applies. Pure encode/decode.
//!
//! ```text
//! version u8 = 1 | kind u8 | ts i64 (append time, micros)
//! kind 1 (batch): count u32 | mutation*
//!   mutation: op u8 | keyspace u32 | key: len u32 + bytes
//!     op 1 put:          stored value: len u32 + bytes (expiry header included)
//!     op 2 delete:       -
//!     op 3 delete range: end key: len u32 + bytes (the range is [key, end))
//!     (cache ops name a cache id where the others name a keyspace)
//!     op 4 cache set:    capacity u64 | expires_at i64 | found u8 | value: len u32 + bytes
//!     op 5 cache delete: -
//!     op 6 cache touch:  count u32 | stamp u64 * count (the key is empty)
//!     op 7 cache clear:  - (the key is empty)
//! kind 2 (drop keyspace): keyspace u32
//! kind 3 (transaction):   entry: len u32 + bytes (a transaction or its remote reads, as
//!                         `notadb_txn::Entry` encodes them)
//! ```
//! Integers are big-endian. Everything a replica needs is in the entry: applying it reads no
//! clock and no catalog.

use notadb_types::{put_bytes, CacheId, KeyspaceId, WireError, WireReader};

const VERSION: u8 = 1;
const KIND_BATCH: u8 = 1;
const KIND_DROP: u8 = 2;
const KIND_TXN: u8 = 3;
/// Where a batch entry's mutation count lies: after version, kind and append time.
const BATCH_COUNT: std::ops::Range<usize> = 10..14;
/// Bytes of a batch entry before its mutations.
pub const BATCH_HEADER: usize = BATCH_COUNT.end;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_DELETE_RANGE: u8 = 3;
const OP_CACHE_SET: u8 = 4;
const OP_CACHE_DELETE: u8 = 5;
const OP_CACHE_TOUCH: u8 = 6;
const OP_CACHE_CLEAR: u8 = 7;

/// Why an entry's bytes are not a [`Record`]. The two differ in what the apply loop must do:
/// a malformed entry is skipped (every replica meets the same bytes and skips them alike), but
/// an entry of a newer format, written by a newer notadb, holds changes this build cannot make:
/// skipping it would let this replica diverge from upgraded ones, so its partition stops until
/// the node is upgraded. A format change therefore raises the version byte.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not an entry of any format this build knows of.
    #[error("malformed log entry: {0}")]
    Malformed(String),
    /// An entry of a newer format than this build reads.
    #[error("log entry format {found} is newer than this build reads ({known}): upgrade the node")]
    Newer {
        /// The entry's format version.
        found: u8,
        /// The newest version this build reads.
        known: u8,
    },
}

impl From<WireError> for DecodeError {
    /// The bytes end early or a count is out of bounds.
    fn from(e: WireError) -> DecodeError {
        DecodeError::Malformed(e.to_string())
    }
}

/// One change to one keyspace or cache. Keys are encoded tuples; values are stored values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Stores `stored` under `key`.
    Put {
        /// The keyspace written.
        keyspace: KeyspaceId,
        /// The encoded key tuple.
        key: Vec<u8>,
        /// The stored value ([`value::encode`](crate::value::encode)).
        stored: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The keyspace written.
        keyspace: KeyspaceId,
        /// The encoded key tuple.
        key: Vec<u8>,
    },
    /// Removes every key in `[start, end)`.
    DeleteRange {
        /// The keyspace written.
        keyspace: KeyspaceId,
        /// The first key removed.
        start: Vec<u8>,
        /// The first key kept after the range.
        end: Vec<u8>,
    },
    /// Stores a cache entry (`value: None`: a cached "not found"), evicting within `capacity`
    /// (the partition's share of the cache's bytes).
    CacheSet {
        /// The cache written.
        cache: CacheId,
        /// The entry's key.
        key: Vec<u8>,
        /// The partition's share of the cache's bytes.
        capacity: u64,
        /// When the entry expires, in microseconds since the Unix epoch.
        expires_at: i64,
        /// The value, or `None` for a cached "not found".
        value: Option<Vec<u8>>,
    },
    /// Removes a cache entry.
    CacheDelete {
        /// The cache written.
        cache: CacheId,
        /// The entry's key.
        key: Vec<u8>,
    },
    /// Marks cache entries visited: hits a replica reports, by the entries' stamps.
    CacheTouch {
        /// The cache written.
        cache: CacheId,
        /// The stamps of the entries hit.
        stamps: Vec<u64>,
    },
    /// Removes every entry of the cache in the partition.
    CacheClear {
        /// The cache cleared.
        cache: CacheId,
    },
}

impl Op {
    /// The keyspace a put or delete writes; `None` for cache ops.
    pub fn keyspace(&self) -> Option<KeyspaceId> {
        match self {
            Op::Put { keyspace, .. }
            | Op::Delete { keyspace, .. }
            | Op::DeleteRange { keyspace, .. } => Some(*keyspace),
            Op::CacheSet { .. }
            | Op::CacheDelete { .. }
            | Op::CacheTouch { .. }
            | Op::CacheClear { .. } => None,
        }
    }
}

/// What one log entry asks replicas to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Mutations applied atomically, all in the entry's partition.
    Batch {
        /// The append time, in microseconds since the Unix epoch.
        ts_micros: i64,
        /// The mutations, applied in order.
        ops: Vec<Op>,
    },
    /// Deletes the keyspace's data in the entry's partition; later writes to it are skipped.
    DropKeyspace {
        /// The append time, in microseconds since the Unix epoch.
        ts_micros: i64,
        /// The keyspace dropped.
        keyspace: KeyspaceId,
    },
    /// A transaction's input, or remote reads for one: executed by the partition's
    /// transaction executor.
    Txn {
        /// The append time, in microseconds since the Unix epoch.
        ts_micros: i64,
        /// The entry as `notadb_txn::Entry` encodes it.
        entry: Vec<u8>,
    },
}

impl Record {
    /// The append time carried by the entry.
    pub fn ts_micros(&self) -> i64 {
        match self {
            Record::Batch { ts_micros, .. }
            | Record::DropKeyspace { ts_micros, .. }
            | Record::Txn { ts_micros, .. } => *ts_micros,
        }
    }

    /// The entry's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(VERSION);
        match self {
            Record::Batch { ts_micros, ops } => {
                out.push(KIND_BATCH);
                out.extend_from_slice(&ts_micros.to_be_bytes());
                out.extend_from_slice(&(ops.len() as u32).to_be_bytes());
                for op in ops {
                    encode_op(&mut out, op);
                }
            }
            Record::DropKeyspace {
                ts_micros,
                keyspace,
            } => {
                out.push(KIND_DROP);
                out.extend_from_slice(&ts_micros.to_be_bytes());
                out.extend_from_slice(&keyspace.0.to_be_bytes());
            }
            Record::Txn { ts_micros, entry } => {
                out.push(KIND_TXN);
                out.extend_from_slice(&ts_micros.to_be_bytes());
                put_bytes(&mut out, entry);
            }
        }
        out
    }

    /// Appends the mutations of the batch entry `next` to the batch entry `into`, as if they
    /// had been written together: `into` keeps its append time, and its mutations come first.
    /// Returns false, changing nothing, unless both are well-formed batch headers and the
    /// merged entry stays within `max_len` bytes.
    pub fn merge_batches(into: &mut Vec<u8>, next: &[u8], max_len: usize) -> bool {
        let count = |bytes: &[u8]| -> Option<u32> {
            if bytes.len() < BATCH_HEADER || bytes[0] != VERSION || bytes[1] != KIND_BATCH {
                return None;
            }
            Some(u32::from_be_bytes(bytes[BATCH_COUNT].try_into().ok()?))
        };
        if into.len() + next.len().saturating_sub(BATCH_HEADER) > max_len {
            return false;
        }
        let (Some(a), Some(b)) = (count(into), count(next)) else {
            return false;
        };
        let Some(total) = a.checked_add(b) else {
            return false;
        };
        into[BATCH_COUNT].copy_from_slice(&total.to_be_bytes());
        into.extend_from_slice(&next[BATCH_HEADER..]);
        true
    }

    /// Whether the entry `bytes` is a transaction's (which may read storage and send reads to
    /// other partitions when applied); anything else only writes.
    pub fn is_txn(bytes: &[u8]) -> bool {
        bytes.get(1) == Some(&KIND_TXN)
    }

    /// Parses an entry. A malformed entry is an error every replica meets identically; an
    /// entry of a newer format is one this build cannot apply (see [`DecodeError`]).
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        let mut r = WireReader::new(bytes);
        let version = r.u8()?;
        if version > VERSION {
            return Err(DecodeError::Newer {
                found: version,
                known: VERSION,
            });
        }
        if version != VERSION {
            return Err(DecodeError::Malformed(format!(
                "record version {version}, expected {VERSION}"
            )));
        }
        let kind = r.u8()?;
        let ts_micros = r.u64()? as i64;
        let record = match kind {
            KIND_BATCH => {
                let count = r.u32()? as usize;
                // Each op takes at least 9 bytes: bound the allocation by the input.
                let mut ops = Vec::with_capacity(count.min(bytes.len() / 9));
                for _ in 0..count {
                    ops.push(decode_op(&mut r)?);
                }
                Record::Batch { ts_micros, ops }
            }
            KIND_DROP => Record::DropKeyspace {
                ts_micros,
                keyspace: KeyspaceId(r.u32()?),
            },
            KIND_TXN => Record::Txn {
                ts_micros,
                entry: r.bytes()?.to_vec(),
            },
            other => {
                return Err(DecodeError::Malformed(format!(
                    "record kind {other} is unknown"
                )))
            }
        };
        if r.remaining() != 0 {
            return Err(DecodeError::Malformed(format!(
                "{} trailing bytes after the record",
                r.remaining()
            )));
        }
        Ok(record)
    }
}

fn encode_op(out: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Put {
            keyspace,
            key,
            stored,
        } => {
            out.push(OP_PUT);
            out.extend_from_slice(&keyspace.0.to_be_bytes());
            put_bytes(out, key);
            put_bytes(out, stored);
        }
        Op::Delete { keyspace, key } => {
            out.push(OP_DELETE);
            out.extend_from_slice(&keyspace.0.to_be_bytes());
            put_bytes(out, key);
        }
        Op::DeleteRange {
            keyspace,
            start,
            end,
        } => {
            out.push(OP_DELETE_RANGE);
            out.extend_from_slice(&keyspace.0.to_be_bytes());
            put_bytes(out, start);
            put_bytes(out, end);
        }
        Op::CacheSet {
            cache,
            key,
            capacity,
            expires_at,
            value,
        } => {
            out.push(OP_CACHE_SET);
            out.extend_from_slice(&cache.0.to_be_bytes());
            put_bytes(out, key);
            out.extend_from_slice(&capacity.to_be_bytes());
            out.extend_from_slice(&expires_at.to_be_bytes());
            out.push(u8::from(value.is_some()));
            put_bytes(out, value.as_deref().unwrap_or_default());
        }
        Op::CacheDelete { cache, key } => {
            out.push(OP_CACHE_DELETE);
            out.extend_from_slice(&cache.0.to_be_bytes());
            put_bytes(out, key);
        }
        Op::CacheTouch { cache, stamps } => {
            out.push(OP_CACHE_TOUCH);
            out.extend_from_slice(&cache.0.to_be_bytes());
            put_bytes(out, &[]);
            out.extend_from_slice(&(stamps.len() as u32).to_be_bytes());
            for stamp in stamps {
                out.extend_from_slice(&stamp.to_be_bytes());
            }
        }
        Op::CacheClear { cache } => {
            out.push(OP_CACHE_CLEAR);
            out.extend_from_slice(&cache.0.to_be_bytes());
            put_bytes(out, &[]);
        }
    }
}

fn decode_op(r: &mut WireReader<'_>) -> Result<Op, DecodeError> {
    let op = r.u8()?;
    let keyspace = KeyspaceId(r.u32()?);
    let key = r.bytes()?.to_vec();
    match op {
        OP_PUT => Ok(Op::Put {
            keyspace,
            key,
            stored: r.bytes()?.to_vec(),
        }),
        OP_DELETE => Ok(Op::Delete { keyspace, key }),
        OP_DELETE_RANGE => Ok(Op::DeleteRange {
            keyspace,
            start: key,
            end: r.bytes()?.to_vec(),
        }),
        OP_CACHE_SET => {
            let capacity = r.u64()?;
            let expires_at = r.u64()? as i64;
            let found = match r.u8()? {
                0 => false,
                1 => true,
                other => {
                    return Err(DecodeError::Malformed(format!(
                        "cache set flag {other} is neither 0 nor 1"
                    )))
                }
            };
            let value = r.bytes()?.to_vec();
            Ok(Op::CacheSet {
                cache: CacheId(keyspace.0),
                key,
                capacity,
                expires_at,
                value: found.then_some(value),
            })
        }
        OP_CACHE_DELETE => Ok(Op::CacheDelete {
            cache: CacheId(keyspace.0),
            key,
        }),
        OP_CACHE_TOUCH => {
            let count = r.u32()? as usize;
            let mut stamps = Vec::with_capacity(count.min(r.remaining() / 8));
            for _ in 0..count {
                stamps.push(r.u64()?);
            }
            Ok(Op::CacheTouch {
                cache: CacheId(keyspace.0),
                stamps,
            })
        }
        OP_CACHE_CLEAR => Ok(Op::CacheClear {
            cache: CacheId(keyspace.0),
        }),
        other => Err(DecodeError::Malformed(format!(
            "mutation op {other} is unknown"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let batch = Record::Batch {
            ts_micros: -5,
            ops: vec![
                Op::Put {
                    keyspace: KeyspaceId(1),
                    key: b"k\0".to_vec(),
                    stored: vec![0, 1],
                },
                Op::Delete {
                    keyspace: KeyspaceId(2),
                    key: vec![],
                },
                Op::DeleteRange {
                    keyspace: KeyspaceId(3),
                    start: b"a".to_vec(),
                    end: b"b".to_vec(),
                },
                Op::CacheSet {
                    cache: CacheId(0x8000_0001),
                    key: b"c".to_vec(),
                    capacity: 1 << 20,
                    expires_at: 77,
                    value: Some(b"v".to_vec()),
                },
                Op::CacheSet {
                    cache: CacheId(0x8000_0001),
                    key: b"n".to_vec(),
                    capacity: 1 << 20,
                    expires_at: 0,
                    value: None,
                },
                Op::CacheDelete {
                    cache: CacheId(0x8000_0002),
                    key: b"c".to_vec(),
                },
                Op::CacheTouch {
                    cache: CacheId(0x8000_0002),
                    stamps: vec![1, u64::MAX],
                },
                Op::CacheClear {
                    cache: CacheId(0x8000_0003),
                },
            ],
        };
        assert_eq!(Record::decode(&batch.encode()), Ok(batch));
        let drop = Record::DropKeyspace {
            ts_micros: 9,
            keyspace: KeyspaceId(4),
        };
        assert_eq!(Record::decode(&drop.encode()), Ok(drop));
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let good = Record::Batch {
            ts_micros: 1,
            ops: vec![Op::Put {
                keyspace: KeyspaceId(1),
                key: b"k".to_vec(),
                stored: vec![0],
            }],
        }
        .encode();
        for cut in 0..good.len() {
            assert!(
                Record::decode(&good[..cut]).is_err(),
                "prefix of {cut} bytes"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            Record::decode(&long),
            Err(DecodeError::Malformed(m)) if m.contains("trailing")
        ));
        let mut huge_count = good.clone();
        huge_count[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Record::decode(&huge_count),
            Err(DecodeError::Malformed(_))
        ));
        let mut old = good.clone();
        old[0] = 0;
        assert!(matches!(
            Record::decode(&old),
            Err(DecodeError::Malformed(_))
        ));
        let mut newer = good;
        newer[0] = VERSION + 1;
        assert_eq!(
            Record::decode(&newer),
            Err(DecodeError::Newer {
                found: VERSION + 1,
                known: VERSION
            })
        );
    }

    #[test]
    fn merged_batches_decode_as_one_batch_in_order() {
        let put = |key: &[u8]| Op::Put {
            keyspace: KeyspaceId(1),
            key: key.to_vec(),
            stored: vec![0, 7],
        };
        let first = Record::Batch {
            ts_micros: 10,
            ops: vec![put(b"a"), put(b"b")],
        };
        let second = Record::Batch {
            ts_micros: 20,
            ops: vec![Op::Delete {
                keyspace: KeyspaceId(2),
                key: b"c".to_vec(),
            }],
        };
        let mut merged = first.encode();
        assert!(Record::merge_batches(
            &mut merged,
            &second.encode(),
            usize::MAX
        ));
        let Ok(Record::Batch { ts_micros, ops }) = Record::decode(&merged) else {
            panic!("merged batch does not decode");
        };
        assert_eq!(ts_micros, 10);
        let second_ops = match second {
            Record::Batch { ops, .. } => ops,
            _ => unreachable!(),
        };
        assert_eq!(ops, [vec![put(b"a"), put(b"b")], second_ops].concat());
        // Anything but two batch entries is refused untouched.
        let drop = Record::DropKeyspace {
            ts_micros: 1,
            keyspace: KeyspaceId(4),
        }
        .encode();
        let before = merged.clone();
        assert!(!Record::merge_batches(&mut merged, &drop, usize::MAX));
        assert!(!Record::merge_batches(
            &mut drop.clone(),
            &before,
            usize::MAX
        ));
        assert!(!Record::merge_batches(
            &mut merged,
            &before[..5],
            usize::MAX
        ));
        // Nor beyond the length bound.
        assert!(!Record::merge_batches(
            &mut merged,
            &before,
            2 * before.len() - BATCH_HEADER - 1
        ));
        assert_eq!(merged, before);
    }
}
