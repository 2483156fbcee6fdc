//! `notadb-bench ingest`: end-to-end ingest of a cluster beside its broker's raw publishing in
//! the same run, on JetStream, on Kafka or on both: acknowledged writes per second, and the lag
//! from acknowledgement until every replica of the owning group applied the write.

use anyhow::{bail, Context};
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use notadb_client::{proto, Client, Element, Token};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYSPACE: &str = "bench_ingest";

/// Scratch stream (JetStream, deleted after) and topic (Kafka, kept unless
/// `--delete-raw-topic`) of the raw ceilings.
const RAW_SCRATCH: &str = "notadb_bench_raw";

/// `retention.ms` of the scratch topic, so a broker that enforces retention reclaims it.
const RAW_TOPIC_RETENTION: Duration = Duration::from_secs(3600);

/// Bytes a raw publish carries beyond the value, standing in for a write's key and framing.
const RAW_OVERHEAD_BYTES: usize = 40;

/// How long a raw Kafka produce (its retries included) or admin request may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// NATS server measured when neither `--nats-url` nor `--kafka-addr` is given.
const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// NATS server of the JetStream cluster at `--addr` (for the raw JetStream ceiling). The
    /// JetStream cluster is measured when this is given, or when `--kafka-addr` is not (then
    /// at nats://127.0.0.1:4222): `--kafka-addr` without `--nats-url` measures Kafka only.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// gRPC address of a node of a cluster on Kafka, measured after the JetStream one;
    /// needs `--kafka-bootstrap`.
    #[arg(long, requires = "kafka_bootstrap")]
    pub kafka_addr: Option<String>,
    /// Bootstrap servers of the Kafka broker of `--kafka-addr` (for the raw Kafka ceiling);
    /// needs `--kafka-addr`.
    #[arg(long, requires = "kafka_addr")]
    pub kafka_bootstrap: Option<String>,
    /// Delete the raw Kafka produce's scratch topic `notadb_bench_raw` after the run (a failed
    /// delete is ignored). Off by default, and the topic is reused by the next run: tansu 0.6
    /// deletes every topic of the broker when asked to delete one, which would wipe the log of
    /// the cluster under test. Turn it on for a real Kafka broker.
    #[arg(long, requires = "kafka_bootstrap")]
    pub delete_raw_topic: bool,
    /// Writes per measurement.
    #[arg(long, default_value_t = 50_000)]
    pub writes: usize,
    /// Writes (and raw publishes or produces) in flight: the concurrent clients of this
    /// open-ended load.
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Value size, bytes.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Length of the paced run that measures apply lag at half the measured maximum rate.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub lag_duration: std::time::Duration,
    /// Client connections per cluster, spread over every member of the cluster (any node
    /// appends any write); 1 sends everything through the address given (`--addr` or
    /// `--kafka-addr`).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
}

impl IngestArgs {
    /// The NATS server of the JetStream cluster, `None` when the run measures Kafka only.
    fn jetstream_nats_url(&self) -> Option<&str> {
        match (&self.nats_url, &self.kafka_addr) {
            (Some(url), _) => Some(url),
            (None, None) => Some(DEFAULT_NATS_URL),
            (None, Some(_)) => None,
        }
    }
}

fn value(bytes: usize) -> proto::Value {
    proto::Value {
        kind: Some(proto::value::Kind::Bytes(vec![b'x'; bytes])),
    }
}

/// One broker's rows of the table: its raw ceiling and the notadb cluster on it.
struct BrokerRun {
    /// `JetStream` or `Kafka`.
    broker: &'static str,
    /// What the raw row measures, e.g. `publish`.
    raw_what: &'static str,
    /// Raw messages per second.
    raw: f64,
    cluster: ClusterRun,
}

