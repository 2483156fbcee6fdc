//! Cluster-mode nodes: real `notadb serve` processes on a real broker (`nats-server`, or a
//! Kafka-protocol `tansu`), with helpers to wait for readiness, read `/digest` and
//! `/metrics`, and poll with timeouts.

pub use super::try_http_get;
use super::{free_addr, BIN};
use notadb_client::{proto, Client, KeyspaceSchema, Token};
use notadb_testkit::NatsServer;
use notadb_testkit::TansuServer;
use notadb_types::{ElementType, KeyElement, Order, PartitionId, ValueFormat};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::future::Future;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Partition count of every test cluster.
pub const PARTITIONS: u16 = 8;

/// Runs one cluster test at a time on a fresh multi-threaded runtime: every test starts a
/// `nats-server` and several node processes, too much for a 2-core machine to run in
/// parallel without turning lag bounds and deadlines into noise.
pub fn serial<F: Future>(test: F) -> F::Output {
    static SERIAL: Mutex<()> = Mutex::new(());
    let _guard = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(test)
}

/// Runs blocking code (process control, `NatsServer`) from inside the runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The broker a test cluster runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    Nats,
    Kafka,
}

/// A running broker of a test cluster.
pub enum TestBroker {
    Nats(NatsServer),
    /// A tansu broker, and the directory the cluster keeps its checkpoints in.
    Kafka(TansuServer, PathBuf),
}

impl TestBroker {
    /// Starts a broker of `kind` with its store (and, on Kafka, the checkpoints) under `dir`.
    pub fn start(kind: BrokerKind, dir: &Path) -> TestBroker {
        match kind {
            BrokerKind::Nats => TestBroker::Nats(start_nats(dir)),
            BrokerKind::Kafka => TestBroker::Kafka(
                blocking(|| TansuServer::start(&dir.join("tansu"))).expect("start tansu"),
                dir.join("checkpoints"),
            ),
        }
    }

    /// Node `node_id` of group `group` of the cluster `cluster` on this broker.
    pub fn spec(
        &self,
        cluster: &str,
        groups: u16,
        group: u16,
        node_id: &str,
        dir: &Path,
    ) -> NodeSpec {
        match self {
            TestBroker::Nats(nats) => {
                NodeSpec::new(&nats.url(), cluster, groups, group, node_id, dir)
            }
            TestBroker::Kafka(tansu, checkpoints) => {
                // tansu sleeps through part of every fetch (up to the consumer's
                // `fetch.wait.max.ms`, 500 ms by default): a shorter wait keeps the tests'
                // transactions, which cross the log several times, quick.
                let config = dir.join("tansu-client.toml");
                std::fs::write(
                    &config,
                    "[cluster]\nlog = \"kafka\"\n[cluster.kafka.client]\n\"fetch.wait.max.ms\" = \"100\"\n",
                )
                .expect("write the Kafka client settings");
                NodeSpec {
                    kafka: Some((tansu.bootstrap(), checkpoints.clone())),
                    ..NodeSpec::new("", cluster, groups, group, node_id, dir).with_config(&config)
                }
            }
        }
    }

    /// Stops the broker: nats-server with SIGTERM; tansu with SIGKILL, because tansu 0.6 on
    /// SIGTERM stops its storage before its listener, fails the in-flight produce requests,
    /// and after a restart panics on the idempotent producers' next batches (see
    /// docs/kafka.md).
    pub fn stop(&mut self) -> std::io::Result<()> {
        match self {
            TestBroker::Nats(nats) => nats.stop(),
            TestBroker::Kafka(tansu, _) => tansu.kill(),
        }
    }

    /// Starts the broker again on the same port and store.
    pub fn restart(&mut self) -> std::io::Result<()> {
        match self {
            TestBroker::Nats(nats) => nats.restart(),
            TestBroker::Kafka(tansu, _) => tansu.restart(),
        }
    }
}

