//! Transactions on a node: submission (keys to partitions, nondeterministic values fixed,
//! appended to the partition's log or to the sequencer log) and effects for log readers here;
//! the forwarder that copies the sequencer log into participants' logs (`forwarder.rs`); the
//! waiters that answer the client once every participant has executed (`waiters.rs`); appends
//! retried until done (`append.rs`).

mod append;
mod forwarder;
mod waiters;

pub(crate) use append::append_until_done;
pub(crate) use forwarder::forward_loop;
pub use waiters::TxnNotifier;
pub(crate) use waiters::TxnWaiters;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use notadb_log::Log;
use notadb_txn::{
    Access, Entry, Finished, KeyAccess, Outcome, Procedures, TxnEnv, TxnError, TxnId, TxnInput,
    TxnKey,
};
use notadb_types::{Element, PartitionId, Seq, Token};
use tokio::sync::watch;
use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64_with_seed};

use crate::{Node, NodeError};
use notadb_record::Record;

/// Hash seeds that derive a transaction's id and its random seed from (node, time, counter).
const ID_SEED: u64 = 0x7478_6e69;
const ENV_SEED: u64 = 0x7365_6564;
const ORIGIN_SEED: u64 = 0x6f72_6967;

/// One declared key of a transaction request.
#[derive(Clone, Debug)]
pub struct TxnKeyRequest {
    /// The keyspace's name.
    pub keyspace: String,
    /// The key's elements, in schema order.
    pub key: Vec<Element>,
    /// How the transaction uses it.
    pub access: Access,
}

/// A transaction to run: the procedure, its argument bytes and its declared keys. `base`
/// gives values for read keys the store may not hold (loaded from the existing database by
/// the caller), `recon` the values a dependent transaction's reconnaissance saw; both name keys
/// by their index in `keys`, with user value bytes (None: absent).
#[derive(Clone, Debug, Default)]
pub struct TxnRequest {
    /// Name of a registered procedure.
    pub procedure: String,
    /// The procedure's argument bytes.
    pub args: Vec<u8>,
    /// Every key the transaction reads or writes.
    pub keys: Vec<TxnKeyRequest>,
    /// Base values of read keys: index in `keys`, value (None: absent).
    pub base: Vec<(usize, Option<Vec<u8>>)>,
    /// Values the reconnaissance saw: index in `keys`, value (None: absent).
    pub recon: Vec<(usize, Option<Vec<u8>>)>,
    /// A registered cache loader (e.g. the PostgreSQL loader) that gives, at submission, the
    /// base value of every read key `base` does not: the overlay on the existing database.
    pub base_loader: Option<String>,
}

/// How a transaction ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// The id it was logged under.
    pub id: TxnId,
    /// Committed (with the procedure's output), aborted by the procedure, or to restart.
    pub outcome: Outcome,
    /// The partitions that took part.
    pub participants: Vec<PartitionId>,
    /// For `Outcome::Restart`, the request position of the key whose value changed.
    pub restart_key: Option<usize>,
    /// Its position in each participant's log: reads carrying these tokens see its writes.
    pub tokens: Vec<Token>,
}

/// The node's transaction part: the registered procedures, the sequencer log of
/// multi-partition transactions, the gate that says whether this node forwards it, and the
/// clients waiting for outcomes.
pub(crate) struct Txns {
    pub procedures: Procedures,
    /// The log multi-partition transactions are appended to, if this node has one.
    pub sequencer: Option<Arc<dyn Log>>,
    /// Forwards the sequencer log only while this holds true; without one, always.
    pub forwarder_gate: Option<watch::Receiver<bool>>,
    pub waiters: Arc<TxnWaiters>,
}

fn txn_error(e: TxnError) -> NodeError {
    match e {
        TxnError::Invalid(m) => NodeError::InvalidArgument(m),
        TxnError::UnknownProcedure { name } => {
            NodeError::NotFound(format!("no procedure named `{name}` is registered"))
        }
        other => NodeError::Internal(other.to_string()),
    }
}

impl Node {
    /// A report from another node (see [`TxnNotifier`]): `partition` finished these
    /// transactions. Answers the clients waiting here for them.
    pub fn txn_reported(&self, partition: PartitionId, finished: &[Finished]) {
        self.inner.txns.waiters.answer(partition, finished);
    }

    /// The tag in the top bits of the ids of transactions this node submits
    /// ([`TxnId::origin`]): where reports about them go.
    pub fn txn_origin(&self) -> u32 {
        origin_of(&self.inner.config.node_id)
    }

    /// The registered procedure names.
    pub fn procedure_names(&self) -> Vec<String> {
        self.inner
            .txns
            .procedures
            .names()
            .map(str::to_string)
            .collect()
    }