/// One cluster's measurements.
struct ClusterRun {
    /// Client connections the writes went through.
    connections: usize,
    /// Unpaced ingest.
    max: Ingest,
    /// CPU time of every member of the cluster during the unpaced ingest, microseconds.
    nodes_cpu: Option<u64>,
    /// CPU time of the broker's processes on this machine during the unpaced ingest.
    broker_cpu: Option<u64>,
    /// Rate of the paced run, writes/s.
    lag_rate: f64,
    /// Apply lag of the paced run, microseconds.
    lag: Histogram<u64>,
}

pub async fn run(addr: &str, args: IngestArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    if let Some(nats_url) = args.jetstream_nats_url() {
        let raw = raw_publish(nats_url, &args)
            .await
            .context("raw JetStream publish")?;
        let cluster = measure_cluster(addr, &args, &[crate::cpu::NATS])
            .await
            .with_context(|| format!("the cluster on JetStream at {addr}"))?;
        runs.push(BrokerRun {
            broker: "JetStream",
            raw_what: "publish",
            raw,
            cluster,
        });
    }
    if let (Some(kafka_addr), Some(bootstrap)) = (&args.kafka_addr, &args.kafka_bootstrap) {
        let raw = raw_produce(bootstrap, &args)
            .await
            .context("raw Kafka produce")?;
        let cluster = measure_cluster(kafka_addr, &args, &[crate::cpu::TANSU])
            .await
            .with_context(|| format!("the cluster on Kafka at {kafka_addr}"))?;
        runs.push(BrokerRun {
            broker: "Kafka",
            raw_what: "produce (acks=all, idempotent)",
            raw,
            cluster,
        });
    }
    print_table(&args, &runs);
    Ok(())
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// CPU microseconds per write, or blank when unmeasured.
fn per_write(cpu: Option<u64>, writes: usize) -> String {
    cpu.map_or_else(String::new, |c| {
        format!("{:.1} µs", c as f64 / writes.max(1) as f64)
    })
}

fn print_table(args: &IngestArgs, runs: &[BrokerRun]) {
    println!("| measurement | writes | writes/s | p50 | p99 | nodes' CPU per write | broker's CPU per write |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for run in runs {
        let BrokerRun {
            broker,
            raw_what,
            raw,
            cluster: c,
        } = run;
        println!(
            "| raw {broker} {raw_what}, {} in flight (ceiling) | {} | {raw:.0} | | | | |",
            args.clients, args.writes
        );
        println!(
            "| notadb on {broker}: Put acknowledged, {} in flight over {} connection(s) | {} | {:.0} ({:.0}% of raw {broker}) | {:.2} ms | {:.2} ms | {} | {} |",
            args.clients,
            c.connections,
            args.writes,
            c.max.rate,
            100.0 * c.max.rate / raw,
            ms(c.max.latency.value_at_quantile(0.5)),
            ms(c.max.latency.value_at_quantile(0.99)),
            per_write(c.nodes_cpu, args.writes),
            per_write(c.broker_cpu, args.writes),
        );
        println!(
            "| notadb on {broker}: apply lag on every replica at {:.0} writes/s (half the maximum) | {} | {:.0} | {:.2} ms | {:.2} ms | | |",
            c.lag_rate,
            c.lag.len(),
            c.lag.len() as f64 / args.lag_duration.as_secs_f64(),
            ms(c.lag.value_at_quantile(0.5)),
            ms(c.lag.value_at_quantile(0.99))
        );
    }
}

/// The cluster reached at `addr`: unpaced ingest, with the CPU time its members and the
/// broker (processes named `broker`) spend, then apply lag at half its rate.
async fn measure_cluster(
    addr: &str,
    args: &IngestArgs,
    broker: &'static [&'static str],
) -> anyhow::Result<ClusterRun> {
    let client = Client::connect(addr).await?;
    client
        .create_keyspace(&crate::run::string_keyed_bytes(KEYSPACE), true)
        .await?;
    let cluster = client.cluster().await?;
    let mut writers = vec![client.clone()];
    if args.connections > 1 {
        writers.clear();
        for i in 0..args.connections {
            let member = &cluster.members[i % cluster.members.len()];
            writers.push(Client::connect(&member.grpc_addr).await?);
        }
    }
    let nodes = crate::cpu::Meter::notadb_at(addr).await?;
    let broker = crate::cpu::Meter::Named(broker);
    let (nodes_window, broker_window) = (
        crate::cpu::Window::start(&nodes).await?,
        crate::cpu::Window::start(&broker).await?,
    );
    let max = ingest(&writers, args, args.writes, None).await?;
    let (nodes_cpu, broker_cpu) = (nodes_window.used().await?, broker_window.used().await?);
    // Every replica of every group, by group, to wait on tokens.
    let mut replicas: HashMap<u32, Vec<Client>> = HashMap::new();
    for m in &cluster.members {
        replicas
            .entry(m.group)
            .or_default()
            .push(Client::connect(&m.grpc_addr).await?);
    }
    let lag_rate = max.rate / 2.0;
    let paced_writes = (lag_rate * args.lag_duration.as_secs_f64()) as usize;
    let lag = paced_lag(
        &writers,
        args,
        paced_writes,
        lag_rate,
        &cluster.assignment,
        &replicas,
    )
    .await?;
    Ok(ClusterRun {
        connections: writers.len(),
        max,
        nodes_cpu,
        broker_cpu,
        lag_rate,
        lag,
    })
}

