//! The `[cluster]` table of a node's configuration.

use notadb_log::JetStreamOptions;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a node joins a cluster. Present in the config file: the node runs on NATS JetStream
/// (log, metadata, membership, checkpoints); absent: a single node on the embedded log.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS server and the log's streams; `jetstream.name` names the cluster (streams,
    /// buckets and the object store all start with it).
    pub jetstream: JetStreamOptions,
    /// Number of shard groups, fixed when the cluster is created.
    pub groups: u16,
    /// This node's shard group, below `groups`.
    pub group: u16,
    /// gRPC address other nodes and clients reach this node at; default: the listen address.
    pub advertise_grpc_addr: Option<String>,
    /// Admin address shown in the cluster status; default: the listen address.
    pub advertise_admin_addr: Option<String>,
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
            group: 0,
            advertise_grpc_addr: None,
            advertise_admin_addr: None,
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
        if self.group >= self.groups {
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
        self.jetstream
            .validate()
            .map_err(|e| format!("cluster.jetstream: {e}"))
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
            group: 2,
            ..Default::default()
        });
        assert!(e.contains("cluster.group:") && e.contains("below 2"), "{e}");
        let e = bad(ClusterConfig {
            member_ttl_secs: 1,
            heartbeat_interval_ms: 1000,
            ..Default::default()
        });
        assert!(e.contains("member_ttl_secs"), "{e}");
    }
}
