//! [`KafkaOptions`]: where the Kafka log lives, how its topic is created, and the client
//! properties passed through to librdkafka.

use std::collections::BTreeMap;
use std::time::Duration;

use notadb_log::durations::{humantime_option, humantime_serde};
use notadb_log::LogError;
use serde::{Deserialize, Serialize};

/// Default bootstrap servers.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// Default topic name.
pub const DEFAULT_TOPIC: &str = "notadb";

/// Default time one append (the producer's retries included) and every admin or metadata
/// request may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default largest entry: one write batch of 8 MiB (the node's default `max_batch_bytes`) plus
/// its framing.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = (8 << 20) + (64 << 10);

/// Bytes a record batch of one entry adds to the entry (batch header, record header, varints):
/// the topic's `max.message.bytes` is the entry limit plus this.
pub const RECORD_OVERHEAD_BYTES: usize = 1024;

/// Client properties the log sets itself; [`KafkaOptions::client`] may not override them,
/// because the log's guarantees depend on them.
pub const RESERVED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "group.id",
    "enable.auto.commit",
    "auto.offset.reset",
    "enable.partition.eof",
    "isolation.level",
];

/// Options of [`KafkaLog::connect`](crate::KafkaLog::connect).
///
/// Durations are `humantime` strings in TOML or JSON (`"30s"`, `"7d"`); unknown fields are
/// rejected. `replication_factor`, `retention` and `max_entry_bytes` also set the topic's
/// configuration when the log creates it; an existing topic keeps its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaOptions {
    /// Bootstrap servers, comma-separated: `host:9092,other:9092`.
    pub bootstrap: String,
    /// The topic holding the log: partition `N` of the log is partition `N` of the topic.
    /// Letters, digits, `.`, `_` and `-`, at most 200 characters.
    pub topic: String,
    /// Create the topic (with `partitions` partitions) when it does not exist. When false, a
    /// missing topic is an error.
    pub create_topic: bool,
    /// Replication factor of a topic the log creates; `None` takes the broker's default.
    /// Use 3 with `min.insync.replicas=2` on a production cluster.
    pub replication_factor: Option<i16>,
    /// `retention.ms` of a topic the log creates: entries older than this are dropped by the
    /// broker; `None` (the default) keeps them forever (`retention.ms` of `i64::MAX`: tansu reads Kafka's
    /// `-1` as "delete everything").
    #[serde(with = "humantime_option")]
    pub retention: Option<Duration>,
    /// How long one append (the producer's own retries included), a metadata request or an
    /// admin request may take before it fails with [`LogError::Unavailable`].
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest payload one append accepts. A topic the log creates gets `max.message.bytes`
    /// of this plus [`RECORD_OVERHEAD_BYTES`].
    pub max_entry_bytes: usize,
    /// librdkafka properties passed through to every client the log opens: security
    /// (`security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`,
    /// `ssl.ca.location`, ...), `client.id`, tuning. The [`RESERVED_PROPERTIES`] are refused.
    pub client: BTreeMap<String, String>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            bootstrap: DEFAULT_BOOTSTRAP.to_string(),
            topic: DEFAULT_TOPIC.to_string(),
            create_topic: true,
            replication_factor: None,
            retention: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            client: BTreeMap::new(),
        }
    }
}

impl KafkaOptions {
    /// Options for the broker at `bootstrap`, with every other option at its default.
    pub fn with_bootstrap(bootstrap: impl Into<String>) -> KafkaOptions {
        KafkaOptions {
            bootstrap: bootstrap.into(),
            ..KafkaOptions::default()
        }
    }

