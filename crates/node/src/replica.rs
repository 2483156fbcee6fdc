//! One partition on this replica: its applied position, and the task that applies its log.

use crate::apply::{Applied, Applier};
use crate::txn::{append_until_done, TxnWaiters};
use crate::txn_store::reads_record;
use notadb_log::{Log, LogEntry};
use notadb_record::clock::Clock;
use notadb_storage::RocksStorage;
use notadb_types::{PartitionId, Seq};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long one log read waits for new entries before checking for shutdown again.
const POLL_WAIT: Duration = Duration::from_millis(500);
/// Pause before retrying a log read that failed transiently.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Runs of at most this many entries that only write are applied on the async task itself
/// instead of a blocking thread: two thread hand-offs cost more than the memtable inserts.
const INLINE_APPLY_ENTRIES: usize = 64;

/// Shared view of one partition's progress.
#[derive(Debug)]
pub struct PartitionState {
    pub id: PartitionId,
    applied: watch::Sender<Seq>,
    /// Highest seq known to be in the log.
    last_seq: AtomicU64,
    /// Age of the oldest entry of the batch being applied (0 when caught up), or how long
    /// reads have come back empty while the log holds more entries, micros.
    lag_micros: AtomicI64,
    failed: AtomicBool,
}

impl PartitionState {
    /// State for a partition whose storage is at `applied` and whose log ends at `last`.
    pub fn new(id: PartitionId, applied: Seq, last: Seq) -> PartitionState {
        PartitionState {
            id,
            applied: watch::Sender::new(applied),
            last_seq: AtomicU64::new(last.0.max(applied.0)),
            lag_micros: AtomicI64::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// The applied position.
    pub fn applied(&self) -> Seq {
        *self.applied.borrow()
    }

    /// Highest seq known in the log.
    pub fn last_seq(&self) -> Seq {
        Seq(self.last_seq.load(Ordering::Acquire))
    }

    /// Notes that the log holds `seq`.
    pub fn appended(&self, seq: Seq) {
        self.last_seq.fetch_max(seq.0, Ordering::AcqRel);
    }

    /// Entries in the log not applied yet.
    pub fn lag_records(&self) -> u64 {
        self.last_seq().0.saturating_sub(self.applied().0)
    }

    /// Seconds behind: the age of the oldest entry being applied.
    pub fn lag_seconds(&self) -> f64 {
        if self.lag_records() == 0 {
            0.0
        } else {
            self.lag_micros.load(Ordering::Acquire).max(0) as f64 / 1e6
        }
    }

    /// Whether apply has not failed and the partition is within the lag bounds: at most
    /// `max_records` entries behind the end of its log, applying entries at most `max_secs`
    /// old.
    pub fn is_ready(&self, max_records: u64, max_secs: f64) -> bool {
        !self.is_failed() && self.lag_records() <= max_records && self.lag_seconds() <= max_secs
    }

    /// Whether apply stopped on an error.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Waits until `seq` is applied.
    pub async fn wait_applied(&self, seq: Seq) {
        let mut rx = self.applied.subscribe();
        // The sender lives as long as `self`, so `wait_for` only returns once the value holds.
        let _ = rx.wait_for(|applied| *applied >= seq).await;
    }
}

/// The owner of one partition's apply: reads the log in order and commits each batch of
/// entries together with the applied seq.
pub struct ApplyTask {
    pub storage: Arc<RocksStorage>,
    pub log: Arc<dyn Log>,
    pub state: Arc<PartitionState>,
    pub applier: Option<Applier>,
    pub clock: Arc<dyn Clock>,
    pub batch: usize,
    pub shutdown: watch::Receiver<bool>,
    /// Clients waiting for transactions this partition takes part in.
    pub waiters: Arc<TxnWaiters>,
}

impl ApplyTask {
    /// Runs until shutdown or until applying fails (which stops this partition, never skips).
    pub async fn run(mut self) {
        let p = self.state.id;
        // Marks the partition stopped if this task ends any other way than by shutdown
        // (a panic included).
        let _guard = StopGuard {
            state: self.state.clone(),
            shutdown: self.shutdown.clone(),
        };
        // When reads come back empty although the log holds more entries (the log is
        // unreachable, say), since when: readiness must not report such a stall as no lag.
        let mut stalled_since: Option<Instant> = None;
        let metrics = ApplyMetrics::new(p);
        loop {
            let next = self
                .applier
                .as_ref()
                .expect("the applier is back after each batch")
                .next_seq();
            let read = tokio::select! {
                biased;
                _ = self.shutdown.changed() => return,
                read = self.log.read(p, next, self.batch, POLL_WAIT) => read,
            };
            let entries = match read {
                Ok(entries) if entries.is_empty() => {
                    if self.applier.as_ref().is_some_and(|a| a.in_flight() > 0) {
                        // Give the executor its idle turn (contention analysis).
                        if let Err(stop) = self.apply(Vec::new(), &metrics).await {
                            self.stop(stop);
                            return;
                        }
                    }
                    let stalled = if self.state.lag_records() > 0 {
                        stalled_since.get_or_insert_with(Instant::now).elapsed()
                    } else {
                        stalled_since = None;
                        Duration::ZERO
                    };
                    self.state
                        .lag_micros
                        .store(stalled.as_micros() as i64, Ordering::Release);
                    continue;
                }
                Ok(entries) => {
                    stalled_since = None;
                    entries
                }
                Err(e) if e.is_retryable() => {
                    let stalled = stalled_since.get_or_insert_with(Instant::now).elapsed();
                    self.state
                        .lag_micros
                        .fetch_max(stalled.as_micros() as i64, Ordering::AcqRel);
                    tracing::warn!(partition = %p, error = %e, "log read failed, retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(partition = %p, error = %e, "log read failed; partition stopped");
                    self.state.failed.store(true, Ordering::Release);
                    return;
                }
            };
            if let Err(stop) = self.apply(entries, &metrics).await {
                self.stop(stop);
                return;
            }
        }
    }

    /// Ends the apply loop: a failure stops the partition (marked failed, so the node is not
    /// ready and reads of the partition fail); a shutdown just ends it.
    fn stop(&self, stop: ApplyStop) {
        match stop {
            ApplyStop::ShuttingDown => {}
            ApplyStop::Failed(e) => {
                tracing::error!(partition = %self.state.id, error = %e, "apply failed; partition stopped");
                self.state.failed.store(true, Ordering::Release);
            }
        }
    }

    async fn apply(
        &mut self,
        entries: Vec<LogEntry>,
        metrics: &ApplyMetrics,
    ) -> Result<(), ApplyStop> {
        let applier = self
            .applier
            .take()
            .expect("the applier is back after each batch");
        let expected = applier.next_seq();
        for (i, entry) in entries.iter().enumerate() {
            let want = Seq(expected.0 + i as u64);
            if entry.seq != want {
                self.applier = Some(applier);
                return Err(ApplyStop::Failed(format!(
                    "log returned seq {} where {want} was expected",
                    entry.seq
                )));
            }
        }
        if let Some(last) = entries.last() {
            self.state.appended(last.seq);
        }
        let started = Instant::now();
        let count = entries.len();
        // A run that only writes cannot wait on I/O but a write stall (`apply_inline`).
        let inline = count <= INLINE_APPLY_ENTRIES && applier.only_writes(&entries);
        let (applier, result) = if inline {
            apply_inline(applier, &self.storage, &entries)
        } else {
            self.apply_blocking(applier, entries).await?
        };
        let in_flight = applier.in_flight();
        self.applier = Some(applier);
        let applied = result?;
        metrics.in_flight.set(in_flight as f64);
        if let Some(ts) = applied.first_ts {
            self.state.lag_micros.store(
                self.clock.now_micros().saturating_sub(ts),
                Ordering::Release,
            );
        }
        let p = self.state.id;
        for f in &applied.effects.finished {
            tracing::debug!(partition = %p, seq = %f.seq, txn = %f.txn, outcome = ?f.outcome, "transaction finished");
        }
        self.waiters.report(p, &applied.effects.finished);
        self.state
            .applied
            .send_replace(applied.effects.position.watermark);
        metrics.entries.increment(count as u64);
        metrics.malformed.increment(applied.malformed);
        metrics.seconds.record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Applies `entries` on a blocking thread: transactions may read storage and send reads to
    /// other partitions' logs.
    async fn apply_blocking(
        &self,
        mut applier: Applier,
        entries: Vec<LogEntry>,
    ) -> Result<(Applier, Result<Applied, ApplyStop>), ApplyStop> {
        let storage = self.storage.clone();
        let log = self.log.clone();
        let clock = self.clock.clone();
        let shutdown = self.shutdown.clone();
        let runtime = tokio::runtime::Handle::current();
        let done = tokio::task::spawn_blocking(move || {
            let mut batch = storage.batch();
            let applied = match applier.apply(&storage, &mut batch, &entries) {
                Ok(applied) => applied,
                Err(e) => return (applier, Err(ApplyStop::Failed(e.to_string()))),
            };
            // Reads go to the other participants' logs before this partition records that it
            // sent them: after a crash it sends them again, and receivers drop the copies.
            let ts = clock.now_micros();
            // All at once: reads may arrive in any order (receivers match them by
            // transaction and sender), so one round of appends covers the whole run.
            let sends: Vec<(PartitionId, String, Vec<u8>)> = applied
                .effects
                .sends
                .iter()
                .flat_map(|send| {
                    let payload = reads_record(&send.reads, ts);
                    // Every replica of the sender sends; the log keeps one copy where it can.
                    let id = format!("reads-{}-{}", send.reads.txn, send.reads.from);
                    send.to
                        .iter()
                        .map(move |&to| (to, id.clone(), payload.clone()))
                })
                .collect();
            let sent =
                runtime.block_on(futures::future::join_all(sends.iter().map(
                    |(to, id, payload)| {
                        let mut shutdown = shutdown.clone();
                        let log = &log;
                        async move {
                            append_until_done(&**log, *to, Some(id), payload, &mut shutdown).await
                        }
                    },
                )));
            for (r, (to, id, payload)) in sent.iter().zip(&sends) {
                match r {
                    Ok(Some(_)) => {}
                    Ok(None) => return (applier, Err(ApplyStop::ShuttingDown)),
                    // The partition cannot go on without these reads reaching `to`.
                    Err(e) => {
                        return (
                            applier,
                            Err(ApplyStop::Failed(format!(
                                "sending remote reads ({id}, {} bytes) to partition {to} failed: {e}; a participant's read values must fit in one log entry",
                                payload.len()
                            ))),
                        )
                    }
                }
            }
            applier.persist(&applied.effects, &mut batch);
            let result = storage
                .commit(batch, false)
                .map(|()| applied)
                .map_err(|e| ApplyStop::Failed(e.to_string()));
            (applier, result)
        })
        .await
        .map_err(|e| ApplyStop::Failed(format!("apply task failed: {e}")))?;
        Ok(done)
    }
}

/// Applies `entries`, which only write, on the calling async task. The commit does not wait
/// on a RocksDB write stall there: a stalled write moves to `block_in_place`.
fn apply_inline(
    mut applier: Applier,
    storage: &RocksStorage,
    entries: &[LogEntry],
) -> (Applier, Result<Applied, ApplyStop>) {
    let mut batch = storage.batch();
    let applied = match applier.apply(storage, &mut batch, entries) {
        Ok(applied) => applied,
        Err(e) => return (applier, Err(ApplyStop::Failed(e.to_string()))),
    };
    debug_assert!(applied.effects.sends.is_empty(), "writes send no reads");
    applier.persist(&applied.effects, &mut batch);
    let result = storage
        .commit_or_wait(batch, |write| {
            match tokio::runtime::Handle::current().runtime_flavor() {
                tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(write),
                _ => write(),
            }
        })
        .map(|()| applied)
        .map_err(|e| ApplyStop::Failed(e.to_string()));
    (applier, result)
}

/// Why an apply loop ends before its partition's log does.
#[derive(Debug)]
enum ApplyStop {
    /// The node is shutting down: the loop ends, the partition has not failed.
    ShuttingDown,
    /// The replica cannot go on without diverging (its storage failed, the log skipped a seq,
    /// an entry of a newer format, reads that could not be sent): the partition stops.
    Failed(String),
}

/// The apply loop's metric handles, registered once per partition.
struct ApplyMetrics {
    in_flight: metrics::Gauge,
    entries: metrics::Counter,
    malformed: metrics::Counter,
    seconds: metrics::Histogram,
}

impl ApplyMetrics {
    fn new(p: PartitionId) -> ApplyMetrics {
        ApplyMetrics {
            in_flight: metrics::gauge!("notadb_txn_in_flight", "partition" => p.to_string()),
            entries: metrics::counter!("notadb_applied_entries_total"),
            malformed: metrics::counter!("notadb_apply_malformed_entries_total"),
            seconds: metrics::histogram!("notadb_apply_batch_seconds"),
        }
    }
}

/// Sets `failed` when dropped while the node is not shutting down.
struct StopGuard {
    state: Arc<PartitionState>,
    shutdown: watch::Receiver<bool>,
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        if !*self.shutdown.borrow() {
            self.state.failed.store(true, Ordering::Release);
        }
    }
}
