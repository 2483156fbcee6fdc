use crate::pg_loader::PostgresLoaderConfig;
use notadb_cluster::ClusterConfig;
use notadb_node::{CacheDef, NodeConfig};
use notadb_transmitter::TransmitterConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// Default gRPC listen address.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:7070";
/// Default admin HTTP listen address.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:7071";
/// Default frame protocol listen address.
pub const DEFAULT_FRAME_ADDR: &str = "127.0.0.1:7072";

/// Everything `notadb serve` reads: a TOML file, then `NOTADB_*` environment variables and
/// flags on top (the binary applies those).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC API address.
    pub grpc_addr: SocketAddr,
    /// Admin HTTP address (`/healthz`, `/readyz`, `/metrics`, `/`).
    pub admin_addr: SocketAddr,
    /// Frame protocol address: the lean API of the hot calls the Rust client uses when the
    /// server offers it (`notadb_proto::frame`); `"off"` serves gRPC only.
    #[serde(with = "optional_addr")]
    pub frame_addr: Option<SocketAddr>,
    /// Requests one frame connection keeps in flight before it stops reading.
    pub frame_max_in_flight: usize,
    /// Longest a shutdown waits for in-flight requests, seconds.
    pub shutdown_grace_secs: u64,
    /// Longest any gRPC call runs on the server, seconds; past it the call ends with
    /// `CANCELLED` ("Timeout expired"). Keep it above the longest wait a call may ask for
    /// (`max_read_wait_ms`, `transmitter.max_flush_timeout_ms`).
    pub request_timeout_secs: u64,
    /// Most gRPC calls one connection may have open at once (HTTP/2 concurrent streams);
    /// a client queues the rest on its side.
    pub grpc_max_concurrent_streams: u32,
    /// Shortest time between two `/digest` requests, milliseconds (each hashes every owned
    /// partition); one sooner is answered 429 with `Retry-After`.
    pub digest_min_interval_ms: u64,
    /// The node.
    pub node: NodeConfig,
    /// Cluster mode on NATS JetStream or Kafka; absent: a single node on the embedded log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// Writes mapped keyspaces behind to PostgreSQL; absent: no transmitter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transmitter: Option<TransmitterConfig>,
    /// Cache loaders that run one SQL statement against PostgreSQL (`[[postgres_loaders]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub postgres_loaders: Vec<PostgresLoaderConfig>,
    /// Caches created at start unless they exist (`[[caches]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<CacheDef>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_addr: DEFAULT_GRPC_ADDR.parse().expect("valid default address"),
            admin_addr: DEFAULT_ADMIN_ADDR.parse().expect("valid default address"),
            frame_addr: Some(DEFAULT_FRAME_ADDR.parse().expect("valid default address")),
            frame_max_in_flight: crate::frame::DEFAULT_MAX_IN_FLIGHT,
            shutdown_grace_secs: 30,
            request_timeout_secs: 120,
            grpc_max_concurrent_streams: 1024,
            digest_min_interval_ms: 1000,
            node: NodeConfig::default(),
            cluster: None,
            transmitter: None,
            postgres_loaders: Vec::new(),
            caches: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// Reads a TOML configuration file; unknown keys are errors.
    pub fn from_file(path: &Path) -> Result<ServerConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }
}

/// An address, or `"off"` for none.
mod optional_addr {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(a) => s.collect_str(a),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        super::parse_frame_addr(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A frame protocol address as the file and the flags give it: an address, or `"off"`.
pub fn parse_frame_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e| {
        format!("expected an address such as 127.0.0.1:7072, or \"off\", found `{text}`: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_partial_file_and_rejects_unknown_keys() {
        let config: ServerConfig = toml::from_str(
            "grpc_addr = \"127.0.0.1:9000\"\n[node]\npartitions = 8\n[node.limits]\nmax_key_bytes = 100\n",
        )
        .expect("valid");
        assert_eq!(config.grpc_addr.port(), 9000);
        assert_eq!(config.node.partitions, 8);
        assert_eq!(config.node.limits.max_key_bytes, 100);
        assert_eq!(
            config.node.limits.max_value_bytes,
            notadb_node::Limits::default().max_value_bytes
        );
        let err = toml::from_str::<ServerConfig>("[node]\npartitionz = 8\n").unwrap_err();
        assert!(err.to_string().contains("partitionz"), "{err}");
    }

    #[test]
    fn the_frame_listener_can_be_turned_off() {
        let off: ServerConfig = toml::from_str("frame_addr = \"off\"\n").expect("valid");
        assert_eq!(off.frame_addr, None);
        let on: ServerConfig = toml::from_str("frame_addr = \"0.0.0.0:9002\"\n").expect("valid");
        assert_eq!(on.frame_addr.map(|a| a.port()), Some(9002));
        let err = toml::from_str::<ServerConfig>("frame_addr = \"nowhere\"\n").unwrap_err();
        assert!(err.to_string().contains("\"off\""), "{err}");
        let text = toml::to_string(&off).expect("serializes");
        assert!(text.contains("frame_addr = \"off\""), "{text}");
    }

    #[test]
    fn the_documented_example_is_the_defaults() {
        let example: ServerConfig =
            toml::from_str(include_str!("../../../docs/config.example.toml")).expect("valid");
        let defaults = ServerConfig::default();
        assert_eq!(
            toml::to_string(&example).ok(),
            toml::to_string(&defaults).ok()
        );
    }

    #[test]
    fn the_documented_cluster_example_is_the_cluster_defaults() {
        let example: ServerConfig =
            toml::from_str(include_str!("../../../docs/cluster.example.toml")).expect("valid");
        let defaults = ServerConfig {
            cluster: Some(ClusterConfig::default()),
            ..ServerConfig::default()
        };
        assert_eq!(
            toml::to_string(&example).ok(),
            toml::to_string(&defaults).ok()
        );
        let err = toml::from_str::<ServerConfig>("[cluster]\ngroupz = 2\n").unwrap_err();
        assert!(err.to_string().contains("groupz"), "{err}");
    }

    #[test]
    fn the_documented_transmitter_example_is_valid() {
        let example: ServerConfig =
            toml::from_str(include_str!("../../../docs/transmitter.example.toml")).expect("valid");
        let t = example.transmitter.expect("a [transmitter] table");
        assert_eq!(t.validate(), Ok(()));
        assert_eq!(t.tables[0].keyspace, "items");
    }

    #[test]
    fn the_image_default_config_parses() {
        let image: ServerConfig =
            toml::from_str(include_str!("../../../deploy/docker/notadb.toml")).expect("valid");
        assert_eq!(image.grpc_addr.port(), 7070);
        assert!(image.grpc_addr.ip().is_unspecified());
    }
}
