//! `notadb serve`.

use anyhow::Context;
use clap::Args;
use notadb::{Server, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file (see `docs/config.example.toml`).
    #[arg(long, env = "NOTADB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (RocksDB and the embedded log).
    #[arg(long, env = "NOTADB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Partition count; fixed when the data directory is created.
    #[arg(long, env = "NOTADB_PARTITIONS")]
    pub partitions: Option<u16>,
    /// gRPC listen address.
    #[arg(long, env = "NOTADB_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Admin HTTP listen address.
    #[arg(long, env = "NOTADB_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Node name.
    #[arg(long, env = "NOTADB_NODE_ID")]
    pub node_id: Option<String>,
    /// Embedded log fsync policy: always, never, interval:<N>ms.
    #[arg(long, env = "NOTADB_LOG_FSYNC")]
    pub log_fsync: Option<String>,
}

impl ServeArgs {
    /// The configuration: file, then environment and flags on top.
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut config = match &self.config {
            Some(path) => ServerConfig::from_file(path).map_err(anyhow::Error::msg)?,
            None => ServerConfig::default(),
        };
        if let Some(v) = &self.data_dir {
            config.node.data_dir = v.clone();
        }
        if let Some(v) = self.partitions {
            config.node.partitions = v;
        }
        if let Some(v) = self.grpc_addr {
            config.grpc_addr = v;
        }
        if let Some(v) = self.admin_addr {
            config.admin_addr = v;
        }
        if let Some(v) = &self.node_id {
            config.node.node_id = v.clone();
        }
        if let Some(v) = &self.log_fsync {
            config.node.log_fsync = v.clone();
        }
        Ok(config)
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let server = Server::start(config, |node| node)
        .await
        .context("starting the node")?;
    println!(
        "notadb serving gRPC on {} and admin HTTP on {}",
        server.grpc_addr(),
        server.admin_addr()
    );
    server.run_until_signal().await.context("shutting down")?;
    Ok(())
}
