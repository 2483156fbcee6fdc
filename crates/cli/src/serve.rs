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
    /// NATS server URL: runs the node in cluster mode on JetStream (adds a `[cluster]` table
    /// when the file has none).
    #[arg(long, env = "NOTADB_NATS_URL")]
    pub nats_url: Option<String>,
    /// Cluster name: prefix of its streams, buckets and object store.
    #[arg(long, env = "NOTADB_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Number of shard groups, fixed when the cluster is created.
    #[arg(long, env = "NOTADB_GROUPS")]
    pub groups: Option<u16>,
    /// This node's shard group.
    #[arg(long, env = "NOTADB_GROUP")]
    pub group: Option<u16>,
    /// gRPC address other nodes and clients reach this node at.
    #[arg(long, env = "NOTADB_ADVERTISE_GRPC_ADDR")]
    pub advertise_grpc_addr: Option<String>,
    /// Admin address shown in the cluster status.
    #[arg(long, env = "NOTADB_ADVERTISE_ADMIN_ADDR")]
    pub advertise_admin_addr: Option<String>,
    /// Seconds between checkpoints of the shard group (0: never).
    #[arg(long, env = "NOTADB_CHECKPOINT_INTERVAL_SECS")]
    pub checkpoint_interval_secs: Option<u64>,
    /// Register the example handlers `top_available` and `most_viewed` (the seed questions;
    /// `notadb bench compare` starts its node with them).
    #[arg(long)]
    pub with_examples: bool,
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
        if let Some(url) = &self.nats_url {
            config
                .cluster
                .get_or_insert_with(Default::default)
                .jetstream
                .url = url.clone();
        }
        if let Some(cluster) = &mut config.cluster {
            if let Some(v) = &self.cluster_name {
                cluster.jetstream.name = v.clone();
            }
            if let Some(v) = self.groups {
                cluster.groups = v;
            }
            if let Some(v) = self.group {
                cluster.group = v;
            }
            if let Some(v) = &self.advertise_grpc_addr {
                cluster.advertise_grpc_addr = Some(v.clone());
            }
            if let Some(v) = &self.advertise_admin_addr {
                cluster.advertise_admin_addr = Some(v.clone());
            }
            if let Some(v) = self.checkpoint_interval_secs {
                cluster.checkpoint_interval_secs = v;
            }
        } else if self.groups.is_some() || self.group.is_some() || self.cluster_name.is_some() {
            anyhow::bail!(
                "--groups, --group and --cluster-name need cluster mode: give --nats-url or a [cluster] table"
            );
        }
        Ok(config)
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let with_examples = args.with_examples;
    let server = Server::start(config, |node| {
        if with_examples {
            node.handler("top_available", notadb_examples::items::top_available)
                .handler("most_viewed", notadb_examples::activity::most_viewed)
        } else {
            node
        }
    })
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
