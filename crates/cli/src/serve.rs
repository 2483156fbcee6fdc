//! `notadb serve`.

use crate::cli::ConfigError;
use anyhow::Context;
use clap::Args;
use notadb::{Server, ServerConfig};
use notadb_cluster::ClusterLog;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `notadb serve`; a flag (or its environment variable) overrides the config
/// file.
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
    /// Frame protocol listen address (the lean API of the hot calls), or `off`.
    #[arg(long, env = "NOTADB_FRAME_ADDR")]
    pub frame_addr: Option<String>,
    /// Node name.
    #[arg(long, env = "NOTADB_NODE_ID")]
    pub node_id: Option<String>,
    /// Embedded log fsync policy: always, never, interval:{N}ms.
    #[arg(long, env = "NOTADB_LOG_FSYNC")]
    pub log_fsync: Option<String>,
    /// NATS server URL: runs the node in cluster mode on JetStream (adds a `[cluster]` table
    /// when the file has none; sets `log = "jetstream"` unless `--log` says otherwise).
    #[arg(long, env = "NOTADB_NATS_URL")]
    pub nats_url: Option<String>,
    /// Kafka bootstrap servers (`host:9092,other:9092`): runs the node in cluster mode on
    /// Kafka (adds a `[cluster]` table when the file has none; sets `log = "kafka"` unless
    /// `--log` says otherwise).
    #[arg(long, env = "NOTADB_KAFKA_BOOTSTRAP")]
    pub kafka_bootstrap: Option<String>,
    /// The broker the cluster runs on: `jetstream` or `kafka`.
    #[arg(long, env = "NOTADB_CLUSTER_LOG")]
    pub log: Option<ClusterLog>,
    /// Cluster name: prefix of its streams, buckets and object store on JetStream; its log's
    /// topic on Kafka.
    #[arg(long, env = "NOTADB_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// The Kafka topic holding the cluster's log (companion topics start with it); overrides
    /// `--cluster-name`.
    #[arg(long, env = "NOTADB_KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,
    /// Directory of the cluster's checkpoints on Kafka, shared by every replica of a group.
    #[arg(long, env = "NOTADB_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,
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
    /// Frame protocol address smart clients reach this node at.
    #[arg(long, env = "NOTADB_ADVERTISE_FRAME_ADDR")]
    pub advertise_frame_addr: Option<String>,
    /// Seconds between checkpoints of the shard group (0: never).
    #[arg(long, env = "NOTADB_CHECKPOINT_INTERVAL_SECS")]
    pub checkpoint_interval_secs: Option<u64>,
    /// Register the example handlers `top_available` and `most_viewed` (the seed questions;
    /// `notadb-bench compare` starts its node with them).
    #[arg(long)]
    pub with_examples: bool,
}

