//! One partition's executor: reads the partition's log in order, schedules every entry with
//! VLL, runs procedures, exchanges reads with the other participants of multi-partition
//! transactions, and keeps the partition's low-watermark.
//!
//! The executor is a deterministic state machine. The driver feeds it log entries in order
//! ([`Executor::step`]), or, for an entry that only writes met while the executor is idle,
//! applies it itself and reports it done ([`Executor::pass`]); and it tells the executor when
//! no entry is available ([`Executor::idle`], where selective contention analysis runs). It
//! reads and writes the partition's data through a [`TxnStore`]; everything else it decides comes back as [`Effects`], which the driver makes
//! durable in the same atomic write as the data of that step, then acts on (sends remote reads,
//! answers clients).
//!
//! **Position.** Entries finish out of log order (a transaction waiting for remote reads does
//! not hold up later ones it does not conflict with). The partition's position is therefore a
//! low-watermark (every entry at or below it has finished) plus the set of finished entries
//! above it. After a crash the driver resumes from that ([`Resume`]) and feeds the log from the
//! watermark + 1: finished entries are skipped, the others run again, and reads re-sent by a
//! re-run are ignored by their receivers.
//!
//! **Duplicates.** A multi-partition transaction carries its sequencer position. The forwarder
//! copies sequencer entries in order, and may copy one again after a crash; a copy whose
//! sequencer position is not above the highest seen earlier in this log is a duplicate and is
//! skipped. Which copy counts is decided by the log alone, so every replica decides the same.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use notadb_types::{PartitionId, Seq};

use crate::entry::{Entry, KeyValues, RemoteReads};
use crate::{Outcome, Procedures, Scheduler, StoreError, TxnError, TxnId, TxnInput, TxnKey};

/// Default cap on blocked entries; beyond it, later entries wait unadmitted, in order.
pub const DEFAULT_MAX_BLOCKED: usize = 4096;

/// The executor's settings. They change timing only, never a result.
#[derive(Clone, Copy, Debug)]
pub struct ExecutorConfig {
    /// Run selective contention analysis when idle.
    pub sca: bool,
    /// Most entries admitted and blocked at once.
    pub max_blocked: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            sca: true,
            max_blocked: DEFAULT_MAX_BLOCKED,
        }
    }
}

/// The partition's data, as the executor reads and writes it. Writes of one step must be
/// visible to later reads of the same step, and become durable together with the step's
/// [`Effects`]. An error is the replica's (I/O, corruption), never a transaction outcome.
pub trait TxnStore {
    /// The current value of `key` in this partition.
    fn get(&mut self, key: &TxnKey) -> Result<Option<Bytes>, StoreError>;
    /// Applies the writes of the entry at `seq` (None deletes): an [`Entry::Write`]'s as
    /// logged, or the values a procedure wrote.
    fn write(
        &mut self,
        seq: Seq,
        writes: &[(TxnKey, Option<Bytes>)],
        origin: WriteOrigin,
    ) -> Result<(), StoreError>;
    /// Applies a barrier entry's payload, with nothing else in flight.
    fn barrier(&mut self, seq: Seq, payload: &Bytes) -> Result<(), StoreError>;
}

/// Where written values come from: the driver may store the two differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOrigin {
    /// An [`Entry::Write`], values exactly as logged.
    Entry,
    /// A procedure's writes, values as the procedure produced them.
    Procedure,
}

/// Local reads to append to other participants' logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReads {
    /// The receivers: the participants that run the procedure, other than the sender.
    pub to: Vec<PartitionId>,
    /// What to append.
    pub reads: RemoteReads,
}

/// A transaction this partition has finished with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// Its position in this partition's log.
    pub seq: Seq,
    /// The transaction.
    pub txn: TxnId,
    /// The outcome, where this partition ran the procedure; None where it only sent reads.
    pub outcome: Option<Outcome>,
}

/// The durable position of a partition's executor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Every entry at or below it has finished.
    pub watermark: Seq,
    /// The highest sequencer position among the entries at or below the watermark.
    pub max_sequenced: Seq,
}

