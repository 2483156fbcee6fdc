//! A `notadb serve` process a benchmark starts: its own data directory and loopback ports,
//! stopped when dropped. It is a separate process so its CPU time is its own, and
//! `--server-cpus` can pin it.

use crate::cpu::Placement;
use anyhow::{anyhow, Context};
use notadb_client::Client;
use std::path::PathBuf;
use std::time::Duration;

/// How long a started node may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `notadb` binary: `NOTADB_BIN`, else the one beside this program (a cargo build puts
/// both in one directory), else `notadb` on the `PATH`.
fn notadb_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NOTADB_BIN") {
        return bin.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("notadb")))
        .filter(|bin| bin.is_file())
        .unwrap_or_else(|| "notadb".into())
}

fn free_addr() -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(format!("127.0.0.1:{port}"))
}

/// A node this benchmark started.
pub struct StartedNode {
    pub addr: String,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl StartedNode {
    /// Starts `notadb serve --with-examples` with the config file `config` (TOML) and waits
    /// until it is ready.
    pub async fn start(config: &str, placement: &Placement) -> anyhow::Result<StartedNode> {
        let dir = tempfile::tempdir()?;
        let addr = free_addr()?;
        let config_path = dir.path().join("notadb.toml");
        std::fs::write(&config_path, config)?;
        let bin = notadb_bin();
        let child = tokio::process::Command::new(&bin)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--with-examples")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--grpc-addr")
            .arg(&addr)
            .arg("--admin-addr")
            .arg(free_addr()?)
            .arg("--frame-addr")
            .arg(free_addr()?)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `{} serve` (set NOTADB_BIN)", bin.display()))?;
        if let Some(pid) = child.id() {
            placement.pin_server(pid)?;
        }
        let node = StartedNode {
            addr,
            _child: child,
            _dir: dir,
        };
        node.wait_ready().await?;
        Ok(node)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let addr = &self.addr;
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let last = match Client::connect(addr).await {
                Ok(c) => match c.status().await {
                    Ok(s) if s.ready => return Ok(()),
                    Ok(_) => anyhow!("the node at {addr} is not ready"),
                    Err(e) => e.into(),
                },
                Err(e) => e.into(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(last.context(format!("notadb at {addr}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
