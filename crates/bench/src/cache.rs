//! `notadb-bench cache`: notadb's cache beside Redis (hits) and PostgreSQL (misses), in one
//! run, with the same keys, value size and client concurrency.
//!
//! 1. Hits: `cache_get` / `cache_set` of one key vs Redis `GET` / `SET`.
//! 2. Batches: `cache_get_many` / `cache_set_many` of `batch` keys vs `MGET` / a pipeline of
//!    `SET`s.
//! 3. Misses: every get a key no call asked for before, in a cache with a PostgreSQL loader, vs
//!    the loader's `SELECT` sent straight to PostgreSQL.
//!
//! The hit paths pick keys uniformly from `keys` preloaded ones. `clients` tasks each call in
//! a closed loop for `duration`; they share `connections` notadb connections, Redis
//! multiplexed connections or PostgreSQL connections, task `t` using connection
//! `t mod connections`. The notadb node is a process of its own (`notadb serve`), so each
//! row's server CPU time per request is the serving process's alone.

use crate::cpu::{self, Meter, Placement, Window};
use crate::node::StartedNode;
use crate::run::{fresh_database, pg_connect};
use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use notadb_client::{cache_key, proto as v1, Client, Token};
use rand::Rng;
use redis::aio::MultiplexedConnection;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cache of the hit paths.
const HITS: &str = "hits";
/// The cache of the miss path, with the loader.
const MISSES: &str = "misses";
/// The loader's name.
const LOADER: &str = "source";
/// The loader's source table.
const TABLE: &str = "bench_cache_source";
/// Every key starts with this (Redis keys too; the run deletes them at the end).
const PREFIX: &str = "notadb-bench-cache:";
/// Entries per call while preloading.
const PRELOAD_BATCH: usize = 1_000;
/// Per-entry overhead the cache counts against its capacity (see `cache.proto`).
const ENTRY_OVERHEAD_BYTES: u64 = 96;
/// Capacity of the miss-path cache: loaded entries may evict each other, nothing reads them.
const MISS_CACHE_BYTES: u64 = 256 << 20;
/// Deadline of every notadb call, so a stuck call fails the run instead of hanging it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct CacheArgs {
    /// A PostgreSQL database URL the benchmark may create its database from.
    #[arg(long, env = "NOTADB_POSTGRES_URL")]
    pub postgres_url: String,
    /// The database it creates (dropped and created again) for the loader's table.
    #[arg(long, default_value = "notadb_bench_cache")]
    pub database: String,
    /// The Redis server to compare with.
    #[arg(long, env = "NOTADB_REDIS_URL")]
    pub redis_url: String,
    /// Distinct keys of the hit paths, all preloaded.
    #[arg(long, default_value_t = 100_000)]
    pub keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Client tasks, each calling in a closed loop.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// gRPC channels, Redis connections and PostgreSQL connections the tasks share.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Measured time of each measurement.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Keys per batched call.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Rows of the loader's table: the misses of all three miss measurements together.
    #[arg(long, default_value_t = 2_000_000)]
    pub source_rows: usize,
    /// The node's log fsync policy: `always` (the default of a node), `never`, `interval:<ms>ms`.
    #[arg(long, default_value = "always")]
    pub log_fsync: String,
    /// Where the markdown goes (it is printed too).
    #[arg(long, default_value = "docs/bench/cache.md")]
    pub out: PathBuf,
}

fn key(i: u64) -> String {
    format!("{PREFIX}{i:09}")
}

/// Random letters, so no layer gets to compress them.
fn value_of(bytes: usize) -> Vec<u8> {
    let mut rng = rand::rng();
    (0..bytes).map(|_| rng.random_range(b'a'..=b'z')).collect()
}

/// One request of a measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Call {
    RedisGet,
    RedisSet,
    RedisMget,
    RedisSetPipeline,
    Get,
    Set,
    GetMany,
    SetMany,
    /// The loader's statement on the first PostgreSQL connection only.
    SelectOne,
    /// The loader's statement on every PostgreSQL connection.
    Select,
    /// A get of a key no request asked for before, which the cache loads.
    Load,
}