/// What one step decided, beyond the data it wrote through the [`TxnStore`].
#[derive(Debug, Default)]
pub struct Effects {
    /// Reads to append to other partitions' logs (after this step is durable).
    pub sends: Vec<SendReads>,
    /// Transactions finished here.
    pub finished: Vec<Finished>,
    /// Remote reads received for transactions not finished yet: persist them (they may fall
    /// below the watermark before their transaction runs).
    pub stashed: Vec<RemoteReads>,
    /// Transactions finished whose stashed reads can be deleted.
    pub unstashed: Vec<TxnId>,
    /// Entries finished in this step: persist a mark for those above `position.watermark`.
    pub completed: Vec<Seq>,
    /// The position after this step; marks at or below its watermark can be deleted.
    pub position: Position,
}

impl Effects {
    /// Adds the effects of a later step to these.
    pub fn absorb(&mut self, later: Effects) {
        self.sends.extend(later.sends);
        self.finished.extend(later.finished);
        self.stashed.extend(later.stashed);
        self.unstashed.extend(later.unstashed);
        self.completed.extend(later.completed);
        self.position = later.position;
    }
}

/// Where a restarted executor resumes: what the driver persisted from [`Effects`].
#[derive(Clone, Debug, Default)]
pub struct Resume {
    /// The persisted position.
    pub position: Position,
    /// Finished entries above the watermark.
    pub completed: BTreeSet<Seq>,
    /// Stashed remote reads.
    pub stash: Vec<RemoteReads>,
}

enum Task {
    Txn {
        input: Arc<TxnInput>,
        sequenced: Option<Seq>,
        sent: bool,
    },
    Write(Vec<(TxnKey, Option<Bytes>)>),
    Barrier(Bytes),
}

/// One partition's executor.
pub struct Executor {
    partition: PartitionId,
    procedures: Procedures,
    config: ExecutorConfig,
    scheduler: Scheduler,
    tasks: BTreeMap<Seq, Task>,
    runnable: BTreeSet<Seq>,
    active: HashMap<TxnId, Seq>,
    received: HashMap<TxnId, BTreeMap<PartitionId, KeyValues>>,
    backlog: VecDeque<(Seq, Entry)>,
    /// The next log position `step` expects.
    next: Seq,
    /// The lowest unfinished position.
    low: Seq,
    done_above: BTreeSet<Seq>,
    /// Entries finished before a restart, skipped when the log is fed again.
    resumed: BTreeSet<Seq>,
    max_sequenced: Seq,
    /// Changes of `max_sequenced` at positions above the watermark.
    sequenced_marks: BTreeMap<Seq, Seq>,
    max_sequenced_at_watermark: Seq,
}

impl Executor {
    /// An executor for `partition` resuming from `resume` (the default for a new partition).
    pub fn new(
        partition: PartitionId,
        procedures: Procedures,
        config: ExecutorConfig,
        resume: Resume,
    ) -> Self {
        let mut received: HashMap<TxnId, BTreeMap<PartitionId, _>> = HashMap::new();
        for r in resume.stash {
            received.entry(r.txn).or_default().insert(r.from, r.values);
        }
        let first = resume.position.watermark.next();
        let mut low = first;
        let mut done_above = resume.completed.clone();
        while done_above.remove(&low) {
            low = low.next();
        }
        Executor {
            partition,
            procedures,
            config: ExecutorConfig {
                max_blocked: config.max_blocked.max(1),
                ..config
            },
            scheduler: Scheduler::new(),
            tasks: BTreeMap::new(),
            runnable: BTreeSet::new(),
            active: HashMap::new(),
            received,
            backlog: VecDeque::new(),
            next: first,
            low,
            done_above,
            resumed: resume.completed,
            max_sequenced: resume.position.max_sequenced,
            sequenced_marks: BTreeMap::new(),
            max_sequenced_at_watermark: resume.position.max_sequenced,
        }
    }

    /// The next log position to feed.
    pub fn next_seq(&self) -> Seq {
        self.next
    }

