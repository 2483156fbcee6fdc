//! The loops around the core: per connection, read the partitions' logs, gather a batch, write
//! it with its positions, retry with backoff; plus status, lag and `flush`.

use crate::batch::Batch;
use crate::config::{TableMapping, TransmitterConfig};
use crate::mapping::Table;
use crate::sink::{self, Sink};
use crate::TransmitterError;
use async_trait::async_trait;
use notadb_log::{Log, LogEntry, LogError};
use notadb_record::{now_micros, DecodeError, KeyspaceDef, Op, Record};
use notadb_types::{KeyspaceId, PartitionId, Seq, Token};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The name the transmitter's log holds go under (`Node::hold_log`).
pub const LOG_HOLDER: &str = "transmitter";
/// How long one log read waits for entries.
const READ_WAIT: Duration = Duration::from_millis(500);
/// Pause after a retryable log read error.
const READ_RETRY: Duration = Duration::from_millis(200);
/// How often the end of each partition's log is sampled for lag.
const LAG_SAMPLE: Duration = Duration::from_secs(1);
/// How often a standby (not the active transmitter) reads the committed positions.
const STANDBY_POLL: Duration = Duration::from_secs(2);
/// How often `flush` reads the committed positions.
const FLUSH_POLL: Duration = Duration::from_millis(10);
/// How long an entry naming a keyspace the node does not know yet waits for the catalog.
const CATALOG_WAIT: Duration = Duration::from_secs(10);

/// One partition's progress.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionProgress {
    /// The partition.
    pub partition: PartitionId,
    /// Everything up to this seq is in the database.
    pub transmitted: Seq,
    /// The end of the log when last sampled.
    pub last: Seq,
    /// Log entries not yet in the database: `last` minus `transmitted`.
    pub lag_records: u64,
    /// Age of the oldest entry read but not yet committed, seconds.
    pub lag_seconds: f64,
}

/// What `notadb status` and `/metrics` show.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TransmitterStatus {
    /// Whether this node writes (in a cluster, one replica per shard group does).
    pub active: bool,
    /// Each partition's progress.
    pub partitions: Vec<PartitionProgress>,
    /// Rows written since the transmitter was created.
    pub rows: u64,
    /// Changes written to the dead-letter table since the transmitter was created.
    pub dead_letters: u64,
    /// Errors retried since the transmitter was created.
    pub retries: u64,
    /// The latest error, cleared by the next commit.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct State {
    status: TransmitterStatus,
    /// Append time of the oldest entry read and not committed, per partition.
    pending_since: BTreeMap<PartitionId, i64>,
}

/// What the transmitter needs of the node it runs beside (the server implements it for
/// `notadb_node::Node`).
#[async_trait]
pub trait Host: Send + Sync + 'static {
    /// Keeps `partition`'s log entries from `from` on, under the name `holder`: the log may
    /// drop only entries before the lowest hold.
    fn hold_log(&self, holder: &str, partition: PartitionId, from: Seq);
    /// The keyspaces the node's catalog holds now.
    fn keyspaces(&self) -> Vec<KeyspaceDef>;
    /// For the entry `record` at `seq` of `partition`: when it is a transaction, its effects
    /// as a plain batch once this replica has applied it (`Node::txn_effects`); `None` for
    /// any other entry.
    async fn txn_effects(
        &self,
        partition: PartitionId,
        seq: Seq,
        record: &Record,
    ) -> Result<Option<Record>, HostError>;
}

/// A failure of the node a transmitter runs beside.
pub type HostError = Box<dyn std::error::Error + Send + Sync>;

struct Inner {
    config: TransmitterConfig,
    log: Arc<dyn Log>,
    host: Arc<dyn Host>,
    partitions: Vec<PartitionId>,
    state: Mutex<State>,
    /// The one connection every `flush` shares (tokio-postgres pipelines their queries),
    /// opened by the first and again after it closes.
    flush_client: tokio::sync::Mutex<Option<Arc<tokio_postgres::Client>>>,
}

/// Writes the changes of mapped keyspaces in `partitions` to PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct Transmitter {
    inner: Arc<Inner>,
}

/// Capped exponential backoff.
struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    fn new(config: &TransmitterConfig) -> Backoff {
        Backoff {
            next: config.retry_initial(),
            initial: config.retry_initial(),
            max: config.retry_max(),
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Sleeps `d` unless `stop` fires first; true when stopped.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = stop.wait_for(|s| *s) => true,
        _ = tokio::time::sleep(d) => false,
    };
    stopped || *stop.borrow()
}

