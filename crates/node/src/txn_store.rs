//! The transaction executor's view of a partition on this replica: reads through the write
//! batch being built (so later entries of a run see earlier ones), writes into it, and the
//! executor's durable state (finished entries above the watermark, stashed remote reads, the
//! sequencer position at the watermark) in the metadata column family, in the same batch.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use notadb_record::value;
use notadb_storage::{RocksStorage, StorageBatch};
use notadb_txn::{
    Effects, Entry, Position, RemoteReads, Resume, StoreError, TxnError, TxnId, TxnKey, TxnStore,
    WriteOrigin,
};
use notadb_types::{KeyspaceId, PartitionId, Seq, WireReader};

use crate::cache_store::CacheMemory;
use crate::NodeError;
use notadb_record::{DecodeError, Op, Record};

const DONE: &str = "txn/done/";
const STASH: &str = "txn/stash/";
const SEQUENCED: &str = "txn/sequenced/";

fn done_key(p: PartitionId, seq: Seq) -> Vec<u8> {
    format!("{DONE}{:04x}/{:016x}", p.0, seq.0).into_bytes()
}

fn stash_prefix(p: PartitionId, txn: Option<TxnId>) -> Vec<u8> {
    match txn {
        Some(t) => format!("{STASH}{:04x}/{:032x}/", p.0, t.0).into_bytes(),
        None => format!("{STASH}{:04x}/", p.0).into_bytes(),
    }
}

fn sequenced_key(p: PartitionId) -> Vec<u8> {
    format!("{SEQUENCED}{:04x}", p.0).into_bytes()
}

/// Reads a partition's executor state: its watermark is the storage's applied seq.
pub(crate) fn load_resume(storage: &RocksStorage, p: PartitionId) -> Result<Resume, NodeError> {
    let watermark = storage.applied(p)?;
    let max_sequenced = match storage.get_meta(&sequenced_key(p))? {
        Some(v) => Seq(WireReader::new(&v)
            .u64()
            .map_err(|e| NodeError::Internal(e.to_string()))?),
        None => Seq(0),
    };
    let mut completed = BTreeSet::new();
    let prefix = format!("{DONE}{:04x}/", p.0);
    for (k, _) in storage.scan_meta(prefix.as_bytes())? {
        let hex = std::str::from_utf8(&k[prefix.len()..]).unwrap_or_default();
        let seq = u64::from_str_radix(hex, 16)
            .map_err(|_| NodeError::Internal(format!("malformed transaction mark {hex:?}")))?;
        completed.insert(Seq(seq));
    }
    let mut stash = Vec::new();
    for (_, v) in storage.scan_meta(&stash_prefix(p, None))? {
        match Entry::decode(&v) {
            Ok(Entry::Reads(r)) => stash.push(r),
            _ => return Err(NodeError::Internal("malformed stashed remote reads".into())),
        }
    }
    Ok(Resume {
        position: Position {
            watermark,
            max_sequenced,
        },
        completed,
        stash,
    })
}

/// What of the executor's state is persisted, so each run writes only the changes.
pub(crate) struct Persisted {
    marks: BTreeSet<Seq>,
    stashed: BTreeMap<TxnId, BTreeSet<PartitionId>>,
    max_sequenced: Seq,
}

impl Persisted {
    pub(crate) fn new(resume: &Resume) -> Self {
        let mut stashed: BTreeMap<TxnId, BTreeSet<PartitionId>> = BTreeMap::new();
        for r in &resume.stash {
            stashed.entry(r.txn).or_default().insert(r.from);
        }
        Persisted {
            marks: resume.completed.clone(),
            stashed,
            max_sequenced: resume.position.max_sequenced,
        }
    }