    /// The current position.
    pub fn position(&self) -> Position {
        Position {
            watermark: Seq(self.low.0 - 1),
            max_sequenced: self.max_sequenced_at_watermark,
        }
    }

    /// Entries admitted and blocked.
    pub fn blocked(&self) -> usize {
        self.scheduler.blocked()
    }

    /// Entries admitted and not finished.
    pub fn in_flight(&self) -> usize {
        self.scheduler.in_flight()
    }

    /// Entries read but not admitted yet (the blocked cap was reached).
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// A one-line description of each entry in flight, for diagnostics: its position, what it
    /// is, whether it holds its locks, and which participants' reads it still waits for.
    pub fn describe(&self) -> Vec<String> {
        self.tasks
            .iter()
            .map(|(seq, task)| {
                let granted = self.scheduler.is_granted(*seq);
                match task {
                    Task::Txn {
                        input,
                        sequenced,
                        sent,
                    } => {
                        let have = self.received.get(&input.id);
                        let missing: Vec<u16> = input
                            .readers()
                            .into_iter()
                            .filter(|p| *p != self.partition && !have.is_some_and(|h| h.contains_key(p)))
                            .map(|p| p.0)
                            .collect();
                        format!(
                            "{}: txn {} sequenced {:?} granted {granted} sent {sent} missing reads from {missing:?}",
                            seq.0,
                            input.id,
                            sequenced.map(|s| s.0)
                        )
                    }
                    Task::Write(_) => format!("{}: write granted {granted}", seq.0),
                    Task::Barrier(_) => format!("{}: barrier granted {granted}", seq.0),
                }
            })
            .collect()
    }

    /// Feeds the log entry at `seq`, which must be [`Executor::next_seq`].
    pub fn step(
        &mut self,
        seq: Seq,
        entry: Entry,
        store: &mut dyn TxnStore,
    ) -> Result<Effects, TxnError> {
        if seq != self.next {
            return Err(TxnError::Malformed(format!(
                "partition {} expected log entry {} and was given {}",
                self.partition.0, self.next.0, seq.0
            )));
        }
        self.next = seq.next();
        let mut fx = Effects::default();
        if self.resumed.remove(&seq) {
            // Finished before a restart: only its sequencer position still matters, and reads
            // stashed again on the way here are not needed.
            if let Entry::Txn { input, sequenced } = entry {
                // Only the first copy finished the transaction; a duplicate copy finished as a
                // duplicate, and the first copy may still be waiting for these reads.
                let first_copy = sequenced.is_none_or(|s| s > self.max_sequenced);
                if let Some(s) = sequenced {
                    self.note_sequenced(seq, s);
                }
                if first_copy && self.received.remove(&input.id).is_some() {
                    fx.unstashed.push(input.id);
                }
            }
        } else if let Entry::Reads(reads) = entry {
            self.receive(reads, &mut fx);
            self.complete(seq, &mut fx);
        } else if !self.backlog.is_empty() || self.blocked() >= self.config.max_blocked {
            self.backlog.push_back((seq, entry));
        } else {
            self.admit(seq, entry, &mut fx);
        }
        self.run(store, &mut fx)?;
        fx.position = self.position();
        Ok(fx)
    }

    /// Takes entry `seq` as applied by the caller, without admitting it, when the executor is
    /// idle at it: `seq` is the next entry, every earlier one is done, nothing waits in the
    /// backlog and it did not finish before a restart. An entry that only writes (no
    /// transaction, no remote reads), applied then in log order, needs no locks: this is what
    /// [`Executor::step`] would do with it, without the lock table. Returns false, changing
    /// nothing, when the executor is not idle at `seq`; the caller then steps the entry.
    pub fn pass(&mut self, seq: Seq) -> bool {
        let idle = seq == self.next
            && seq == self.low
            && self.backlog.is_empty()
            && self.scheduler.in_flight() == 0
            && !self.resumed.contains(&seq);
        if idle {
            self.next = seq.next();
            self.mark_done(seq);
        }
        idle
    }

