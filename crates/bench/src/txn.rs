//! `notadb-bench txn`: the bank workload end to end over gRPC, on notadb (embedded log, with
//! SCA on and off, and on NATS JetStream) and, in the same run, as PostgreSQL `SERIALIZABLE`
//! transactions with client retries.
//!
//! Every transaction moves 1 between two accounts: the built-in `i64.transfer` on notadb;
//! `SELECT` both balances, check, `UPDATE` both, `COMMIT` on PostgreSQL, where a
//! serialization failure or deadlock is rolled back and retried (an abort, counted). Accounts
//! are `(branch, id)`; each partition has one branch, so "contention 1 in N" means both
//! accounts are picked uniformly among the first N ids of their branches, as in the executor
//! benchmark. A transfer is multi-partition (its `to` in another branch) with the given share.
//!
//! Rows: contention from 1 in 10,000 to 1 in 10 at the base multi-partition share, for each
//! system (SCA on and off on the embedded log); then the multi-partition share from 0 to 100%
//! at the lowest contention, on notadb. `clients` tasks run closed loops of `duration` each,
//! sharing `connections` gRPC channels (PostgreSQL: a connection per task). Latency is per
//! committed transaction, retries included. Writes the table and SVG plots.

use crate::compare::svg::{line_chart, Series};
use crate::run::{fresh_database, loopback_config, pg_connect};
use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use notadb::client::{proto as v1, txn_key, Client};
use notadb::{Element, ElementType, KeyElement, KeyspaceSchema, Order, Server, ValueFormat};
use notadb_testkit::NatsServer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;

const KS: &str = "bench_accounts";
const TABLE: &str = "bench_accounts";
/// Every account's opening balance: no transfer runs out.
const INITIAL: i64 = 1_000_000_000;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const PRELOAD_BATCH: usize = 1_000;

#[derive(Args, Debug)]
pub struct TxnArgs {
    /// A PostgreSQL database URL the benchmark may create its database from (no PostgreSQL
    /// rows without it).
    #[arg(long, env = "NOTADB_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// The database it creates (dropped and created again).
    #[arg(long, default_value = "notadb_bench_txn")]
    pub database: String,
    /// Systems to run: `notadb` (embedded log, SCA on and off), `jetstream` (a one-node
    /// cluster on a nats-server the run starts; needs `NOTADB_NATS_SERVER` or `nats-server`
    /// on PATH), `postgres`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "notadb,jetstream,postgres"
    )]
    pub systems: Vec<String>,
    /// Contention levels, as N in "1 in N" (accounts per branch picked from).
    #[arg(long, value_delimiter = ',', default_value = "10000,1000,100,10")]
    pub contention: Vec<u64>,
    /// Multi-partition share of the contention rows, percent.
    #[arg(long, default_value_t = 10.0)]
    pub multi: f64,
    /// Multi-partition shares of the share rows, percent (at the lowest contention).
    #[arg(long, value_delimiter = ',', default_value = "0,25,50,100")]
    pub multi_sweep: Vec<f64>,
    /// Client tasks in closed loops.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// gRPC channels the tasks share.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Measured time per row.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Partitions of the notadb node.
    #[arg(long, default_value_t = 8)]
    pub partitions: u16,
    /// Where the markdown goes (printed too); the plots go beside it.
    #[arg(long, default_value = "docs/bench/txn.md")]
    pub out: PathBuf,
}

/// The accounts and how transfers pick them.
#[derive(Clone)]
struct Workload {
    /// Per partition, the branch whose accounts it holds.
    branches: Vec<i64>,
    /// "1 in N".
    hot: u64,
    /// Multi-partition share, 0 to 1.
    multi: f64,
}

impl Workload {
    /// `(from, to)` accounts as `(branch, id)`.
    fn pick(&self, rng: &mut u64) -> ((i64, i64), (i64, i64)) {
        let mut next = || {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            *rng
        };
        let n = self.branches.len() as u64;
        let p = next() % n;
        let cross = n > 1 && (next() % 10_000) as f64 / 10_000.0 < self.multi;
        let q = if cross {
            (p + 1 + next() % (n - 1)) % n
        } else {
            p
        };
        let a = (next() % self.hot) as i64;
        let mut b = (next() % self.hot) as i64;
        if !cross && b == a {
            b = (a + 1) % self.hot as i64;
        }
        (
            (self.branches[p as usize], a),
            (self.branches[q as usize], b),
        )
    }
}