    /// Runs a transaction and waits, at most `timeout`, until every participant has executed
    /// it. Bad input is refused before anything is logged. On timeout the transaction may
    /// still commit: the error says so and names its id.
    pub async fn transact(
        &self,
        request: TxnRequest,
        timeout: Duration,
    ) -> Result<TxnResult, NodeError> {
        if *self.inner.shutdown.borrow() {
            return Err(NodeError::Unavailable("the node is shutting down".into()));
        }
        let input = self.prepare_txn(request).await?;
        let participants = input.participants();
        if self.inner.txns.waiters.notifier.is_none() {
            if let Some(p) = participants.iter().find(|p| !self.owns(**p)) {
                return Err(NodeError::FailedPrecondition(format!(
                    "partition {p} is served elsewhere, and this node has no way to learn its transactions' outcomes (no TxnNotifier)"
                )));
            }
        }
        let id = input.id;
        // The sequencer entry has the size of its copies (the sequencer position is a fixed
        // eight bytes, 0 until the forwarder fills it in), so a copy never meets a size limit
        // the sequencer entry passed.
        let payload = Record::Txn {
            ts_micros: self.inner.clock.now_micros(),
            entry: Entry::encode_txn(&input, None),
        }
        .encode();
        let limit = self.inner.config.limits.max_batch_bytes;
        if payload.len() > limit {
            return Err(NodeError::invalid(format!(
                "the transaction's logged input is {} bytes, the limit is {limit} (max_batch_bytes)",
                payload.len()
            )));
        }
        let started = std::time::Instant::now();
        let waiter = self.inner.txns.waiters.register(id, &participants);
        let logged = if input.is_multi_partition() {
            match &self.inner.txns.sequencer {
                Some(sequencer) => sequencer
                    .append(PartitionId(0), Bytes::from(payload))
                    .await
                    .map(|_| ())
                    .map_err(NodeError::from),
                None => Err(NodeError::FailedPrecondition(
                    "multi-partition transactions need a sequencer log, and this node has none"
                        .into(),
                )),
            }
        } else {
            self.append(participants[0], payload).await.map(|_| ())
        };
        if let Err(e) = logged {
            self.inner.txns.waiters.forget(id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, waiter).await {
            Ok(Ok((outcome, tokens))) => {
                let label = match &outcome {
                    Outcome::Committed { .. } => "committed",
                    Outcome::Aborted { .. } => "aborted",
                    Outcome::Restart { .. } => "restart",
                };
                metrics::counter!("notadb_txn_total", "outcome" => label).increment(1);
                metrics::histogram!("notadb_txn_seconds").record(started.elapsed().as_secs_f64());
                let restart_key = match &outcome {
                    Outcome::Restart { key } => (0..input.order.len())
                        .find(|&i| input.declared(i).is_some_and(|k| &k.key == key)),
                    _ => None,
                };
                Ok(TxnResult {
                    id,
                    outcome,
                    participants,
                    restart_key,
                    tokens,
                })
            }
            Ok(Err(_)) => Err(NodeError::Unavailable(format!(
                "transaction {id} was logged; the node stopped before it finished"
            ))),
            Err(_) => {
                self.inner.txns.waiters.forget(id);
                Err(NodeError::DeadlineExceeded(format!(
                    "transaction {id} was logged but had not finished within {timeout:?}; it may still commit"
                )))
            }
        }
    }

    /// Validates a request and builds its logged input.
    async fn prepare_txn(&self, mut request: TxnRequest) -> Result<TxnInput, NodeError> {
        self.inner
            .txns
            .procedures
            .get(&request.procedure)
            .map_err(txn_error)?;
        let limits = &self.inner.config.limits;
        let mut keys = Vec::with_capacity(request.keys.len());
        for (i, k) in request.keys.iter().enumerate() {
            let def = self.keyspace(&k.keyspace)?;
            if def.schema.ttl.is_some() {
                return Err(NodeError::invalid(format!(
                    "keys[{i}]: keyspace `{}` has a TTL; transactions on keyspaces with a TTL are not supported yet",
                    k.keyspace
                )));
            }
            let encoded = def
                .schema
                .encode_key(&k.key)
                .map_err(|e| NodeError::invalid(format!("keys[{i}].key: {e}")))?;
            if encoded.bytes.len() > limits.max_key_bytes {
                return Err(NodeError::invalid(format!(
                    "keys[{i}].key: encoded key is {} bytes, the limit is {} (max_key_bytes)",
                    encoded.bytes.len(),
                    limits.max_key_bytes
                )));
            }
            let partition = self.inner.partitioner.partition_of(encoded.partition_key());
            keys.push(KeyAccess {
                key: TxnKey::new(def.id, encoded.bytes),
                partition,
                access: k.access,
            });
        }
        let values = |list: Vec<(usize, Option<Vec<u8>>)>, what: &str| {
            list.into_iter()
                .map(|(i, v)| {
                    let key = keys.get(i).ok_or_else(|| {
                        NodeError::invalid(format!(
                            "{what}: key index {i}, but only {} keys are declared",
                            keys.len()
                        ))
                    })?;
                    if v.as_ref().is_some_and(|v| v.len() > limits.max_value_bytes) {
                        return Err(NodeError::invalid(format!(
                            "{what}: the value for keys[{i}] is over {} bytes (max_value_bytes)",
                            limits.max_value_bytes
                        )));
                    }
                    Ok((key.key.clone(), v.map(Bytes::from)))
                })
                .collect::<Result<Vec<_>, NodeError>>()
        };
        if let Some(name) = request.base_loader.take() {
            self.load_base(&name, &mut request, &keys).await?;
        }
        let base = values(request.base, "base")?;
        let recon = values(request.recon, "recon")?;
        let now = self.inner.clock.now_micros();
        let n = self
            .inner
            .txns
            .waiters
            .counter
            .fetch_add(1, Ordering::Relaxed);
        let mut seed_bytes = self.inner.config.node_id.as_bytes().to_vec();
        seed_bytes.extend_from_slice(&now.to_be_bytes());
        seed_bytes.extend_from_slice(&n.to_be_bytes());
        let mut input = TxnInput::new(
            TxnId::with_origin(self.txn_origin(), xxh3_128_with_seed(&seed_bytes, ID_SEED)),
            request.procedure,
            request.args,
            TxnEnv {
                now_micros: now,
                seed: xxh3_64_with_seed(&seed_bytes, ENV_SEED),
            },
            keys,
        );
        input.base = base;
        input.recon = recon;
        input
            .validate(self.inner.config.partitions)
            .map_err(txn_error)?;
        Ok(input)
    }
}

impl Node {
    /// For readers of the log that need a transaction's effects (the transmitter): given the
    /// record at `seq` of partition `p`, when it is a transaction, waits until this replica
    /// has applied it and returns a plain batch holding the current value of every key it may
    /// have written in `p` that holds one (absent keys are left out). The state is as of now,
    /// so a key may show a later write; the later write's own entry follows in the log, so a
    /// reader that keeps the newest seq per key converges to the replica's state. None for
    /// records that are not transactions.
    pub async fn txn_effects(
        &self,
        p: PartitionId,
        seq: Seq,
        record: &Record,
    ) -> Result<Option<Record>, NodeError> {
        let Record::Txn { ts_micros, entry } = record else {
            return Ok(None);
        };
        let Ok(Entry::Txn { input, .. }) = Entry::decode(entry) else {
            // Remote reads change nothing; a malformed entry is skipped by replicas too.
            return Ok(Some(Record::Batch {
                ts_micros: *ts_micros,
                ops: Vec::new(),
            }));
        };
        self.wait_for(&crate::Consistency {
            tokens: vec![notadb_types::Token { partition: p, seq }],
            deadline: None,
        })
        .await?;
        let storage = self.inner.storage.clone();
        // The reads run on the blocking pool, not on the async workers.
        let ops = tokio::task::spawn_blocking(move || {
            let view = storage.view();
            let mut ops = Vec::new();
            for k in input
                .keys
                .iter()
                .filter(|k| k.partition == p && k.access.writes())
            {
                let (keyspace, key) = (k.key.keyspace, k.key.key.to_vec());
                // An absent key is left alone: it may never have been written (its value came
                // from a base loader, or the procedure aborted), and a delete would remove the
                // existing database's row. So a procedure's delete is not transmitted.
                if let Some(stored) = view.get(p, keyspace, &key)? {
                    ops.push(notadb_record::Op::Put {
                        keyspace,
                        key,
                        stored: stored.to_vec(),
                    });
                }
            }
            Ok::<_, NodeError>(ops)
        })
        .await
        .map_err(|e| NodeError::Internal(format!("reading a transaction's effects: {e}")))??;
        Ok(Some(Record::Batch {
            ts_micros: *ts_micros,
            ops,
        }))
    }