/// The measurements in table order: path, system (`{n}`: `--connections`), request, and
/// whether it is the peer the notadb row below compares with.
#[rustfmt::skip]
const PLAN: [(&str, &str, Call, bool); 11] = [
    ("hit GET", "Redis `GET`", Call::RedisGet, true),
    ("hit GET", "notadb `cache_get`", Call::Get, false),
    ("hit SET", "Redis `SET`", Call::RedisSet, true),
    ("hit SET", "notadb `cache_set`", Call::Set, false),
    ("batched GET", "Redis `MGET`", Call::RedisMget, true),
    ("batched GET", "notadb `cache_get_many`", Call::GetMany, false),
    ("batched SET", "Redis pipeline of `SET`s", Call::RedisSetPipeline, true),
    ("batched SET", "notadb `cache_set_many`", Call::SetMany, false),
    ("miss (load)", "PostgreSQL `SELECT`, 1 connection", Call::SelectOne, true),
    ("miss (load)", "PostgreSQL `SELECT`, {n} connections", Call::Select, true),
    ("miss (load)", "notadb `cache_get`, PostgreSQL loader", Call::Load, false),
];

/// What every request shares; task `t` uses connection `t mod` the connections there are.
struct Targets {
    notadb: Vec<Client>,
    redis: Vec<MultiplexedConnection>,
    postgres: Vec<(tokio_postgres::Client, tokio_postgres::Statement)>,
    keys: usize,
    batch: usize,
    value: Vec<u8>,
    /// The next row of the loader's table no request read; the miss measurements share it.
    next_row: AtomicU64,
    rows: u64,
}

impl Targets {
    /// A key picked uniformly from the preloaded ones.
    fn pick(&self) -> String {
        key(rand::rng().random_range(0..self.keys as u64))
    }

    fn cold_key(&self) -> anyhow::Result<String> {
        let i = self.next_row.fetch_add(1, Ordering::Relaxed);
        anyhow::ensure!(
            i < self.rows,
            "the loader's table ran out of rows; raise --source-rows"
        );
        Ok(key(i))
    }

    /// Sends one request of `task`; returns the keys it handled.
    async fn call(&self, call: Call, task: usize) -> anyhow::Result<u64> {
        let hit = v1::CacheStatus::Hit as i32;
        let (one, value) = (self.pick(), &self.value[..]);
        let many = || (0..self.batch).map(|_| self.pick());
        let client = &self.notadb[task % self.notadb.len()];
        let mut con = self.redis[task % self.redis.len()].clone();
        match call {
            Call::RedisGet => {
                let get = redis::cmd("GET").arg(one).clone();
                let v: Option<Vec<u8>> = get.query_async(&mut con).await?;
                anyhow::ensure!(v.is_some(), "redis GET: a preloaded key is missing");
            }
            Call::RedisSet => {
                let set = redis::cmd("SET").arg(one).arg(value).clone();
                set.query_async::<()>(&mut con).await?;
            }
            Call::RedisMget => {
                let mget = redis::cmd("MGET").arg(many().collect::<Vec<_>>()).clone();
                let vs: Vec<Option<Vec<u8>>> = mget.query_async(&mut con).await?;
                let all = vs.iter().all(Option::is_some);
                anyhow::ensure!(all, "redis MGET: a preloaded key is missing");
            }
            Call::RedisSetPipeline => {
                let mut pipe = redis::pipe();
                for k in many() {
                    pipe.cmd("SET").arg(k).arg(value).ignore();
                }
                pipe.query_async::<()>(&mut con).await?;
            }
            Call::Get => {
                let r = client.cache_get(HITS, one.as_bytes()).await?;
                anyhow::ensure!(r.status == hit, "cache_get of a preloaded key: {r:?}");
            }
            Call::Set => drop(client.cache_set(HITS, one.as_bytes(), value, None).await?),
            Call::GetMany => {
                let keys = many().map(cache_key).collect();
                let rs = client.cache_get_many(HITS, keys, &[], false).await?;
                let all = rs.len() == self.batch && rs.iter().all(|r| r.status == hit);
                anyhow::ensure!(all, "cache_get_many: a preloaded key is missing");
            }
            Call::SetMany => {
                let entries = many().map(|k| (cache_key(k), value.to_vec())).collect();
                client.cache_set_many(HITS, entries, None).await?;
            }
            Call::SelectOne | Call::Select => {
                let n = [1, self.postgres.len()][usize::from(call == Call::Select)];
                let (pg, statement) = &self.postgres[task % n];
                let row = pg.query_opt(statement, &[&self.cold_key()?]).await?;
                anyhow::ensure!(row.is_some(), "PostgreSQL: a source row is missing");
            }
            Call::Load => {
                let cold = self.cold_key()?;
                let r = client.cache_get(MISSES, cold.as_bytes()).await?;
                let loaded = r.status == hit && r.loaded;
                anyhow::ensure!(
                    loaded,
                    "cache_get of a cold key: expected a load, found {r:?}"
                );
            }
        }
        Ok(match call {
            Call::RedisMget | Call::RedisSetPipeline | Call::GetMany | Call::SetMany => self.batch,
            _ => 1,
        } as u64)
    }
}