    /// Adds the state changes of `fx` to `batch`, with the applied seq (the watermark).
    pub(crate) fn write(&mut self, p: PartitionId, fx: &Effects, batch: &mut StorageBatch<'_>) {
        let watermark = fx.position.watermark;
        for &seq in &fx.completed {
            if seq > watermark && self.marks.insert(seq) {
                batch.put_meta(&done_key(p, seq), &[]);
            }
        }
        let kept = self.marks.split_off(&watermark.next());
        for &seq in &self.marks {
            batch.delete_meta(&done_key(p, seq));
        }
        self.marks = kept;
        for r in &fx.stashed {
            let mut key = stash_prefix(p, Some(r.txn));
            key.extend_from_slice(format!("{:04x}", r.from.0).as_bytes());
            batch.put_meta(&key, &Entry::encode_reads(r));
            self.stashed.entry(r.txn).or_default().insert(r.from);
        }
        for txn in &fx.unstashed {
            for from in self.stashed.remove(txn).unwrap_or_default() {
                let mut key = stash_prefix(p, Some(*txn));
                key.extend_from_slice(format!("{:04x}", from.0).as_bytes());
                batch.delete_meta(&key);
            }
        }
        if fx.position.max_sequenced != self.max_sequenced {
            self.max_sequenced = fx.position.max_sequenced;
            batch.put_meta(&sequenced_key(p), &self.max_sequenced.0.to_be_bytes());
        }
        batch.set_applied(p, watermark);
    }
}

/// Changes made by the run being built, which storage does not show yet: what a transaction
/// later in the run reads.
pub(crate) struct Overlay {
    keys: BTreeMap<(KeyspaceId, Vec<u8>), Option<Vec<u8>>>,
    ranges: Vec<(KeyspaceId, Vec<u8>, Vec<u8>)>,
    /// Whether anything in the run may read (a transaction in it or in flight); when not, the
    /// run's writes go to the batch only.
    reads: bool,
}

impl Overlay {
    /// An empty overlay; `reads` says whether the run may read its own writes.
    pub(crate) fn new(reads: bool) -> Overlay {
        Overlay {
            keys: BTreeMap::new(),
            ranges: Vec::new(),
            reads,
        }
    }
}

/// One partition's storage as the executor sees it during one run of entries.
pub(crate) struct ApplyStore<'a, 'b> {
    pub partition: PartitionId,
    pub storage: &'a RocksStorage,
    pub batch: &'a mut StorageBatch<'b>,
    pub overlay: &'a mut Overlay,
    pub dropped: &'a mut BTreeSet<KeyspaceId>,
    pub caches: &'a CacheMemory,
    pub malformed: u64,
}

impl ApplyStore<'_, '_> {
    fn put(&mut self, ks: KeyspaceId, key: &[u8], stored: Option<&[u8]>) {
        if self.dropped.contains(&ks) {
            return;
        }
        let p = self.partition;
        match stored {
            Some(v) => self.batch.put(p, ks, key, v),
            None => self.batch.delete(p, ks, key),
        }
        if self.overlay.reads {
            self.overlay
                .keys
                .insert((ks, key.to_vec()), stored.map(<[u8]>::to_vec));
        }
    }

    /// Applies a log entry that is not a transaction's, decoded once; a malformed one is
    /// counted and skipped, as on every replica. Returns the entry's append time. An entry of
    /// a newer format is an error: this replica cannot make its changes, and skipping it would
    /// diverge from replicas that can.
    pub(crate) fn apply_entry(
        &mut self,
        seq: Seq,
        payload: &[u8],
    ) -> Result<Option<i64>, StoreError> {
        match Record::decode(payload) {
            Ok(record) => {
                let ts = record.ts_micros();
                self.apply_record(record);
                Ok(Some(ts))
            }
            Err(DecodeError::Malformed(message)) => {
                tracing::error!(
                    partition = %self.partition, seq = %seq, %message,
                    "skipping a malformed log entry"
                );
                self.malformed += 1;
                Ok(None)
            }
            Err(e @ DecodeError::Newer { .. }) => Err(StoreError(format!("entry {seq}: {e}"))),
        }
    }

    /// Applies a record that is not a transaction's, as replicas always have.
    fn apply_record(&mut self, record: Record) {
        let p = self.partition;
        match record {
            Record::Batch { ts_micros, ops } => {
                for op in ops {
                    match op {
                        Op::Put {
                            keyspace,
                            key,
                            stored,
                        } => self.put(keyspace, &key, Some(&stored)),
                        Op::Delete { keyspace, key } => self.put(keyspace, &key, None),
                        Op::DeleteRange {
                            keyspace,
                            start,
                            end,
                        } if !self.dropped.contains(&keyspace) => {
                            self.batch.delete_range(p, keyspace, &start, &end);
                            if self.overlay.reads {
                                self.overlay.keys.retain(|(ks, k), _| {
                                    *ks != keyspace || *k < start || *k >= end
                                });
                                self.overlay.ranges.push((keyspace, start, end));
                            }
                        }
                        Op::DeleteRange { .. } => {}
                        cache_op => {
                            self.caches.apply(p, &cache_op, ts_micros, self.batch);
                        }
                    }
                }
            }
            Record::DropKeyspace { keyspace, .. } => {
                self.batch.drop_keyspace(p, keyspace);
                self.dropped.insert(keyspace);
            }
            Record::Txn { .. } => unreachable!("transaction records are executor entries"),
        }
    }
}