    /// Loads, through loader `name`, the base value of every read key of `request` that has
    /// none, in key order; the values are logged with the input.
    async fn load_base(
        &self,
        name: &str,
        request: &mut TxnRequest,
        keys: &[KeyAccess],
    ) -> Result<(), NodeError> {
        let loader = self.inner.caches.loaders.get(name).ok_or_else(|| {
            NodeError::NotFound(format!(
                "base_loader: no loader named `{name}` is registered"
            ))
        })?;
        let given: BTreeSet<usize> = request.base.iter().map(|(i, _)| *i).collect();
        let timeout = Duration::from_millis(notadb_cache::DEFAULT_LOAD_TIMEOUT_MS);
        for (i, k) in request.keys.iter().enumerate() {
            if !k.access.reads() || given.contains(&i) {
                continue;
            }
            let key = crate::LoadKey {
                cache: &request.procedure,
                key: &keys[i].key.key,
                elements: &k.key,
            };
            let value = match tokio::time::timeout(timeout, loader.load(key)).await {
                Ok(Ok(value)) => value,
                Ok(Err(message)) => {
                    return Err(NodeError::Unavailable(format!(
                        "base_loader `{name}` failed for keys[{i}]: {message}"
                    )))
                }
                Err(_) => {
                    return Err(NodeError::DeadlineExceeded(format!(
                        "base_loader `{name}` did not answer for keys[{i}] within {timeout:?}"
                    )))
                }
            };
            request.base.push((i, value.map(|v| v.to_vec())));
        }
        Ok(())
    }
}

/// The origin tag of transactions submitted by node `node_id`.
pub fn origin_of(node_id: &str) -> u32 {
    xxh3_64_with_seed(node_id.as_bytes(), ORIGIN_SEED) as u32
}
