//! Procedures every notadb server registers: over 64-bit integer values (8 bytes, big-endian;
//! an absent key reads as 0), and over byte strings. They serve the command line, the
//! benchmark and the cluster tests, and are small examples of procedures.
//!
//! | name | keys | args | writes | output |
//! | --- | --- | --- | --- | --- |
//! | `i64.transfer` | from, to (read-write) | amount (i64) | from − amount, to + amount; aborts when from < amount or amount < 0 | the two new values |
//! | `i64.add` | any number (read-write) | one i64 per key | each key + its delta | the new values |
//! | `i64.sum` | any number (read) | none | nothing | the sum (i64) |
//! | `bytes.append` | any number (read, or read-write to append) | per key: u32 length + bytes | each key's value with its bytes appended (none: unchanged) | per key: u32 length + its value before |

use bytes::Bytes;

use crate::{Abort, Procedures, TxnContext, TxnKey};

/// The value of `key`, an i64 (absent: 0).
fn read_i64(t: &TxnContext<'_>, key: &TxnKey) -> Result<i64, Abort> {
    match t.read(key)? {
        None => Ok(0),
        Some(v) => Ok(i64::from_be_bytes(v[..].try_into().map_err(|_| {
            Abort(format!(
                "the value of key {:?} is {} bytes, not an 8-byte integer",
                key.key,
                v.len()
            ))
        })?)),
    }
}

/// The i64 at position `i` of the arguments.
fn arg_i64(t: &TxnContext<'_>, i: usize) -> Result<i64, Abort> {
    let args = t.args();
    args.get(i * 8..i * 8 + 8)
        .map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| {
            Abort(format!(
                "the arguments are {} bytes; argument {i} needs bytes {}..{}",
                args.len(),
                i * 8,
                i * 8 + 8
            ))
        })
}

fn checked(a: i64, b: i64, what: &str) -> Result<i64, Abort> {
    a.checked_add(b)
        .ok_or_else(|| Abort(format!("{what} overflows an i64")))
}

