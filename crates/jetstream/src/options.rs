//! [`JetStreamOptions`]: where the JetStream log lives and how its streams are configured.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use notadb_log::durations::{humantime_option, humantime_serde};
use notadb_log::LogError;

use crate::NatsAuth;

/// Default NATS server address.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// Default stream-name prefix.
pub const DEFAULT_NAME: &str = "notadb";

/// Default window in which the server drops a publish that repeats an earlier message id.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Default time one publish attempt waits for its acknowledgement.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Default number of times an append publishes its entry before it gives up.
pub const DEFAULT_PUBLISH_ATTEMPTS: u32 = 5;

/// Longest pause between two publish attempts of one append (they start at 50 ms and double).
pub const MAX_PUBLISH_BACKOFF: Duration = Duration::from_secs(1);

/// Where a stream keeps its messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JetStreamStorage {
    /// On disk: survives a server restart.
    #[default]
    File,
    /// In the server's memory: lost when every replica restarts. For tests and benchmarks.
    Memory,
}

/// Options of [`JetStreamLog::connect`](crate::JetStreamLog::connect).
///
/// Durations are written as `humantime` strings in TOML or JSON (`"2m"`, `"500ms"`,
/// `"1h 30m"`); unknown fields are rejected. The stream options (`replicas`, `max_age`,
/// `max_bytes`, `duplicate_window`, `storage`) apply when a partition's stream is created;
/// existing streams keep the configuration they were created with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JetStreamOptions {
    /// NATS server URL(s), comma-separated: `nats://host:4222,nats://other:4222`.
    pub url: String,
    /// Prefix of the stream names (`{name}_p{N}`) and subjects (`{name}.p.{N}`): letters, digits,
    /// `_` and `-` only.
    pub name: String,
    /// Replication factor of each partition's stream (1 to 5; must not exceed the cluster size).
    pub replicas: usize,
    /// Entries older than this are dropped by the server; `None` keeps them until
    /// [`Log::truncate_before`](notadb_log::Log::truncate_before).
    #[serde(with = "humantime_option")]
    pub max_age: Option<Duration>,
    /// Per partition, the oldest entries are dropped once the stream holds more bytes than
    /// this; `None` keeps them until truncated.
    pub max_bytes: Option<i64>,
    /// Window in which the server recognises a retried publish by its message id and answers
    /// with the original seq instead of appending again.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long one publish attempt (and every other server request) waits for an answer.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How many times an append publishes its entry (same message id each time) before it
    /// fails with [`LogError::Unavailable`].
    pub publish_attempts: u32,
    /// Largest payload one append accepts; `None` takes the server's `max_payload` less room
    /// for the headers. Never above that.
    pub max_entry_bytes: Option<usize>,
    /// Where new streams keep their messages.
    pub storage: JetStreamStorage,
    /// Credentials and TLS of the connection (see [`NatsAuth`]); none by default.
    pub auth: NatsAuth,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            url: DEFAULT_URL.to_string(),
            name: DEFAULT_NAME.to_string(),
            replicas: 1,
            max_age: None,
            max_bytes: None,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            publish_attempts: DEFAULT_PUBLISH_ATTEMPTS,
            max_entry_bytes: None,
            storage: JetStreamStorage::File,
            auth: NatsAuth::default(),
        }
    }
}

impl JetStreamOptions {
    /// Options for the server at `url`, with every other option at its default.
    pub fn with_url(url: impl Into<String>) -> JetStreamOptions {
        JetStreamOptions {
            url: url.into(),
            ..JetStreamOptions::default()
        }
    }

    /// The longest an append can take: every attempt times out and waits its backoff.
    pub fn append_budget(&self) -> Duration {
        let attempts = self.publish_attempts.max(1);
        self.publish_timeout * attempts + MAX_PUBLISH_BACKOFF * (attempts - 1)
    }

