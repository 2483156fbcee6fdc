//! Coalesced appends: concurrent writes to one partition become one log entry.
//!
//! Each partition lets `max_in_flight` appends run at once. A write that finds them all busy
//! waits in the partition's queue, where it joins the newest queued batch while that stays
//! within `max_bytes`; when an append finishes, the oldest queued batch goes next, as one
//! entry. There is no timer: batches form only while the log is busy, so a lone write is
//! appended at once and a loaded partition sends one entry per round trip (one publish and one
//! ack on JetStream, one produce on Kafka, one frame and one apply step everywhere).
//!
//! Only logs that do not group appends themselves coalesce ([`Log::groups_appends`]): in
//! front of the embedded log, whose group commit already gives concurrent appends one
//! `fdatasync`, holding writes back for a turn cost more than the entries it saved (measured:
//! 44.1k -> 36.6k `Put`/s at 64 clients).
//!
//! Every write in a batch gets the batch's seq as its token, which still means "applied once
//! this seq is". Writes are validated one by one before they queue, so bad input fails only its
//! own write; a batch whose append fails fails every write in it with the same error, which
//! says whether to retry. Mutations keep their order inside the entry, the batch's first write
//! first, and replicas apply the entry atomically.

use std::collections::VecDeque;
use std::sync::Mutex;

#[cfg(doc)]
use notadb_log::Log;
use notadb_types::{PartitionId, Seq};
use tokio::sync::oneshot;

use crate::{Node, NodeError};
use notadb_record::Record;

/// Where an append's outcome goes.
type Waiter = oneshot::Sender<Result<Seq, NodeError>>;

/// The coalescing state of every partition of a node.
pub(crate) struct Coalescer {
    slots: Box<[Mutex<Slot>]>,
    max_bytes: usize,
    max_in_flight: usize,
    /// Writes that waited for a turn and were appended in a batch.
    queued: metrics::Counter,
}

#[derive(Default)]
struct Slot {
    /// Appends running; the queue is empty unless this is `max_in_flight`.
    in_flight: usize,
    queue: VecDeque<Batch>,
}

/// Writes waiting to be appended as one entry.
struct Batch {
    payload: Vec<u8>,
    waiters: Vec<Waiter>,
}

/// What a write does on arrival.
enum Admit {
    /// Append it now; the caller holds one of the partition's turns.
    Lead(Vec<u8>),
    /// It joined a queued batch; the outcome arrives here.
    Queued(oneshot::Receiver<Result<Seq, NodeError>>),
}

impl Coalescer {
    /// State for `partitions` partitions. `max_bytes == 0` turns coalescing off.
    pub(crate) fn new(partitions: u16, max_bytes: usize, max_in_flight: usize) -> Coalescer {
        Coalescer {
            slots: (0..partitions).map(|_| Mutex::default()).collect(),
            max_bytes,
            max_in_flight: max_in_flight.max(1),
            queued: metrics::counter!("notadb_writes_coalesced_total"),
        }
    }

    fn slot(&self, p: PartitionId) -> std::sync::MutexGuard<'_, Slot> {
        self.slots[usize::from(p.0)].lock().expect("coalescer lock")
    }

    fn admit(&self, p: PartitionId, payload: Vec<u8>) -> Admit {
        let mut slot = self.slot(p);
        if slot.in_flight < self.max_in_flight {
            slot.in_flight += 1;
            return Admit::Lead(payload);
        }
        self.queued.increment(1);
        let (tx, rx) = oneshot::channel();
        if let Some(last) = slot.queue.back_mut() {
            if Record::merge_batches(&mut last.payload, &payload, self.max_bytes) {
                last.waiters.push(tx);
                return Admit::Queued(rx);
            }
        }
        slot.queue.push_back(Batch {
            payload,
            waiters: vec![tx],
        });
        Admit::Queued(rx)
    }

    /// Ends one of the partition's turns: the oldest queued batch, which inherits the turn,
    /// or `None` when nothing waits.
    fn release(&self, p: PartitionId) -> Option<Batch> {
        let mut slot = self.slot(p);
        let next = slot.queue.pop_front();
        if next.is_none() {
            slot.in_flight -= 1;
        }
        next
    }
}

