//! Starts the real `notadb` binary on free loopback ports with its own data directory.

#![allow(dead_code)]

pub mod cluster;
pub mod pg;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_notadb");

/// A free loopback port (the listener is closed before the server binds it), never one this
/// test process handed out before: the kernel may offer a just-closed port again, and a node's
/// gRPC and admin ports, or two nodes', must differ.
pub fn free_addr() -> SocketAddr {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().expect("port list lock");
    loop {
        let addr = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr;
        }
    }
}

/// `GET path` over HTTP/1.0; returns status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// `GET path` over HTTP/1.0, or the I/O error (a server still starting may reset the
/// connection).
pub fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Runs a client command of the CLI against the node at `grpc`.
pub fn cli_at(grpc: SocketAddr, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--addr")
        .arg(grpc.to_string())
        .args(args)
        .output()
        .expect("run notadb")
}

/// A `notadb serve` process.
pub struct Node {
    pub child: Child,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
}

impl Node {
    /// Starts a node on `data_dir` with 8 partitions and waits until `/readyz` answers 200.
    pub fn start(data_dir: &Path) -> Node {
        let (grpc, admin) = (free_addr(), free_addr());
        let child = Command::new(BIN)
            .args(["serve", "--partitions", "8", "--log-fsync", "always"])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--grpc-addr")
            .arg(grpc.to_string())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .args(["--frame-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn notadb serve");
        let mut node = Node {
            child,
            grpc,
            admin,
            data_dir: data_dir.to_path_buf(),
        };
        node.wait_ready();
        node
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("notadb exited early: {status}");
            }
            // Connection errors mean "not yet": the admin listener may be starting.
            if matches!(try_http_get(self.admin, "/readyz"), Ok((200, _))) {
                return;
            }
            assert!(Instant::now() < deadline, "node not ready within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gRPC address for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Runs a client command of the CLI against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli_at(self.grpc, args)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        terminate(&mut self.child, || "node".to_string())
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// stdout of a successful command.
pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr of a failed command, which must be one line.
pub fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected failure, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "one clear line, got: {stderr}");
    stderr
}

/// Sends SIGTERM to `child` and waits (at most 60 s) for its exit status; past that, kills it
/// and fails, naming the process with `what`.
pub fn terminate(child: &mut Child, what: impl Fn() -> String) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{} did not exit within 60 s of SIGTERM", what());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
