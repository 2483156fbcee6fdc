//! Transactions on a node: submission (keys to partitions, nondeterministic values fixed,
//! appended to the partition's log or to the sequencer log), the forwarder that copies the
//! sequencer log into participants' logs, and the waiters that answer the client once every
//! participant has executed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use notadb_log::Log;
use notadb_txn::{
    Access, Entry, Finished, KeyAccess, Outcome, TxnEnv, TxnError, TxnId, TxnInput, TxnKey,
};
use notadb_types::{Element, PartitionId, Seq};
use tokio::sync::oneshot;
use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64_with_seed};

use crate::record::Record;
use crate::{Node, NodeError};

/// Metadata key of the forwarder's position: every sequencer entry up to it is copied.
const FORWARDED_KEY: &[u8] = b"txn/forwarded";
/// Most sequencer entries the forwarder copies per read.
const FORWARD_BATCH: usize = 256;
/// How long one sequencer read waits for entries before checking for shutdown.
const FORWARD_WAIT: Duration = Duration::from_millis(200);
/// Pause before retrying a failed append of the forwarder or of remote reads.
pub(crate) const APPEND_RETRY: Duration = Duration::from_millis(100);
/// Hash seeds that derive a transaction's id and its random seed from (node, time, counter).
const ID_SEED: u64 = 0x7478_6e69;
const ENV_SEED: u64 = 0x7365_6564;
/// Truncate the sequencer log after this many forwarded entries.
const SEQUENCER_TRUNCATE_EVERY: u64 = 4096;

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
    pub procedure: String,
    pub args: Vec<u8>,
    pub keys: Vec<TxnKeyRequest>,
    pub base: Vec<(usize, Option<Vec<u8>>)>,
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
}

struct Waiter {
    remaining: BTreeSet<PartitionId>,
    outcome: Option<Outcome>,
    tx: Option<oneshot::Sender<Outcome>>,
}

/// Clients waiting for their transactions, by id.
#[derive(Default)]
pub(crate) struct TxnWaiters {
    waiting: Mutex<HashMap<TxnId, Waiter>>,
    counter: AtomicU64,
}