    /// Checks every option; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), LogError> {
        let invalid = |message: String| Err(LogError::InvalidOptions(message));
        if self.bootstrap.trim().is_empty() {
            return invalid("bootstrap: expected host:port[,host:port...], found nothing".into());
        }
        if self.topic.is_empty()
            || self.topic.len() > 200
            || self.topic == "."
            || self.topic == ".."
            || !self.topic.bytes().all(is_topic_byte)
        {
            return invalid(format!(
                "topic: expected 1 to 200 letters, digits, '.', '_' or '-', found {:?}",
                self.topic
            ));
        }
        if let Some(factor) = self.replication_factor {
            if factor < 1 {
                return invalid(format!(
                    "replication_factor: expected at least 1, found {factor}"
                ));
            }
        }
        if self.retention.is_some_and(|r| r.as_millis() == 0) {
            return invalid(
                "retention: expected at least 1ms, or \"none\" to keep entries forever".into(),
            );
        }
        if self.request_timeout < Duration::from_millis(100) {
            return invalid(format!(
                "request_timeout: expected at least 100ms, found {}",
                humantime::format_duration(self.request_timeout)
            ));
        }
        // librdkafka's message.max.bytes tops out at 1,000,000,000.
        if self.max_entry_bytes == 0 || self.max_entry_bytes > 512 << 20 {
            return invalid(format!(
                "max_entry_bytes: expected 1 to {} bytes, found {}",
                512 << 20,
                self.max_entry_bytes
            ));
        }
        if let Some(reserved) = self
            .client
            .keys()
            .find(|key| RESERVED_PROPERTIES.contains(&key.as_str()))
        {
            return invalid(format!(
                "client.{reserved}: the log sets this property itself (the log's guarantees \
                 depend on it); remove it"
            ));
        }
        Ok(())
    }

    /// The name of the topic holding the companion log `suffix` (the transaction sequencer,
    /// say): `{topic}.{suffix}`.
    pub fn companion(&self, suffix: &str) -> KafkaOptions {
        KafkaOptions {
            topic: format!("{}.{suffix}", self.topic),
            ..self.clone()
        }
    }
}

/// Whether `byte` may appear in a Kafka topic name.
fn is_topic_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        KafkaOptions::default()
            .validate()
            .expect("the default options");
    }

    #[test]
    fn invalid_options_name_the_option() {
        let cases: Vec<(KafkaOptions, &str)> = vec![
            (KafkaOptions::with_bootstrap(" "), "bootstrap"),
            (
                KafkaOptions {
                    topic: "a/b".into(),
                    ..KafkaOptions::default()
                },
                "topic",
            ),
            (
                KafkaOptions {
                    replication_factor: Some(0),
                    ..KafkaOptions::default()
                },
                "replication_factor",
            ),
            (
                KafkaOptions {
                    request_timeout: Duration::from_millis(1),
                    ..KafkaOptions::default()
                },
                "request_timeout",
            ),
            (
                KafkaOptions {
                    max_entry_bytes: 0,
                    ..KafkaOptions::default()
                },
                "max_entry_bytes",
            ),
            (
                KafkaOptions {
                    client: [("acks".to_string(), "1".to_string())].into(),
                    ..KafkaOptions::default()
                },
                "client.acks",
            ),
        ];
        for (options, name) in cases {
            match options.validate() {
                Err(LogError::InvalidOptions(message)) => {
                    assert!(message.starts_with(name), "{name}: {message}")
                }
                other => panic!("{name}: expected InvalidOptions, found {other:?}"),
            }
        }
    }

    #[test]
    fn toml_with_passed_through_client_properties() {
        let options: KafkaOptions = toml::from_str(
            r#"
            bootstrap = "k1:9092,k2:9092"
            topic = "orders"
            retention = "7d"
            request_timeout = "10s"
            [client]
            "security.protocol" = "SASL_SSL"
            "sasl.mechanism" = "SCRAM-SHA-512"
            "#,
        )
        .expect("parse");
        options.validate().expect("valid");
        assert_eq!(options.retention, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(options.client["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(options.companion("seq").topic, "orders.seq");
        let unknown = toml::from_str::<KafkaOptions>("brokers = \"x\"");
        assert!(unknown.is_err(), "an unknown field was accepted");
    }
}