impl TxnStore for ApplyStore<'_, '_> {
    fn get(&mut self, key: &TxnKey) -> Result<Option<Bytes>, StoreError> {
        if !self.overlay.reads {
            // The run was judged to read nothing; answering from storage would miss its writes.
            return Err(StoreError(
                "a read in a run of entries that was not expected to read".to_string(),
            ));
        }
        if self.dropped.contains(&key.keyspace) {
            return Ok(None);
        }
        let stored: Option<Vec<u8>> =
            if let Some(v) = self.overlay.keys.get(&(key.keyspace, key.key.to_vec())) {
                v.clone()
            } else if self.overlay.ranges.iter().any(|(ks, s, e)| {
                *ks == key.keyspace && key.key[..] >= s[..] && key.key[..] < e[..]
            }) {
                None
            } else {
                self.storage
                    .view()
                    .get(self.partition, key.keyspace, &key.key)
                    .map_err(|e| StoreError(e.to_string()))?
                    .map(|v| v.to_vec())
            };
        Ok(stored.map(|s| match value::decode(&s) {
            Some((_, user)) => Bytes::copy_from_slice(user),
            None => Bytes::from(s),
        }))
    }

    fn write(
        &mut self,
        _seq: Seq,
        writes: &[(TxnKey, Option<Bytes>)],
        origin: WriteOrigin,
    ) -> Result<(), StoreError> {
        for (key, v) in writes {
            match (v, origin) {
                (Some(v), WriteOrigin::Procedure) => {
                    let stored = value::encode(None, v);
                    self.put(key.keyspace, &key.key, Some(&stored));
                }
                (v, _) => self.put(key.keyspace, &key.key, v.as_deref()),
            }
        }
        Ok(())
    }

    fn barrier(&mut self, seq: Seq, payload: &Bytes) -> Result<(), StoreError> {
        self.apply_entry(seq, payload).map(|_| ())
    }
}

/// The executor entry for a log entry's bytes: plain puts and deletes lock their keys; a
/// transaction entry is the executor's; anything else runs alone. Also the entry's append
/// time, when it has one. Fails only on a transaction entry of a newer format than this
/// build reads, which the partition must not skip.
pub(crate) fn entry_of(payload: &Bytes) -> Result<(Entry, Option<i64>), TxnError> {
    Ok(match Record::decode(payload) {
        Ok(Record::Batch { ts_micros, ops })
            if ops
                .iter()
                .all(|op| matches!(op, Op::Put { .. } | Op::Delete { .. })) =>
        {
            let writes = ops
                .into_iter()
                .map(|op| match op {
                    Op::Put {
                        keyspace,
                        key,
                        stored,
                    } => (TxnKey::new(keyspace, key), Some(Bytes::from(stored))),
                    Op::Delete { keyspace, key } => (TxnKey::new(keyspace, key), None),
                    _ => unreachable!("filtered above"),
                })
                .collect();
            (Entry::Write(writes), Some(ts_micros))
        }
        Ok(Record::Txn { ts_micros, entry }) => match Entry::decode(&entry) {
            Ok(e) => (e, Some(ts_micros)),
            Err(e @ TxnError::Newer { .. }) => return Err(e),
            // Malformed everywhere alike: runs alone and is skipped.
            Err(_) => (Entry::Barrier(Bytes::new()), Some(ts_micros)),
        },
        Ok(record) => {
            let ts = record.ts_micros();
            (Entry::Barrier(payload.clone()), Some(ts))
        }
        // Applied as a barrier: a malformed record is skipped, a newer one stops the partition.
        Err(_) => (Entry::Barrier(payload.clone()), None),
    })
}

/// Remote reads as a log entry's bytes.
pub(crate) fn reads_record(reads: &RemoteReads, ts_micros: i64) -> Vec<u8> {
    Record::Txn {
        ts_micros,
        entry: Entry::encode_reads(reads),
    }
    .encode()
}
