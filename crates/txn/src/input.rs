//! A transaction's logged input: everything every participant needs to execute it the same way.
//!
//! ```text
//! version u8 = 1 | id u128 | procedure: len u32 + utf-8 | args: len u32 + bytes
//! | now_micros i64 | seed u64
//! | key count u32 | (keyspace u32 | key: len u32 + bytes | partition u16 | access u8)*
//! | (request position u32)* (one per key: the key's index in the request)
//! | base count u32 | (key index u32 | found u8 | value: len u32 + bytes)*
//! | recon count u32 | (key index u32 | found u8 | value: len u32 + bytes)*
//! ```
//!
//! Keys are kept sorted and unique, so the input has one encoding and participants agree on
//! who sends reads to whom without talking.

use std::collections::BTreeSet;

use bytes::Bytes;
use notadb_types::{put_bytes, KeyspaceId, PartitionId, WireReader};

use crate::TxnError;

const VERSION: u8 = 1;

/// Most keys one transaction may declare.
pub const MAX_TXN_KEYS: usize = 4096;
/// Largest procedure argument, in bytes.
pub const MAX_ARGS_BYTES: usize = 1 << 20;
/// Longest procedure name, in bytes.
pub const MAX_PROCEDURE_NAME: usize = 128;

/// A transaction's identity, chosen at submission and unique in the cluster. Remote reads are
/// deduplicated by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId(pub u128);

impl std::fmt::Display for TxnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A key in a keyspace: the keyspace's id and the encoded key tuple.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnKey {
    /// The keyspace.
    pub keyspace: KeyspaceId,
    /// The encoded key.
    pub key: Bytes,
}

impl TxnKey {
    /// A key of `keyspace`.
    pub fn new(keyspace: KeyspaceId, key: impl Into<Bytes>) -> Self {
        TxnKey {
            keyspace,
            key: key.into(),
        }
    }
}

/// How a transaction uses a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Read only: a shared lock.
    Read,
    /// Written without being read: an exclusive lock.
    Write,
    /// Read and written: an exclusive lock.
    ReadWrite,
}

impl Access {
    /// Whether the transaction reads the key.
    pub fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    /// Whether the transaction writes the key (and so locks it exclusively).
    pub fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }

    fn code(self) -> u8 {
        match self {
            Access::Read => 1,
            Access::Write => 2,
            Access::ReadWrite => 3,
        }
    }

    fn from_code(code: u8) -> Result<Access, TxnError> {
        match code {
            1 => Ok(Access::Read),
            2 => Ok(Access::Write),
            3 => Ok(Access::ReadWrite),
            other => Err(TxnError::Malformed(format!(
                "key access {other} is unknown"
            ))),
        }
    }
}

/// One declared key: its partition (computed at submission and logged) and its access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyAccess {
    /// The key.
    pub key: TxnKey,
    /// The partition that owns it.
    pub partition: PartitionId,
    /// How the transaction uses it.
    pub access: Access,
}

/// The nondeterministic inputs of a transaction, fixed once at submission.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnEnv {
    /// "Now", in microseconds since the Unix epoch, as the submitting node saw it.
    pub now_micros: i64,
    /// A random seed the procedure may draw from.
    pub seed: u64,
}

/// Everything a participant needs to execute a transaction: logged once, read by every
/// replica of every participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnInput {
    /// The transaction's id.
    pub id: TxnId,
    /// The registered procedure to run.
    pub procedure: String,
    /// The procedure's argument bytes.
    pub args: Bytes,
    /// Nondeterministic inputs, fixed at submission.
    pub env: TxnEnv,
    /// The read and write sets, sorted by key, one entry per key.
    pub keys: Vec<KeyAccess>,
    /// For each key of the request, in request order, its index in `keys`: procedures name
    /// keys by their request position ([`TxnInput::declared`]).
    pub order: Vec<u32>,
    /// Base values for read keys the store may not hold (loaded from the existing database at
    /// submission): a participant reads the base value when its store has none.
    pub base: Vec<(TxnKey, Option<Bytes>)>,
    /// Reconnaissance (OLLP): values read before submission that decided the key sets. If any
    /// differs at execution, the transaction restarts instead of running.
    pub recon: Vec<(TxnKey, Option<Bytes>)>,
}

impl TxnInput {
    /// An input with the given keys (any order; validated and sorted by [`TxnInput::validate`]).
    pub fn new(
        id: TxnId,
        procedure: impl Into<String>,
        args: impl Into<Bytes>,
        env: TxnEnv,
        keys: Vec<KeyAccess>,
    ) -> Self {
        TxnInput {
            id,
            procedure: procedure.into(),
            args: args.into(),
            order: (0..keys.len() as u32).collect(),
            env,
            keys,
            base: Vec::new(),
            recon: Vec::new(),
        }
    }