/// How one node joins its cluster.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The NATS server, unless `kafka` is set.
    pub nats_url: String,
    /// On Kafka: the bootstrap servers and the checkpoint directory.
    pub kafka: Option<(String, PathBuf)>,
    pub cluster_name: String,
    pub groups: u16,
    pub group: u16,
    pub node_id: String,
    pub data_dir: PathBuf,
    pub checkpoint_interval_secs: Option<u64>,
    pub config: Option<PathBuf>,
}

impl NodeSpec {
    /// Node `node_id` of group `group`; its data in `{dir}/{node_id}`.
    pub fn new(
        nats_url: &str,
        cluster: &str,
        groups: u16,
        group: u16,
        node_id: &str,
        dir: &Path,
    ) -> NodeSpec {
        NodeSpec {
            nats_url: nats_url.to_string(),
            kafka: None,
            cluster_name: cluster.to_string(),
            groups,
            group,
            node_id: node_id.to_string(),
            data_dir: dir.join(node_id),
            checkpoint_interval_secs: None,
            config: None,
        }
    }

    /// Sets `--config`.
    pub fn with_config(mut self, path: &Path) -> NodeSpec {
        self.config = Some(path.to_path_buf());
        self
    }

    /// Sets `--checkpoint-interval-secs`.
    pub fn checkpoints_every(mut self, secs: u64) -> NodeSpec {
        self.checkpoint_interval_secs = Some(secs);
        self
    }
}

/// A `notadb serve` process in cluster mode. Its stderr goes to `{data_dir}.stderr` (appended
/// across restarts); the end of it is printed when a wait fails, and by `Drop` when the test
/// panics.
pub struct ClusterNode {
    pub spec: NodeSpec,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    child: Option<Child>,
}

impl ClusterNode {
    /// Starts the node and waits until `/readyz` answers 200.
    pub fn start(spec: NodeSpec) -> ClusterNode {
        let mut node = ClusterNode::spawn(spec);
        node.wait_ready(Duration::from_secs(60));
        node
    }

    /// Starts the node without waiting.
    pub fn spawn(spec: NodeSpec) -> ClusterNode {
        let mut node = ClusterNode {
            spec,
            grpc: free_addr(),
            admin: free_addr(),
            child: None,
        };
        node.launch();
        node
    }

    fn launch(&mut self) {
        assert!(
            self.child.is_none(),
            "{} is already running",
            self.spec.node_id
        );
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("open the node's stderr file");
        let s = &self.spec;
        let mut command = Command::new(BIN);
        command.arg("serve");
        match &s.kafka {
            None => command.args(["--nats-url", &s.nats_url]),
            Some((bootstrap, checkpoints)) => command
                .args(["--kafka-bootstrap", bootstrap])
                .arg("--checkpoint-dir")
                .arg(checkpoints),
        };
        command
            .args(["--cluster-name", &s.cluster_name])
            .args(["--groups", &s.groups.to_string()])
            .args(["--group", &s.group.to_string()])
            .args(["--node-id", &s.node_id])
            .args(["--partitions", &PARTITIONS.to_string()])
            .arg("--data-dir")
            .arg(&s.data_dir)
            .args(["--grpc-addr", &self.grpc.to_string()])
            .args(["--admin-addr", &self.admin.to_string()])
            .args(["--frame-addr", "127.0.0.1:0"]);
        if let Some(path) = &s.config {
            command.arg("--config").arg(path);
        }
        if let Some(secs) = s.checkpoint_interval_secs {
            command.args(["--checkpoint-interval-secs", &secs.to_string()]);
        }
        let child = command
            .env("RUST_LOG", "warn,notadb_cluster=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn notadb serve");
        self.child = Some(child);
    }

    /// Starts a stopped node again on its data directory (new ports) and waits until ready.
    pub fn restart(&mut self) {
        self.grpc = free_addr();
        self.admin = free_addr();
        self.launch();
        self.wait_ready(Duration::from_secs(120));
    }

