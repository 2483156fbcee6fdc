//! Child server processes for tests and local clusters: finding a binary, a free loopback
//! port, stopping a child, and the end of its log for error messages.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

/// Kills `child` (SIGKILL) and waits for it to exit; a child that already exited is fine.
pub fn kill_child(mut child: Child) -> io::Result<()> {
    match child.kill() {
        Ok(()) => {}
        // Already exited.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
        Err(e) => return Err(e),
    }
    child.wait().map(|_| ())
}

/// The binary named by the environment variable `env`, else the first `name` on the `PATH`.
/// `what` and `hint` word the error when there is none ("a nats-server binary", "install one
/// with ...").
pub fn find_binary(env: &str, name: &str, what: &str, hint: &str) -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{env} names {}, expected an executable file, found none",
                    path.display()
                ),
            ))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("expected {what} on the PATH or in {env}, found none; {hint}"),
            )
        })
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The last lines of the file at `path`, or why it could not be read.
pub fn log_tail(path: &Path) -> String {
    const LINES: usize = 20;
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LINES)..].join("\n")
        }
        Err(e) => format!("(could not read it: {e})"),
    }
}

/// Waits up to `timeout` for `child` (sent SIGTERM by the caller) to exit, then kills it;
/// `what` names it in the warning.
pub fn wait_or_kill(mut child: Child, what: &str, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    tracing::warn!(
        pid = child.id(),
        "{what} did not stop after SIGTERM; killing it"
    );
    kill_child(child)
}
