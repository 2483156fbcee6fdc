//! `notadb-bench run`: the seed questions, point `Get`, `MultiGet`, `Put` and a `Write` of 100
//! rows against a running
//! node with N concurrent clients; prints ops/s, the servers' CPU time per request and latency
//! percentiles as a markdown table. Given several nodes (`--addr before,after`) and
//! `--rounds`, it interleaves them workload by workload, so drift in a noisy machine falls on
//! both, and reports each one's median and spread.

use crate::compare::driver::median;
use crate::cpu::{Meter, Placement, Window};
use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use notadb_cli::load::{progress, send_writes};
use notadb_cli::seed;
use notadb_client::{proto, Client, ClientError, Element, KeyspaceSchema};
use notadb_types::{ElementType, KeyElement, Order, ValueFormat};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::time::{Duration, Instant};

/// Keyspace for the point workloads.
const KV: &str = "bench_kv";
/// Value size of the point workloads, bytes.
const VALUE_BYTES: usize = 100;
/// Keyspace of the `write-100` workload: rows `(g, k)` partitioned by `g`.
const ROWS: &str = "bench_rows";
/// Groups (partition keys) of `bench_rows`.
const ROW_GROUPS: usize = 1000;
const WORKLOADS: [&str; 8] = [
    "q1-scan",
    "q1-query",
    "q2-aggregate",
    "q2-query",
    "get",
    "multi-get",
    "put",
    "write-100",
];
/// Keys of one `multi-get` request.
const MULTI_GET_KEYS: usize = 100;
/// Rows of one `write-100` request, all of one group (one partition).
const WRITE_ROWS: usize = 100;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Concurrent clients, comma separated (each its own connection), e.g. `1,16`.
    #[arg(long, default_value = "16")]
    pub clients: String,
    /// Measured time per workload and client count.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before each measurement.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Workloads, comma separated: q1-scan, q1-query, q2-aggregate, q2-query, get,
    /// multi-get (100 keys), put, write-100 (a `Write` of 100 rows of one partition), or all.
    #[arg(long, default_value = "all")]
    pub workloads: String,
    /// Keys loaded into `bench_kv` for get/put.
    #[arg(long, default_value_t = 100_000)]
    pub kv_keys: usize,
    /// Skip loading `bench_kv` (it is already loaded).
    #[arg(long)]
    pub no_load: bool,
    /// The demo data set's sizes (the seed questions pick stores, products and users in them).
    #[arg(long, default_value_t = 100)]
    pub stores: usize,
    #[arg(long, default_value_t = 20)]
    pub products: usize,
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Route each read straight to a replica owning its partition (the smart client) instead
    /// of sending everything to `--addr`, which forwards what it does not own.
    #[arg(long)]
    pub routed: bool,
    /// Send every call over gRPC instead of the frame protocol (to compare the two).
    #[arg(long)]
    pub grpc: bool,
    /// Measurements of each workload per node; with several nodes in `--addr`, rounds
    /// alternate between them.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
}

/// A keyspace of byte values under one string key element `k` (the get, put and ingest
/// workloads).
pub(crate) fn string_keyed_bytes(name: &str) -> KeyspaceSchema {
    string_keyed(name, ValueFormat::Bytes)
}

/// A keyspace of JSON values under one string key element `k` (the transmitter benchmark).
pub(crate) fn string_keyed_json(name: &str) -> KeyspaceSchema {
    string_keyed(name, ValueFormat::Json)
}

fn string_keyed(name: &str, value_format: ValueFormat) -> KeyspaceSchema {
    KeyspaceSchema {
        name: name.into(),
        key: vec![KeyElement {
            name: "k".into(),
            ty: ElementType::String,
            order: Order::Asc,
        }],
        partition_by: 1,
        value_format,
        ttl: None,
    }
}

/// The schema of `bench_rows`: byte values under `(g, k)`, partitioned by `g`.
fn rows_schema() -> KeyspaceSchema {
    let element = |name: &str| KeyElement {
        name: name.into(),
        ty: ElementType::String,
        order: Order::Asc,
    };
    KeyspaceSchema {
        name: ROWS.into(),
        key: vec![element("g"), element("k")],
        partition_by: 1,
        value_format: ValueFormat::Bytes,
        ttl: None,
    }
}

