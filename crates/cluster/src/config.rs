//! The `[cluster]` table of a node's configuration.

use notadb_jetstream::JetStreamOptions;
use notadb_kafka::KafkaOptions;
use notadb_types::GroupId;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Why a build without the `kafka` feature refuses a cluster on Kafka.
#[cfg(not(feature = "kafka"))]
pub(crate) const NO_KAFKA: &str = "cluster.log: \"kafka\" needs a notadb built with the `kafka` \
     cargo feature (on by default); this one was built without it";

/// The broker a cluster runs on: its partition log, and (see `control.rs`) its metadata,
/// membership and transaction reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterLog {
    /// NATS JetStream: streams for the log, key-value buckets for metadata, members and
    /// leases, the object store for checkpoints.
    #[default]
    JetStream,
    /// Apache Kafka or a Kafka-protocol broker: a topic for the log, companion topics for
    /// metadata, members and reports, a shared directory for checkpoints.
    Kafka,
}

impl std::fmt::Display for ClusterLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClusterLog::JetStream => "jetstream",
            ClusterLog::Kafka => "kafka",
        })
    }
}

impl std::str::FromStr for ClusterLog {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jetstream" => Ok(ClusterLog::JetStream),
            "kafka" => Ok(ClusterLog::Kafka),
            other => Err(format!(
                "expected a cluster log \"jetstream\" or \"kafka\", found {other:?}"
            )),
        }
    }
}

/// How a node joins a cluster. Present in the config file: the node runs on NATS JetStream
/// or Kafka (`log`); absent: a single node on the embedded log.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The broker the cluster runs on: `"jetstream"` (the default) or `"kafka"`.
    pub log: ClusterLog,
    /// With `log = "jetstream"`: the NATS server and the log's streams; `jetstream.name`
    /// names the cluster (streams, buckets and the object store all start with it).
    pub jetstream: JetStreamOptions,
    /// With `log = "kafka"`: the bootstrap servers, the log's topic (which names the cluster:
    /// companion topics start with it), topic settings and client properties passed through
    /// (SASL, TLS).
    pub kafka: KafkaOptions,
    /// With `log = "kafka"`: the directory holding the cluster's checkpoints, shared by every
    /// replica of a group (a network file system mount, or a local directory when all nodes
    /// run on one machine). Required when checkpoints are on.
    pub checkpoint_dir: Option<PathBuf>,
    /// Number of shard groups, fixed when the cluster is created.
    pub groups: u16,
    /// This node's shard group, below `groups`.
    pub group: GroupId,
    /// gRPC address other nodes and clients reach this node at; default: the listen address.
    pub advertise_grpc_addr: Option<String>,
    /// Admin address shown in the cluster status; default: the listen address.
    pub advertise_admin_addr: Option<String>,
    /// Frame protocol address smart clients reach this node at; default: the listen address
    /// (an unspecified host, `0.0.0.0`, stands for the host of the gRPC address).
    pub advertise_frame_addr: Option<String>,
    /// How often the node publishes its heartbeat (readiness, applied positions), milliseconds.
    pub heartbeat_interval_ms: u64,
    /// A member whose last heartbeat is older than this is gone, seconds.
    pub member_ttl_secs: u64,
    /// How often a group stores a checkpoint, seconds; 0 never does.
    pub checkpoint_interval_secs: u64,
    /// Checkpoints kept per group; older ones are deleted.
    pub checkpoints_kept: usize,
    /// After a checkpoint, log entries more than this many entries behind both the checkpoint
    /// and every live replica of the group are truncated; 0 never truncates.
    pub log_retain_entries: u64,
    /// Most replicas one forwarded request tries before it fails with `UNAVAILABLE`.
    pub forward_attempts: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            jetstream: JetStreamOptions::default(),
            groups: 1,
            group: GroupId(0),
            advertise_grpc_addr: None,
            advertise_admin_addr: None,
            advertise_frame_addr: None,
            log: ClusterLog::default(),
            kafka: KafkaOptions::default(),
            checkpoint_dir: None,
            heartbeat_interval_ms: 1000,
            member_ttl_secs: 10,
            checkpoint_interval_secs: 300,
            checkpoints_kept: 2,
            log_retain_entries: 100_000,
            forward_attempts: 3,
        }
    }
}

