//! [`TansuServer`]: a `tansu` broker child process (a Kafka-protocol broker) for tests and
//! local clusters.

use std::fs;
use std::io;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::Duration;

use crate::child::{ChildServer, ServerSpec};
use crate::process::{self, free_port};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Environment variable naming the `tansu` binary; without it the `PATH` is searched.
pub const TANSU_ENV: &str = "NOTADB_TANSU";

/// The broker's SQLite database, in the store directory.
const DATABASE: &str = "tansu.db";

/// A `tansu broker` process on one loopback port, storing topics in a SQLite database in one
/// store directory (so a restart keeps them); a [`ChildServer`] (stop, kill, restart) with a
/// bootstrap address. Dropping it kills the process.
///
/// Needs a `tansu` built with the `libsql` storage engine:
/// `cargo install tansu --locked --features dynostore,libsql` (`scripts/kafka.sh` does it).
/// Every method blocks the calling thread; from async code, call them in `block_in_place` or
/// `spawn_blocking`.
#[derive(Debug)]
pub struct TansuServer(ChildServer);

impl TansuServer {
    /// Starts a broker on a free loopback port with its data in `store_dir` (created if
    /// missing), and waits until it answers a metadata request.
    pub fn start(store_dir: &Path) -> io::Result<TansuServer> {
        TansuServer::start_on(free_port()?, store_dir)
    }

    /// Starts a broker on `port` of 127.0.0.1 with its data in `store_dir`.
    pub fn start_on(port: u16, store_dir: &Path) -> io::Result<TansuServer> {
        fs::create_dir_all(store_dir)?;
        let listener = format!("tcp://127.0.0.1:{port}");
        let spec = ServerSpec {
            name: "tansu",
            binary: process::find_binary(
                TANSU_ENV,
                "tansu",
                "a tansu binary",
                "run scripts/kafka.sh or `cargo install tansu --locked --features dynostore,libsql`",
            )?,
            args: vec![
                "broker".into(),
                "--listener-url".into(),
                listener.clone(),
                "--advertised-listener-url".into(),
                listener,
                "--storage-engine".into(),
                format!("sqlite://{DATABASE}"),
            ],
            log_file: "tansu.log",
            ready: Box::new(|port| metadata_answers(&bootstrap_of(port))),
        };
        ChildServer::start(spec, port, store_dir).map(TansuServer)
    }

    /// The bootstrap address, `127.0.0.1:{port}`.
    pub fn bootstrap(&self) -> String {
        bootstrap_of(self.0.port())
    }
}

impl Deref for TansuServer {
    type Target = ChildServer;

    fn deref(&self) -> &ChildServer {
        &self.0
    }
}

impl DerefMut for TansuServer {
    fn deref_mut(&mut self) -> &mut ChildServer {
        &mut self.0
    }
}

impl From<TansuServer> for ChildServer {
    fn from(server: TansuServer) -> ChildServer {
        server.0
    }
}

fn bootstrap_of(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Whether the broker at `bootstrap` answers a metadata request listing a broker.
fn metadata_answers(bootstrap: &str) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| format!("create a client: {e}"))?;
    match consumer.fetch_metadata(None, Duration::from_secs(1)) {
        Ok(metadata) if !metadata.brokers().is_empty() => Ok(()),
        Ok(_) => Err("the metadata lists no broker".to_string()),
        Err(e) => Err(e.to_string()),
    }
}