fn kv_key(i: usize) -> Vec<Element> {
    vec![Element::String(format!("key-{i:08}"))]
}

fn value(rng: &mut StdRng) -> proto::Value {
    let bytes: Vec<u8> = (0..VALUE_BYTES)
        .map(|_| rng.random_range(b'a'..=b'z'))
        .collect();
    proto::Value {
        kind: Some(proto::value::Kind::Bytes(bytes)),
    }
}

/// One request of a workload.
async fn call(
    workload: &str,
    client: &Client,
    rng: &mut StdRng,
    args: &RunArgs,
) -> Result<(), ClientError> {
    match workload {
        "q1-scan" => {
            let (store, product) = (
                seed::store(rng.random_range(0..args.stores)),
                seed::product(rng.random_range(0..args.products)),
            );
            client
                .scan(seed::top_items_request(&store, &product, &[]))
                .await
                .map(drop)
        }
        "q1-query" => {
            let store = [Element::String(seed::store(
                rng.random_range(0..args.stores),
            ))];
            let a =
                json!({"product": seed::product(rng.random_range(0..args.products)), "limit": 10});
            client
                .query("top_available", "items", &store, &a, &[])
                .await
                .map(drop)
        }
        "q2-aggregate" => {
            let user = seed::user(rng.random_range(0..args.users));
            client
                .aggregate(seed::most_viewed_request(&user))
                .await
                .map(drop)
        }
        "q2-query" => {
            let user = [Element::String(seed::user(rng.random_range(0..args.users)))];
            client
                .query(
                    "most_viewed",
                    "activity",
                    &user,
                    &json!({"window_secs": 3600}),
                    &[],
                )
                .await
                .map(drop)
        }
        "get" => client
            .get(KV, &kv_key(rng.random_range(0..args.kv_keys)), &[])
            .await
            .map(drop),
        "multi-get" => {
            let keys: Vec<Vec<Element>> = (0..MULTI_GET_KEYS)
                .map(|_| kv_key(rng.random_range(0..args.kv_keys)))
                .collect();
            client.multi_get(KV, &keys, &[]).await.map(drop)
        }
        "put" => {
            let v = value(rng);
            client
                .put(KV, &kv_key(rng.random_range(0..args.kv_keys)), v)
                .await
                .map(drop)
        }
        "write-100" => {
            let group = format!("group-{:04}", rng.random_range(0..ROW_GROUPS));
            let mutations = (0..WRITE_ROWS)
                .map(|_| {
                    let key = [
                        Element::String(group.clone()),
                        Element::String(format!("row-{:06}", rng.random_range(0..100_000))),
                    ];
                    proto::Mutation {
                        op: Some(proto::mutation::Op::Put(proto::PutRequest {
                            keyspace: ROWS.into(),
                            key: Some(notadb_client::tuple(&key)),
                            value: Some(value(rng)),
                        })),
                    }
                })
                .collect();
            client.write(mutations).await.map(drop)
        }
        other => unreachable!("unknown workload {other}"),
    }
}

struct Measured {
    ops: u64,
    errors: u64,
    histogram: Histogram<u64>,
    elapsed: Duration,
    /// CPU time the measured nodes' processes used per request in the window, microseconds.
    server_cpu_per_op: Option<f64>,
}

