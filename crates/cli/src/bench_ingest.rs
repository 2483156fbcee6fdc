//! `notadb bench-ingest`: end-to-end ingest of a cluster beside raw JetStream publishing in
//! the same run: acknowledged writes per second, and the lag from acknowledgement until every
//! replica of the owning group applied the write.

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use notadb_client::{proto, Client, Element, Token};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYSPACE: &str = "bench_ingest";

#[derive(Args, Debug)]
pub struct BenchIngestArgs {
    /// NATS server of the cluster (for the raw JetStream ceiling).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Writes per measurement.
    #[arg(long, default_value_t = 50_000)]
    pub writes: usize,
    /// Writes (and raw publishes) in flight.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// Value size, bytes.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Seconds of the paced run that measures apply lag at half the measured maximum rate.
    #[arg(long, default_value_t = 10)]
    pub lag_secs: u64,
    /// Client connections, spread over every member of the cluster (any node appends any
    /// write); 1 sends everything through `--addr`.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
}

fn value(bytes: usize) -> proto::Value {
    proto::Value {
        kind: Some(proto::value::Kind::Bytes(vec![b'x'; bytes])),
    }
}

pub async fn run(addr: &str, args: BenchIngestArgs) -> anyhow::Result<()> {
    let raw = raw_publish(&args).await.context("raw JetStream publish")?;
    let client = Client::connect(addr).await?;
    client
        .create_keyspace(&crate::bench::string_keyed_bytes(KEYSPACE), true)
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
    let max = ingest(&writers, &args, args.writes, None).await?;
    // Every replica of every group, by group, to wait on tokens.
    let mut replicas: HashMap<u32, Vec<Client>> = HashMap::new();
    for m in &cluster.members {
        replicas
            .entry(m.group)
            .or_default()
            .push(Client::connect(&m.grpc_addr).await?);
    }
    let rate = max.rate / 2.0;
    let paced_writes = (rate * args.lag_secs as f64) as usize;
    let lag = paced_lag(
        &writers,
        &args,
        paced_writes,
        rate,
        &cluster.assignment,
        &replicas,
    )
    .await?;
    println!("| measurement | writes | writes/s | p50 | p99 |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| raw JetStream publish, {} in flight (ceiling) | {} | {:.0} | | |",
        args.in_flight, args.writes, raw
    );
    println!(
        "| notadb Put acknowledged, {} in flight over {} connection(s) | {} | {:.0} ({:.0}% of raw) | {:.2} ms | {:.2} ms |",
        args.in_flight,
        writers.len(),
        args.writes,
        max.rate,
        100.0 * max.rate / raw,
        max.latency.value_at_quantile(0.5) as f64 / 1000.0,
        max.latency.value_at_quantile(0.99) as f64 / 1000.0
    );
    println!(
        "| apply lag on every replica at {:.0} writes/s (half the maximum) | {} | {:.0} | {:.2} ms | {:.2} ms |",
        rate,
        lag.len(),
        lag.len() as f64 / args.lag_secs as f64,
        lag.value_at_quantile(0.5) as f64 / 1000.0,
        lag.value_at_quantile(0.99) as f64 / 1000.0
    );
    Ok(())
}

/// Raw JetStream publishes with `in_flight` acks outstanding, on a scratch stream; msgs/s.
async fn raw_publish(args: &BenchIngestArgs) -> anyhow::Result<f64> {
    let nats = async_nats::connect(&args.nats_url).await?;
    let js = async_nats::jetstream::new(nats);
    let name = "notadb_bench_raw";
    let _ = js.delete_stream(name).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: vec!["notadb_bench_raw.x".into()],
        ..Default::default()
    })
    .await?;
    let payload = bytes::Bytes::from(vec![b'x'; args.value_bytes + 40]);
    let started = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for _ in 0..args.writes {
        if acks.len() >= args.in_flight {
            acks.next().await.expect("pending ack")?;
        }
        let ack = js.publish("notadb_bench_raw.x", payload.clone()).await?;
        acks.push(async move { ack.await });
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    let rate = args.writes as f64 / started.elapsed().as_secs_f64();
    let _ = js.delete_stream(name).await;
    Ok(rate)
}

struct Ingest {
    rate: f64,
    latency: Histogram<u64>,
}

/// `writes` puts with `in_flight` outstanding, optionally paced to `rate` per second.
async fn ingest(
    clients: &[Client],
    args: &BenchIngestArgs,
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
        if pending.len() >= args.in_flight {
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
    args: &BenchIngestArgs,
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
        while pending.len() >= args.in_flight {
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
