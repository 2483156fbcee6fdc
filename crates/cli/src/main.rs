//! The `notadb` command.

use clap::Parser;

#[global_allocator]
static ALLOC: notadb::Allocator = notadb::Allocator;

#[tokio::main]
async fn main() {
    let cli = notadb_cli::cli::Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,notadb=info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = notadb_cli::cli::run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(notadb_cli::cli::exit_code(&e));
    }
}