/// One measurement: requests, keys they handled, request latency in microseconds, and the
/// server's CPU time.
struct Measured {
    calls: u64,
    keys: u64,
    latency: Histogram<u64>,
    secs: f64,
    server_cpu_micros: Option<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Runs `clients` tasks, each sending `call` in a closed loop for `duration`, reading the
/// server's CPU time with `meter` before and after. Any error fails the measurement.
async fn drive(
    targets: &Arc<Targets>,
    call: Call,
    meter: &Meter,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let cpu = Window::start(meter).await?;
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..clients {
        let targets = targets.clone();
        tasks.spawn(async move {
            let (mut latency, mut calls, mut keys) = (histogram(), 0u64, 0u64);
            loop {
                let t = Instant::now();
                if t >= end {
                    return Ok::<_, anyhow::Error>((calls, keys, latency));
                }
                keys += targets.call(call, task).await?;
                calls += 1;
                latency.saturating_record(t.elapsed().as_micros() as u64);
            }
        });
    }
    let (mut calls, mut keys, mut latency) = (0, 0, histogram());
    while let Some(done) = tasks.join_next().await {
        let (c, k, h) = done??;
        (calls, keys) = (calls + c, keys + k);
        latency.add(&h).context("merging histograms")?;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Measured {
        calls,
        keys,
        latency,
        secs,
        server_cpu_micros: cpu.used().await?,
    })
}

/// The markdown table: one row per measurement; a notadb row compares its keys/s with the
/// peer row above it.
fn table(rows: &[(&str, String, usize, bool, Measured)]) -> String {
    let mut out = String::from(
        "| path | system | keys/request | requests/s | keys/s | server CPU µs/request | p50 ms | p99 ms | notadb ÷ peer |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut peer_keys_per_s = 0.0;
    for (path, system, per_call, peer, m) in rows {
        let keys_per_s = m.keys as f64 / m.secs;
        let ratio = if *peer {
            peer_keys_per_s = keys_per_s;
            String::new()
        } else {
            format!("{:.2}", keys_per_s / peer_keys_per_s)
        };
        let ms = |q: f64| m.latency.value_at_quantile(q) as f64 / 1000.0;
        let calls_per_s = m.calls as f64 / m.secs;
        let cpu = m.server_cpu_micros.map_or("n/a".into(), |c| {
            format!("{:.1}", c as f64 / m.calls.max(1) as f64)
        });
        out += &format!(
            "| {path} | {system} | {per_call} | {calls_per_s:.0} | {keys_per_s:.0} | {cpu} | {:.2} | {:.2} | {ratio} |\n",
            ms(0.5),
            ms(0.99),
        );
    }
    out
}

pub async fn run(placement: &Placement, args: CacheArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.keys > 0 && args.value_bytes > 0 && args.clients > 0 && args.connections > 0,
        "--keys, --value-bytes, --clients and --connections must be above 0"
    );
    anyhow::ensure!(
        (1..=PRELOAD_BATCH).contains(&args.batch)
            && !args.duration.is_zero()
            && args.source_rows > 0,
        "--batch takes 1 to {PRELOAD_BATCH} keys; --duration and --source-rows must be above 0"
    );
    let url = create_source(&args).await?;
    let sql = format!("SELECT v FROM {TABLE} WHERE k = $1");
    let mut postgres = Vec::new();
    for _ in 0..args.connections {
        let pg = pg_connect(&url).await?;
        let statement = pg.prepare(&sql).await?;
        postgres.push((pg, statement));
    }
    let pg_version: String = postgres[0]
        .0
        .query_one("SHOW server_version", &[])
        .await?
        .get(0);

    let config = format!(
        "[node]\nlog_fsync = {fsync:?}\n\n[[postgres_loaders]]\nname = {LOADER:?}\nurl = {url:?}\nsql = {sql:?}\n",
        fsync = args.log_fsync,
    );
    let node = StartedNode::start(&config, placement).await?;
    let addr = node.addr.clone();
    let partitions = Client::connect_grpc(&addr)
        .await?
        .status()
        .await?
        .partition_count;
    let notadb_cpu = Meter::Notadb(vec![Client::connect_grpc(&addr).await?]);
    let (redis_cpu, postgres_cpu) = (Meter::Named(&[cpu::REDIS]), Meter::Named(&[cpu::POSTGRES]));
    let redis_client = redis::Client::open(args.redis_url.as_str())?;
    let (mut notadb, mut redis) = (Vec::new(), Vec::new());
    for _ in 0..args.connections {
        notadb.push(Client::connect(&addr).await?.with_timeout(CALL_TIMEOUT));
        redis.push(redis_client.get_multiplexed_async_connection().await?);
    }
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut redis[0].clone())
        .await?;
    let redis_version = info.lines().find_map(|l| l.strip_prefix("redis_version:"));
    let redis_version = redis_version.unwrap_or("?").trim().to_string();
    let targets = Arc::new(Targets {
        notadb,
        redis,
        postgres,
        keys: args.keys,
        batch: args.batch,
        value: value_of(args.value_bytes),
        next_row: AtomicU64::new(0),
        rows: args.source_rows as u64,
    });
    let mut rows = Vec::new();
    let result = async {
        preload(&args, &targets).await?;
        for (path, system, call, peer) in PLAN {
            if call == Call::Select && args.connections == 1 {
                continue;
            }
            let system = system.replace("{n}", &args.connections.to_string());
            let meter = match call {
                Call::RedisGet | Call::RedisSet | Call::RedisMget | Call::RedisSetPipeline => {
                    &redis_cpu
                }
                Call::SelectOne | Call::Select => &postgres_cpu,
                Call::Get | Call::Set | Call::GetMany | Call::SetMany | Call::Load => &notadb_cpu,
            };
            let m = drive(&targets, call, meter, args.clients, args.duration).await?;
            eprintln!("{path}, {system}: {} requests", m.calls);
            let per_call = m.keys.checked_div(m.calls).unwrap_or(0) as usize;
            rows.push((path, system, per_call, peer, m));
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let all: Vec<String> = (0..args.keys as u64).map(key).collect();
    let del = redis::cmd("DEL").arg(all).clone();
    let cleanup = del.query_async::<()>(&mut targets.redis[0].clone()).await;
    drop(node);
    result?;
    cleanup?;

    let doc = format!(
        "## notadb cache beside Redis and PostgreSQL\n\n```sh\nnotadb-bench cache\n```\n\n\
         Machine: {cores} cores; the clients, the notadb node (`notadb serve`, its own \
         process), Redis {redis_version} and PostgreSQL {pg_version} run on them, over \
         loopback; {placement}. Server CPU µs/request: user + system time of the serving \
         process(es) over the requests (notadb: the node, which for misses leaves out the \
         loader's PostgreSQL work; peers: every redis-server or postgres process here).\n\n\
         Settings: {} keys picked uniformly, {}-byte values, {} client tasks in closed loops \
         for {:.1} s per measurement (no warm-up), sharing {n} notadb connections / {n} Redis \
         multiplexed connections / {n} PostgreSQL connections (task t uses connection t mod \
         {n}); batches of {}; latencies are per request. notadb: one node, {partitions} \
         partitions, embedded log with fsync `{}`; a set returns once appended to the log. \
         Misses: every get a key no request asked for before, in a cache whose loader runs \
         `SELECT v FROM {TABLE} WHERE k = $1` (text primary key, {} rows) on its one \
         PostgreSQL connection and appends the value to the log before answering; the peer \
         rows run the same prepared statement.\n\n{}",
        args.keys,
        args.value_bytes,
        args.clients,
        args.duration.as_secs_f64(),
        args.batch,
        args.log_fsync,
        args.source_rows,
        table(&rows),
        cores = crate::cpu::machine_cores(),
        n = args.connections,
        placement = placement.describe(),
    );
    println!("{doc}");
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, &doc).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}

/// Creates the benchmark database and the loader's table; returns the database's URL.
async fn create_source(args: &CacheArgs) -> anyhow::Result<String> {
    let url = fresh_database(&args.postgres_url, &args.database).await?;
    eprintln!("filling {TABLE} with {} rows…", args.source_rows);
    let db = pg_connect(&url).await?;
    let fill = format!(
        "CREATE TABLE {TABLE} (k text PRIMARY KEY, v text NOT NULL);
         INSERT INTO {TABLE} SELECT '{PREFIX}' || lpad(i::text, 9, '0'), lpad('', {vb}, md5(i::text))
           FROM generate_series(0, {last}) AS i",
        vb = args.value_bytes,
        last = args.source_rows - 1,
    );
    // VACUUM runs outside the implicit transaction of a multi-statement batch.
    for sql in [fill, format!("VACUUM ANALYZE {TABLE}")] {
        db.batch_execute(&sql)
            .await
            .context("filling the loader's table")?;
    }
    Ok(url)
}

/// Creates the two caches, sets every key in notadb and Redis, then checks that notadb answers
/// all of them as hits.
async fn preload(args: &CacheArgs, targets: &Targets) -> anyhow::Result<()> {
    let client = &targets.notadb[0];
    let entry_bytes = (key(0).len() + args.value_bytes) as u64 + ENTRY_OVERHEAD_BYTES;
    for (name, capacity_bytes, loader) in [
        (HITS, args.keys as u64 * entry_bytes * 2, ""),
        (MISSES, MISS_CACHE_BYTES, LOADER),
    ] {
        let settings = v1::CacheSettings {
            name: name.into(),
            capacity_bytes,
            loader: loader.into(),
            ..Default::default()
        };
        client.create_cache(settings, false).await?;
    }
    eprintln!("preloading {} keys into notadb and Redis…", args.keys);
    let value = &targets.value;
    let mut newest: BTreeMap<u16, Token> = BTreeMap::new();
    let all: Vec<u64> = (0..args.keys as u64).collect();
    for chunk in all.chunks(PRELOAD_BATCH) {
        let entries = chunk
            .iter()
            .map(|&i| (cache_key(key(i)), value.clone()))
            .collect();
        for t in client.cache_set_many(HITS, entries, None).await? {
            let e = newest.entry(t.partition.0).or_insert(t);
            e.seq = e.seq.max(t.seq);
        }
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("SET").arg(key(i)).arg(&value[..]).ignore();
        }
        pipe.query_async::<()>(&mut targets.redis[0].clone())
            .await?;
    }
    let tokens: Vec<Token> = newest.into_values().collect();
    for chunk in all.chunks(PRELOAD_BATCH) {
        let keys = chunk.iter().map(|&i| cache_key(key(i))).collect();
        let results = client.cache_get_many(HITS, keys, &tokens, true).await?;
        let hits = results
            .iter()
            .filter(|r| r.status == v1::CacheStatus::Hit as i32)
            .count();
        anyhow::ensure!(
            hits == chunk.len(),
            "after preloading, {hits} of {} keys are hits",
            chunk.len()
        );
    }
    Ok(())
}
