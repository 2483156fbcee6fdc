//! [`TansuServer`]: a `tansu` broker child process (a Kafka-protocol broker) for tests and
//! local clusters.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use notadb_log::process::{self, free_port, kill_child, log_tail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Environment variable naming the `tansu` binary; without it the `PATH` is searched.
pub const TANSU_ENV: &str = "NOTADB_TANSU";

/// How long [`TansuServer::start`] waits for the broker to answer a metadata request.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`TansuServer::stop`] waits for the broker to exit after SIGTERM before it kills
/// it.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Pause between two readiness or exit checks.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The broker's SQLite database, in the store directory.
const DATABASE: &str = "tansu.db";

/// The broker's log file, in the store directory.
const LOG_FILE: &str = "tansu.log";

/// A `tansu broker` process on one loopback port, storing topics in a SQLite database in one
/// store directory (so a restart keeps them). Dropping it kills the process.
///
/// Needs a `tansu` built with the `libsql` storage engine:
/// `cargo install tansu --locked --features dynostore,libsql` (`scripts/kafka.sh` does it).
/// Every method blocks the calling thread; from async code, call them in `block_in_place` or
/// `spawn_blocking`.
#[derive(Debug)]
pub struct TansuServer {
    binary: PathBuf,
    port: u16,
    store_dir: PathBuf,
    child: Option<Child>,
}

impl TansuServer {
    /// Starts a broker on a free loopback port with its data in `store_dir` (created if
    /// missing), and waits until it answers a metadata request.
    pub fn start(store_dir: &Path) -> io::Result<TansuServer> {
        TansuServer::start_on(free_port()?, store_dir)
    }

    /// Starts a broker on `port` of 127.0.0.1 with its data in `store_dir`.
    pub fn start_on(port: u16, store_dir: &Path) -> io::Result<TansuServer> {
        fs::create_dir_all(store_dir)?;
        let mut server = TansuServer {
            binary: process::find_binary(
                TANSU_ENV,
                "tansu",
                "a tansu binary",
                "run scripts/kafka.sh or `cargo install tansu --locked --features dynostore,libsql`",
            )?,
            port,
            store_dir: store_dir.canonicalize()?,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// The bootstrap address, `127.0.0.1:{port}`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The directory holding the broker's database and log.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Stops the broker (SIGTERM) and waits for it to exit, killing it after 15 s. Does nothing
    /// if it is not running.
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            process::wait_or_kill(child, "tansu", STOP_TIMEOUT)
        } else {
            kill_child(child)
        }
    }

    /// Kills the broker (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) -> io::Result<()> {
        match self.child.take() {
            Some(child) => kill_child(child),
            None => Ok(()),
        }
    }

    /// Starts the broker again on the same port and store directory (stopping it first if it
    /// runs), and waits until it answers.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.spawn()
    }

    fn log_path(&self) -> PathBuf {
        self.store_dir.join(LOG_FILE)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&self.binary)
            .arg("broker")
            .arg("--listener-url")
            .arg(&listener)
            .arg("--advertised-listener-url")
            .arg(&listener)
            .arg("--storage-engine")
            .arg(format!("sqlite://{DATABASE}"))
            .current_dir(&self.store_dir)
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
                    "tansu on port {} did not become ready: {error}; end of {}:\n{}",
                    self.port,
                    self.log_path().display(),
                    log_tail(&self.log_path())
                ),
            ));
        }
        Ok(())
    }

    /// Waits until the broker answers a metadata request.
    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .map_err(io::Error::other)?;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(io::Error::other(format!(
                        "the process exited with {status}"
                    )));
                }
            }
            let failure = match consumer.fetch_metadata(None, Duration::from_secs(1)) {
                Ok(metadata) if !metadata.brokers().is_empty() => return Ok(()),
                Ok(_) => "the metadata lists no broker".to_string(),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("expected a metadata answer within {READY_TIMEOUT:?}, last: {failure}"),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for TansuServer {
    fn drop(&mut self) {
        if let Err(error) = self.kill() {
            tracing::warn!(%error, port = self.port, "could not kill tansu");
        }
    }
}
