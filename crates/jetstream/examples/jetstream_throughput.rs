//! Append throughput of the JetStream log against its ceiling, plain async-nats publishing.
//!
//! `cargo run -p notadb-jetstream --release --example jetstream_throughput -- [--url nats://...]
//! [--entries N] [--in-flight N]`
//!
//! Without `--url` it starts its own `nats-server` (file storage, in a temporary directory).
//! Rows, each of `--entries` 64-byte entries (default 100,000) with `--in-flight` (default 1,024)
//! acknowledgements outstanding:
//!
//! - `raw publish`: one task publishes to one stream and awaits the acks concurrently (no
//!   message ids, no notadb code): the ceiling.
//! - `JetStreamLog::append`: `--in-flight` tasks, each awaiting its own appends one at a time,
//!   to one partition, then spread over 64 partitions.
//!
//! The streams it creates are deleted at the end.

use std::error::Error;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use notadb_jetstream::{JetStreamLog, JetStreamOptions};
use notadb_testkit::NatsServer;

/// Payload size in bytes.
const PAYLOAD_BYTES: usize = 64;

struct Args {
    url: Option<String>,
    entries: u64,
    in_flight: usize,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        url: None,
        entries: 100_000,
        in_flight: 1024,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("expected a value after {flag}"))?;
        match flag.as_str() {
            "--url" => args.url = Some(value),
            "--entries" => args.entries = value.parse()?,
            "--in-flight" => args.in_flight = value.parse()?,
            _ => {
                return Err(format!(
                    "unknown flag {flag}: expected --url, --entries or --in-flight"
                )
                .into())
            }
        }
    }
    if args.entries == 0 || args.in_flight == 0 {
        return Err("expected --entries and --in-flight of at least 1".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let (url, _server) = match &args.url {
        Some(url) => (url.clone(), None),
        None => {
            let server = NatsServer::start(dir.path())?;
            (server.url(), Some(server))
        }
    };
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let client = async_nats::connect(url.as_str()).await?;
    let context = jetstream::ContextBuilder::new()
        .max_ack_inflight(args.in_flight)
        .backpressure_on_inflight(true)
        .build(client);

    println!("| writer | partitions | entries | acks in flight | seconds | entries/s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let raw_stream = format!("bench_raw_{run}");
    let seconds = raw_publish(&context, &raw_stream, &args).await?;
    print_row("raw publish", 1, &args, seconds);
    context.delete_stream(&raw_stream).await?;

    for partitions in [1u16, 64] {
        let name = format!("bench_{run}_{partitions}");
        let log = JetStreamLog::connect(
            JetStreamOptions {
                name: name.clone(),
                ..JetStreamOptions::with_url(url.clone())
            },
            partitions,
        )
        .await?;
        let seconds = log_appends(log, partitions, &args).await?;
        print_row("JetStreamLog::append", partitions, &args, seconds);
        for p in 0..partitions {
            context.delete_stream(format!("{name}_p{p}")).await?;
        }
    }
    Ok(())
}

fn print_row(writer: &str, partitions: u16, args: &Args, seconds: f64) {
    println!(
        "| {writer} | {partitions} | {} | {} | {seconds:.2} | {:.0} |",
        args.entries,
        args.in_flight,
        args.entries as f64 / seconds
    );
}

/// Publishes `args.entries` messages to a new stream, `args.in_flight` acks outstanding.
async fn raw_publish(
    context: &jetstream::Context,
    stream: &str,
    args: &Args,
) -> Result<f64, Box<dyn Error>> {
    let subject = format!("{stream}.x");
    context
        .create_stream(jetstream::stream::Config {
            name: stream.to_string(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await?;
    let payload = Bytes::from(vec![0xAB; PAYLOAD_BYTES]);
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for _ in 0..args.entries {
        if acks.len() >= args.in_flight {
            acks.next().await.expect("a pending ack")?;
        }
        let ack = context.publish(subject.clone(), payload.clone()).await?;
        acks.push(std::future::IntoFuture::into_future(ack));
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Appends `args.entries` entries from `args.in_flight` tasks, task `t` to partition
/// `t % partitions`.
async fn log_appends(
    log: JetStreamLog,
    partitions: u16,
    args: &Args,
) -> Result<f64, Box<dyn Error>> {
    let tasks = args.in_flight as u64;
    Ok(notadb_testkit::load::append_from_tasks(
        Arc::new(log),
        partitions,
        args.entries,
        tasks,
        PAYLOAD_BYTES,
    )
    .await?)
}
