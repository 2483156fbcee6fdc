//! `notadb-bench transmit`: how fast the transmitter writes into PostgreSQL, beside the best
//! batched upsert a hand-written client reaches on the same machine in the same run.
//!
//! 1. Ceiling: `connections` clients write the rows as `UNNEST` upserts of `batch` rows, with
//!    the same seq guard the transmitter uses; then again with the integer column sent as
//!    text and cast in the statement, as the transmitter sends every column (what typed
//!    arrays would save).
//! 2. Drain: a node without a transmitter takes the same writes into its log; it restarts with
//!    a transmitter, which writes the whole backlog; rows/s from start until `flush` returns.
//! 3. Latency: one write at a time; from the write's call until its row is visible in
//!    PostgreSQL (polled every 0.5 ms).

use crate::run::{fresh_database, pg_connect};
use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use notadb::{Mutation, Node, Server, ValueInput};
use notadb_client::{Client, Element, Token};
use notadb_transmitter::{DeleteMode, TableMapping, TransmitterConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TABLE: &str = "bench_items";

#[derive(Args, Debug)]
pub struct TransmitArgs {
    /// A PostgreSQL database URL the benchmark may create its database from.
    #[arg(long, env = "NOTADB_POSTGRES_URL")]
    pub postgres_url: String,
    /// The database it creates (dropped and created again).
    #[arg(long, default_value = "notadb_bench_transmit")]
    pub database: String,
    /// Rows (distinct keys) per measurement.
    #[arg(long, default_value_t = 200_000)]
    pub rows: usize,
    /// Rows per transaction, for the ceiling and the transmitter.
    #[arg(long, default_value_t = 5_000)]
    pub batch: usize,
    /// Database connections, for the ceiling and the transmitter.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Writes timed one at a time for the write-to-visible latency.
    #[arg(long, default_value_t = 500)]
    pub latency_writes: usize,
    /// The transmitter's batch delay.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub batch_delay: std::time::Duration,
    /// Write the markdown table here too.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

fn name_of(i: usize) -> String {
    format!("name-{i:08}")
}

fn key_of(i: usize) -> String {
    format!("k{i:09}")
}

pub async fn run(args: TransmitArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rows > 0 && args.batch > 0 && args.connections > 0,
        "--rows, --batch and --connections must be above 0"
    );
    let url = fresh_database(&args.postgres_url, &args.database).await?;
    let db = pg_connect(&url).await?;
    let create = format!(
        "CREATE TABLE {TABLE} (k text PRIMARY KEY, name text, qty integer, notadb_seq bigint NOT NULL)"
    );
    db.batch_execute(&create).await?;

    eprintln!(
        "ceiling: hand-written UNNEST upserts of {} rows…",
        args.rows
    );
    let typed = ceiling(&url, &args, Arrays::Typed).await?;
    db.batch_execute(&format!("TRUNCATE {TABLE}")).await?;
    eprintln!("the same with every column sent as text and cast…");
    let text_cast = ceiling(&url, &args, Arrays::Text).await?;
    db.batch_execute(&format!("TRUNCATE {TABLE}")).await?;

    let dir = tempfile::tempdir()?;
    let mut config = crate::run::loopback_config(dir.path())?;
    config.node.log_retain_entries = u64::MAX / 2;
    config.node.log_fsync = "never".into();
    eprintln!("loading {} writes into a node's log…", args.rows);
    let server = Server::start(config.clone(), |b| b).await?;
    server
        .node()
        .create_keyspace(crate::run::string_keyed_json(TABLE), true)
        .await?;
    let tokens = load(server.node(), args.rows).await?;
    // Applied and flushed to table files, so that the restart below recovers nothing and the
    // drain's clock measures the transmitter, not the node catching up.
    server
        .node()
        .wait_for(&notadb::Consistency::tokens(tokens.clone()))
        .await?;
    let node = server.node().clone();
    tokio::task::spawn_blocking(move || node.storage().flush()).await??;
    server.shutdown().await?;

    config.transmitter = Some(TransmitterConfig {
        url: url.clone(),
        connections: args.connections,
        batch_max_rows: args.batch,
        batch_max_delay_ms: args.batch_delay.as_millis() as u64,
        tables: vec![TableMapping {
            keyspace: TABLE.into(),
            table: TABLE.into(),
            key_columns: BTreeMap::new(),
            fields: BTreeMap::from([
                ("name".to_string(), "name".to_string()),
                ("qty".to_string(), "qty".to_string()),
            ]),
            value_column: None,
            seq_column: "notadb_seq".into(),
            delete: DeleteMode::Delete,
            soft_delete_column: None,
            expires_column: None,
        }],
        ..Default::default()
    });
    eprintln!("draining the backlog through the transmitter…");
    let started = Instant::now();
    let server = Server::start(config, |b| b).await?;
    let client = Client::connect(&format!("http://{}", server.grpc_addr())).await?;
    client
        .transmitter_flush(&tokens, Duration::from_secs(600))
        .await
        .context("waiting for the backlog")?;
    let drain = args.rows as f64 / started.elapsed().as_secs_f64();
    let count: i64 = db
        .query_one(&format!("SELECT count(*) FROM {TABLE}"), &[])
        .await?
        .get(0);
    anyhow::ensure!(
        count as usize == args.rows,
        "the table has {count} rows, expected {}",
        args.rows
    );

    eprintln!(
        "write-to-visible latency, {} writes one at a time…",
        args.latency_writes
    );
    let latency = latency(server.node(), &db, args.latency_writes).await?;
    server.shutdown().await?;

    let table = format!(
        "| measurement | rows/s | vs ceiling | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|\n\
         | hand-written `UNNEST` upsert, {b} rows per transaction, {c} connections (ceiling) | {ceil:.0} | 100% | | |\n\
         | the same, every column sent as `text[]` and cast in the statement (as the transmitter sends) | {text_cast:.0} | {text_pct:.0}% | | |\n\
         | transmitter draining a {n}-write backlog ({b} rows per batch, {c} connections) | {drain:.0} | {pct:.0}% | | |\n\
         | write-to-visible, one write at a time (batch delay {d} ms) | | | {p50:.1} | {p99:.1} |\n",
        b = args.batch,
        c = args.connections,
        n = args.rows,
        d = args.batch_delay.as_millis(),
        ceil = typed,
        pct = drain / typed * 100.0,
        text_pct = text_cast / typed * 100.0,
        p50 = latency.value_at_quantile(0.5) as f64 / 1000.0,
        p99 = latency.value_at_quantile(0.99) as f64 / 1000.0,
    );
    println!("{table}");
    if let Some(out) = &args.out {
        std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// How the hand-written upsert sends its integer column.
#[derive(Clone, Copy)]
enum Arrays {
    /// An `int4[]`: what a client that knows the table's types sends.
    Typed,
    /// A `text[]` cast to `integer` in the statement, as the transmitter sends every column.
    Text,
}

/// Rows per second of `connections` clients each upserting its share in `batch`-row
/// transactions.
async fn ceiling(url: &str, args: &TransmitArgs, arrays: Arrays) -> anyhow::Result<f64> {
    let (qty_array, qty) = match arrays {
        Arrays::Typed => ("int4", "u.qty"),
        Arrays::Text => ("text", "u.qty::integer"),
    };
    let sql = format!(
        "INSERT INTO {TABLE} AS t (k, name, qty, notadb_seq) \
         SELECT u.k, u.name, {qty}, u.seq FROM unnest($1::text[], $2::text[], $3::{qty_array}[], $4::int8[]) AS u(k, name, qty, seq) \
         ON CONFLICT (k) DO UPDATE SET name = EXCLUDED.name, qty = EXCLUDED.qty, notadb_seq = EXCLUDED.notadb_seq \
         WHERE t.notadb_seq < EXCLUDED.notadb_seq"
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (url, sql, rows, batch, conns) = (
            url.to_string(),
            sql.clone(),
            args.rows,
            args.batch,
            args.connections,
        );
        tasks.push(tokio::spawn(async move {
            let mut client = pg_connect(&url).await?;
            let stmt = client.prepare(&sql).await?;
            let mine: Vec<usize> = (0..rows).filter(|i| i % conns == c).collect();
            for chunk in mine.chunks(batch) {
                let keys: Vec<String> = chunk.iter().map(|&i| key_of(i)).collect();
                let names: Vec<String> = chunk.iter().map(|&i| name_of(i)).collect();
                let seqs: Vec<i64> = chunk.iter().map(|&i| i as i64 + 1).collect();
                let tx = client.transaction().await?;
                match arrays {
                    Arrays::Typed => {
                        let qtys: Vec<i32> = chunk.iter().map(|&i| i as i32).collect();
                        tx.execute(&stmt, &[&keys, &names, &qtys, &seqs]).await?
                    }
                    Arrays::Text => {
                        let qtys: Vec<String> = chunk.iter().map(|i| i.to_string()).collect();
                        tx.execute(&stmt, &[&keys, &names, &qtys, &seqs]).await?
                    }
                };
                tx.commit().await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(args.rows as f64 / started.elapsed().as_secs_f64())
}

fn put(i: usize) -> Mutation {
    Mutation::Put {
        keyspace: TABLE.into(),
        key: vec![Element::String(key_of(i))],
        value: ValueInput::Json(format!(r#"{{"name":"{}","qty":{i}}}"#, name_of(i))),
    }
}

/// Keeps the newest token of each partition.
fn keep_newest(newest: &mut BTreeMap<u16, Token>, t: Token) {
    let e = newest.entry(t.partition.0).or_insert(t);
    if t.seq > e.seq {
        *e = t;
    }
}

/// Writes `rows` puts of distinct keys; returns the newest token per partition.
async fn load(node: &Node, rows: usize) -> anyhow::Result<Vec<Token>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (node, next) = (node.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut newest: BTreeMap<u16, Token> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= rows {
                    return Ok::<_, anyhow::Error>(newest);
                }
                keep_newest(&mut newest, node.write(vec![put(i)]).await?);
            }
        }));
    }
    let mut newest: BTreeMap<u16, Token> = BTreeMap::new();
    for t in tasks {
        for token in t.await??.into_values() {
            keep_newest(&mut newest, token);
        }
    }
    Ok(newest.into_values().collect())
}

/// Microseconds from a write's call until its row is in the table, one write at a time.
async fn latency(
    node: &Node,
    db: &tokio_postgres::Client,
    writes: usize,
) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(3)?;
    let probe = db
        .prepare(&format!("SELECT notadb_seq FROM {TABLE} WHERE k = $1"))
        .await?;
    for n in 0..writes {
        let i = 1_000_000_000 + n;
        let started = Instant::now();
        let token = node.write(vec![put(i)]).await?;
        let key = key_of(i);
        loop {
            let row = db.query_opt(&probe, &[&key]).await?;
            if row.is_some_and(|r| r.get::<_, i64>(0) as u64 >= token.seq.0) {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "write {n} not visible after 30 s"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        h.record(started.elapsed().as_micros() as u64)?;
    }
    Ok(h)
}