/// Raw JetStream publishes with `clients` acks outstanding, on a scratch stream; msgs/s.
async fn raw_publish(nats_url: &str, args: &IngestArgs) -> anyhow::Result<f64> {
    let nats = async_nats::connect(nats_url).await?;
    let js = async_nats::jetstream::new(nats);
    let subject = format!("{RAW_SCRATCH}.x");
    let _ = js.delete_stream(RAW_SCRATCH).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: RAW_SCRATCH.into(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await?;
    let payload = bytes::Bytes::from(vec![b'x'; args.value_bytes + RAW_OVERHEAD_BYTES]);
    let started = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for _ in 0..args.writes {
        if acks.len() >= args.clients {
            acks.next().await.expect("pending ack")?;
        }
        let ack = js.publish(subject.clone(), payload.clone()).await?;
        acks.push(async move { ack.await });
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    let rate = args.writes as f64 / started.elapsed().as_secs_f64();
    let _ = js.delete_stream(RAW_SCRATCH).await;
    Ok(rate)
}

/// Raw Kafka produces with `clients` deliveries outstanding, on a scratch topic of one
/// partition (created when missing, deleted after with `--delete-raw-topic`); msgs/s.
async fn raw_produce(bootstrap: &str, args: &IngestArgs) -> anyhow::Result<f64> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    let admin: AdminClient<DefaultClientContext> =
        config.create().context("create the admin client")?;
    let admin_options = AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT));
    let retention = RAW_TOPIC_RETENTION.as_millis().to_string();
    let topic =
        NewTopic::new(RAW_SCRATCH, 1, TopicReplication::Fixed(-1)).set("retention.ms", &retention);
    for result in admin.create_topics([&topic], &admin_options).await? {
        match result {
            // Kept by an earlier run: produce to it all the same.
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("create topic {name:?}: {code}"),
        }
    }
    let rate = produce(&config, args).await;
    if args.delete_raw_topic {
        let _ = admin.delete_topics(&[RAW_SCRATCH], &admin_options).await;
    }
    rate
}