impl TxnWaiters {
    fn register(&self, id: TxnId, participants: &[PartitionId]) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiters lock").insert(
            id,
            Waiter {
                remaining: participants.iter().copied().collect(),
                outcome: None,
                tx: Some(tx),
            },
        );
        rx
    }

    /// Drops every waiter: their clients learn the node stopped.
    pub(crate) fn close(&self) {
        self.waiting.lock().expect("waiters lock").clear();
    }

    fn forget(&self, id: TxnId) {
        self.waiting.lock().expect("waiters lock").remove(&id);
    }

    /// Partition `p` finished `f`: the client is answered once every participant has.
    pub(crate) fn finished(&self, p: PartitionId, f: &Finished) {
        let mut waiting = self.waiting.lock().expect("waiters lock");
        let Some(w) = waiting.get_mut(&f.txn) else {
            return;
        };
        w.remaining.remove(&p);
        if let Some(o) = &f.outcome {
            w.outcome.get_or_insert_with(|| o.clone());
        }
        if w.remaining.is_empty() {
            let mut w = waiting.remove(&f.txn).expect("present");
            if let (Some(tx), Some(outcome)) = (w.tx.take(), w.outcome.take()) {
                let _ = tx.send(outcome);
            }
        }
    }
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
    /// The registered procedure names.
    pub fn procedure_names(&self) -> Vec<String> {
        self.inner.procedures.names().map(str::to_string).collect()
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
        if let Some(p) = participants.iter().find(|p| !self.owns(**p)) {
            return Err(NodeError::Unavailable(format!(
                "partition {p} is served by another shard group; transactions across shard groups are not supported yet"
            )));
        }
        let id = input.id;
        let started = std::time::Instant::now();
        let waiter = self.inner.txn_waiters.register(id, &participants);
        let logged = if input.is_multi_partition() {
            match &self.inner.sequencer {
                Some(sequencer) => sequencer
                    .append(PartitionId(0), Bytes::from(input.encode()))
                    .await
                    .map(|_| ())
                    .map_err(NodeError::from),
                None => Err(NodeError::Unavailable(
                    "multi-partition transactions need a sequencer log, and this node has none"
                        .into(),
                )),
            }
        } else {
            let record = Record::Txn {
                ts_micros: self.inner.clock.now_micros(),
                entry: Entry::encode_txn(&input, None),
            };
            self.append(participants[0], record.encode())
                .await
                .map(|_| ())
        };
        if let Err(e) = logged {
            self.inner.txn_waiters.forget(id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, waiter).await {
            Ok(Ok(outcome)) => {
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
                })
            }
            Ok(Err(_)) => Err(NodeError::Unavailable(format!(
                "transaction {id} was logged; the node stopped before it finished"
            ))),
            Err(_) => {
                self.inner.txn_waiters.forget(id);
                Err(NodeError::DeadlineExceeded(format!(
                    "transaction {id} was logged but had not finished within {timeout:?}; it may still commit"
                )))
            }
        }
    }

    /// Validates a request and builds its logged input.
    async fn prepare_txn(&self, mut request: TxnRequest) -> Result<TxnInput, NodeError> {
        self.inner
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
            .txn_waiters
            .counter
            .fetch_add(1, Ordering::Relaxed);
        let mut seed_bytes = self.inner.config.node_id.as_bytes().to_vec();
        seed_bytes.extend_from_slice(&now.to_be_bytes());
        seed_bytes.extend_from_slice(&n.to_be_bytes());
        let mut input = TxnInput::new(
            TxnId(xxh3_128_with_seed(&seed_bytes, ID_SEED)),
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
    /// Loads, through loader `name`, the base value of every read key of `request` that has
    /// none, in key order; the values are logged with the input.
    async fn load_base(
        &self,
        name: &str,
        request: &mut TxnRequest,
        keys: &[KeyAccess],
    ) -> Result<(), NodeError> {
        let loader = self.inner.loaders.get(name).ok_or_else(|| {
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

/// Copies the sequencer log into participants' logs, in sequencer order, each entry to each
/// participant before the next entry. Its position (every entry up to it copied) is stored
/// after each read; after a crash it copies again from there, and executors skip the second
/// copies by their sequencer position.
pub(crate) async fn forward_loop(node: Node) {
    let Some(sequencer) = node.inner.sequencer.clone() else {
        return;
    };
    let mut shutdown = node.inner.shutdown.subscribe();
    let storage = node.inner.storage.clone();
    let mut forwarded = match storage.get_meta(FORWARDED_KEY) {
        Ok(v) => Seq(v
            .and_then(|v| v.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0)),
        Err(e) => {
            tracing::error!(error = %e, "reading the forwarder's position failed; not forwarding");
            return;
        }
    };
    let mut truncated = forwarded;
    loop {
        let read = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            read = sequencer.read(PartitionId(0), forwarded.next(), FORWARD_BATCH, FORWARD_WAIT) => read,
        };
        let entries = match read {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "reading the sequencer log failed, retrying");
                tokio::time::sleep(APPEND_RETRY).await;
                continue;
            }
        };
        let Some(last) = entries.last().map(|e| e.seq) else {
            continue;
        };
        for entry in entries {
            let input = match TxnInput::decode_from(&mut notadb_types::WireReader::new(
                &entry.payload,
            )) {
                Ok(input) => input,
                Err(message) => {
                    tracing::error!(seq = %entry.seq, %message, "skipping a malformed sequencer entry");
                    continue;
                }
            };
            let payload = Record::Txn {
                ts_micros: node.inner.clock.now_micros(),
                entry: Entry::encode_txn(&input, Some(entry.seq)),
            }
            .encode();
            for p in input.participants() {
                match append_until_done(&*node.inner.log, p, &payload, &mut shutdown).await {
                    Some(seq) => node.partition(p).appended(seq),
                    None => return,
                }
            }
        }
        forwarded = last;
        let mut batch = storage.batch();
        batch.put_meta(FORWARDED_KEY, &forwarded.0.to_be_bytes());
        if let Err(e) = storage.commit(batch, false) {
            tracing::error!(error = %e, "storing the forwarder's position failed");
        }
        if forwarded.0 - truncated.0 >= SEQUENCER_TRUNCATE_EVERY {
            if let Err(e) = sequencer
                .truncate_before(PartitionId(0), forwarded.next())
                .await
            {
                tracing::warn!(error = %e, "truncating the sequencer log failed");
            }
            truncated = forwarded;
        }
    }
}

/// Appends `payload` to partition `p`, retrying failures until it is done (its seq) or the
/// node shuts down (None).
pub(crate) async fn append_until_done(
    log: &dyn Log,
    p: PartitionId,
    payload: &[u8],
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<Seq> {
    loop {
        match log.append(p, Bytes::copy_from_slice(payload)).await {
            Ok(seq) => return Some(seq),
            Err(e) => {
                tracing::warn!(partition = %p, error = %e, "a transaction append failed, retrying");
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return None,
                    _ = tokio::time::sleep(APPEND_RETRY) => {}
                }
            }
        }
    }
}