    /// Tells the executor no entry is available now: with SCA on, it looks for blocked entries
    /// that can run.
    pub fn idle(&mut self, store: &mut dyn TxnStore) -> Result<Effects, TxnError> {
        let mut fx = Effects::default();
        if self.config.sca && self.runnable.is_empty() && self.blocked() > 0 {
            self.runnable.extend(self.scheduler.contention_pass());
            self.run(store, &mut fx)?;
        }
        fx.position = self.position();
        Ok(fx)
    }

    fn note_sequenced(&mut self, seq: Seq, sequenced: Seq) {
        if sequenced > self.max_sequenced {
            self.max_sequenced = sequenced;
            self.sequenced_marks.insert(seq, sequenced);
        }
    }

    fn admit(&mut self, seq: Seq, entry: Entry, fx: &mut Effects) {
        let (task, locks, barrier) = match entry {
            Entry::Txn { input, sequenced } => {
                if let Some(s) = sequenced {
                    if s <= self.max_sequenced {
                        // A second copy from the forwarder.
                        self.complete(seq, fx);
                        return;
                    }
                    self.note_sequenced(seq, s);
                }
                let locks: Vec<(TxnKey, bool)> = input
                    .keys
                    .iter()
                    .filter(|k| k.partition == self.partition)
                    .map(|k| (k.key.clone(), k.access.writes()))
                    .collect();
                if locks.is_empty() {
                    // Not a participant: nothing to do here.
                    self.complete(seq, fx);
                    return;
                }
                self.active.insert(input.id, seq);
                let task = Task::Txn {
                    input,
                    sequenced,
                    sent: false,
                };
                (task, locks, false)
            }
            Entry::Write(writes) => {
                let keys: BTreeSet<&TxnKey> = writes.iter().map(|(k, _)| k).collect();
                let locks = keys.into_iter().map(|k| (k.clone(), true)).collect();
                (Task::Write(writes), locks, false)
            }
            Entry::Barrier(payload) => (Task::Barrier(payload), Vec::new(), true),
            Entry::Reads(_) => unreachable!("reads are received, not admitted"),
        };
        self.tasks.insert(seq, task);
        if self.scheduler.admit(seq, locks, barrier) {
            self.runnable.insert(seq);
        }
    }

    fn receive(&mut self, reads: RemoteReads, fx: &mut Effects) {
        let waiting = self.active.get(&reads.txn).copied();
        if waiting.is_none() && reads.sequenced <= self.max_sequenced {
            // Its transaction finished here already (or is not ours): a duplicate.
            return;
        }
        let from = self.received.entry(reads.txn).or_default();
        if from.contains_key(&reads.from) {
            return;
        }
        from.insert(reads.from, reads.values.clone());
        fx.stashed.push(reads);
        if let Some(seq) = waiting {
            if self.scheduler.is_granted(seq) {
                self.runnable.insert(seq);
            }
        }
    }

    fn run(&mut self, store: &mut dyn TxnStore, fx: &mut Effects) -> Result<(), TxnError> {
        while let Some(seq) = self.runnable.pop_first() {
            let finished = match self
                .tasks
                .get_mut(&seq)
                .expect("runnable entries have tasks")
            {
                Task::Write(writes) => {
                    store
                        .write(seq, writes, WriteOrigin::Entry)
                        .map_err(|m| storage_error(self.partition, m))?;
                    true
                }
                Task::Barrier(payload) => {
                    store
                        .barrier(seq, payload)
                        .map_err(|m| storage_error(self.partition, m))?;
                    true
                }
                Task::Txn { .. } => self.run_txn(seq, store, fx)?,
            };
            if finished {
                self.finish(seq, fx);
            }
        }
        Ok(())
    }