    /// The key declared at position `i` of the request.
    pub fn declared(&self, i: usize) -> Option<&KeyAccess> {
        self.order.get(i).map(|&k| &self.keys[k as usize])
    }

    /// Checks the limits and that base and reconnaissance values name declared read keys;
    /// sorts the keys. Every error names what is wrong; a valid input is left sorted.
    pub fn validate(&mut self, partitions: u16) -> Result<(), TxnError> {
        let invalid = |m: String| Err(TxnError::Invalid(m));
        if self.procedure.is_empty() || self.procedure.len() > MAX_PROCEDURE_NAME {
            return invalid(format!(
                "procedure name must be 1 to {MAX_PROCEDURE_NAME} bytes, got {}",
                self.procedure.len()
            ));
        }
        if self.args.len() > MAX_ARGS_BYTES {
            return invalid(format!(
                "args are {} bytes, the limit is {MAX_ARGS_BYTES}",
                self.args.len()
            ));
        }
        if self.keys.is_empty() {
            return invalid("a transaction must declare at least one key".into());
        }
        if self.keys.len() > MAX_TXN_KEYS {
            return invalid(format!(
                "{} keys declared, the limit is {MAX_TXN_KEYS}",
                self.keys.len()
            ));
        }
        if self.order.len() != self.keys.len() {
            return invalid(format!(
                "{} key positions for {} keys",
                self.order.len(),
                self.keys.len()
            ));
        }
        // Sort the keys, remembering where each request position went.
        let request: Vec<KeyAccess> = self
            .order
            .iter()
            .map(|&i| self.keys[i as usize].clone())
            .collect();
        let mut sorted: Vec<u32> = (0..request.len() as u32).collect();
        sorted.sort_by(|&a, &b| request[a as usize].key.cmp(&request[b as usize].key));
        let mut order = vec![0u32; request.len()];
        for (pos, &i) in sorted.iter().enumerate() {
            order[i as usize] = pos as u32;
        }
        self.keys = sorted
            .iter()
            .map(|&i| request[i as usize].clone())
            .collect();
        self.order = order;
        for pair in self.keys.windows(2) {
            if pair[0].key == pair[1].key {
                return invalid(format!(
                    "key {:?} of keyspace {} is declared twice; declare it once with read_write",
                    pair[0].key.key, pair[0].key.keyspace.0
                ));
            }
        }
        if let Some(k) = self.keys.iter().find(|k| k.partition.0 >= partitions) {
            return invalid(format!(
                "key {:?} names partition {}, the cluster has {partitions}",
                k.key.key, k.partition.0
            ));
        }
        for (what, values) in [("base", &mut self.base), ("recon", &mut self.recon)] {
            values.sort_by(|a, b| a.0.cmp(&b.0));
            values.dedup_by(|a, b| a.0 == b.0);
            for (key, _) in values.iter() {
                let declared = self.keys.binary_search_by(|k| k.key.cmp(key));
                match declared {
                    Ok(i) if self.keys[i].access.reads() => {}
                    _ => {
                        return invalid(format!(
                        "{what} value for key {:?} of keyspace {}, which is not in the read set",
                        key.key, key.keyspace.0
                    ))
                    }
                }
            }
        }
        Ok(())
    }

    /// The partitions the transaction touches, ascending.
    pub fn participants(&self) -> Vec<PartitionId> {
        let set: BTreeSet<PartitionId> = self.keys.iter().map(|k| k.partition).collect();
        set.into_iter().collect()
    }

    /// Whether more than one partition takes part.
    pub fn is_multi_partition(&self) -> bool {
        let first = self.keys[0].partition;
        self.keys.iter().any(|k| k.partition != first)
    }

    /// Participants that hold keys the transaction reads: they send their local reads.
    pub fn readers(&self) -> Vec<PartitionId> {
        let set: BTreeSet<PartitionId> = self
            .keys
            .iter()
            .filter(|k| k.access.reads())
            .map(|k| k.partition)
            .collect();
        set.into_iter().collect()
    }

    /// Participants that run the procedure: those that write, or, for a transaction that writes
    /// nothing, the lowest participant (someone must compute the output).
    pub fn active(&self) -> Vec<PartitionId> {
        let set: BTreeSet<PartitionId> = self
            .keys
            .iter()
            .filter(|k| k.access.writes())
            .map(|k| k.partition)
            .collect();
        if set.is_empty() {
            return vec![self.keys.iter().map(|k| k.partition).min().expect("keys")];
        }
        set.into_iter().collect()
    }

    /// The declared access to `key`, if declared.
    pub fn access(&self, key: &TxnKey) -> Option<Access> {
        self.keys
            .binary_search_by(|k| k.key.cmp(key))
            .ok()
            .map(|i| self.keys[i].access)
    }

