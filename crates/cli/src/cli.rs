//! Command-line arguments and dispatch.

use crate::{cache, data, demo, dev_cluster, keyspace, load, serve, transmitter, txn};
use clap::{Parser, Subcommand};

/// notadb: a framework and server for distributed stateful services.
#[derive(Parser, Debug)]
#[command(name = "notadb", version, about)]
pub struct Cli {
    /// gRPC address of the node the client commands talk to.
    #[arg(
        long,
        global = true,
        env = "NOTADB_ADDR",
        default_value = "127.0.0.1:7070"
    )]
    pub addr: String,
    /// Deadline of each client call, e.g. `5s`, `250ms`.
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Send every request to `--addr` instead of routing reads to the replicas that own them.
    #[arg(long, global = true)]
    pub direct: bool,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The `notadb` commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node (config file, then NOTADB_* environment, then flags).
    Serve(serve::ServeArgs),
    /// Run a single node on a temporary directory, load the seed data and answer the seed questions.
    Demo(demo::DemoArgs),
    /// Run a local cluster: a nats-server (or with `--log kafka` a tansu broker) and groups x
    /// replicas nodes on loopback; Ctrl-C stops it.
    DevCluster(dev_cluster::DevClusterArgs),
    /// Create, list, describe or drop keyspaces.
    #[command(subcommand)]
    Keyspace(keyspace::KeyspaceCommand),
    /// Create, list and drop caches; get, set and delete their entries.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Put one value; the key is a JSON array.
    Put(data::PutArgs),
    /// Get one value; the key is a JSON array.
    Get(data::GetArgs),
    /// Delete one key; the key is a JSON array.
    Delete(data::GetArgs),
    /// Scan a range.
    Scan(data::ScanArgs),
    /// Aggregate over a range.
    Aggregate(data::AggregateArgs),
    /// Call a registered query handler.
    Query(data::QueryArgs),
    /// Bulk-load JSON lines or CSV into a keyspace.
    Load(load::LoadArgs),
    /// Show the node's partitions and readiness, its transmitter, and the cluster's members.
    Status,
    /// Transactions: run a registered procedure, list the procedures.
    #[command(subcommand)]
    Txn(txn::TxnCommand),
    /// The transmitter to PostgreSQL: expected tables, waiting for writes to arrive.
    #[command(subcommand)]
    Transmitter(transmitter::TransmitterCommand),
}

/// A configuration the command refuses: a file that does not parse or holds wrong values.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The exit status of a failed command: a server's start-up failure says whether a restart
/// may help ([`notadb::ServerError::exit_code`]: 78 `EX_CONFIG` when it will fail again, 75
/// `EX_TEMPFAIL` when it may not), a refused configuration is 78, anything else 1.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if let Some(e) = e.downcast_ref::<notadb::ServerError>() {
        return e.exit_code();
    }
    if e.downcast_ref::<ConfigError>().is_some() {
        return notadb::EXIT_CONFIG;
    }
    1
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let connect = || async {
        let client = if cli.direct {
            notadb_client::Client::connect(&cli.addr).await?
        } else {
            notadb_client::Client::connect_routed(&cli.addr).await?
        };
        Ok::<_, anyhow::Error>(client.with_timeout(cli.timeout))
    };
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::DevCluster(args) => dev_cluster::run(args).await,
        Command::Keyspace(cmd) => keyspace::run(&connect().await?, cmd).await,
        Command::Cache(cmd) => cache::run(&connect().await?, cmd).await,
        Command::Put(args) => data::put(&connect().await?, args).await,
        Command::Get(args) => data::get(&connect().await?, args).await,
        Command::Delete(args) => data::delete(&connect().await?, args).await,
        Command::Scan(args) => data::scan(&connect().await?, args).await,
        Command::Aggregate(args) => data::aggregate(&connect().await?, args).await,
        Command::Query(args) => data::query(&connect().await?, args).await,
        Command::Load(args) => load::run(&connect().await?, args).await,
        Command::Status => data::status(&connect().await?).await,
        Command::Txn(cmd) => txn::run(&connect().await?, cmd).await,
        Command::Transmitter(cmd) => transmitter::run(&connect().await?, cmd).await,
    }
}