/// One of a partition's append turns; passes itself on to the next queued batch when dropped,
/// so a write whose request is cancelled mid-append does not stall its partition.
struct Turn {
    node: Node,
    partition: PartitionId,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(batch) = self.node.inner.partitions.coalescer.release(self.partition) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Shutting down: the waiters hear that their write was not appended.
            return;
        };
        let turn = Turn {
            node: self.node.clone(),
            partition: self.partition,
        };
        runtime.spawn(async move {
            let result = turn.node.append(turn.partition, batch.payload).await;
            for waiter in batch.waiters {
                let _ = waiter.send(result.clone());
            }
            drop(turn);
        });
    }
}

impl Node {
    /// Appends a batch entry (see [`Record::Batch`]) of partition `p`, coalesced with concurrent
    /// ones when the partition's appends are all busy.
    pub(crate) async fn append_batch(
        &self,
        p: PartitionId,
        payload: Vec<u8>,
    ) -> Result<Seq, NodeError> {
        let coalescer = &self.inner.partitions.coalescer;
        if coalescer.max_bytes == 0 || payload.len() > coalescer.max_bytes {
            return self.append(p, payload).await;
        }
        match coalescer.admit(p, payload) {
            Admit::Lead(payload) => {
                let _turn = Turn {
                    node: self.clone(),
                    partition: p,
                };
                self.append(p, payload).await
            }
            Admit::Queued(outcome) => outcome.await.unwrap_or_else(|_| {
                Err(NodeError::Unavailable(
                    "the node stopped before appending the write; it was not written".into(),
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notadb_record::{Op, BATCH_HEADER};
    use notadb_types::KeyspaceId;

    fn batch(keys: &[&[u8]]) -> Vec<u8> {
        Record::Batch {
            ts_micros: 1,
            ops: keys
                .iter()
                .map(|k| Op::Delete {
                    keyspace: KeyspaceId(1),
                    key: k.to_vec(),
                })
                .collect(),
        }
        .encode()
    }

    fn keys_of(payload: &[u8]) -> Vec<Vec<u8>> {
        match Record::decode(payload).expect("a batch") {
            Record::Batch { ops, .. } => ops
                .into_iter()
                .map(|op| match op {
                    Op::Delete { key, .. } => key,
                    other => panic!("unexpected {other:?}"),
                })
                .collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn writes_queue_behind_busy_turns_and_merge_within_the_byte_bound() {
        let one = batch(&[b"a"]).len();
        let c = Coalescer::new(2, one + 2 * (one - BATCH_HEADER), 1);
        let p = PartitionId(1);
        assert!(matches!(c.admit(p, batch(&[b"a"])), Admit::Lead(_)));
        // Another partition has its own turn.
        assert!(matches!(
            c.admit(PartitionId(0), batch(&[b"z"])),
            Admit::Lead(_)
        ));
        for key in [b"b", b"c", b"d", b"e"] {
            assert!(matches!(c.admit(p, batch(&[key])), Admit::Queued(_)));
        }
        // b, c and d fit in one entry; e starts the next.
        let first = c.release(p).expect("a queued batch");
        assert_eq!(keys_of(&first.payload), [b"b", b"c", b"d"]);
        assert_eq!(first.waiters.len(), 3);
        let second = c.release(p).expect("a queued batch");
        assert_eq!(keys_of(&second.payload), [b"e"]);
        assert!(c.release(p).is_none());
        // The turn is free again.
        assert!(matches!(c.admit(p, batch(&[b"f"])), Admit::Lead(_)));
    }

    #[test]
    fn turns_allow_max_in_flight_appends() {
        let c = Coalescer::new(1, 1 << 20, 2);
        let p = PartitionId(0);
        assert!(matches!(c.admit(p, batch(&[b"a"])), Admit::Lead(_)));
        assert!(matches!(c.admit(p, batch(&[b"b"])), Admit::Lead(_)));
        assert!(matches!(c.admit(p, batch(&[b"c"])), Admit::Queued(_)));
        assert!(c.release(p).is_some());
        assert!(c.release(p).is_none());
        assert!(c.release(p).is_none());
        assert!(matches!(c.admit(p, batch(&[b"d"])), Admit::Lead(_)));
    }
}