impl Measured {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

async fn measure(
    addr: &str,
    meter: &Meter,
    workload: &'static str,
    clients: usize,
    args: &RunArgs,
) -> anyhow::Result<Measured> {
    let mut connections = Vec::new();
    for _ in 0..clients {
        let client = if args.routed {
            Client::connect_routed(addr).await?
        } else if args.grpc {
            Client::connect_grpc(addr).await?
        } else {
            Client::connect(addr).await?
        };
        connections.push(client.with_timeout(Duration::from_secs(10)));
    }
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, client) in connections.into_iter().enumerate() {
        let args = RunArgs {
            clients: String::new(),
            workloads: String::new(),
            ..*args
        };
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(i as u64 + 1);
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let (mut ops, mut errors) = (0u64, 0u64);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let result = call(workload, &client, &mut rng, &args).await;
                if t >= measure_from {
                    ops += 1;
                    histogram.saturating_record(t.elapsed().as_micros() as u64);
                    if result.is_err() {
                        errors += 1;
                    }
                }
                if let Err(e) = result {
                    if e.code() == Some(notadb_client::Code::NotFound) {
                        return Err(anyhow::anyhow!("{e}"));
                    }
                }
            }
            Ok::<_, anyhow::Error>((ops, errors, histogram))
        });
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let window = Window::start(meter).await?;
    tokio::time::sleep_until(end.into()).await;
    let cpu_used = window.used().await?;
    let mut total = Measured {
        ops: 0,
        errors: 0,
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        elapsed: args.duration,
        server_cpu_per_op: None,
    };
    while let Some(done) = tasks.join_next().await {
        let (ops, errors, h) = done??;
        total.ops += ops;
        total.errors += errors;
        total.histogram.add(&h).context("merging histograms")?;
    }
    total.server_cpu_per_op = cpu_used.map(|c| c as f64 / total.ops.max(1) as f64);
    Ok(total)
}

/// Loads `bench_kv` into the node at `addr` and waits until it is applied.
async fn load_kv(client: &Client, args: &RunArgs) -> anyhow::Result<()> {
    client
        .create_keyspace(&string_keyed_bytes(KV), true)
        .await?;
    let bar = progress(args.kv_keys as u64, KV);
    let mut rng = StdRng::seed_from_u64(7);
    let writes: Vec<Vec<proto::Mutation>> = (0..args.kv_keys)
        .map(|i| {
            vec![proto::Mutation {
                op: Some(proto::mutation::Op::Put(proto::PutRequest {
                    keyspace: KV.into(),
                    key: Some(notadb_client::tuple(&kv_key(i))),
                    value: Some(value(&mut rng)),
                })),
            }]
        })
        .collect();
    let tokens = send_writes(client, writes.into_iter().map(|w| vec![w]), 64, &bar).await?;
    bar.finish();
    client
        .clone()
        .with_timeout(Duration::from_secs(600))
        .multi_get(KV, &[kv_key(0)], &tokens)
        .await?;
    Ok(())
}

