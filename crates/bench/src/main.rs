//! `notadb-bench`: notadb's benchmarks, kept out of the server binary. Every subcommand takes
//! `--clients` and humantime durations, and the same placement flags: `--client-cpus` pins this
//! process, `--server-cpus` pins the servers it measures (a node it starts and the local
//! notadb, redis-server, postgres and nats-server processes), so a heavy load generator does
//! not eat the servers' cores. Each report gives the servers' CPU time per request beside
//! throughput and latency.

mod cache;
mod compare;
mod cpu;
mod ingest;
mod node;
mod run;
mod transmit;
mod txn;

use clap::{Parser, Subcommand};

/// The allocator of the `notadb` binary, for the nodes this process runs itself (`transmit`,
/// `txn`), so that they cost what a deployed node does. The load it generates costs less too.
#[global_allocator]
static ALLOC: notadb::Allocator = notadb::Allocator;

/// notadb-bench: notadb's workloads beside PostgreSQL, Redis and NATS, with the servers' CPU
/// time per request.
#[derive(Parser, Debug)]
#[command(name = "notadb-bench", version, about)]
struct Cli {
    /// gRPC address of the node `run` and `ingest` measure.
    #[arg(
        long,
        global = true,
        env = "NOTADB_ADDR",
        default_value = "127.0.0.1:7070"
    )]
    addr: String,
    #[command(flatten)]
    placement: cpu::Placement,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The seed questions, point `Get`, `MultiGet` and `Put` against a running node (start one
    /// with `notadb demo`); `--addr A,B --rounds N` interleaves two nodes (before and after).
    Run(run::RunArgs),
    /// Load one data set into notadb, PostgreSQL, Redis and NATS KV and run the same workloads
    /// against each with the same concurrency; writes markdown, JSON and SVG plots.
    Compare(compare::CompareArgs),
    /// A cluster's ingest: acknowledged writes/s and apply lag on every replica, beside raw
    /// JetStream (or Kafka) publishing (start one with `notadb dev-cluster`).
    Ingest(ingest::IngestArgs),
    /// The transmitter: rows/s into PostgreSQL draining a backlog and write-to-visible
    /// latency, beside hand-written batched upserts (the ceiling) in the same run.
    Transmit(transmit::TransmitArgs),
    /// The cache: hit-path gets and sets (single and batched) beside Redis, and loader misses
    /// beside the same SELECT sent straight to PostgreSQL, in one run.
    Cache(cache::CacheArgs),
    /// Transactions end to end: bank transfers on notadb (embedded log, SCA on and off, and
    /// JetStream) beside PostgreSQL `SERIALIZABLE` with retries, over contention and
    /// multi-partition share, in one run; writes a table and plots.
    Txn(txn::TxnArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,notadb=info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = async {
        let _pinned = cli.placement.apply()?;
        let placement = &cli.placement;
        match cli.command {
            Command::Run(args) => run::run(&cli.addr, placement, args).await,
            Command::Compare(args) => compare::run(placement, args).await,
            Command::Ingest(args) => ingest::run(&cli.addr, args).await,
            Command::Transmit(args) => transmit::run(args).await,
            Command::Cache(args) => cache::run(placement, args).await,
            Command::Txn(args) => txn::run(args).await,
        }
    }
    .await;
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
