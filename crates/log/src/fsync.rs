//! [`FsyncPolicy`]: when the embedded log forces appended entries to stable storage.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// When the embedded log calls `fdatasync` on the files it appended to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Sync before acknowledging an append; an acknowledged entry survives power loss. Group
    /// commit: one sync covers every append, to any partition, that arrived while the previous
    /// sync ran.
    #[default]
    Always,
    /// Acknowledge once the entry is written to the operating system (`write(2)`): it survives
    /// a kill -9 of the process, not power loss. Files are synced in the background every
    /// interval.
    Interval(Duration),
    /// Acknowledge after `write(2)`; sync only on [`Log::flush`](crate::Log::flush), when a
    /// segment is sealed, and when the log is closed.
    Never,
}

/// A string that is not an [`FsyncPolicy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsyncPolicyParseError {
    input: String,
}

impl fmt::Display for FsyncPolicyParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid fsync policy {:?}: expected \"always\", \"never\" or \"interval:<n>ms\" / \
             \"interval:<n>s\" with n > 0",
            self.input
        )
    }
}

impl std::error::Error for FsyncPolicyParseError {}

impl FromStr for FsyncPolicy {
    type Err = FsyncPolicyParseError;

    /// Parses `always`, `never`, `interval:50ms` or `interval:2s` (ASCII case-insensitive,
    /// surrounding whitespace ignored).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || FsyncPolicyParseError {
            input: input.to_string(),
        };
        let text = input.trim().to_ascii_lowercase();
        match text.as_str() {
            "always" => return Ok(FsyncPolicy::Always),
            "never" => return Ok(FsyncPolicy::Never),
            _ => {}
        }
        let spec = text.strip_prefix("interval:").ok_or_else(error)?.trim();
        let (digits, unit_ms) = if let Some(digits) = spec.strip_suffix("ms") {
            (digits, 1)
        } else if let Some(digits) = spec.strip_suffix('s') {
            (digits, 1_000)
        } else {
            return Err(error());
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error());
        }
        let count: u64 = digits.parse().map_err(|_| error())?;
        let millis = count.checked_mul(unit_ms).ok_or_else(error)?;
        if millis == 0 {
            return Err(error());
        }
        Ok(FsyncPolicy::Interval(Duration::from_millis(millis)))
    }
}

impl fmt::Display for FsyncPolicy {
    /// Formats the policy so that [`FromStr`] parses it back (intervals in whole milliseconds).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(every) => write!(f, "interval:{}ms", every.as_millis()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let cases = [
            ("always", FsyncPolicy::Always),
            ("never", FsyncPolicy::Never),
            (" Always ", FsyncPolicy::Always),
            ("NEVER", FsyncPolicy::Never),
            (
                "interval:50ms",
                FsyncPolicy::Interval(Duration::from_millis(50)),
            ),
            ("interval:2s", FsyncPolicy::Interval(Duration::from_secs(2))),
            (
                "interval: 100ms",
                FsyncPolicy::Interval(Duration::from_millis(100)),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                text.parse::<FsyncPolicy>(),
                Ok(expected),
                "parsing {text:?}"
            );
        }
    }

    #[test]
    fn rejects_malformed_input_naming_it() {
        for text in [
            "",
            "sometimes",
            "interval",
            "interval:",
            "interval:ms",
            "interval:0ms",
            "interval:0s",
            "interval:10",
            "interval:10m",
            "interval:-5ms",
            "interval:1.5s",
            "interval:99999999999999999999s",
            "interval:18446744073709551615s",
        ] {
            let error = text.parse::<FsyncPolicy>().expect_err(text);
            let message = error.to_string();
            assert!(message.contains(&format!("{text:?}")), "{message}");
            assert!(message.contains("expected"), "{message}");
        }
    }

    #[test]
    fn display_round_trips() {
        for policy in [
            FsyncPolicy::Always,
            FsyncPolicy::Never,
            FsyncPolicy::Interval(Duration::from_millis(250)),
            FsyncPolicy::Interval(Duration::from_secs(3)),
        ] {
            assert_eq!(policy.to_string().parse::<FsyncPolicy>(), Ok(policy));
        }
    }

    #[test]
    fn default_is_always() {
        assert_eq!(FsyncPolicy::default(), FsyncPolicy::Always);
    }
}