impl ClusterConfig {
    /// Checks the settings that do not need the server.
    pub fn validate(&self) -> Result<(), String> {
        if self.groups == 0 {
            return Err("cluster.groups: expected at least 1 shard group, found 0".into());
        }
        if self.group.0 >= self.groups {
            return Err(format!(
                "cluster.group: expected a group below {} (cluster.groups), found {}",
                self.groups, self.group
            ));
        }
        if self.heartbeat_interval_ms == 0 {
            return Err("cluster.heartbeat_interval_ms: expected a positive interval".into());
        }
        if self.member_ttl_secs * 1000 < self.heartbeat_interval_ms * 2 {
            return Err(format!(
                "cluster.member_ttl_secs: {} s is shorter than two heartbeats ({} ms each)",
                self.member_ttl_secs, self.heartbeat_interval_ms
            ));
        }
        match self.log {
            ClusterLog::JetStream => self
                .jetstream
                .validate()
                .map_err(|e| format!("cluster.jetstream: {e}")),
            #[cfg(not(feature = "kafka"))]
            ClusterLog::Kafka => Err(NO_KAFKA.into()),
            #[cfg(feature = "kafka")]
            ClusterLog::Kafka => {
                self.kafka
                    .validate()
                    .map_err(|e| format!("cluster.kafka: {e}"))?;
                if self.checkpoint_interval_secs > 0 && self.checkpoint_dir.is_none() {
                    return Err(
                        "cluster.checkpoint_dir: a cluster on Kafka keeps its checkpoints \
                                in a directory every replica of a group reaches; set it, or set \
                                cluster.checkpoint_interval_secs = 0 to take none"
                            .into(),
                    );
                }
                Ok(())
            }
        }
    }

    /// The cluster's name: the JetStream prefix or the Kafka topic.
    pub fn name(&self) -> &str {
        match self.log {
            ClusterLog::JetStream => &self.jetstream.name,
            ClusterLog::Kafka => &self.kafka.topic,
        }
    }

    /// `heartbeat_interval_ms` as a duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// `member_ttl_secs` as a duration.
    pub fn member_ttl(&self) -> Duration {
        Duration::from_secs(self.member_ttl_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_wrong_setting() {
        assert!(ClusterConfig::default().validate().is_ok());
        let bad = |c: ClusterConfig| c.validate().unwrap_err();
        let e = bad(ClusterConfig {
            groups: 0,
            ..Default::default()
        });
        assert!(e.contains("cluster.groups"), "{e}");
        let e = bad(ClusterConfig {
            groups: 2,
            group: GroupId(2),
            ..Default::default()
        });
        assert!(e.contains("cluster.group:") && e.contains("below 2"), "{e}");
        let e = bad(ClusterConfig {
            member_ttl_secs: 1,
            log: ClusterLog::default(),
            kafka: KafkaOptions::default(),
            checkpoint_dir: None,
            heartbeat_interval_ms: 1000,
            ..Default::default()
        });
        assert!(e.contains("member_ttl_secs"), "{e}");
    }

    #[test]
    #[cfg(feature = "kafka")]
    fn a_kafka_cluster_needs_a_checkpoint_dir() {
        let e = ClusterConfig {
            log: ClusterLog::Kafka,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("cluster.checkpoint_dir"), "{e}");
        let kafka = ClusterConfig {
            log: ClusterLog::Kafka,
            checkpoint_dir: Some("checkpoints".into()),
            ..Default::default()
        };
        assert!(kafka.validate().is_ok());
        assert_eq!(kafka.name(), "notadb");
    }

    #[test]
    #[cfg(not(feature = "kafka"))]
    fn without_the_kafka_feature_a_kafka_cluster_is_refused() {
        let e = ClusterConfig {
            log: ClusterLog::Kafka,
            checkpoint_dir: Some("checkpoints".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("`kafka` cargo feature"), "{e}");
    }

    #[test]
    fn the_log_is_chosen_by_name() {
        let config: ClusterConfig = toml::from_str(
            "log = \"kafka\"\ncheckpoint_dir = \"c\"\n[kafka]\nbootstrap = \"k:9092\"\ntopic = \"shop\"\n",
        )
        .expect("parse");
        assert_eq!(config.log, ClusterLog::Kafka);
        assert_eq!(config.name(), "shop");
        assert!(toml::from_str::<ClusterConfig>("log = \"redis\"").is_err());
        assert_eq!("kafka".parse::<ClusterLog>(), Ok(ClusterLog::Kafka));
    }
}
