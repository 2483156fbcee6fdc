//! Serde helpers for durations in configuration files, written as `humantime` strings
//! (`"2m"`, `"500ms"`, `"1h 30m"`): `#[serde(with = "notadb_log::durations::humantime_serde")]`.

/// A [`Duration`](std::time::Duration) as a `humantime` string.
pub mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `duration` as a `humantime` string (`"2m 30s"`).
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*duration))
    }

    /// Reads a `humantime` string; anything else is an error naming the expected form.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "expected a duration such as \"2m\" or \"500ms\", found {text:?}: {e}"
            ))
        })
    }
}

/// An optional [`Duration`](std::time::Duration) as a `humantime` string, absent or `"none"` for `None`.
pub mod humantime_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some` as a `humantime` string and `None` as `"none"`.
    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.collect_str(&humantime::format_duration(*duration)),
            None => serializer.serialize_str("none"),
        }
    }

    /// Reads `"none"` as `None` and a `humantime` string as `Some`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "expected a duration such as \"7d\" or \"none\", found {text:?}: {e}"
            ))
        })
    }
}