    /// The base value given for `key`, if any.
    pub fn base_value(&self, key: &TxnKey) -> Option<&Option<Bytes>> {
        self.base
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| &self.base[i].1)
    }

    /// The bytes logged for this input.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.args.len() + self.keys.len() * 24);
        self.encode_into(&mut out);
        out
    }

    /// Appends the logged bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.extend_from_slice(&self.id.0.to_be_bytes());
        put_bytes(out, self.procedure.as_bytes());
        put_bytes(out, &self.args);
        out.extend_from_slice(&self.env.now_micros.to_be_bytes());
        out.extend_from_slice(&self.env.seed.to_be_bytes());
        out.extend_from_slice(&(self.keys.len() as u32).to_be_bytes());
        for k in &self.keys {
            out.extend_from_slice(&k.key.keyspace.0.to_be_bytes());
            put_bytes(out, &k.key.key);
            out.extend_from_slice(&k.partition.0.to_be_bytes());
            out.push(k.access.code());
        }
        for &i in &self.order {
            out.extend_from_slice(&i.to_be_bytes());
        }
        for values in [&self.base, &self.recon] {
            out.extend_from_slice(&(values.len() as u32).to_be_bytes());
            for (key, value) in values {
                let index = self
                    .keys
                    .binary_search_by(|k| k.key.cmp(key))
                    .expect("validated: base and recon keys are declared");
                out.extend_from_slice(&(index as u32).to_be_bytes());
                encode_value(out, value.as_ref());
            }
        }
    }

    /// Decodes bytes written by [`TxnInput::encode`], reading from `r`.
    pub fn decode_from(r: &mut WireReader<'_>) -> Result<TxnInput, TxnError> {
        let version = r.u8()?;
        if version > VERSION {
            return Err(TxnError::Newer {
                what: "transaction input",
                found: version,
                known: VERSION,
            });
        }
        if version != VERSION {
            return Err(TxnError::Malformed(format!(
                "transaction input version {version}, expected {VERSION}"
            )));
        }
        let id = TxnId(u128::from_be_bytes(
            r.take(16)?.try_into().expect("take returned 16 bytes"),
        ));
        let procedure = std::str::from_utf8(r.bytes()?)
            .map_err(|_| TxnError::Malformed("procedure name is not utf-8".into()))?
            .to_string();
        let args = Bytes::copy_from_slice(r.bytes()?);
        let env = TxnEnv {
            now_micros: r.i64()?,
            seed: r.u64()?,
        };
        let count = r.count(11)?;
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            let keyspace = KeyspaceId(r.u32()?);
            let key = Bytes::copy_from_slice(r.bytes()?);
            let partition = PartitionId(r.u16()?);
            let access = Access::from_code(r.u8()?)?;
            keys.push(KeyAccess {
                key: TxnKey { keyspace, key },
                partition,
                access,
            });
        }
        if keys.windows(2).any(|w| w[0].key >= w[1].key) {
            return Err(TxnError::Malformed(
                "transaction keys are not sorted and unique".into(),
            ));
        }
        let mut order = Vec::with_capacity(keys.len());
        let mut seen = vec![false; keys.len()];
        for _ in 0..keys.len() {
            let i = r.u32()?;
            match seen.get_mut(i as usize) {
                Some(s) if !*s => *s = true,
                _ => {
                    return Err(TxnError::Malformed(format!(
                        "key position {i} is out of range or repeated"
                    )))
                }
            }
            order.push(i);
        }
        let mut lists = [Vec::new(), Vec::new()];
        for list in lists.iter_mut() {
            let count = r.count(9)?;
            for _ in 0..count {
                let index = r.u32()? as usize;
                let key = keys
                    .get(index)
                    .ok_or_else(|| {
                        TxnError::Malformed(format!("value names key {index} of {}", keys.len()))
                    })?
                    .key
                    .clone();
                list.push((key, decode_value(r)?));
            }
        }
        let [base, recon] = lists;
        Ok(TxnInput {
            id,
            procedure,
            args,
            env,
            keys,
            order,
            base,
            recon,
        })
    }
}

/// Writes an optional value: `found u8 | value: len u32 + bytes`.
pub(crate) fn encode_value(out: &mut Vec<u8>, value: Option<&Bytes>) {
    out.push(u8::from(value.is_some()));
    put_bytes(out, value.map(|v| &v[..]).unwrap_or_default());
}