    /// Checks every option; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), LogError> {
        let invalid = |message: String| Err(LogError::InvalidOptions(message));
        self.auth.validate()?;
        if self.url.trim().is_empty() {
            return invalid("url: expected a NATS server URL, found an empty string".into());
        }
        if self.name.is_empty() || !self.name.bytes().all(is_name_byte) {
            return invalid(format!(
                "name: expected letters, digits, '_' or '-' only, found {:?}",
                self.name
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return invalid(format!(
                "replicas: expected 1 to 5, found {}",
                self.replicas
            ));
        }
        if self.max_age == Some(Duration::ZERO) {
            return invalid("max_age: expected a positive duration or none, found 0s".into());
        }
        if let Some(bytes) = self.max_bytes.filter(|bytes| *bytes <= 0) {
            return invalid(format!(
                "max_bytes: expected a positive size or none, found {bytes}"
            ));
        }
        if self.publish_timeout.is_zero() {
            return invalid("publish_timeout: expected a positive duration, found 0s".into());
        }
        if self.publish_attempts == 0 {
            return invalid("publish_attempts: expected at least 1, found 0".into());
        }
        if self.max_entry_bytes == Some(0) {
            return invalid("max_entry_bytes: expected at least 1, found 0".into());
        }
        // A retry outside the window would be appended a second time.
        if self.duplicate_window < self.append_budget() {
            return invalid(format!(
                "duplicate_window: expected at least the append budget of {} \
                 (publish_attempts x publish_timeout plus backoff), found {}",
                humantime::format_duration(self.append_budget()),
                humantime::format_duration(self.duplicate_window)
            ));
        }
        Ok(())
    }
}

/// Whether `byte` may appear in a stream name and a subject token.
fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        JetStreamOptions::default()
            .validate()
            .expect("the defaults are valid");
    }

    #[test]
    fn invalid_options_name_the_option() {
        type Change = fn(&mut JetStreamOptions);
        let cases: [(&str, Change); 7] = [
            ("name", |o| o.name = "a.b".into()),
            ("name", |o| o.name = String::new()),
            ("replicas", |o| o.replicas = 0),
            ("max_bytes", |o| o.max_bytes = Some(0)),
            ("publish_attempts", |o| o.publish_attempts = 0),
            ("publish_timeout", |o| o.publish_timeout = Duration::ZERO),
            ("duplicate_window", |o| {
                o.duplicate_window = Duration::from_secs(1)
            }),
        ];
        for (option, change) in cases {
            let mut options = JetStreamOptions::default();
            change(&mut options);
            match options.validate() {
                Err(LogError::InvalidOptions(message)) => {
                    assert!(message.starts_with(option), "{option}: {message}")
                }
                other => panic!("{option}: expected InvalidOptions, got {other:?}"),
            }
        }
    }

    #[test]
    fn append_budget_counts_timeouts_and_backoff() {
        let options = JetStreamOptions::default();
        assert_eq!(options.append_budget(), Duration::from_secs(5 * 5 + 4));
    }

    #[test]
    fn toml_round_trips_with_humantime_durations() {
        let text = r#"
            url = "nats://10.0.0.1:4222"
            name = "orders"
            replicas = 3
            max_age = "7days"
            duplicate_window = "5m"
            storage = "memory"
        "#;
        let options: JetStreamOptions = toml::from_str(text).expect("parse the options");
        assert_eq!(
            options,
            JetStreamOptions {
                url: "nats://10.0.0.1:4222".into(),
                name: "orders".into(),
                replicas: 3,
                max_age: Some(Duration::from_secs(7 * 86_400)),
                duplicate_window: Duration::from_secs(300),
                storage: JetStreamStorage::Memory,
                ..JetStreamOptions::default()
            }
        );
        let written = toml::to_string(&options).expect("write the options");
        assert!(written.contains("publish_timeout = \"5s\""), "{written}");
        let again: JetStreamOptions = toml::from_str(&written).expect("parse what was written");
        assert_eq!(again, options);
        let defaults: JetStreamOptions = toml::from_str("").expect("parse no options");
        assert_eq!(defaults, JetStreamOptions::default());
        let typo = toml::from_str::<JetStreamOptions>("replica = 3").expect_err("unknown field");
        assert!(typo.to_string().contains("replica"), "{typo}");
        let bad = toml::from_str::<JetStreamOptions>("publish_timeout = \"soon\"")
            .expect_err("not a duration");
        assert!(bad.to_string().contains("expected a duration"), "{bad}");
    }
}
