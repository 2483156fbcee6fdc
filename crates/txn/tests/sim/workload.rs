//! The test workloads: bank transfers and audits over accounts that start from base values
//! (as if loaded from an existing database), and list appends for the history checker.

use std::collections::BTreeMap;

use bytes::Bytes;
use notadb_txn::{
    Abort, Access, KeyAccess, MicroOp, Procedures, TxnContext, TxnEnv, TxnId, TxnInput, TxnKey,
};
use notadb_types::{KeyspaceId, PartitionId};
use rand::rngs::StdRng;
use rand::Rng;
use xxhash_rust::xxh3::xxh3_64;

pub const ACCOUNTS: KeyspaceId = KeyspaceId(1);
pub const LISTS: KeyspaceId = KeyspaceId(2);
pub const INITIAL_BALANCE: i64 = 100;

pub fn account(a: u32) -> TxnKey {
    TxnKey::new(ACCOUNTS, a.to_be_bytes().to_vec())
}

pub fn list(k: u64) -> TxnKey {
    TxnKey::new(LISTS, k.to_be_bytes().to_vec())
}

pub fn partition_of(key: &TxnKey, partitions: u16) -> PartitionId {
    PartitionId((xxh3_64(&key.key) % u64::from(partitions)) as u16)
}

fn balance(value: Option<&Bytes>) -> Result<i64, Abort> {
    let v = value.ok_or("account has no balance")?;
    let bytes: [u8; 8] = v[..].try_into().map_err(|_| "balance is not 8 bytes")?;
    Ok(i64::from_be_bytes(bytes))
}

fn decode_list(value: Option<&Bytes>) -> Vec<u64> {
    value
        .map(|v| {
            v.chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
                .collect()
        })
        .unwrap_or_default()
}

fn encode_list(values: &[u64]) -> Bytes {
    values
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect::<Vec<u8>>()
        .into()
}

/// transfer(from u32, to u32, amount i64): aborts on insufficient funds; outputs the payer's
/// new balance. audit: outputs the sum of every read balance. append: runs list micro-ops
/// (op u8: 1 append, 2 read | key u64 | value u64), outputs each read list.
pub fn procedures() -> Procedures {
    let mut p = Procedures::new();
    p.register("transfer", |t: &mut TxnContext<'_>| {
        let a = t.args().clone();
        let from = u32::from_be_bytes(a[0..4].try_into().expect("args"));
        let to = u32::from_be_bytes(a[4..8].try_into().expect("args"));
        let amount = i64::from_be_bytes(a[8..16].try_into().expect("args"));
        let fb = balance(t.read(&account(from))?)?;
        let tb = balance(t.read(&account(to))?)?;
        if fb < amount {
            return Err(Abort(format!("insufficient funds: {fb} < {amount}")));
        }
        t.put(account(from), (fb - amount).to_be_bytes().to_vec())?;
        t.put(account(to), (tb + amount).to_be_bytes().to_vec())?;
        Ok(Bytes::from((fb - amount).to_be_bytes().to_vec()))
    });
    p.register("audit", |t: &mut TxnContext<'_>| {
        let keys: Vec<TxnKey> = t.input().keys.iter().map(|k| k.key.clone()).collect();
        let mut sum = 0i64;
        for k in &keys {
            sum += balance(t.read(k)?)?;
        }
        Ok(Bytes::from(sum.to_be_bytes().to_vec()))
    });
    p.register("append", |t: &mut TxnContext<'_>| {
        let args = t.args().clone();
        let mut lists: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut out = Vec::new();
        for op in args.chunks_exact(17) {
            let key = u64::from_be_bytes(op[1..9].try_into().expect("8"));
            let value = u64::from_be_bytes(op[9..17].try_into().expect("8"));
            let l = match lists.entry(key) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(decode_list(t.read(&list(key))?))
                }
            };
            if op[0] == 1 {
                l.push(value);
                let encoded = encode_list(l);
                t.put(list(key), encoded)?;
            } else {
                out.extend_from_slice(&(l.len() as u32).to_be_bytes());
                for v in l.iter() {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        Ok(Bytes::from(out))
    });
    p
}

/// The micro-ops of an append transaction and, given its output, what its reads saw.
pub fn append_history(input: &TxnInput, output: Option<&Bytes>) -> Vec<MicroOp> {
    let mut reads = output.map(|o| {
        let mut r = Vec::new();
        let mut pos = 0;
        while pos < o.len() {
            let n = u32::from_be_bytes(o[pos..pos + 4].try_into().expect("4")) as usize;
            pos += 4;
            let values = (0..n)
                .map(|i| u64::from_be_bytes(o[pos + i * 8..pos + i * 8 + 8].try_into().expect("8")))
                .collect::<Vec<u64>>();
            pos += n * 8;
            r.push(values);
        }
        r.into_iter()
    });
    input
        .args
        .chunks_exact(17)
        .map(|op| {
            let key = u64::from_be_bytes(op[1..9].try_into().expect("8"));
            let value = u64::from_be_bytes(op[9..17].try_into().expect("8"));
            if op[0] == 1 {
                MicroOp::Append { key, value }
            } else {
                let values = reads.as_mut().and_then(|r| r.next()).unwrap_or_default();
                MicroOp::Read { key, values }
            }
        })
        .collect()
}

