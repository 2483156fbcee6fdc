//! [`NatsAuth`]: how notadb proves itself to NATS and checks the server's certificate.
//!
//! Secrets are never written in the configuration: it names the file or the environment
//! variable that holds each one, so Kubernetes Secrets work mounted either way, and they
//! appear in no log. Nothing set means no authentication and plain text.

use std::path::{Path, PathBuf};

use async_nats::ConnectOptions;
use serde::{Deserialize, Serialize};

use notadb_log::LogError;

/// Credentials and TLS settings of the NATS connection (`[cluster.jetstream.auth]`). At most
/// one way to authenticate: a user and password, a token, an NKey seed, or a `.creds` file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsAuth {
    /// The user name; its password comes from `password_file` or `password_env`.
    pub user: Option<String>,
    /// A file holding the password (a trailing newline is dropped).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// A file holding a token.
    pub token_file: Option<PathBuf>,
    /// An environment variable holding a token.
    pub token_env: Option<String>,
    /// A file holding an NKey seed (`SU…`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and NKey seed, as `nsc` writes it).
    pub creds_file: Option<PathBuf>,
    /// PEM CA certificates the server's certificate must chain to; setting it requires TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// A PEM client certificate, for servers that verify clients (with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Refuse a connection that is not TLS, also without `tls_ca_file` (the system's roots
    /// then verify the server).
    pub tls_required: bool,
}

fn invalid<T>(message: String) -> Result<T, LogError> {
    Err(LogError::InvalidOptions(format!("auth.{message}")))
}

/// A secret from `file` or the environment variable `env` (one of them, or neither).
fn secret(what: &str, file: Option<&Path>, env: Option<&str>) -> Result<Option<String>, LogError> {
    match (file, env) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => invalid(format!("{what}_file and {what}_env are both set: give one")),
        (Some(path), None) => match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(text.trim_end_matches(['\r', '\n']).to_string())),
            Err(e) => invalid(format!("{what}_file: reading {}: {e}", path.display())),
        },
        (None, Some(name)) => match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(_) => invalid(format!(
                "{what}_env: the environment variable {name} is not set"
            )),
        },
    }
}

impl NatsAuth {
    /// Checks the settings without reading any secret; the error names the first wrong one.
    pub fn validate(&self) -> Result<(), LogError> {
        let password = self.password_file.is_some() || self.password_env.is_some();
        let token = self.token_file.is_some() || self.token_env.is_some();
        let ways = [
            self.user.is_some(),
            token,
            self.nkey_seed_file.is_some(),
            self.creds_file.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            return invalid(
                "give one way to authenticate: user and password, a token, an NKey seed or a creds file".into(),
            );
        }
        if self.user.is_some() != password {
            return invalid(if password {
                "password_file/password_env: a password needs a user".into()
            } else {
                "user: needs password_file or password_env".into()
            });
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return invalid("tls_cert_file and tls_key_file: give both or neither".into());
        }
        Ok(())
    }

    /// NATS connect options carrying these settings, reading the secrets now.
    pub async fn connect_options(&self) -> Result<ConnectOptions, LogError> {
        self.validate()?;
        let mut options = ConnectOptions::new();
        if let Some(path) = &self.creds_file {
            options = match options.credentials_file(path).await {
                Ok(options) => options,
                Err(e) => return invalid(format!("creds_file: {}: {e}", path.display())),
            };
        }
        if let Some(user) = &self.user {
            let password = secret(
                "password",
                self.password_file.as_deref(),
                self.password_env.as_deref(),
            )?
            .unwrap_or_default();
            options = options.user_and_password(user.clone(), password);
        }
        if let Some(token) = secret(
            "token",
            self.token_file.as_deref(),
            self.token_env.as_deref(),
        )? {
            options = options.token(token);
        }
        if let Some(seed) = secret("nkey_seed", self.nkey_seed_file.as_deref(), None)? {
            options = options.nkey(seed);
        }
        if let Some(ca) = &self.tls_ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls_required {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

/// What a failed NATS connect means: refused credentials or TLS are the configuration's
/// fault ([`LogError::InvalidOptions`]), anything else may pass ([`LogError::Unavailable`]).
pub fn connect_error(url: &str, e: &async_nats::ConnectError) -> LogError {
    use async_nats::ConnectErrorKind as Kind;
    match e.kind() {
        Kind::AuthorizationViolation | Kind::Authentication => LogError::InvalidOptions(format!(
            "auth: NATS at {url} refused the credentials ({e}); check [cluster.jetstream.auth]"
        )),
        Kind::Tls => LogError::InvalidOptions(format!(
            "auth: TLS with NATS at {url} failed ({e}); check the tls_* settings"
        )),
        // A TLS handshake that fails (a certificate no configured root verifies) arrives as
        // an I/O error of kind `InvalidData`.
        Kind::Io if handshake_refused(e) => LogError::InvalidOptions(format!(
            "auth: TLS with NATS at {url} failed ({e}); check tls_ca_file"
        )),
        _ => LogError::Unavailable(format!("connect to NATS at {url}: {e}")),
    }
}

/// Whether the connect failed on data the TLS layer refused.
fn handshake_refused(e: &async_nats::ConnectError) -> bool {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_way_to_authenticate_and_complete_pairs() {
        assert!(NatsAuth::default().validate().is_ok());
        let user = NatsAuth {
            user: Some("u".into()),
            password_env: Some("P".into()),
            ..NatsAuth::default()
        };
        assert!(user.validate().is_ok());
        let err = |a: NatsAuth| a.validate().unwrap_err().to_string();
        assert!(err(NatsAuth {
            token_env: Some("T".into()),
            ..user.clone()
        })
        .contains("one way"));
        assert!(err(NatsAuth {
            user: Some("u".into()),
            ..NatsAuth::default()
        })
        .contains("needs password_file"));
        assert!(err(NatsAuth {
            password_file: Some("p".into()),
            ..NatsAuth::default()
        })
        .contains("needs a user"));
        assert!(err(NatsAuth {
            tls_cert_file: Some("c".into()),
            ..NatsAuth::default()
        })
        .contains("both or neither"));
    }

    #[tokio::test]
    async fn secrets_come_from_files_or_the_environment_and_missing_ones_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").expect("write");
        assert_eq!(
            secret("password", Some(&file), None).expect("read"),
            Some("s3cret".to_string())
        );
        let missing = dir.path().join("nope");
        let e = secret("password", Some(&missing), None).unwrap_err();
        assert!(e.to_string().contains("auth.password_file"), "{e}");
        let e = secret("token", None, Some("NOTADB_TEST_SURELY_UNSET_VAR")).unwrap_err();
        assert!(
            e.to_string().contains("NOTADB_TEST_SURELY_UNSET_VAR"),
            "{e}"
        );
        let e = secret("token", Some(&file), Some("X")).unwrap_err();
        assert!(e.to_string().contains("both set"), "{e}");
        let Err(e) = NatsAuth {
            user: Some("u".into()),
            password_file: Some(missing),
            ..NatsAuth::default()
        }
        .connect_options()
        .await
        else {
            panic!("a missing password file is an error");
        };
        assert!(matches!(e, LogError::InvalidOptions(_)), "{e}");
    }
}