    /// `{data_dir}.stderr`.
    pub fn stderr_path(&self) -> PathBuf {
        let mut name = self.spec.data_dir.as_os_str().to_owned();
        name.push(".stderr");
        PathBuf::from(name)
    }

    /// The last lines the node wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        const LINES: usize = 40;
        match std::fs::read_to_string(self.stderr_path()) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(LINES)..].join("\n")
            }
            Err(e) => format!("(no stderr: {e})"),
        }
    }

    /// Everything the node wrote to stderr.
    pub fn stderr_all(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!(
            "node {} (group {}, gRPC {}, admin {}); end of its stderr:\n{}",
            self.spec.node_id,
            self.spec.group,
            self.grpc,
            self.admin,
            self.stderr_tail()
        )
    }

    /// Panics (with its stderr) if the process exited.
    pub fn assert_running(&mut self) {
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{} is stopped", self.spec.node_id));
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("notadb exited with {status}: {}", self.describe());
        }
    }

    /// Whether the node exited because one of its ports was taken between `free_addr` choosing
    /// it and the node binding it (another process's connection can get any free port).
    fn lost_a_port(&mut self) -> bool {
        let exited = self
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_some());
        exited
            && self
                .stderr_tail()
                .lines()
                .last()
                .is_some_and(|l| l.contains("Address already in use"))
    }

    /// Waits until `/readyz` answers 200. A node that lost one of its ports to another process
    /// starts again on new ones (up to three times).
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut relaunches = 0;
        loop {
            if relaunches < 3 && self.lost_a_port() {
                relaunches += 1;
                self.child = None;
                self.grpc = free_addr();
                self.admin = free_addr();
                self.launch();
                continue;
            }
            self.assert_running();
            let last = match try_http_get(self.admin, "/readyz") {
                Ok((200, _)) => return,
                Ok((code, body)) => format!("{code} {}", body.trim()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "not ready within {timeout:?} (last /readyz: {last}): {}",
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The gRPC URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A client of this node.
    pub async fn client(&self) -> Client {
        Client::connect(&self.url())
            .await
            .unwrap_or_else(|e| panic!("connect: {e}: {}", self.describe()))
    }

    /// Runs a CLI client command against this node.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        super::cli_at(self.grpc, args)
    }

    /// Per owned partition: applied seq and digest.
    /// Per owned partition: applied seq and digest. The node answers `/digest` once per
    /// `digest_min_interval_ms` (1 s) and 429 in between: this waits for its turn.
    pub fn digest(&self) -> BTreeMap<u16, (u64, String)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = try_http_get(self.admin, "/digest")
                .unwrap_or_else(|e| panic!("GET /digest: {e}: {}", self.describe()));
            if code == 429 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            assert_eq!(code, 200, "GET /digest: {body}: {}", self.describe());
            return parse_digest(&body);
        }
    }

    /// The sum of every series of metric `name` (0 when it was never recorded).
    pub fn metric(&self, name: &str) -> f64 {
        let (code, body) = try_http_get(self.admin, "/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics: {e}: {}", self.describe()));
        assert_eq!(code, 200, "GET /metrics: {body}");
        metric_value(&body, name)
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }

    /// SIGTERM, then waits (at most 60 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        super::terminate(&mut child, || self.describe())
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {}", self.describe());
        }
    }
}

/// `/digest` JSON as partition → (applied, digest).
pub fn parse_digest(body: &str) -> BTreeMap<u16, (u64, String)> {
    let rows: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("/digest is not JSON ({e}): {body}"));
    rows.as_array()
        .unwrap_or_else(|| panic!("/digest: expected an array, got {body}"))
        .iter()
        .map(|row| {
            let partition = row["partition"].as_u64().expect("partition") as u16;
            let applied = row["applied"].as_u64().expect("applied");
            let digest = row["digest"].as_str().expect("digest").to_string();
            (partition, (applied, digest))
        })
        .collect()
}