/// The shape of a generated workload.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub partitions: u16,
    pub accounts: u32,
    /// Accounts 0..hot are hot.
    pub hot: u32,
    /// Share of account picks that go to a hot account.
    pub hot_share: f64,
    /// Share of transfers whose two accounts are in different partitions.
    pub multi_share: f64,
    /// Share of audits (read every account) and of list-append transactions.
    pub audit_share: f64,
    pub append_share: f64,
    pub lists: u64,
}

pub struct Generator {
    pub shape: Shape,
    by_partition: Vec<Vec<u32>>,
    next_id: u128,
    next_value: u64,
}

impl Generator {
    pub fn new(shape: Shape) -> Self {
        let mut by_partition = vec![Vec::new(); usize::from(shape.partitions)];
        for a in 0..shape.accounts {
            by_partition[usize::from(partition_of(&account(a), shape.partitions).0)].push(a);
        }
        Generator {
            shape,
            by_partition,
            next_id: 1,
            next_value: 1,
        }
    }

    fn key(&self, key: TxnKey, access: Access) -> KeyAccess {
        let partition = partition_of(&key, self.shape.partitions);
        KeyAccess {
            key,
            partition,
            access,
        }
    }

    fn pick(&self, rng: &mut StdRng) -> u32 {
        if self.shape.hot > 0 && rng.random_bool(self.shape.hot_share) {
            rng.random_range(0..self.shape.hot)
        } else {
            rng.random_range(0..self.shape.accounts)
        }
    }

    /// Base values for accounts: every account starts at INITIAL_BALANCE, as loaded at
    /// submission from the existing database.
    fn with_base(&self, mut input: TxnInput) -> TxnInput {
        input.base = input
            .keys
            .iter()
            .filter(|k| k.key.keyspace == ACCOUNTS)
            .map(|k| {
                (
                    k.key.clone(),
                    Some(Bytes::from(INITIAL_BALANCE.to_be_bytes().to_vec())),
                )
            })
            .collect();
        input
    }

    pub fn next(&mut self, rng: &mut StdRng) -> TxnInput {
        let id = TxnId(self.next_id);
        self.next_id += 1;
        let env = TxnEnv {
            now_micros: self.next_id as i64,
            seed: rng.random(),
        };
        let roll: f64 = rng.random();
        let mut input = if roll < self.shape.audit_share {
            let keys = (0..self.shape.accounts)
                .map(|a| self.key(account(a), Access::Read))
                .collect();
            self.with_base(TxnInput::new(id, "audit", Bytes::new(), env, keys))
        } else if roll < self.shape.audit_share + self.shape.append_share {
            let mut args = Vec::new();
            let mut keys: BTreeMap<TxnKey, Access> = BTreeMap::new();
            for _ in 0..rng.random_range(1..=3) {
                let k = rng.random_range(0..self.shape.lists);
                let append = rng.random_bool(0.5);
                args.push(if append { 1 } else { 2 });
                args.extend_from_slice(&k.to_be_bytes());
                args.extend_from_slice(&self.next_value.to_be_bytes());
                self.next_value += 1;
                let a = keys.entry(list(k)).or_insert(Access::Read);
                if append {
                    *a = Access::ReadWrite;
                }
            }
            let keys = keys.into_iter().map(|(k, a)| self.key(k, a)).collect();
            TxnInput::new(id, "append", args, env, keys)
        } else {
            let from = self.pick(rng);
            let fp = usize::from(partition_of(&account(from), self.shape.partitions).0);
            let multi = self.shape.partitions > 1 && rng.random_bool(self.shape.multi_share);
            let to = loop {
                let to = if multi {
                    self.pick(rng)
                } else {
                    let local = &self.by_partition[fp];
                    local[rng.random_range(0..local.len())]
                };
                let tp = usize::from(partition_of(&account(to), self.shape.partitions).0);
                if to != from && (multi == (tp != fp) || self.by_partition[fp].len() < 2) {
                    break to;
                }
            };
            let amount: i64 = rng.random_range(1..=60);
            let mut args = Vec::with_capacity(16);
            args.extend_from_slice(&from.to_be_bytes());
            args.extend_from_slice(&to.to_be_bytes());
            args.extend_from_slice(&amount.to_be_bytes());
            let keys = vec![
                self.key(account(from), Access::ReadWrite),
                self.key(account(to), Access::ReadWrite),
            ];
            self.with_base(TxnInput::new(id, "transfer", args, env, keys))
        };
        input
            .validate(self.shape.partitions)
            .expect("generated inputs are valid");
        input
    }
}