/// Reads what [`encode_value`] wrote.
pub(crate) fn decode_value(r: &mut WireReader<'_>) -> Result<Option<Bytes>, TxnError> {
    let found = match r.u8()? {
        0 => false,
        1 => true,
        other => {
            return Err(TxnError::Malformed(format!(
                "value flag {other} is neither 0 nor 1"
            )))
        }
    };
    let bytes = r.bytes()?;
    Ok(found.then(|| Bytes::copy_from_slice(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ks: u32, k: &str, p: u16, access: Access) -> KeyAccess {
        KeyAccess {
            key: TxnKey::new(KeyspaceId(ks), k.as_bytes().to_vec()),
            partition: PartitionId(p),
            access,
        }
    }

    fn sample() -> TxnInput {
        let mut input = TxnInput::new(
            TxnId(0xabc),
            "transfer",
            &b"args"[..],
            TxnEnv {
                now_micros: -3,
                seed: 9,
            },
            vec![
                key(1, "b", 2, Access::ReadWrite),
                key(1, "a", 0, Access::Read),
                key(2, "a", 2, Access::Write),
            ],
        );
        input.base = vec![(TxnKey::new(KeyspaceId(1), &b"a"[..]), None)];
        input.recon = vec![(
            TxnKey::new(KeyspaceId(1), &b"b"[..]),
            Some(Bytes::from_static(b"v")),
        )];
        input.validate(4).unwrap();
        input
    }

    #[test]
    fn round_trips_and_derives_roles() {
        let input = sample();
        let bytes = input.encode();
        let back = TxnInput::decode_from(&mut WireReader::new(&bytes)).unwrap();
        assert_eq!(back, input);
        // Request order survives sorting: b (p2), a (p0), then keyspace 2's a.
        assert_eq!(back.declared(0).unwrap().key.key, Bytes::from_static(b"b"));
        assert_eq!(back.declared(1).unwrap().partition, PartitionId(0));
        assert_eq!(back.declared(2).unwrap().key.keyspace, KeyspaceId(2));
        assert!(back.declared(3).is_none());
        assert_eq!(input.participants(), vec![PartitionId(0), PartitionId(2)]);
        assert_eq!(input.readers(), vec![PartitionId(0), PartitionId(2)]);
        assert_eq!(input.active(), vec![PartitionId(2)]);
        assert!(input.is_multi_partition());
        for cut in 0..bytes.len() {
            assert!(matches!(
                TxnInput::decode_from(&mut WireReader::new(&bytes[..cut])),
                Err(TxnError::Malformed(_))
            ));
        }
    }

    #[test]
    fn a_newer_format_is_told_from_garbage() {
        let mut bytes = sample().encode();
        bytes[0] = VERSION + 1;
        assert_eq!(
            TxnInput::decode_from(&mut WireReader::new(&bytes)),
            Err(TxnError::Newer {
                what: "transaction input",
                found: VERSION + 1,
                known: VERSION
            })
        );
        bytes[0] = 0;
        assert!(matches!(
            TxnInput::decode_from(&mut WireReader::new(&bytes)),
            Err(TxnError::Malformed(_))
        ));
    }

    #[test]
    fn read_only_transactions_run_on_their_lowest_participant() {
        let mut input = TxnInput::new(
            TxnId(1),
            "audit",
            Bytes::new(),
            TxnEnv::default(),
            vec![key(1, "x", 3, Access::Read), key(1, "y", 1, Access::Read)],
        );
        input.validate(4).unwrap();
        assert_eq!(input.active(), vec![PartitionId(1)]);
    }

    #[test]
    fn bad_inputs_are_refused_with_the_reason() {
        type Mutation = Box<dyn Fn(&mut TxnInput)>;
        fn push(i: &mut TxnInput, k: KeyAccess) {
            i.order.push(i.keys.len() as u32);
            i.keys.push(k);
        }
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|i| i.keys.clear()), "at least one key"),
            (Box::new(|i| i.procedure.clear()), "procedure name"),
            (
                Box::new(|i| i.args = Bytes::from(vec![0; MAX_ARGS_BYTES + 1])),
                "args are",
            ),
            (
                Box::new(|i| push(i, key(1, "a", 0, Access::Write))),
                "declared twice",
            ),
            (
                Box::new(|i| push(i, key(1, "z", 9, Access::Write))),
                "names partition 9",
            ),
            (
                Box::new(|i| i.order.pop().map(drop).unwrap_or(())),
                "key positions",
            ),
            (
                Box::new(|i| i.base.push((TxnKey::new(KeyspaceId(2), &b"a"[..]), None))),
                "not in the read set",
            ),
            (
                Box::new(|i| i.recon.push((TxnKey::new(KeyspaceId(7), &b"q"[..]), None))),
                "not in the read set",
            ),
        ];
        for (mutate, expected) in cases {
            let mut input = sample();
            mutate(&mut input);
            let err = input.validate(4).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should say {expected}");
        }
    }
}