    /// Runs a granted transaction as far as it can go; true when this partition is done with it.
    fn run_txn(
        &mut self,
        seq: Seq,
        store: &mut dyn TxnStore,
        fx: &mut Effects,
    ) -> Result<bool, TxnError> {
        let partition = self.partition;
        let Some(Task::Txn {
            input,
            sequenced,
            sent,
        }) = self.tasks.get(&seq)
        else {
            unreachable!("run_txn runs transactions");
        };
        let (input, sequenced, sent) = (Arc::clone(input), *sequenced, *sent);
        let mut reads = BTreeMap::new();
        for k in input.keys.iter().filter(|k| k.partition == partition) {
            if k.access.reads() {
                let value = match store.get(&k.key).map_err(|m| storage_error(partition, m))? {
                    Some(v) => Some(v),
                    None => input.base_value(&k.key).cloned().flatten(),
                };
                reads.insert(k.key.clone(), value);
            }
        }
        let mut runs_here = true;
        if let Some(sequenced) = sequenced {
            let active = input.active();
            runs_here = active.contains(&partition);
            if !sent {
                if let Some(Task::Txn { sent, .. }) = self.tasks.get_mut(&seq) {
                    *sent = true;
                }
                let to: Vec<PartitionId> = active.into_iter().filter(|&p| p != partition).collect();
                if !reads.is_empty() && !to.is_empty() {
                    fx.sends.push(SendReads {
                        to,
                        reads: RemoteReads {
                            txn: input.id,
                            sequenced,
                            from: partition,
                            values: reads.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        },
                    });
                }
            }
            if !runs_here {
                fx.finished.push(Finished {
                    seq,
                    txn: input.id,
                    outcome: None,
                });
                return Ok(true);
            }
            let received = self.received.get(&input.id);
            for p in input.readers().into_iter().filter(|&p| p != partition) {
                let Some(values) = received.and_then(|r| r.get(&p)) else {
                    return Ok(false);
                };
                for (key, value) in values {
                    if input
                        .keys
                        .binary_search_by(|k| k.key.cmp(key))
                        .is_ok_and(|i| input.keys[i].partition == p && input.keys[i].access.reads())
                    {
                        reads.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        debug_assert!(runs_here);
        let (outcome, writes) = self.procedures.execute(&input, &reads)?;
        let local: Vec<(TxnKey, Option<Bytes>)> = writes
            .into_iter()
            .filter(|(k, _)| {
                input
                    .keys
                    .binary_search_by(|d| d.key.cmp(k))
                    .is_ok_and(|i| input.keys[i].partition == partition)
            })
            .collect();
        if !local.is_empty() {
            store
                .write(seq, &local, WriteOrigin::Procedure)
                .map_err(|m| storage_error(partition, m))?;
        }
        fx.finished.push(Finished {
            seq,
            txn: input.id,
            outcome: Some(outcome),
        });
        Ok(true)
    }

    fn finish(&mut self, seq: Seq, fx: &mut Effects) {
        if let Some(Task::Txn { input, .. }) = self.tasks.remove(&seq) {
            self.active.remove(&input.id);
            if self.received.remove(&input.id).is_some() {
                fx.unstashed.push(input.id);
            }
        }
        if let Some(next) = self.scheduler.release(seq) {
            self.runnable.insert(next);
        }
        self.complete(seq, fx);
        while self.blocked() < self.config.max_blocked {
            let Some((seq, entry)) = self.backlog.pop_front() else {
                break;
            };
            self.admit(seq, entry, fx);
        }
    }

    fn complete(&mut self, seq: Seq, fx: &mut Effects) {
        fx.completed.push(seq);
        self.mark_done(seq);
    }

    /// Moves the low-watermark past `seq` once everything before it is done.
    fn mark_done(&mut self, seq: Seq) {
        if seq != self.low {
            self.done_above.insert(seq);
            return;
        }
        self.low = self.low.next();
        while self.done_above.remove(&self.low) {
            self.low = self.low.next();
        }
        let watermark = Seq(self.low.0 - 1);
        let later = self.sequenced_marks.split_off(&watermark.next());
        if let Some((_, &s)) = self.sequenced_marks.last_key_value() {
            self.max_sequenced_at_watermark = s;
        }
        self.sequenced_marks = later;
    }
}

fn storage_error(partition: PartitionId, e: StoreError) -> TxnError {
    TxnError::Storage {
        partition,
        message: e.0,
    }
}