impl ServeArgs {
    /// The configuration: file, then environment and flags on top.
    pub fn config(&self) -> Result<ServerConfig, ConfigError> {
        let mut config = match &self.config {
            Some(path) => ServerConfig::from_file(path).map_err(ConfigError)?,
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
        if let Some(v) = &self.frame_addr {
            config.frame_addr = notadb::parse_frame_addr(v)
                .map_err(|e| ConfigError(format!("--frame-addr: {e}")))?;
        }
        if let Some(v) = &self.node_id {
            config.node.node_id = v.clone();
        }
        if let Some(v) = &self.log_fsync {
            config.node.log_fsync = v.clone();
        }
        if self.nats_url.is_some() || self.kafka_bootstrap.is_some() {
            config.cluster.get_or_insert_with(Default::default);
        }
        if let Some(cluster) = &mut config.cluster {
            if let Some(url) = &self.nats_url {
                cluster.jetstream.url = url.clone();
            }
            if let Some(bootstrap) = &self.kafka_bootstrap {
                cluster.kafka.bootstrap = bootstrap.clone();
            }
            cluster.log =
                match (self.log, &self.nats_url, &self.kafka_bootstrap) {
                    (Some(log), _, _) => log,
                    (None, Some(_), Some(_)) => return Err(ConfigError(
                        "--nats-url and --kafka-bootstrap are both given: choose the cluster's \
                         log with --log jetstream or --log kafka"
                            .into(),
                    )),
                    (None, Some(_), None) => ClusterLog::JetStream,
                    (None, None, Some(_)) => ClusterLog::Kafka,
                    (None, None, None) => cluster.log,
                };
            if let Some(v) = &self.cluster_name {
                match cluster.log {
                    ClusterLog::JetStream => cluster.jetstream.name = v.clone(),
                    ClusterLog::Kafka => cluster.kafka.topic = v.clone(),
                }
            }
            if let Some(v) = &self.kafka_topic {
                cluster.kafka.topic = v.clone();
            }
            if let Some(v) = &self.checkpoint_dir {
                cluster.checkpoint_dir = Some(v.clone());
            }
            if let Some(v) = self.groups {
                cluster.groups = v;
            }
            if let Some(v) = self.group {
                cluster.group = notadb_types::GroupId(v);
            }
            if let Some(v) = &self.advertise_grpc_addr {
                cluster.advertise_grpc_addr = Some(v.clone());
            }
            if let Some(v) = &self.advertise_admin_addr {
                cluster.advertise_admin_addr = Some(v.clone());
            }
            if let Some(v) = &self.advertise_frame_addr {
                cluster.advertise_frame_addr = Some(v.clone());
            }
            if let Some(v) = self.checkpoint_interval_secs {
                cluster.checkpoint_interval_secs = v;
            }
        } else {
            let given: Vec<&str> = [
                ("--groups", self.groups.is_some()),
                ("--group", self.group.is_some()),
                ("--cluster-name", self.cluster_name.is_some()),
                ("--log", self.log.is_some()),
                ("--kafka-topic", self.kafka_topic.is_some()),
                ("--checkpoint-dir", self.checkpoint_dir.is_some()),
            ]
            .into_iter()
            .filter_map(|(flag, set)| set.then_some(flag))
            .collect();
            if !given.is_empty() {
                return Err(ConfigError(format!(
                    "{} {} cluster mode: give --nats-url, --kafka-bootstrap or a [cluster] table",
                    given.join(", "),
                    if given.len() == 1 { "needs" } else { "need" }
                )));
            }
        }
        Ok(config)
    }
}

/// Runs a node with the configuration of `args` until SIGTERM or Ctrl-C, then shuts it down.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let with_examples = args.with_examples;
    let server = Server::start(config, |node| {
        if with_examples {
            node.handler(
                "top_available",
                notadb::JsonHandler(notadb_examples::items::top_available),
            )
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

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use notadb::ServerConfig;
    use notadb_cluster::{ClusterConfig, ClusterLog};
    use std::path::PathBuf;

    /// The configuration `notadb serve {flags}` runs with, or its error.
    fn serve(flags: &[&str]) -> anyhow::Result<ServerConfig> {
        let cli = Cli::try_parse_from(["notadb", "serve"].iter().chain(flags))?;
        match cli.command {
            Command::Serve(args) => Ok(args.config()?),
            other => panic!("expected the serve command, found {other:?}"),
        }
    }

    fn cluster(flags: &[&str]) -> ClusterConfig {
        serve(flags)
            .expect("a valid command line")
            .cluster
            .expect("cluster mode")
    }

    #[test]
    fn serve_without_cluster_flags_runs_a_single_node() {
        assert!(serve(&[]).expect("valid").cluster.is_none());
    }

    #[test]
    fn serve_nats_url_runs_on_jetstream() {
        let c = cluster(&["--nats-url", "nats://n:4222", "--cluster-name", "shop"]);
        assert_eq!(c.log, ClusterLog::JetStream);
        assert_eq!(c.jetstream.url, "nats://n:4222");
        assert_eq!(c.jetstream.name, "shop");
        assert_eq!(c.kafka.topic, notadb_kafka::DEFAULT_TOPIC);
    }

    #[test]
    #[cfg(feature = "kafka")]
    fn serve_kafka_bootstrap_runs_on_kafka_and_names_the_topic() {
        let c = cluster(&[
            "--kafka-bootstrap",
            "k1:9092,k2:9092",
            "--cluster-name",
            "shop",
            "--checkpoint-dir",
            "/shared/checkpoints",
            "--groups",
            "2",
            "--group",
            "1",
        ]);
        assert_eq!(c.log, ClusterLog::Kafka);
        assert_eq!(c.kafka.bootstrap, "k1:9092,k2:9092");
        assert_eq!(c.kafka.topic, "shop");
        assert_eq!(c.name(), "shop");
        assert_eq!(
            c.jetstream.name, "notadb",
            "the JetStream name is left alone"
        );
        assert_eq!(c.checkpoint_dir, Some(PathBuf::from("/shared/checkpoints")));
        assert_eq!((c.groups, c.group), (2, notadb_types::GroupId(1)));
        c.validate().expect("a valid Kafka cluster");
    }

    #[test]
    fn serve_kafka_topic_overrides_the_cluster_name() {
        let c = cluster(&[
            "--kafka-bootstrap",
            "k:9092",
            "--cluster-name",
            "shop",
            "--kafka-topic",
            "shop-log",
        ]);
        assert_eq!(c.kafka.topic, "shop-log");
    }

    #[test]
    fn serve_log_flag_wins_over_the_implied_log() {
        let c = cluster(&[
            "--nats-url",
            "nats://n:4222",
            "--kafka-bootstrap",
            "k:9092",
            "--log",
            "kafka",
            "--cluster-name",
            "shop",
        ]);
        assert_eq!(c.log, ClusterLog::Kafka);
        assert_eq!(c.kafka.topic, "shop");
        assert_eq!(c.jetstream.url, "nats://n:4222");
        let c = cluster(&["--kafka-bootstrap", "k:9092", "--log", "jetstream"]);
        assert_eq!(c.log, ClusterLog::JetStream);
        assert_eq!(c.kafka.bootstrap, "k:9092");
        let e = serve(&["--nats-url", "nats://n:4222", "--kafka-bootstrap", "k:9092"])
            .expect_err("two brokers and no --log");
        assert!(e.to_string().contains("--log"), "{e}");
        let e = serve(&["--nats-url", "n", "--log", "redis"]).expect_err("an unknown log");
        assert!(e.to_string().contains("redis"), "{e}");
    }

    #[test]
    fn serve_flags_override_a_cluster_table() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "[cluster]\nlog = \"kafka\"\ncheckpoint_dir = \"c\"\n[cluster.kafka]\ntopic = \"file\"\n",
        )
        .expect("write the config");
        let config = path.to_str().expect("a UTF-8 path");
        let c = cluster(&["--config", config, "--cluster-name", "flag"]);
        assert_eq!(c.log, ClusterLog::Kafka);
        assert_eq!(c.kafka.topic, "flag");
        assert_eq!(c.checkpoint_dir, Some(PathBuf::from("c")));
        let c = cluster(&["--config", config, "--nats-url", "nats://n:4222"]);
        assert_eq!(c.log, ClusterLog::JetStream, "--nats-url implies JetStream");
        assert_eq!(c.kafka.topic, "file");
    }

    #[test]
    fn serve_cluster_only_flags_need_cluster_mode() {
        for flags in [
            &["--groups", "2"][..],
            &["--cluster-name", "shop"],
            &["--log", "kafka"],
            &["--kafka-topic", "shop"],
            &["--checkpoint-dir", "c"],
        ] {
            let e = serve(flags).expect_err("a cluster-only flag without cluster mode");
            let message = e.to_string();
            assert!(
                message.contains(flags[0]) && message.contains("cluster mode"),
                "{flags:?}: {message}"
            );
        }
    }
}
