//! [`ChildServer`]: one server child process on a loopback port, with its data and log in one
//! store directory: started and waited for, stopped gracefully, killed, restarted. The broker
//! helpers ([`NatsServer`](crate::NatsServer), [`TansuServer`](crate::TansuServer)) are this
//! with their command line and readiness check.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{kill_child, log_tail, wait_or_kill};

/// How long a start waits for the server to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`ChildServer::stop`] waits for the server to exit after SIGTERM before it kills
/// it.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Pause between two readiness checks.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Whether a server on a port is ready: `Err` says what the last check saw.
pub type ReadyCheck = Box<dyn Fn(u16) -> Result<(), String> + Send + Sync>;

/// How to run one kind of server.
pub struct ServerSpec {
    /// The name errors and warnings use (`nats-server`).
    pub name: &'static str,
    /// The executable.
    pub binary: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its log file, in the store directory.
    pub log_file: &'static str,
    /// Answers once the server serves requests on its port.
    pub ready: ReadyCheck,
}

impl std::fmt::Debug for ServerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSpec")
            .field("name", &self.name)
            .field("binary", &self.binary)
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

/// A server child process on one loopback port, run in its store directory with its output
/// appended to a log file there. Dropping it kills the process.
///
/// Every method blocks the calling thread (at most about 30 s); from async code, call them at
/// start-up, in `block_in_place` or in `spawn_blocking`.
#[derive(Debug)]
pub struct ChildServer {
    spec: ServerSpec,
    port: u16,
    store_dir: PathBuf,
    child: Option<Child>,
}

impl ChildServer {
    /// Starts the server on `port` with `store_dir` (which must exist) as its working
    /// directory, and waits until it is ready.
    pub fn start(spec: ServerSpec, port: u16, store_dir: &Path) -> io::Result<ChildServer> {
        let mut server = ChildServer {
            spec,
            port,
            store_dir: store_dir.canonicalize()?,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's data and log.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.store_dir.join(self.spec.log_file)
    }

    /// Whether the process is running (it may still be starting or stopping).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit, killing it if it takes
    /// longer than 15 s. Does nothing if it is not running.
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        // kill(1) rather than libc: the workspace forbids unsafe code.
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !sent.success() {
            tracing::warn!(
                pid = child.id(),
                "could not send SIGTERM to {}; killing it",
                self.spec.name
            );
            return kill_child(child);
        }
        wait_or_kill(child, self.spec.name, STOP_TIMEOUT)
    }

    /// Kills the server (SIGKILL) and waits for it to exit: what it had not written to disk
    /// is lost. Does nothing if it is not running.
    pub fn kill(&mut self) -> io::Result<()> {
        match self.child.take() {
            Some(child) => kill_child(child),
            None => Ok(()),
        }
    }

    /// Starts the server again on the same port and store directory (stopping it first if it
    /// runs), and waits until it is ready.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// Starts the process and waits until it is ready; kills it if it never gets there.
    fn spawn(&mut self) -> io::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&self.spec.binary)
            .args(&self.spec.args)
            .current_dir(&self.store_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("start {}: {e}", self.spec.binary.display()),
                )
            })?;
        self.child = Some(child);
        if let Err(error) = self.wait_ready() {
            self.kill()?;
            return Err(io::Error::new(
                error.kind(),
                format!(
                    "{} on port {} did not become ready: {error}; end of {}:\n{}",
                    self.spec.name,
                    self.port,
                    self.log_path().display(),
                    log_tail(&self.log_path())
                ),
            ));
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(io::Error::other(format!(
                        "the process exited with {status}"
                    )));
                }
            }
            let failure = match (self.spec.ready)(self.port) {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("expected it ready within {READY_TIMEOUT:?}, last: {failure}"),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Err(error) = self.kill() {
            tracing::warn!(%error, port = self.port, "could not kill {}", self.spec.name);
        }
    }
}