/// The built-in procedures.
pub fn procedures() -> Procedures {
    let mut p = Procedures::new();
    p.register("i64.transfer", |t: &mut TxnContext<'_>| {
        let amount = arg_i64(t, 0)?;
        if amount < 0 {
            return Err(Abort(format!("the amount {amount} is negative")));
        }
        let (from, to) = (t.key(0)?, t.key(1)?);
        if from == to {
            return Err(Abort("from and to are the same key".into()));
        }
        let (fb, tb) = (read_i64(t, &from)?, read_i64(t, &to)?);
        if fb < amount {
            return Err(Abort(format!("insufficient funds: {fb} < {amount}")));
        }
        let (fb, tb) = (fb - amount, checked(tb, amount, "the credit")?);
        t.put(from, fb.to_be_bytes().to_vec())?;
        t.put(to, tb.to_be_bytes().to_vec())?;
        Ok(Bytes::from([fb.to_be_bytes(), tb.to_be_bytes()].concat()))
    });
    p.register("i64.add", |t: &mut TxnContext<'_>| {
        let n = t.input().keys.len();
        if t.args().len() != n * 8 {
            return Err(Abort(format!(
                "i64.add takes one 8-byte delta per key: {n} keys, {} argument bytes",
                t.args().len()
            )));
        }
        let mut out = Vec::with_capacity(n * 8);
        for i in 0..n {
            let key = t.key(i)?;
            let value = checked(read_i64(t, &key)?, arg_i64(t, i)?, "the sum")?;
            t.put(key, value.to_be_bytes().to_vec())?;
            out.extend_from_slice(&value.to_be_bytes());
        }
        Ok(Bytes::from(out))
    });
    p.register("bytes.append", |t: &mut TxnContext<'_>| {
        let args = t.args().clone();
        let mut at = 0usize;
        let mut out = Vec::new();
        for i in 0..t.input().keys.len() {
            let chunk = args
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
                .and_then(|n| args.get(at + 4..at + 4 + n))
                .ok_or_else(|| {
                    Abort(format!(
                        "the arguments end before key {i}'s length and bytes"
                    ))
                })?;
            at += 4 + chunk.len();
            let key = t.key(i)?;
            let before = t.read(&key)?.cloned().unwrap_or_default();
            out.extend_from_slice(&(before.len() as u32).to_be_bytes());
            out.extend_from_slice(&before);
            if !chunk.is_empty() {
                t.put(key, [&before[..], chunk].concat())?;
            }
        }
        if at != args.len() {
            return Err(Abort(format!(
                "{} argument bytes after the last key's",
                args.len() - at
            )));
        }
        Ok(Bytes::from(out))
    });
    p.register("i64.sum", |t: &mut TxnContext<'_>| {
        let mut sum = 0i64;
        for i in 0..t.input().keys.len() {
            sum = checked(sum, read_i64(t, &t.key(i)?)?, "the sum")?;
        }
        Ok(Bytes::from(sum.to_be_bytes().to_vec()))
    });
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Access, KeyAccess, Outcome, TxnEnv, TxnId, TxnInput};
    use notadb_types::{KeyspaceId, PartitionId};
    use std::collections::BTreeMap;

    fn run(
        name: &str,
        args: Vec<u8>,
        keys: &[(&str, Access, Option<i64>)],
    ) -> (Outcome, BTreeMap<TxnKey, Option<Bytes>>) {
        let keys_access: Vec<KeyAccess> = keys
            .iter()
            .map(|(k, access, _)| KeyAccess {
                key: TxnKey::new(KeyspaceId(1), k.as_bytes().to_vec()),
                partition: PartitionId(0),
                access: *access,
            })
            .collect();
        let mut input = TxnInput::new(
            TxnId(1),
            name,
            Bytes::from(args),
            TxnEnv::default(),
            keys_access,
        );
        input.validate(1).unwrap();
        let reads: BTreeMap<TxnKey, Option<Bytes>> = keys
            .iter()
            .map(|(k, _, v)| {
                (
                    TxnKey::new(KeyspaceId(1), k.as_bytes().to_vec()),
                    v.map(|v| Bytes::from(v.to_be_bytes().to_vec())),
                )
            })
            .collect();
        procedures().execute(&input, &reads).unwrap()
    }

    fn i64s(b: &[u8]) -> Vec<i64> {
        b.chunks(8)
            .map(|c| i64::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn transfer_moves_funds_or_aborts() {
        let rw = Access::ReadWrite;
        let (o, w) = run(
            "i64.transfer",
            30i64.to_be_bytes().to_vec(),
            &[("a", rw, Some(100)), ("b", rw, None)],
        );
        let Outcome::Committed { output } = o else {
            panic!("{o:?}")
        };
        assert_eq!(i64s(&output), [70, 30]);
        assert_eq!(w.len(), 2);
        for (args, why) in [(500i64, "insufficient"), (-1, "negative")] {
            let (o, w) = run(
                "i64.transfer",
                args.to_be_bytes().to_vec(),
                &[("a", rw, Some(100)), ("b", rw, Some(0))],
            );
            assert!(
                matches!(&o, Outcome::Aborted { reason } if reason.contains(why)),
                "{o:?}"
            );
            assert!(w.is_empty());
        }
        let (o, _) = run(
            "i64.transfer",
            vec![1],
            &[("a", rw, Some(1)), ("b", rw, None)],
        );
        assert!(matches!(o, Outcome::Aborted { .. }), "{o:?}");
    }

    #[test]
    fn append_returns_the_values_before_and_appends() {
        let (r, rw) = (Access::Read, Access::ReadWrite);
        let chunk = |b: &[u8]| [&(b.len() as u32).to_be_bytes()[..], b].concat();
        let args = [chunk(b"xy"), chunk(b"")].concat();
        let mut keys_access = Vec::new();
        for (k, a) in [("a", rw), ("b", r)] {
            keys_access.push(KeyAccess {
                key: TxnKey::new(KeyspaceId(1), k.as_bytes().to_vec()),
                partition: PartitionId(0),
                access: a,
            });
        }
        let mut input = TxnInput::new(
            TxnId(1),
            "bytes.append",
            Bytes::from(args),
            TxnEnv::default(),
            keys_access,
        );
        input.validate(1).unwrap();
        let reads: BTreeMap<TxnKey, Option<Bytes>> = [
            (
                TxnKey::new(KeyspaceId(1), &b"a"[..]),
                Some(Bytes::from_static(b"q")),
            ),
            (
                TxnKey::new(KeyspaceId(1), &b"b"[..]),
                Some(Bytes::from_static(b"zz")),
            ),
        ]
        .into_iter()
        .collect();
        let (o, w) = procedures().execute(&input, &reads).unwrap();
        assert_eq!(
            o,
            Outcome::Committed {
                output: Bytes::from([chunk(b"q"), chunk(b"zz")].concat())
            }
        );
        assert_eq!(
            w.into_iter().collect::<Vec<_>>(),
            vec![(
                TxnKey::new(KeyspaceId(1), &b"a"[..]),
                Some(Bytes::from_static(b"qxy"))
            )]
        );
        input.args = Bytes::from(vec![0, 0, 0, 9, 1]);
        let (o, _) = procedures().execute(&input, &reads).unwrap();
        assert!(matches!(o, Outcome::Aborted { .. }), "{o:?}");
    }

    #[test]
    fn add_and_sum() {
        let rw = Access::ReadWrite;
        let args = [5i64.to_be_bytes(), (-7i64).to_be_bytes()].concat();
        let (o, _) = run("i64.add", args, &[("a", rw, Some(1)), ("b", rw, None)]);
        let Outcome::Committed { output } = o else {
            panic!("{o:?}")
        };
        assert_eq!(i64s(&output), [6, -7]);
        let (o, _) = run(
            "i64.add",
            vec![0; 8],
            &[("a", rw, Some(1)), ("b", rw, None)],
        );
        assert!(matches!(o, Outcome::Aborted { .. }), "{o:?}");
        let r = Access::Read;
        let (o, w) = run(
            "i64.sum",
            vec![],
            &[("a", r, Some(1)), ("b", r, None), ("c", r, Some(40))],
        );
        assert_eq!(
            o,
            Outcome::Committed {
                output: Bytes::from(41i64.to_be_bytes().to_vec())
            }
        );
        assert!(w.is_empty());
        let (o, _) = run(
            "i64.sum",
            vec![],
            &[("a", r, Some(i64::MAX)), ("b", r, Some(1))],
        );
        assert!(
            matches!(&o, Outcome::Aborted { reason } if reason.contains("overflow")),
            "{o:?}"
        );
    }
}