/// The mapped tables one connection writes, by keyspace id.
struct Tables {
    list: Vec<Table>,
    by_id: BTreeMap<KeyspaceId, usize>,
    /// Ids of keyspaces known not to be mapped.
    ignored: BTreeSet<KeyspaceId>,
}

impl Tables {
    /// The keyspaces `record` writes that are neither mapped nor known to be ignored.
    fn unknown<'a>(&'a self, record: &'a Record) -> impl Iterator<Item = KeyspaceId> + 'a {
        let ops = match record {
            Record::Batch { ops, .. } => ops.as_slice(),
            _ => &[],
        };
        // Cache ops name no keyspace: they are not transmitted.
        ops.iter()
            .filter_map(Op::keyspace)
            .filter(|k| !self.by_id.contains_key(k) && !self.ignored.contains(k))
    }
}

/// Aborts the reader tasks when dropped.
struct Readers(Vec<JoinHandle<()>>);

impl Drop for Readers {
    fn drop(&mut self) {
        for r in &self.0 {
            r.abort();
        }
    }
}

type Chunk = Result<(PartitionId, Vec<LogEntry>), LogError>;

impl Transmitter {
    /// A transmitter for `partitions` of `log`, with the keyspaces of `host`, the node it runs
    /// beside. Holds every entry of those partitions in the node's log until positions are known.
    pub fn new(
        config: TransmitterConfig,
        log: Arc<dyn Log>,
        host: Arc<dyn Host>,
        partitions: Vec<PartitionId>,
    ) -> Result<Transmitter, TransmitterError> {
        config.validate().map_err(TransmitterError::Config)?;
        for &p in &partitions {
            host.hold_log(LOG_HOLDER, p, Seq(0));
        }
        let status = TransmitterStatus {
            partitions: partitions
                .iter()
                .map(|&partition| PartitionProgress {
                    partition,
                    transmitted: Seq(0),
                    last: Seq(0),
                    lag_records: 0,
                    lag_seconds: 0.0,
                })
                .collect(),
            ..Default::default()
        };
        Ok(Transmitter {
            inner: Arc::new(Inner {
                config,
                log,
                host,
                partitions,
                state: Mutex::new(State {
                    status,
                    pending_since: BTreeMap::new(),
                }),
                flush_client: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Progress, lag and counters now.
    pub fn status(&self) -> TransmitterStatus {
        self.inner.status()
    }

    /// Writes until `stop` fires: one loop per connection, plus lag sampling.
    pub async fn run_active(&self, stop: watch::Receiver<bool>) {
        self.set_active(true);
        let connections = self.inner.config.connections;
        let mut loops = Vec::with_capacity(connections + 1);
        for i in 0..connections {
            let parts: Vec<PartitionId> = self
                .inner
                .partitions
                .iter()
                .copied()
                .filter(|p| self.inner.config.connection_of(p.0) == i)
                .collect();
            if !parts.is_empty() {
                loops.push(tokio::spawn(
                    self.inner.clone().connection_loop(parts, stop.clone()),
                ));
            }
        }
        loops.push(tokio::spawn(self.inner.clone().sample_loop(stop.clone())));
        for l in loops {
            let _ = l.await;
        }
        self.set_active(false);
    }

    /// Until `stop` fires, follows the positions another transmitter commits (so this node's
    /// log keeps what a takeover would need) and samples lag.
    pub async fn run_standby(&self, mut stop: watch::Receiver<bool>) {
        let sampler = tokio::spawn(self.inner.clone().sample_loop(stop.clone()));
        let mut client = None;
        loop {
            if client.is_none() {
                client = sink::connect(&self.inner.config.url).await.ok();
            }
            if let Some(c) = &client {
                match self.inner.read_committed(c).await {
                    Ok(positions) => self.inner.committed(&positions, None),
                    Err(_) => client = None,
                }
            }
            if pause(STANDBY_POLL, &mut stop).await {
                break;
            }
        }
        sampler.abort();
    }

    /// Waits until every token is in the database (the committed position of its partition
    /// reached its seq), or `timeout` passes.
    pub async fn flush(&self, tokens: &[Token], timeout: Duration) -> Result<(), TransmitterError> {
        let limit = Duration::from_millis(self.inner.config.max_flush_timeout_ms);
        if timeout > limit {
            return Err(TransmitterError::Invalid(format!(
                "timeout_ms: {} is over the limit of {} (transmitter.max_flush_timeout_ms)",
                timeout.as_millis(),
                limit.as_millis()
            )));
        }
        let deadline = Instant::now() + timeout;
        let client = tokio::time::timeout_at(deadline, self.inner.flush_client())
            .await
            .map_err(|_| TransmitterError::Timeout("connecting to PostgreSQL".into()))??;
        let mut want: BTreeMap<PartitionId, Seq> = BTreeMap::new();
        for t in tokens {
            let e = want.entry(t.partition).or_insert(t.seq);
            *e = (*e).max(t.seq);
        }
        let ps: Vec<i32> = want.keys().map(|p| i32::from(p.0)).collect();
        let mut last_error = None;
        loop {
            // Before the transmitter's first start its tables do not exist: nothing is in yet.
            // Any other failure is reported if the wait runs out.
            let have = match sink::read_positions(
                &*client,
                &self.inner.config.schema,
                &self.inner.config.name,
                &ps,
            )
            .await
            {
                Ok(have) => have,
                Err(e) => {
                    last_error = Some(e.to_string());
                    BTreeMap::new()
                }
            };
            let behind: Vec<String> = want
                .iter()
                .filter(|(p, seq)| have.get(p).copied().unwrap_or(Seq(0)) < **seq)
                .map(|(p, seq)| {
                    format!("{p}:{seq} (at {})", have.get(p).copied().unwrap_or(Seq(0)))
                })
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() + FLUSH_POLL > deadline {
                return Err(TransmitterError::Timeout(format!(
                    "not yet in the database: {}{}",
                    behind.join(", "),
                    last_error.map_or_else(String::new, |e| format!(" (last error: {e})"))
                )));
            }
            tokio::time::sleep(FLUSH_POLL).await;
        }
    }

    fn set_active(&self, active: bool) {
        self.inner
            .state
            .lock()
            .expect("transmitter state lock")
            .status
            .active = active;
        metrics::gauge!("notadb_transmitter_active").set(if active { 1.0 } else { 0.0 });
    }
}

impl Inner {
    /// The shared flush connection, opened when there is none or it closed.
    async fn flush_client(&self) -> Result<Arc<tokio_postgres::Client>, TransmitterError> {
        let mut current = self.flush_client.lock().await;
        if let Some(client) = current.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = Arc::new(sink::connect(&self.config.url).await?);
        *current = Some(client.clone());
        Ok(client)
    }

    fn failed(&self, e: &TransmitterError) {
        tracing::warn!(error = %e, "transmitter");
        self.state
            .lock()
            .expect("transmitter state lock")
            .status
            .last_error = Some(e.to_string());
    }

    /// Records an error that is about to be retried.
    fn retrying(&self, e: &TransmitterError) {
        self.failed(e);
        metrics::counter!("notadb_transmitter_retries_total").increment(1);
        self.state
            .lock()
            .expect("transmitter state lock")
            .status
            .retries += 1;
    }

    /// Progress, lag and counters now.
    fn status(&self) -> TransmitterStatus {
        let state = self.state.lock().expect("transmitter state lock");
        let now = now_micros();
        let mut status = state.status.clone();
        for p in &mut status.partitions {
            p.lag_records = p.last.0.saturating_sub(p.transmitted.0);
            p.lag_seconds = match state.pending_since.get(&p.partition) {
                Some(&ts) if p.lag_records > 0 => (now - ts).max(0) as f64 / 1e6,
                _ => 0.0,
            };
        }
        status
    }

    /// Records committed positions (and what a batch wrote), and moves the log holds.
    fn committed(&self, positions: &BTreeMap<PartitionId, Seq>, written: Option<(u64, u64)>) {
        let mut state = self.state.lock().expect("transmitter state lock");
        for p in &mut state.status.partitions {
            if let Some(&seq) = positions.get(&p.partition) {
                p.transmitted = seq;
                self.host.hold_log(LOG_HOLDER, p.partition, seq.next());
            }
        }
        if let Some((rows, dead)) = written {
            for p in positions.keys() {
                state.pending_since.remove(p);
            }
            state.status.rows += rows;
            state.status.dead_letters += dead;
            state.status.last_error = None;
        }
    }

    async fn read_committed(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<BTreeMap<PartitionId, Seq>, TransmitterError> {
        let ps: Vec<i32> = self.partitions.iter().map(|p| i32::from(p.0)).collect();
        sink::read_positions(client, &self.config.schema, &self.config.name, &ps).await
    }

    async fn sample_loop(self: Arc<Inner>, mut stop: watch::Receiver<bool>) {
        loop {
            for &p in &self.partitions {
                if let Ok(bounds) = self.log.bounds(p).await {
                    let mut state = self.state.lock().expect("transmitter state lock");
                    if let Some(s) = state
                        .status
                        .partitions
                        .iter_mut()
                        .find(|s| s.partition == p)
                    {
                        s.last = bounds.last;
                    }
                }
            }
            let status = self.status();
            let lag: u64 = status.partitions.iter().map(|p| p.lag_records).sum();
            let secs = status
                .partitions
                .iter()
                .map(|p| p.lag_seconds)
                .fold(0.0, f64::max);
            metrics::gauge!("notadb_transmitter_lag_records").set(lag as f64);
            metrics::gauge!("notadb_transmitter_lag_seconds").set(secs);
            if pause(LAG_SAMPLE, &mut stop).await {
                return;
            }
        }
    }

    /// One connection: set up, stream batches, and start over after a failure.
    async fn connection_loop(
        self: Arc<Inner>,
        parts: Vec<PartitionId>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = Backoff::new(&self.config);
        loop {
            let result = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = self.setup() => r,
            };
            let outcome = match result {
                Ok((sink, tables)) => self.stream(&parts, sink, tables, &mut stop).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => return,
                Err(e) => {
                    self.retrying(&e);
                    if pause(backoff.next(), &mut stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Connects, creates the transmitter's tables, resolves the mapped keyspaces that exist
    /// and prepares the statements.
    async fn setup(&self) -> Result<(Sink, Tables), TransmitterError> {
        let client = sink::connect(&self.config.url).await?;
        sink::create_own_tables(&client, &self.config.schema).await?;
        let mut tables = Tables {
            list: Vec::new(),
            by_id: BTreeMap::new(),
            ignored: BTreeSet::new(),
        };
        for def in self.host.keyspaces() {
            if let Some(m) = self.mapping_of(&def.schema.name) {
                let t = self.resolve(&client, m, &def).await?;
                tables.by_id.insert(t.keyspace_id, tables.list.len());
                tables.list.push(t);
            } else {
                tables.ignored.insert(def.id);
            }
        }
        let sink =
            Sink::prepare(client, &self.config.schema, &self.config.name, &tables.list).await?;
        Ok((sink, tables))
    }

    fn mapping_of(&self, keyspace: &str) -> Option<&TableMapping> {
        self.config.tables.iter().find(|m| m.keyspace == keyspace)
    }

    async fn resolve(
        &self,
        client: &tokio_postgres::Client,
        m: &TableMapping,
        def: &KeyspaceDef,
    ) -> Result<Table, TransmitterError> {
        let info = sink::table_info(client, &self.config.schema, &m.table).await?;
        m.resolve(&self.config.schema, def, &info)
            .map_err(TransmitterError::Config)
    }

    /// Makes sure every keyspace `record` names is known: mapped (resolved and prepared) or
    /// ignored. A keyspace the node's catalog does not know yet is waited for.
    async fn learn_keyspaces(
        &self,
        record: &Record,
        sink: &mut Sink,
        tables: &mut Tables,
    ) -> Result<(), TransmitterError> {
        let unknown: BTreeSet<KeyspaceId> = tables.unknown(record).collect();
        for keyspace in &unknown {
            let waited = Instant::now();
            let def = loop {
                let found = self
                    .host
                    .keyspaces()
                    .into_iter()
                    .find(|k| k.id == *keyspace);
                match found {
                    Some(def) => break Some(def),
                    None if waited.elapsed() > CATALOG_WAIT => break None,
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            match def
                .as_ref()
                .and_then(|d| self.mapping_of(&d.schema.name).map(|m| (d, m)))
            {
                Some((def, m)) => {
                    let t = self.resolve(sink.client(), m, def).await?;
                    sink.add_table(&t).await?;
                    tables.by_id.insert(t.keyspace_id, tables.list.len());
                    tables.list.push(t);
                }
                None => {
                    if def.is_none() {
                        tracing::warn!(keyspace = %keyspace, "transmitter: entries name a keyspace this node does not know; skipping them");
                    }
                    tables.ignored.insert(*keyspace);
                }
            }
        }
        Ok(())
    }

    /// Reads the partitions from their committed positions and writes batches until `stop`
    /// fires (`Ok`) or something needs a fresh start (`Err`). While one batch is written, the
    /// next is gathered from the entries whose keyspaces are already known, so the database
    /// does not wait for the log to be read and decoded between transactions.
    async fn stream(
        &self,
        parts: &[PartitionId],
        mut sink: Sink,
        mut tables: Tables,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), TransmitterError> {
        let mut positions =
            sink::load_positions(sink.client(), &self.config.schema, &self.config.name, parts)
                .await?;
        self.committed(&positions, None);
        let (tx, mut rx) = mpsc::channel::<Chunk>(2 * parts.len());
        let _readers = Readers(
            parts
                .iter()
                .map(|&p| {
                    let from = positions.get(&p).copied().unwrap_or(Seq(0)).next();
                    tokio::spawn(read_loop(
                        self.log.clone(),
                        p,
                        from,
                        self.config.read_max_entries,
                        tx.clone(),
                    ))
                })
                .collect(),
        );
        drop(tx);
        let max_rows = self.config.batch_max_rows;
        let mut backoff = Backoff::new(&self.config);
        // Gathered while the previous batch was written: the batch, when its first chunk came,
        // and the rest of a chunk that names a keyspace to learn (which needs the connection).
        let mut next = Batch::new();
        let mut next_since: Option<Instant> = None;
        let mut held: Option<(PartitionId, Vec<LogEntry>)> = None;
        let mut closed = false;
        loop {
            // Checked on every turn: with a backlog, a batch is always ready to go.
            if *stop.borrow() {
                return Ok(());
            }
            let mut batch = std::mem::take(&mut next);
            if let Some(chunk) = held.take() {
                self.add_chunk(&mut batch, chunk, &mut sink, &mut tables)
                    .await?;
            }
            // Nothing was gathered during the last write (`held` comes with `next_since`): wait
            // for the first chunk.
            let since = match next_since.take() {
                Some(since) => since,
                None => {
                    if closed {
                        return Ok(());
                    }
                    let first = tokio::select! {
                        _ = stop.wait_for(|s| *s) => return Ok(()),
                        chunk = rx.recv() => chunk,
                    };
                    let Some(first) = first else {
                        return Ok(());
                    };
                    let since = Instant::now();
                    self.add_chunk(&mut batch, first?, &mut sink, &mut tables)
                        .await?;
                    since
                }
            };
            let deadline = since + self.config.batch_max_delay();
            while !closed && batch.row_count() < max_rows {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    chunk = rx.recv() => match chunk {
                        Some(chunk) => self.add_chunk(&mut batch, chunk?, &mut sink, &mut tables).await?,
                        None => closed = true,
                    },
                }
            }
            let mut write = std::pin::pin!(self.write_batch(
                &mut sink,
                &tables,
                &batch,
                &mut positions,
                &mut backoff,
                stop
            ));
            let committed = loop {
                tokio::select! {
                    biased;
                    committed = &mut write => break committed?,
                    chunk = rx.recv(), if !closed && held.is_none() && next.row_count() < max_rows => match chunk {
                        Some(chunk) => {
                            next_since.get_or_insert_with(Instant::now);
                            held = self.add_known(&mut next, chunk?, &tables).await?;
                        }
                        None => closed = true,
                    },
                }
            };
            if !committed {
                return Ok(());
            }
        }
    }

    /// Writes `batch` with its positions, retrying with backoff on a fresh connection until it
    /// commits (`Ok(true)`) or `stop` fires (`Ok(false)`).
    async fn write_batch(
        &self,
        sink: &mut Sink,
        tables: &Tables,
        batch: &Batch,
        positions: &mut BTreeMap<PartitionId, Seq>,
        backoff: &mut Backoff,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, TransmitterError> {
        loop {
            let started = Instant::now();
            match sink.write(&tables.list, batch, positions).await {
                Ok(written) => {
                    metrics::histogram!("notadb_transmitter_batch_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::counter!("notadb_transmitter_batches_total").increment(1);
                    metrics::counter!("notadb_transmitter_rows_total")
                        .increment(written.rows as u64);
                    metrics::counter!("notadb_transmitter_entries_total")
                        .increment(batch.entry_count() as u64);
                    metrics::counter!("notadb_transmitter_dead_letters_total")
                        .increment(written.dead_letters.len() as u64);
                    for d in &written.dead_letters {
                        tracing::warn!(keyspace = %d.keyspace, partition = %d.partition, seq = %d.seq, error = %d.error, "transmitter: change written to the dead-letter table");
                    }
                    let changed: BTreeMap<PartitionId, Seq> =
                        batch.advances().iter().map(|(p, a)| (*p, a.seq)).collect();
                    positions.extend(&changed);
                    self.committed(
                        &changed,
                        Some((written.rows as u64, written.dead_letters.len() as u64)),
                    );
                    backoff.reset();
                    return Ok(true);
                }
                Err(TransmitterError::Fenced) => return Err(TransmitterError::Fenced),
                Err(e) => {
                    self.retrying(&e);
                    if pause(backoff.next(), stop).await {
                        return Ok(false);
                    }
                    // A fresh connection: the old one may be gone.
                    match self.reconnect(tables).await {
                        Ok(s) => *sink = s,
                        Err(e) => self.failed(&e),
                    }
                }
            }
        }
    }

    async fn reconnect(&self, tables: &Tables) -> Result<Sink, TransmitterError> {
        let client = sink::connect(&self.config.url).await?;
        Sink::prepare(client, &self.config.schema, &self.config.name, &tables.list).await
    }

    /// Adds every entry of `chunk`, learning the keyspaces they name on the way.
    async fn add_chunk(
        &self,
        batch: &mut Batch,
        mut chunk: (PartitionId, Vec<LogEntry>),
        sink: &mut Sink,
        tables: &mut Tables,
    ) -> Result<(), TransmitterError> {
        while let Some((p, rest)) = self.add_known(batch, chunk, tables).await? {
            if let Some(record) = self.record_of(p, &rest[0]).await? {
                self.learn_keyspaces(&record, sink, tables).await?;
            }
            chunk = (p, rest);
        }
        Ok(())
    }

    /// Adds the entries of `chunk` up to the first that names a keyspace not learned yet, and
    /// returns the rest from that entry on (`None` when every entry was added).
    async fn add_known(
        &self,
        batch: &mut Batch,
        (p, mut entries): (PartitionId, Vec<LogEntry>),
        tables: &Tables,
    ) -> Result<Option<(PartitionId, Vec<LogEntry>)>, TransmitterError> {
        let mut rest = None;
        for (i, entry) in entries.iter().enumerate() {
            let record = self.record_of(p, entry).await?;
            if record
                .as_ref()
                .is_some_and(|r| tables.unknown(r).next().is_some())
            {
                rest = Some(i);
                break;
            }
            batch.add(p, entry.seq, record.as_ref(), &tables.list, &tables.by_id);
        }
        if let Some(ts) = batch.first_ts(p) {
            self.state
                .lock()
                .expect("transmitter state lock")
                .pending_since
                .entry(p)
                .or_insert(ts);
        }
        Ok(rest.map(|i| (p, entries.split_off(i))))
    }

    /// What entry `seq` of `p` writes: its record, or for a transaction its effects as applied
    /// on this replica (a transaction's writes are not in the log); `None` if it is malformed
    /// (replicas skip it too). An entry of a newer format stops this replica's partition, and
    /// the transmitter with it: it retries, and never writes past the entry.
    async fn record_of(
        &self,
        p: PartitionId,
        entry: &LogEntry,
    ) -> Result<Option<Record>, TransmitterError> {
        let record = match Record::decode(&entry.payload) {
            Ok(record) => record,
            Err(DecodeError::Malformed(_)) => return Ok(None),
            Err(e @ DecodeError::Newer { .. }) => {
                return Err(TransmitterError::Replica(format!(
                    "partition {p} entry {}: {e}",
                    entry.seq
                )))
            }
        };
        let effects = self
            .host
            .txn_effects(p, entry.seq, &record)
            .await
            .map_err(|e| TransmitterError::Replica(e.to_string()))?;
        Ok(Some(effects.unwrap_or(record)))
    }
}

/// Reads one partition from `next` on and sends chunks until the receiver is gone; a log
/// error that retrying will not fix is sent, then the loop ends.
async fn read_loop(
    log: Arc<dyn Log>,
    p: PartitionId,
    mut next: Seq,
    max: usize,
    tx: mpsc::Sender<Chunk>,
) {
    loop {
        match log.read(p, next, max, READ_WAIT).await {
            Ok(entries) => {
                let Some(last) = entries.last() else {
                    if tx.is_closed() {
                        return;
                    }
                    continue;
                };
                next = last.seq.next();
                if tx.send(Ok((p, entries))).await.is_err() {
                    return;
                }
            }
            Err(e) if e.is_retryable() => tokio::time::sleep(READ_RETRY).await,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}