/// The produces of [`raw_produce`], with an idempotent `acks=all` producer.
async fn produce(config: &ClientConfig, args: &IngestArgs) -> anyhow::Result<f64> {
    let producer: FutureProducer = config
        .clone()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("message.timeout.ms", KAFKA_TIMEOUT.as_millis().to_string())
        .create()
        .context("create the producer")?;
    let payload = vec![b'x'; args.value_bytes + RAW_OVERHEAD_BYTES];
    let record = || {
        FutureRecord::<(), Vec<u8>>::to(RAW_SCRATCH)
            .partition(0)
            .payload(&payload)
    };
    // One produce before the clock starts: the topic's metadata and the producer id.
    producer
        .send(record(), KAFKA_TIMEOUT)
        .await
        .map_err(|(e, _)| e)
        .context("the first produce")?;
    let started = Instant::now();
    let mut deliveries = futures::stream::FuturesUnordered::new();
    for _ in 0..args.writes {
        if deliveries.len() >= args.clients {
            delivered(deliveries.next().await.expect("pending delivery"))?;
        }
        deliveries.push(producer.send_result(record()).map_err(|(e, _)| e)?);
    }
    while let Some(delivery) = deliveries.next().await {
        delivered(delivery)?;
    }
    Ok(args.writes as f64 / started.elapsed().as_secs_f64())
}

/// A delivery's outcome as an error when the broker did not acknowledge the record.
fn delivered<E: std::fmt::Display>(delivery: Result<OwnedDeliveryResult, E>) -> anyhow::Result<()> {
    match delivery {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(error).context("produce"),
        Err(canceled) => bail!("the producer dropped a delivery: {canceled}"),
    }
}

struct Ingest {
    rate: f64,
    latency: Histogram<u64>,
}

/// `writes` puts with `clients` outstanding, optionally paced to `rate` per second.
async fn ingest(
    clients: &[Client],
    args: &IngestArgs,
    writes: usize,
    rate: Option<f64>,
) -> anyhow::Result<Ingest> {
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let started = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..writes {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        if pending.len() >= args.clients {
            let us = pending.next().await.expect("pending write")?;
            latency.record(us)?;
        }
        let client = clients[i % clients.len()].clone();
        let v = value(args.value_bytes);
        pending.push(async move {
            let t = Instant::now();
            client
                .put(KEYSPACE, &[Element::String(format!("k{i:09}"))], v)
                .await?;
            Ok::<u64, anyhow::Error>(t.elapsed().as_micros() as u64)
        });
    }
    while let Some(us) = pending.next().await {
        latency.record(us?)?;
    }
    Ok(Ingest {
        rate: writes as f64 / started.elapsed().as_secs_f64(),
        latency,
    })
}

/// Paced puts; for each, the time from its acknowledgement until every replica of its group
/// answered a read carrying its token (so it had applied it), microseconds.
async fn paced_lag(
    clients: &[Client],
    args: &IngestArgs,
    writes: usize,
    rate: f64,
    assignment: &[u32],
    replicas: &HashMap<u32, Vec<Client>>,
) -> anyhow::Result<Histogram<u64>> {
    let replicas = Arc::new(replicas.clone());
    let assignment: Arc<Vec<u32>> = Arc::new(assignment.to_vec());
    let mut lag = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let started = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..writes {
        let due = started + Duration::from_secs_f64(i as f64 / rate.max(1.0));
        tokio::time::sleep_until(due.into()).await;
        while pending.len() >= args.clients {
            lag.record(pending.next().await.expect("pending")?)?;
        }
        let client = clients[i % clients.len()].clone();
        let replicas = replicas.clone();
        let assignment = assignment.clone();
        let v = value(args.value_bytes);
        pending.push(async move {
            let key = vec![Element::String(format!("lag{i:09}"))];
            let token: Token = client.put(KEYSPACE, &key, v).await?;
            let acked = Instant::now();
            let group = assignment[usize::from(token.partition.0)];
            let tokens = [token];
            let reads = replicas
                .get(&group)
                .into_iter()
                .flatten()
                .map(|r| r.get(KEYSPACE, &key, &tokens));
            for read in futures::future::join_all(reads).await {
                read?;
            }
            Ok::<u64, anyhow::Error>(acked.elapsed().as_micros() as u64)
        });
    }
    while let Some(us) = pending.next().await {
        lag.record(us?)?;
    }
    Ok(lag)
}
