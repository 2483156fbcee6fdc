//! Clients waiting for their transactions: answered once every participant has executed,
//! from this node's apply loops or from other nodes' reports ([`TxnNotifier`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use notadb_txn::{Finished, Outcome, TxnId};
use notadb_types::{PartitionId, Token};
use tokio::sync::oneshot;

struct Waiter {
    remaining: BTreeSet<PartitionId>,
    outcome: Option<Outcome>,
    tokens: Vec<Token>,
    tx: Option<oneshot::Sender<(Outcome, Vec<Token>)>>,
}

/// Tells the nodes of a cluster about transactions finished here: every replica reports what
/// its partitions finished, after committing it, to the node that submitted each transaction
/// (its [`TxnId::origin`]), which passes reports to [`Node::txn_reported`](crate::Node::txn_reported). A report may be
/// lost (the client then times out, and the transaction may have committed) or come more
/// than once (the waiter ignores repeats).
pub trait TxnNotifier: Send + Sync + 'static {
    /// `partition` finished `finished` (all of one applied batch, in log order).
    fn finished(&self, partition: PartitionId, finished: &[Finished]);
}

/// Clients waiting for their transactions, by id.
#[derive(Default)]
pub(crate) struct TxnWaiters {
    waiting: Mutex<HashMap<TxnId, Waiter>>,
    /// Transactions submitted here: one input of their ids.
    pub(super) counter: AtomicU64,
    pub(super) notifier: Option<Arc<dyn TxnNotifier>>,
}

impl TxnWaiters {
    pub(crate) fn new(notifier: Option<Arc<dyn TxnNotifier>>) -> TxnWaiters {
        TxnWaiters {
            notifier,
            ..TxnWaiters::default()
        }
    }

    /// `p` committed `finished`: answers local waiters and tells the cluster.
    pub(crate) fn report(&self, p: PartitionId, finished: &[Finished]) {
        if finished.is_empty() {
            return;
        }
        self.answer(p, finished);
        if let Some(n) = &self.notifier {
            n.finished(p, finished);
        }
    }

    pub(super) fn register(
        &self,
        id: TxnId,
        participants: &[PartitionId],
    ) -> oneshot::Receiver<(Outcome, Vec<Token>)> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiters lock").insert(
            id,
            Waiter {
                remaining: participants.iter().copied().collect(),
                outcome: None,
                tokens: Vec::with_capacity(participants.len()),
                tx: Some(tx),
            },
        );
        rx
    }

    /// Drops every waiter: their clients learn the node stopped.
    pub(crate) fn close(&self) {
        self.waiting.lock().expect("waiters lock").clear();
    }

    pub(super) fn forget(&self, id: TxnId) {
        self.waiting.lock().expect("waiters lock").remove(&id);
    }

    /// Partition `p` finished these: their clients are answered once every participant has.
    pub(crate) fn answer(&self, p: PartitionId, finished: &[Finished]) {
        for f in finished {
            self.finished(p, f);
        }
    }

    /// Partition `p` finished `f`: the client is answered once every participant has.
    fn finished(&self, p: PartitionId, f: &Finished) {
        let mut waiting = self.waiting.lock().expect("waiters lock");
        let Some(w) = waiting.get_mut(&f.txn) else {
            return;
        };
        if !w.remaining.remove(&p) {
            return;
        }
        w.tokens.push(Token {
            partition: p,
            seq: f.seq,
        });
        if let Some(o) = &f.outcome {
            w.outcome.get_or_insert_with(|| o.clone());
        }
        if w.remaining.is_empty() {
            let mut w = waiting.remove(&f.txn).expect("present");
            if let (Some(tx), Some(outcome)) = (w.tx.take(), w.outcome.take()) {
                let _ = tx.send((outcome, std::mem::take(&mut w.tokens)));
            }
        }
    }
}