/// The sum of the samples of `name` in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                return None;
            }
            line.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .fold(0.0, |sum, v| sum + v)
}

/// Polls `check` every 100 ms until it returns `Ok`, or panics after `timeout` with `what`,
/// the last failure and `context()` (e.g. the nodes' stderr).
pub fn wait_until<T, E: Debug>(
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last: {e:?}\n{}", context())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The async form of [`wait_until`].
pub async fn wait_until_async<T, E: Debug, Fut: Future<Output = Result<T, E>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last: {e:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The ends of the nodes' stderr, for failure messages.
pub fn describe_all(nodes: &[&ClusterNode]) -> String {
    nodes
        .iter()
        .map(|n| n.describe())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until every node of the slice (one shard group) has applied `tokens` (those of its
/// partitions) and all report the same applied position for every partition, then asserts
/// their digests are equal; returns the common digest.
pub fn wait_converged(
    nodes: &[&ClusterNode],
    tokens: &[Token],
    timeout: Duration,
) -> BTreeMap<u16, (u64, String)> {
    assert!(nodes.len() >= 2, "convergence needs two replicas");
    let group = nodes[0].spec.group;
    assert!(
        nodes.iter().all(|n| n.spec.group == group),
        "one group at a time"
    );
    let digests = wait_until(
        &format!("replicas of group {group} apply the acknowledged writes and reach equal applied positions"),
        timeout,
        || describe_all(nodes),
        || {
            let all: Vec<_> = nodes.iter().map(|n| n.digest()).collect();
            let positions = |d: &BTreeMap<u16, (u64, String)>| {
                d.iter().map(|(p, (a, _))| (*p, *a)).collect::<Vec<_>>()
            };
            let behind = behind_tokens(&all, tokens);
            if behind.is_empty() && all.iter().all(|d| positions(d) == positions(&all[0])) {
                Ok(all)
            } else {
                Err(format!(
                    "positions {:?}; behind the acknowledged writes: {behind:?}",
                    all.iter().map(positions).collect::<Vec<_>>()
                ))
            }
        },
    );
    let expected: Vec<u16> = (0..PARTITIONS)
        .filter(|p| p % nodes[0].spec.groups == group)
        .collect();
    assert_eq!(
        digests[0].keys().copied().collect::<Vec<_>>(),
        expected,
        "group {group} owns partitions p with p % groups == group"
    );
    // `/digest` reads each partition's digest and applied seq one after the other, so a
    // late apply could pair them wrongly: a mismatch must persist over a few reads.
    let mut digests = digests;
    for attempt in 0.. {
        let first = &digests[0];
        let Some((node, digest)) = nodes
            .iter()
            .zip(&digests)
            .skip(1)
            .find(|(_, d)| *d != first)
        else {
            return first.clone();
        };
        if attempt == 3 {
            panic!(
                "at equal applied positions {} and {} must have equal digests: {first:?} vs {digest:?}",
                nodes[0].spec.node_id, node.spec.node_id
            );
        }
        std::thread::sleep(Duration::from_millis(500));
        digests = nodes.iter().map(|n| n.digest()).collect();
    }
    unreachable!()
}

/// `(node index, partition, applied, token seq)` for every token a node's digest shows
/// unapplied (tokens of partitions a node does not own are skipped).
pub fn behind_tokens(
    digests: &[BTreeMap<u16, (u64, String)>],
    tokens: &[Token],
) -> Vec<(usize, u16, u64, u64)> {
    let mut behind = Vec::new();
    for (i, digest) in digests.iter().enumerate() {
        for t in tokens {
            if let Some((applied, _)) = digest.get(&t.partition.0) {
                if *applied < t.seq.0 {
                    behind.push((i, t.partition.0, *applied, t.seq.0));
                }
            }
        }
    }
    behind
}

/// Waits until every node knows `count` live, ready members (heartbeats are seen).
pub async fn wait_members(nodes: &[&ClusterNode], count: usize) {
    for node in nodes {
        let url = node.url();
        wait_until_async(
            &format!("{} sees {count} ready members", node.spec.node_id),
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    let mut client = proto::node_client::NodeClient::connect(url)
                        .await
                        .map_err(|e| e.to_string())?;
                    let view = client
                        .cluster(proto::ClusterRequest {})
                        .await
                        .map_err(|e| e.to_string())?
                        .into_inner();
                    let ready = view.members.iter().filter(|m| m.ready).count();
                    if ready == count {
                        Ok(())
                    } else {
                        Err(format!("{ready} ready of {:?}", view.members))
                    }
                }
            },
        )
        .await;
    }
}

/// A keyspace `name` with one i64 key element `id` and byte values: what the built-in `i64.*`
/// and `bytes.append` transaction procedures work on.
pub fn i64_bytes_keyspace(name: &str) -> KeyspaceSchema {
    KeyspaceSchema {
        name: name.into(),
        key: vec![KeyElement {
            name: "id".into(),
            ty: ElementType::I64,
            order: Order::Asc,
        }],
        partition_by: 1,
        value_format: ValueFormat::Bytes,
        ttl: None,
    }
}

/// A keyspace `name` with one string key element `k` and JSON values.
pub fn string_keyspace(name: &str) -> KeyspaceSchema {
    KeyspaceSchema {
        name: name.into(),
        key: vec![KeyElement {
            name: "k".into(),
            ty: ElementType::String,
            order: Order::Asc,
        }],
        partition_by: 1,
        value_format: ValueFormat::Json,
        ttl: None,
    }
}

/// Waits until every node knows keyspace `name` (schemas spread through the metadata bucket).
pub async fn wait_keyspace(nodes: &[&ClusterNode], name: &str) {
    for node in nodes {
        let client = node.client().await;
        wait_until_async(
            &format!("{} knows keyspace {name}", node.spec.node_id),
            Duration::from_secs(30),
            || {
                let client = client.clone();
                async move { client.describe_keyspace(name).await.map(|_| ()) }
            },
        )
        .await;
    }
}

/// Per partition, the newest of `tokens` (what a read after all of them must carry).
pub fn newest_tokens<'a>(tokens: impl IntoIterator<Item = &'a Token>) -> Vec<Token> {
    let mut newest: BTreeMap<PartitionId, Token> = BTreeMap::new();
    for t in tokens {
        let e = newest.entry(t.partition).or_insert(*t);
        if t.seq > e.seq {
            *e = *t;
        }
    }
    newest.into_values().collect()
}

/// Starts a `nats-server` with its store in `{dir}/nats`.
pub fn start_nats(dir: &Path) -> NatsServer {
    blocking(|| NatsServer::start(&dir.join("nats"))).expect("start nats-server")
}

/// Spawns every node at once (they race to create the cluster), then waits until each is
/// ready.
pub fn start_nodes(specs: Vec<NodeSpec>) -> Vec<ClusterNode> {
    let mut nodes: Vec<ClusterNode> = specs.into_iter().map(ClusterNode::spawn).collect();
    for node in &mut nodes {
        blocking(|| node.wait_ready(Duration::from_secs(60)));
    }
    nodes
}

/// Two groups of two replicas: `g0a`, `g0b` (group 0), `g1a`, `g1b` (group 1), in that order.
pub fn start_two_by_two(broker: &TestBroker, cluster: &str, dir: &Path) -> Vec<ClusterNode> {
    let spec = |group, id| broker.spec(cluster, 2, group, id, dir);
    start_nodes(vec![
        spec(0, "g0a"),
        spec(0, "g0b"),
        spec(1, "g1a"),
        spec(1, "g1b"),
    ])
}
