//! Reports of finished transactions: what a replica tells, after it commits, the node whose
//! client waits for the transaction (in a cluster, the participants run on other nodes).
//!
//! ```text
//! version u8 = 1 | partition u16 | count u32
//!   | (seq u64 | txn u128 | outcome: kind u8 (0 none, 1 committed, 2 aborted, 3 restart)
//!      | committed: output len u32 + bytes | aborted: reason len u32 + bytes
//!      | restart: keyspace u32 + key len u32 + bytes)*
//! ```
//!
//! A transaction id carries, in its top 32 bits, the submitting node's [`origin`](TxnId::origin),
//! so a report can be addressed to that node alone.

use bytes::Bytes;
use notadb_types::{put_bytes, KeyspaceId, PartitionId, Seq, WireReader};

use crate::{Finished, Outcome, TxnError, TxnId, TxnKey};

const VERSION: u8 = 1;

impl TxnId {
    /// An id whose top 32 bits are `origin` (the submitting node's tag) and whose low 96 bits
    /// are those of `unique`.
    pub fn with_origin(origin: u32, unique: u128) -> TxnId {
        TxnId((u128::from(origin) << 96) | (unique & ((1u128 << 96) - 1)))
    }

    /// The submitting node's tag.
    pub fn origin(&self) -> u32 {
        (self.0 >> 96) as u32
    }
}

/// The bytes reporting that `partition` finished `finished`.
pub fn encode_report(partition: PartitionId, finished: &[&Finished]) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + finished.len() * 32);
    out.push(VERSION);
    out.extend_from_slice(&partition.0.to_be_bytes());
    out.extend_from_slice(&(finished.len() as u32).to_be_bytes());
    for f in finished {
        out.extend_from_slice(&f.seq.0.to_be_bytes());
        out.extend_from_slice(&f.txn.0.to_be_bytes());
        match &f.outcome {
            None => out.push(0),
            Some(Outcome::Committed { output }) => {
                out.push(1);
                put_bytes(&mut out, output);
            }
            Some(Outcome::Aborted { reason }) => {
                out.push(2);
                put_bytes(&mut out, reason.as_bytes());
            }
            Some(Outcome::Restart { key }) => {
                out.push(3);
                out.extend_from_slice(&key.keyspace.0.to_be_bytes());
                put_bytes(&mut out, &key.key);
            }
        }
    }
    out
}

/// Decodes what [`encode_report`] wrote.
pub fn decode_report(bytes: &[u8]) -> Result<(PartitionId, Vec<Finished>), TxnError> {
    let mut r = WireReader::new(bytes);
    let version = r.u8()?;
    if version > VERSION {
        return Err(TxnError::Newer {
            what: "transaction report",
            found: version,
            known: VERSION,
        });
    }
    let decoded = (|| -> Result<_, TxnError> {
        if version != VERSION {
            return Err(TxnError::Malformed(format!(
                "report version {version}, expected {VERSION}"
            )));
        }
        let partition = PartitionId(r.u16()?);
        let count = r.count(25)?;
        let mut finished = Vec::with_capacity(count);
        for _ in 0..count {
            let seq = Seq(r.u64()?);
            let txn = TxnId(u128::from_be_bytes(
                r.take(16)?.try_into().expect("take returned 16 bytes"),
            ));
            let outcome = match r.u8()? {
                0 => None,
                1 => Some(Outcome::Committed {
                    output: Bytes::copy_from_slice(r.bytes()?),
                }),
                2 => Some(Outcome::Aborted {
                    reason: String::from_utf8_lossy(r.bytes()?).into_owned(),
                }),
                3 => {
                    let keyspace = KeyspaceId(r.u32()?);
                    Some(Outcome::Restart {
                        key: TxnKey::new(keyspace, Bytes::copy_from_slice(r.bytes()?)),
                    })
                }
                other => {
                    return Err(TxnError::Malformed(format!(
                        "outcome kind {other} is unknown"
                    )))
                }
            };
            finished.push(Finished { seq, txn, outcome });
        }
        if r.remaining() != 0 {
            return Err(TxnError::Malformed(format!(
                "{} bytes after the report",
                r.remaining()
            )));
        }
        Ok((partition, finished))
    })();
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_refuse_garbage() {
        let finished = vec![
            Finished {
                seq: Seq(3),
                txn: TxnId::with_origin(0xdead_beef, u128::MAX),
                outcome: None,
            },
            Finished {
                seq: Seq(4),
                txn: TxnId(9),
                outcome: Some(Outcome::Committed {
                    output: Bytes::from_static(b"out"),
                }),
            },
            Finished {
                seq: Seq(5),
                txn: TxnId(10),
                outcome: Some(Outcome::Aborted {
                    reason: "no funds".into(),
                }),
            },
            Finished {
                seq: Seq(6),
                txn: TxnId(11),
                outcome: Some(Outcome::Restart {
                    key: TxnKey::new(KeyspaceId(2), &b"k"[..]),
                }),
            },
        ];
        assert_eq!(finished[0].txn.origin(), 0xdead_beef);
        assert_eq!(finished[0].txn.0 & ((1 << 96) - 1), (1 << 96) - 1);
        let refs: Vec<&Finished> = finished.iter().collect();
        let bytes = encode_report(PartitionId(7), &refs);
        assert_eq!(
            decode_report(&bytes).unwrap(),
            (PartitionId(7), finished.clone())
        );
        for cut in 0..bytes.len() {
            assert!(decode_report(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_report(&longer),
            Err(TxnError::Malformed(_))
        ));
        let mut newer = bytes.clone();
        newer[0] = VERSION + 1;
        assert!(matches!(
            decode_report(&newer),
            Err(TxnError::Newer { found, .. }) if found == VERSION + 1
        ));
    }
}
