//! The `notadb` command.

mod bench;
mod bench_cache;
mod bench_ingest;
mod bench_transmit;
mod bench_txn;
mod cache;
mod cli;
mod compare;
mod data;
mod demo;
mod dev_cluster;
mod keys;
mod keyspace;
mod load;
mod seed;
mod serve;
mod transmitter;
mod txn;

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = cli::Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,notadb=info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = cli::run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