fn schema() -> KeyspaceSchema {
    let el = |name: &str| KeyElement {
        name: name.into(),
        ty: ElementType::I64,
        order: Order::Asc,
    };
    KeyspaceSchema {
        name: KS.into(),
        key: vec![el("branch"), el("id")],
        partition_by: 1,
        value_format: ValueFormat::Bytes,
        ttl: None,
    }
}

/// One branch per partition: the smallest branch number hashing to it.
fn branches(partitions: u16) -> anyhow::Result<Vec<i64>> {
    let schema = schema();
    let partitioner = notadb::types::Partitioner::new(partitions)?;
    let mut out = vec![None; usize::from(partitions)];
    for b in 0i64.. {
        let key = schema.encode_key(&[Element::I64(b), Element::I64(0)])?;
        let p = partitioner.partition_of(key.partition_key());
        out[p.0 as usize].get_or_insert(b);
        if out.iter().all(Option::is_some) {
            break;
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// What one row measured.
struct Measured {
    committed: u64,
    /// Transactions the system aborted and the client retried (PostgreSQL), or aborted by the
    /// procedure (notadb: none is expected).
    aborts: u64,
    /// Committed transactions with more than one partition.
    multi: u64,
    latency: Histogram<u64>,
    secs: f64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

/// What a task drives.
enum Target {
    Notadb(Vec<Client>),
    Postgres(String),
}

/// One transfer on notadb: (committed, aborted, multi-partition).
async fn notadb_transfer(
    client: &Client,
    from: (i64, i64),
    to: (i64, i64),
) -> anyhow::Result<(bool, bool)> {
    let key = |(b, i): (i64, i64)| {
        txn_key(
            KS,
            &[Element::I64(b), Element::I64(i)],
            v1::Access::ReadWrite,
        )
    };
    let r = client
        .transact(v1::TransactRequest {
            procedure: "i64.transfer".into(),
            args: 1i64.to_be_bytes().to_vec(),
            keys: vec![key(from), key(to)],
            ..Default::default()
        })
        .await?;
    match r.outcome {
        Some(v1::transact_response::Outcome::Committed(_)) => Ok((true, r.participants.len() > 1)),
        Some(v1::transact_response::Outcome::Aborted(_)) => Ok((false, false)),
        other => anyhow::bail!("unexpected outcome {other:?}"),
    }
}

/// Runs `clients` tasks on `target` for `duration`.
async fn drive(
    target: &Arc<Target>,
    w: &Workload,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..clients {
        let (target, w) = (target.clone(), w.clone());
        tasks.spawn(async move {
            let mut m = Measured {
                committed: 0,
                aborts: 0,
                multi: 0,
                latency: histogram(),
                secs: 0.0,
            };
            let mut rng = (task as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            match &*target {
                Target::Notadb(channels) => {
                    let client = &channels[task % channels.len()];
                    while Instant::now() < end {
                        let (from, to) = w.pick(&mut rng);
                        let t = Instant::now();
                        let (committed, multi) = notadb_transfer(client, from, to).await?;
                        if committed {
                            m.committed += 1;
                            m.multi += u64::from(multi);
                            m.latency.saturating_record(t.elapsed().as_micros() as u64);
                        } else {
                            m.aborts += 1;
                        }
                    }
                }
                Target::Postgres(url) => {
                    let mut pg = pg_connect(url).await?;
                    let select = pg
                        .prepare(&format!(
                            "SELECT balance FROM {TABLE} WHERE branch = $1 AND id = $2"
                        ))
                        .await?;
                    let update = pg
                        .prepare(&format!(
                            "UPDATE {TABLE} SET balance = $3 WHERE branch = $1 AND id = $2"
                        ))
                        .await?;
                    while Instant::now() < end {
                        let (from, to) = w.pick(&mut rng);
                        let t = Instant::now();
                        loop {
                            match pg_transfer(&mut pg, &select, &update, from, to).await {
                                Ok(()) => break,
                                Err(e) if retryable(&e) => m.aborts += 1,
                                Err(e) => return Err(e.into()),
                            }
                        }
                        m.committed += 1;
                        m.multi += u64::from(from.0 != to.0);
                        m.latency.saturating_record(t.elapsed().as_micros() as u64);
                    }
                }
            }
            Ok::<_, anyhow::Error>(m)
        });
    }
    let mut total = Measured {
        committed: 0,
        aborts: 0,
        multi: 0,
        latency: histogram(),
        secs: 0.0,
    };
    while let Some(done) = tasks.join_next().await {
        let m = done??;
        total.committed += m.committed;
        total.aborts += m.aborts;
        total.multi += m.multi;
        total
            .latency
            .add(&m.latency)
            .context("merging histograms")?;
    }
    total.secs = started.elapsed().as_secs_f64();
    Ok(total)
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// The transfer as one `SERIALIZABLE` transaction.
async fn pg_transfer(
    pg: &mut tokio_postgres::Client,
    select: &tokio_postgres::Statement,
    update: &tokio_postgres::Statement,
    from: (i64, i64),
    to: (i64, i64),
) -> Result<(), tokio_postgres::Error> {
    let tx = pg
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::Serializable)
        .start()
        .await?;
    let a: i64 = tx.query_one(select, &[&from.0, &from.1]).await?.get(0);
    let b: i64 = tx.query_one(select, &[&to.0, &to.1]).await?.get(0);
    if a >= 1 {
        tx.execute(update, &[&from.0, &from.1, &(a - 1)]).await?;
        tx.execute(update, &[&to.0, &to.1, &(b + 1)]).await?;
    }
    tx.commit().await
}

/// One row of the report.
struct Row {
    system: String,
    hot: u64,
    multi: f64,
    m: Measured,
}

/// Starts a notadb server (embedded log, or a one-node cluster on `nats`), creates and loads
/// the accounts.
async fn start_notadb(
    args: &TxnArgs,
    dir: &std::path::Path,
    sca: bool,
    nats: Option<&str>,
    branches: &[i64],
    hot: u64,
) -> anyhow::Result<(Server, Vec<Client>)> {
    let mut config = loopback_config(dir)?;
    config.node.partitions = args.partitions;
    config.node.txn_sca = sca;
    if let Some(url) = nats {
        // A one-node cluster: one shard group, no checkpoints.
        let cluster = config.cluster.get_or_insert_with(Default::default);
        cluster.jetstream.url = url.to_string();
        cluster.jetstream.name = format!("bench_txn_{}", std::process::id());
        cluster.checkpoint_interval_secs = 0;
    }
    let server = Server::start(config, |b| b).await?;
    let addr = format!("http://{}", server.grpc_addr());
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(Client::connect(&addr).await?.with_timeout(CALL_TIMEOUT));
    }
    clients[0].create_keyspace(&schema(), false).await?;
    let value = v1::Value {
        kind: Some(v1::value::Kind::Bytes(INITIAL.to_be_bytes().to_vec())),
    };
    let accounts: Vec<(i64, i64)> = branches
        .iter()
        .flat_map(|&b| (0..hot as i64).map(move |i| (b, i)))
        .collect();
    for chunk in accounts.chunks(PRELOAD_BATCH) {
        let mutations = chunk
            .iter()
            .map(|&(b, i)| v1::Mutation {
                op: Some(v1::mutation::Op::Put(v1::PutRequest {
                    keyspace: KS.into(),
                    key: Some(notadb::client::tuple(&[Element::I64(b), Element::I64(i)])),
                    value: Some(value.clone()),
                })),
            })
            .collect();
        clients[0].write(mutations).await?;
    }
    Ok((server, clients))
}

/// Creates the PostgreSQL table with the same accounts; returns the database URL.
async fn start_postgres(
    admin_url: &str,
    database: &str,
    branches: &[i64],
    hot: u64,
) -> anyhow::Result<(String, String)> {
    let url = fresh_database(admin_url, database).await?;
    let pg = pg_connect(&url).await?;
    let list: Vec<String> = branches.iter().map(i64::to_string).collect();
    pg.batch_execute(&format!(
        "CREATE TABLE {TABLE} (branch bigint, id bigint, balance bigint NOT NULL, PRIMARY KEY (branch, id));
         INSERT INTO {TABLE} SELECT b, i, {INITIAL} FROM unnest(ARRAY[{}]::bigint[]) b, generate_series(0, {}) i;
         ANALYZE {TABLE};",
        list.join(","),
        hot - 1
    ))
    .await
    .context("creating the accounts table")?;
    let version: String = pg.query_one("SHOW server_version", &[]).await?.get(0);
    Ok((url, version))
}

pub async fn run(args: TxnArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clients > 0 && !args.duration.is_zero() && !args.contention.is_empty(),
        "--clients, --duration and --contention must be above 0 / not empty"
    );
    anyhow::ensure!(
        args.contention.iter().all(|&n| n >= 2),
        "--contention: every N must be at least 2 (a transfer needs two accounts)"
    );
    for s in &args.systems {
        anyhow::ensure!(
            ["notadb", "jetstream", "postgres"].contains(&s.as_str()),
            "--systems: unknown system `{s}` (notadb, jetstream, postgres)"
        );
    }
    let runs = |s: &str| args.systems.iter().any(|x| x == s);
    let branches = branches(args.partitions)?;
    let max_hot = *args.contention.iter().max().expect("not empty");
    let lowest = max_hot;
    let workload = |hot: u64, multi: f64| Workload {
        branches: branches.clone(),
        hot,
        multi: multi / 100.0,
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut notes = Vec::new();

    let mut notadb_systems: Vec<(String, bool, bool)> = Vec::new();
    if runs("notadb") {
        notadb_systems.push(("notadb, SCA on".into(), true, false));
        notadb_systems.push(("notadb, SCA off".into(), false, false));
    }
    let mut nats = None;
    if runs("jetstream") {
        let store = tempfile::tempdir()?;
        let server = tokio::task::spawn_blocking({
            let path = store.path().to_path_buf();
            move || NatsServer::start(&path)
        })
        .await?
        .context("starting nats-server")?;
        notadb_systems.push(("notadb on JetStream, SCA on".into(), true, true));
        nats = Some((server, store));
    }
    for (system, sca, on_nats) in &notadb_systems {
        let dir = tempfile::tempdir()?;
        let url = nats.as_ref().filter(|_| *on_nats).map(|(s, _)| s.url());
        let (server, clients) =
            start_notadb(&args, dir.path(), *sca, url.as_deref(), &branches, max_hot).await?;
        let target = Arc::new(Target::Notadb(clients));
        let mut plan: Vec<(u64, f64)> = args.contention.iter().map(|&h| (h, args.multi)).collect();
        if *sca {
            plan.extend(
                args.multi_sweep
                    .iter()
                    .filter(|&&m| m != args.multi)
                    .map(|&m| (lowest, m)),
            );
        }
        for (hot, multi) in plan {
            let m = drive(&target, &workload(hot, multi), args.clients, args.duration).await?;
            eprintln!(
                "{system}, 1 in {hot}, {multi}% multi: {} committed",
                m.committed
            );
            rows.push(Row {
                system: system.clone(),
                hot,
                multi,
                m,
            });
        }
        server.shutdown().await?;
    }
    if let Some((mut server, _store)) = nats.take() {
        let version = std::process::Command::new(
            std::env::var("NOTADB_NATS_SERVER").unwrap_or_else(|_| "nats-server".into()),
        )
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
        notes.push(format!(
            "JetStream: {version}, file storage, one replica, on the same cores."
        ));
        tokio::task::spawn_blocking(move || server.stop()).await??;
    }
    if runs("postgres") {
        let admin = args
            .postgres_url
            .as_deref()
            .context("--systems postgres needs --postgres-url or NOTADB_POSTGRES_URL")?;
        let (url, version) = start_postgres(admin, &args.database, &branches, max_hot).await?;
        notes.push(format!(
            "PostgreSQL {version}: one connection per client task, `SERIALIZABLE`, retried on serialization failure or deadlock."
        ));
        let target = Arc::new(Target::Postgres(url));
        for &hot in &args.contention {
            let m = drive(
                &target,
                &workload(hot, args.multi),
                args.clients,
                args.duration,
            )
            .await?;
            eprintln!(
                "PostgreSQL, 1 in {hot}: {} committed, {} aborts",
                m.committed, m.aborts
            );
            rows.push(Row {
                system: "PostgreSQL SERIALIZABLE".into(),
                hot,
                multi: args.multi,
                m,
            });
        }
    }
    write_report(&args, &rows, &notes)
}

fn write_report(args: &TxnArgs, rows: &[Row], notes: &[String]) -> anyhow::Result<()> {
    let mut table = String::from(
        "| system | contention | multi-partition share (asked, committed) | committed/s | aborts per commit | p50 ms | p99 ms |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let m = &r.m;
        let ms = |q: f64| m.latency.value_at_quantile(q) as f64 / 1000.0;
        table += &format!(
            "| {} | 1 in {} | {:.0}%, {:.0}% | {:.0} | {:.3} | {:.1} | {:.1} |\n",
            r.system,
            r.hot,
            r.multi,
            100.0 * m.multi as f64 / m.committed.max(1) as f64,
            m.committed as f64 / m.secs,
            m.aborts as f64 / m.committed.max(1) as f64,
            ms(0.5),
            ms(0.99),
        );
    }
    let dir = args.out.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d)?;
    }
    let systems: Vec<&str> = {
        let mut s: Vec<&str> = rows.iter().map(|r| r.system.as_str()).collect();
        s.dedup();
        s
    };
    let xs: Vec<String> = args
        .contention
        .iter()
        .map(|h| format!("1 in {h}"))
        .collect();
    let curve =
        |value: &dyn Fn(&Measured) -> f64, at_multi: &dyn Fn(&Row) -> bool| -> Vec<Series> {
            systems
                .iter()
                .map(|s| Series {
                    name: s.to_string(),
                    values: args
                        .contention
                        .iter()
                        .map(|&h| {
                            rows.iter()
                                .find(|r| r.system == *s && r.hot == h && at_multi(r))
                                .map(|r| value(&r.m))
                        })
                        .collect(),
                })
                .collect()
        };
    let base = |r: &Row| r.multi == args.multi;
    let throughput = |m: &Measured| m.committed as f64 / m.secs;
    let p99 = |m: &Measured| m.latency.value_at_quantile(0.99) as f64 / 1000.0;
    let mut plots = vec![
        (
            "txn-throughput-vs-contention.svg",
            line_chart(
                "Bank transfers: committed per second vs contention",
                "contention (accounts picked from, per branch)",
                "committed transactions/s",
                &xs,
                &curve(&throughput, &base),
            ),
        ),
        (
            "txn-p99-vs-contention.svg",
            line_chart(
                "Bank transfers: p99 latency vs contention",
                "contention (accounts picked from, per branch)",
                "p99 ms",
                &xs,
                &curve(&p99, &base),
            ),
        ),
    ];
    let mut shares: Vec<f64> = args.multi_sweep.clone();
    shares.push(args.multi);
    shares.sort_by(f64::total_cmp);
    shares.dedup();
    let lowest = *args.contention.iter().max().expect("not empty");
    let share_series: Vec<Series> = systems
        .iter()
        .filter(|s| s.starts_with("notadb"))
        .map(|s| Series {
            name: s.to_string(),
            values: shares
                .iter()
                .map(|&x| {
                    rows.iter()
                        .find(|r| r.system == *s && r.hot == lowest && r.multi == x)
                        .map(|r| throughput(&r.m))
                })
                .collect(),
        })
        .filter(|s| s.values.iter().flatten().count() > 1)
        .collect();
    if !share_series.is_empty() {
        plots.push((
            "txn-throughput-vs-multi.svg",
            line_chart(
                &format!("Bank transfers at 1 in {lowest}: committed per second vs multi-partition share"),
                "multi-partition share",
                "committed transactions/s",
                &shares.iter().map(|s| format!("{s:.0}%")).collect::<Vec<_>>(),
                &share_series,
            ),
        ));
    }
    let mut images = String::new();
    for (name, svg) in &plots {
        let path = dir.map_or_else(|| PathBuf::from(name), |d| d.join(name));
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        images += &format!("![{name}]({name})\n");
    }
    let doc = format!(
        "## Transactions end to end: notadb beside PostgreSQL SERIALIZABLE\n\n```sh\nnotadb-bench txn {}\n```\n\n\
         Machine: {cores} cores; the clients, notadb (in the benchmark's process) and the peers share them, over loopback.\n\n\
         Workload: bank transfers of 1 between two accounts; {partitions} partitions, one branch of accounts each; \
         \"1 in N\": both accounts among the first N of their branch; {clients} client tasks in closed loops for {secs} s per row \
         (no warm-up), sharing {conns} gRPC channels. notadb: one node, embedded log with fsync before every \
         acknowledgement (or JetStream), the built-in `i64.transfer`; a transaction's answer comes after every participant executed it. \
         {notes}\n\n{table}\n{images}",
        std::env::args().skip(2).collect::<Vec<_>>().join(" "),
        cores = crate::cpu::machine_cores(),
        partitions = args.partitions,
        clients = args.clients,
        secs = args.duration.as_secs_f64(),
        conns = args.connections,
        notes = notes.join(" "),
    );
    println!("{doc}");
    std::fs::write(&args.out, &doc).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}
