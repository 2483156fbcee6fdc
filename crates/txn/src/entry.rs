//! What a partition's executor reads from its log, and the bytes of the two entry kinds this
//! crate defines.
//!
//! ```text
//! kind u8 = 1 (transaction) | sequenced u64 (0: single-partition) | input (see `input`)
//! kind u8 = 2 (remote reads) | txn u128 | sequenced u64 | from u16
//!          | count u32 | (keyspace u32 | key: len u32 + bytes | found u8 | value: len u32 + bytes)*
//! ```

use std::sync::Arc;

use bytes::Bytes;
use notadb_types::{put_bytes, KeyspaceId, PartitionId, Seq, WireReader};

use crate::input::{decode_value, encode_value};
use crate::{TxnError, TxnId, TxnInput, TxnKey};

/// Keys with their values (None: absent, or deleted).
pub type KeyValues = Vec<(TxnKey, Option<Bytes>)>;

const KIND_TXN: u8 = 1;
const KIND_READS: u8 = 2;

/// A participant's local reads of a multi-partition transaction, sent to the participants
/// that run the procedure. Logged in each receiver's partition log, so it is durable and read
/// back in order after a crash; duplicates (one per sending replica, or re-sent after a
/// restart) are ignored by transaction id and sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteReads {
    /// The transaction.
    pub txn: TxnId,
    /// Its sequencer position.
    pub sequenced: Seq,
    /// The sending participant.
    pub from: PartitionId,
    /// The sender's read keys and the values it read (None: absent).
    pub values: KeyValues,
}

/// One entry of a partition log as the executor sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A transaction. `sequenced` is its position in the sequencer log for a multi-partition
    /// transaction (copied into every participant's log), None for a single-partition one.
    Txn {
        /// The logged input.
        input: Arc<TxnInput>,
        /// The sequencer position, for a multi-partition transaction.
        sequenced: Option<Seq>,
    },
    /// Another participant's reads.
    Reads(RemoteReads),
    /// Plain writes (puts and deletes) of this partition: exclusive locks on their keys.
    Write(KeyValues),
    /// Anything that is not keyed (a range delete, a schema change): it waits for every entry
    /// before it and every later entry waits for it. The payload is the driver's.
    Barrier(Bytes),
}

impl Entry {
    /// The bytes of a transaction entry.
    pub fn encode_txn(input: &TxnInput, sequenced: Option<Seq>) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + input.args.len());
        out.push(KIND_TXN);
        out.extend_from_slice(&sequenced.map_or(0, |s| s.0).to_be_bytes());
        input.encode_into(&mut out);
        out
    }

    /// The bytes of a remote-reads entry.
    pub fn encode_reads(reads: &RemoteReads) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + reads.values.len() * 32);
        out.push(KIND_READS);
        out.extend_from_slice(&reads.txn.0.to_be_bytes());
        out.extend_from_slice(&reads.sequenced.0.to_be_bytes());
        out.extend_from_slice(&reads.from.0.to_be_bytes());
        out.extend_from_slice(&(reads.values.len() as u32).to_be_bytes());
        for (key, value) in &reads.values {
            out.extend_from_slice(&key.keyspace.0.to_be_bytes());
            put_bytes(&mut out, &key.key);
            encode_value(&mut out, value.as_ref());
        }
        out
    }

    /// Decodes a transaction or remote-reads entry.
    pub fn decode(bytes: &[u8]) -> Result<Entry, TxnError> {
        let mut r = WireReader::new(bytes);
        let entry = Self::decode_inner(&mut r)?;
        if r.remaining() != 0 {
            return Err(TxnError::Malformed(format!(
                "{} bytes after the entry",
                r.remaining()
            )));
        }
        Ok(entry)
    }

    fn decode_inner(r: &mut WireReader<'_>) -> Result<Entry, TxnError> {
        match r.u8()? {
            KIND_TXN => {
                let sequenced = r.u64()?;
                let input = TxnInput::decode_from(r)?;
                Ok(Entry::Txn {
                    input: Arc::new(input),
                    sequenced: (sequenced != 0).then_some(Seq(sequenced)),
                })
            }
            KIND_READS => {
                let txn = TxnId(u128::from_be_bytes(
                    r.take(16)?.try_into().expect("take returned 16 bytes"),
                ));
                let sequenced = Seq(r.u64()?);
                let from = PartitionId(r.u16()?);
                let count = r.count(13)?;
                let mut values = Vec::with_capacity(count);
                for _ in 0..count {
                    let keyspace = KeyspaceId(r.u32()?);
                    let key = Bytes::copy_from_slice(r.bytes()?);
                    values.push((TxnKey { keyspace, key }, decode_value(r)?));
                }
                Ok(Entry::Reads(RemoteReads {
                    txn,
                    sequenced,
                    from,
                    values,
                }))
            }
            other => Err(TxnError::Malformed(format!(
                "transaction entry kind {other} is unknown"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Access, KeyAccess, TxnEnv};

    #[test]
    fn entries_round_trip_and_refuse_garbage() {
        let mut input = TxnInput::new(
            TxnId(7),
            "p",
            Bytes::new(),
            TxnEnv::default(),
            vec![KeyAccess {
                key: TxnKey::new(KeyspaceId(1), &b"k"[..]),
                partition: PartitionId(0),
                access: Access::ReadWrite,
            }],
        );
        input.validate(1).unwrap();
        let bytes = Entry::encode_txn(&input, Some(Seq(5)));
        assert_eq!(
            Entry::decode(&bytes).unwrap(),
            Entry::Txn {
                input: Arc::new(input.clone()),
                sequenced: Some(Seq(5))
            }
        );
        let reads = RemoteReads {
            txn: TxnId(7),
            sequenced: Seq(5),
            from: PartitionId(3),
            values: vec![
                (TxnKey::new(KeyspaceId(1), &b"k"[..]), None),
                (
                    TxnKey::new(KeyspaceId(1), &b"l"[..]),
                    Some(Bytes::from_static(b"v")),
                ),
            ],
        };
        let bytes = Entry::encode_reads(&reads);
        assert_eq!(Entry::decode(&bytes).unwrap(), Entry::Reads(reads));
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..cut]).is_err());
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Entry::decode(&extra).is_err());
        assert!(Entry::decode(&[9]).is_err());
    }
}
