//! `notadb bench`: the seed questions, point `Get` and `Put` against a running node with N
//! concurrent clients; prints ops/s, the servers' CPU time per request and latency
//! percentiles as a markdown table.

use crate::load::{progress, send_writes};
use crate::seed;
use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
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
const WORKLOADS: [&str; 7] = [
    "q1-scan",
    "q1-query",
    "q2-aggregate",
    "q2-query",
    "get",
    "multi-get",
    "put",
];
/// Keys of one `multi-get` request.
const MULTI_GET_KEYS: usize = 100;

#[derive(Args, Debug)]
pub struct BenchArgs {
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
    /// multi-get (100 keys), put, or all.
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
    args: &BenchArgs,
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
        other => unreachable!("unknown workload {other}"),
    }
}

struct Measured {
    ops: u64,
    errors: u64,
    histogram: Histogram<u64>,
    elapsed: Duration,
    /// CPU time the measured nodes' processes used in the window, microseconds.
    server_cpu_micros: u64,
}

/// CPU time the processes of `nodes` have used so far, microseconds (from their `Status`).
async fn servers_cpu(nodes: &[Client]) -> anyhow::Result<u64> {
    let mut total = 0;
    for node in nodes {
        total += node
            .status()
            .await
            .context("reading a node's CPU time")?
            .cpu_micros;
    }
    Ok(total)
}

/// The nodes whose CPU time a run accounts: every ready member of the cluster `addr` is in
/// (requests forwarded or routed to other nodes cost there), or just `addr`.
async fn measured_nodes(addr: &str) -> anyhow::Result<Vec<Client>> {
    let entry = Client::connect_grpc(addr).await?;
    let members: Vec<String> = match entry.cluster().await {
        Ok(c) if !c.members.is_empty() => c
            .members
            .into_iter()
            .filter(|m| m.ready)
            .map(|m| m.grpc_addr)
            .collect(),
        _ => return Ok(vec![entry]),
    };
    let mut nodes = Vec::new();
    for m in members {
        nodes.push(Client::connect_grpc(&m).await?);
    }
    Ok(nodes)
}

async fn measure(
    addr: &str,
    nodes: &[Client],
    workload: &'static str,
    clients: usize,
    args: &BenchArgs,
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
        let args = BenchArgs {
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
    let cpu_from = servers_cpu(nodes).await?;
    tokio::time::sleep_until(end.into()).await;
    let cpu_to = servers_cpu(nodes).await?;
    let mut total = Measured {
        ops: 0,
        errors: 0,
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        elapsed: args.duration,
        server_cpu_micros: cpu_to.saturating_sub(cpu_from),
    };
    while let Some(done) = tasks.join_next().await {
        let (ops, errors, h) = done??;
        total.ops += ops;
        total.errors += errors;
        total.histogram.add(&h).context("merging histograms")?;
    }
    Ok(total)
}

pub async fn run(addr: &str, args: BenchArgs) -> anyhow::Result<()> {
    let clients: Vec<usize> = args
        .clients
        .split(',')
        .map(|c| c.trim().parse())
        .collect::<Result<_, _>>()
        .context("--clients: expected numbers")?;
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
    let client = Client::connect(addr).await?;
    if workloads
        .iter()
        .any(|w| ["get", "multi-get", "put"].contains(w))
        && !args.no_load
    {
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
        let tokens = send_writes(&client, writes.into_iter().map(|w| vec![w]), 64, &bar).await?;
        bar.finish();
        client
            .clone()
            .with_timeout(Duration::from_secs(600))
            .multi_get(KV, &[kv_key(0)], &tokens)
            .await?;
    }
    let nodes = measured_nodes(addr).await?;
    println!(
        "\nclient transport: {}; server CPU: {} node process(es), user + system time in the \
         measured window",
        if args.grpc {
            "grpc"
        } else {
            client.transport()
        },
        nodes.len()
    );
    println!(
        "\n| workload | clients | ops/s | server CPU µs/op | server cores | p50 ms | p99 ms | p999 ms | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for workload in &workloads {
        for &n in &clients {
            match measure(addr, &nodes, workload, n, &args).await {
                Ok(m) => {
                    let q = |p: f64| m.histogram.value_at_quantile(p) as f64 / 1000.0;
                    println!(
                        "| {workload} | {n} | {:.0} | {:.1} | {:.2} | {:.3} | {:.3} | {:.3} | {} |",
                        m.ops as f64 / m.elapsed.as_secs_f64(),
                        m.server_cpu_micros as f64 / m.ops.max(1) as f64,
                        m.server_cpu_micros as f64 / m.elapsed.as_micros() as f64,
                        q(0.5),
                        q(0.99),
                        q(0.999),
                        m.errors
                    );
                }
                Err(e) => println!("| {workload} | {n} | skipped: {e} | | | | | | |"),
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