/// `median` or `median (min–max)` when several rounds were measured; `n/a` for none.
fn with_spread(v: Vec<f64>, precision: usize) -> String {
    let (lo, hi) = (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    match v.len() {
        0 => "n/a".into(),
        1 => format!("{:.precision$}", v[0]),
        _ => format!(
            "{:.precision$} ({lo:.precision$}–{hi:.precision$})",
            median(v)
        ),
    }
}

pub async fn run(addr: &str, placement: &Placement, args: RunArgs) -> anyhow::Result<()> {
    let clients: Vec<usize> = args
        .clients
        .split(',')
        .map(|c| c.trim().parse())
        .collect::<Result<_, _>>()
        .context("--clients: expected numbers")?;
    if clients.contains(&0) {
        bail!("--clients: at least 1");
    }
    if args.rounds == 0 {
        bail!("--rounds: at least 1");
    }
    let workloads: Vec<&'static str> = if args.workloads == "all" {
        WORKLOADS.to_vec()
    } else {
        args.workloads
            .split(',')
            .map(|w| {
                WORKLOADS
                    .iter()
                    .copied()
                    .find(|k| *k == w.trim())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--workloads: unknown `{w}` (known: {})",
                            WORKLOADS.join(", ")
                        )
                    })
            })
            .collect::<anyhow::Result<_>>()?
    };
    if [args.stores, args.products, args.users].contains(&0) {
        bail!("--stores, --products and --users must be at least 1");
    }
    if args.kv_keys < seed::CATALOG_ITEMS {
        bail!("--kv-keys: at least {}", seed::CATALOG_ITEMS);
    }
    let addrs: Vec<&str> = addr.split(',').map(str::trim).collect();
    let mut meters = Vec::new();
    for &addr in &addrs {
        let client = Client::connect(addr).await?;
        let point = ["get", "multi-get", "put"];
        if workloads.iter().any(|w| point.contains(w)) && !args.no_load {
            load_kv(&client, &args).await?;
        }
        if workloads.contains(&"write-100") {
            client.create_keyspace(&rows_schema(), true).await?;
        }
        println!(
            "node {addr}: client transport {}",
            if args.grpc {
                "grpc"
            } else {
                client.transport()
            },
        );
        meters.push(Meter::notadb_at(addr).await?);
    }
    println!(
        "\n{}; server CPU: user + system time of the node processes (every ready member of a \
         cluster) in the measured window; {} round(s){}",
        placement.describe(),
        args.rounds,
        if addrs.len() > 1 {
            ", the nodes alternating; figures are the median (smallest–largest)"
        } else {
            ""
        }
    );
    println!(
        "\n| workload | clients | node | ops/s | server CPU µs/op | server cores | p50 ms | p99 ms | p999 ms | errors |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for workload in &workloads {
        for &n in &clients {
            let mut results: Vec<Vec<Measured>> = addrs.iter().map(|_| Vec::new()).collect();
            let mut failed = vec![None; addrs.len()];
            for _ in 0..args.rounds {
                for (i, (&addr, meter)) in addrs.iter().zip(&meters).enumerate() {
                    match measure(addr, meter, workload, n, &args).await {
                        Ok(m) => results[i].push(m),
                        Err(e) => failed[i] = Some(e.to_string()),
                    }
                }
            }
            for (i, &addr) in addrs.iter().enumerate() {
                let ms = &results[i];
                if let Some(e) = &failed[i] {
                    println!("| {workload} | {n} | {addr} | skipped: {e} | | | | | | |");
                    continue;
                }
                let each = |f: &dyn Fn(&Measured) -> Option<f64>| -> Vec<f64> {
                    ms.iter().filter_map(f).collect()
                };
                let q = |p: f64| {
                    move |m: &Measured| Some(m.histogram.value_at_quantile(p) as f64 / 1000.0)
                };
                println!(
                    "| {workload} | {n} | {addr} | {} | {} | {} | {} | {} | {} | {} |",
                    with_spread(each(&|m| Some(m.ops_per_sec())), 0),
                    with_spread(each(&|m| m.server_cpu_per_op), 1),
                    with_spread(
                        each(&|m| m.server_cpu_per_op.map(|c| c * m.ops_per_sec() / 1e6)),
                        2
                    ),
                    with_spread(each(&q(0.5)), 3),
                    with_spread(each(&q(0.99)), 3),
                    with_spread(each(&q(0.999)), 3),
                    ms.iter().map(|m| m.errors).sum::<u64>()
                );
            }
        }
    }
    Ok(())
}

/// A PostgreSQL connection whose driver runs on a spawned task.
pub async fn pg_connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(conn);
    Ok(client)
}

/// Drops and creates the database `name` on the server of `admin_url`; returns its URL.
pub async fn fresh_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let admin = pg_connect(admin_url).await?;
    // One statement per call: DROP/CREATE DATABASE cannot run inside a batch.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .context("creating the benchmark database")?;
    }
    let (base, _) = admin_url
        .rsplit_once('/')
        .context("the URL names no database")?;
    Ok(format!("{base}/{name}"))
}

/// The config of an in-process node for a benchmark: loopback on free ports, data in `dir`.
pub fn loopback_config(dir: &std::path::Path) -> anyhow::Result<notadb::ServerConfig> {
    let mut config = notadb::ServerConfig {
        grpc_addr: "127.0.0.1:0".parse()?,
        admin_addr: "127.0.0.1:0".parse()?,
        frame_addr: Some("127.0.0.1:0".parse()?),
        ..notadb::ServerConfig::default()
    };
    config.node.data_dir = dir.to_path_buf();
    Ok(config)
}
