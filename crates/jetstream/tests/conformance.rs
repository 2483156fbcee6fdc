//! The conformance suite against [`JetStreamLog`], each check on its own `nats-server`.

use notadb_jetstream::{JetStreamLog, JetStreamOptions};
use notadb_log::conformance::{self, LogHarness};
use notadb_testkit::NatsServer;

/// A `nats-server` with its store in a temporary directory; each log name is a stream prefix.
struct Harness {
    server: NatsServer,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let server = tokio::task::block_in_place(|| NatsServer::start(dir.path()))
            .expect("start nats-server");
        Harness { server, _dir: dir }
    }
}

#[async_trait::async_trait]
impl LogHarness for Harness {
    type L = JetStreamLog;

    async fn open(&self, name: &str, partitions: u16) -> JetStreamLog {
        let options = JetStreamOptions {
            name: name.to_string(),
            ..JetStreamOptions::with_url(self.server.url())
        };
        JetStreamLog::connect(options, partitions)
            .await
            .unwrap_or_else(|e| panic!("connect the log {name}: {e}"))
    }
}

notadb_log::conformance_tests!(Harness::new());

/// `run_all` itself, all checks against one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_server() {
    conformance::run_all(&Harness::new()).await;
}
