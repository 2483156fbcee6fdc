//! Where the load generator and the servers run, and the CPU time the servers spend.
//!
//! CPU time is read the way `top` reads it: `utime + stime` of `/proc/PID/stat`, which sums
//! every thread of the process. A notadb node reports its own (`Status.cpu_micros`, from
//! `getrusage`), so a node on another machine is measured too; peers are found on this
//! machine by process name.

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::{sysconf, Pid, SysconfVar};
use notadb_client::Client;
use std::path::Path;

/// Process names of the servers `--server-cpus` pins and the peers' CPU meters read.
pub const NOTADB: &str = "notadb";
pub const REDIS: &str = "redis-server";
pub const POSTGRES: &str = "postgres";
pub const NATS: &str = "nats-server";
pub const TANSU: &str = "tansu";

/// A set of CPU numbers: `1`, `0,2`, `2-3,6`.
#[derive(Clone, Debug, PartialEq)]
pub struct Cpus(Vec<usize>);

impl std::str::FromStr for Cpus {
    type Err = String;
    fn from_str(s: &str) -> Result<Cpus, String> {
        let mut cpus = Vec::new();
        for part in s.split(',').map(str::trim) {
            let number = |n: &str| {
                n.parse::<usize>().map_err(|_| {
                    format!("`{n}` is not a CPU number (expected e.g. `1`, `0,2` or `2-3`)")
                })
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (number(a)?, number(b)?);
                    if a > b {
                        return Err(format!("`{part}`: a reversed range"));
                    }
                    cpus.extend(a..=b);
                }
                None => cpus.push(number(part)?),
            }
        }
        if let Some(c) = cpus.iter().find(|&&c| c >= CpuSet::count()) {
            return Err(format!(
                "CPU {c} is beyond the largest CPU number this build can pin"
            ));
        }
        Ok(Cpus(cpus))
    }
}

/// `--client-cpus` and `--server-cpus`, taken by every subcommand.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Placement {
    /// CPUs the load generator (this process) runs on, e.g. `1` or `2-3`.
    #[arg(long, global = true)]
    pub client_cpus: Option<Cpus>,
    /// CPUs the servers run on: a node this command starts, and the local processes named
    /// notadb, redis-server, postgres and nats-server running when it starts.
    #[arg(long, global = true)]
    pub server_cpus: Option<Cpus>,
}

impl Placement {
    /// Pins this process and the servers already running; the servers get their CPUs back
    /// when the returned guard drops.
    pub fn apply(&self) -> anyhow::Result<Pinned> {
        if let Some(cpus) = &self.client_cpus {
            pin(std::process::id() as i32, cpus).context("--client-cpus")?;
        }
        let mut pinned = Pinned(Vec::new());
        if let Some(cpus) = &self.server_cpus {
            for pid in pids_named(&[NOTADB, REDIS, POSTGRES, NATS]) {
                // A process may exit between the listing and the calls.
                if let Some(before) = affinity(pid) {
                    if pin(pid, cpus).is_ok() {
                        pinned.0.push((pid, before));
                    }
                }
            }
        }
        Ok(pinned)
    }

    /// Pins a server this command started.
    pub fn pin_server(&self, pid: u32) -> anyhow::Result<()> {
        match &self.server_cpus {
            Some(cpus) => pin(pid as i32, cpus).context("--server-cpus"),
            None => Ok(()),
        }
    }

    /// How the report describes the placement.
    pub fn describe(&self) -> String {
        let show = |c: &Option<Cpus>| match c {
            Some(Cpus(v)) => v
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
            None => "any".into(),
        };
        format!(
            "servers on CPUs {}, load generator on CPUs {}",
            show(&self.server_cpus),
            show(&self.client_cpus)
        )
    }
}

/// Processes `--server-cpus` pinned, with the CPUs they had; dropping it gives them back.
pub struct Pinned(Vec<(i32, Cpus)>);

impl Drop for Pinned {
    fn drop(&mut self) {
        for (pid, before) in &self.0 {
            // The process may have exited meanwhile.
            let _ = pin(*pid, before);
        }
    }
}

/// The CPUs process `pid`'s main thread may run on, or `None` when it cannot be read.
fn affinity(pid: i32) -> Option<Cpus> {
    let set = sched_getaffinity(Pid::from_raw(pid)).ok()?;
    Some(Cpus(
        (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
    ))
}

/// Sets the CPU affinity of every thread of process `pid` (threads it starts later inherit it).
fn pin(pid: i32, Cpus(cpus): &Cpus) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c)
            .with_context(|| format!("CPU {c} is beyond the {} a set holds", CpuSet::count()))?;
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("listing the threads of process {pid}"))?;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        match sched_setaffinity(Pid::from_raw(tid), &set) {
            // A thread may have exited since the listing.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => bail!("pinning thread {tid} of process {pid} to CPUs {cpus:?}: {e}"),
        }
    }
    Ok(())
}

/// The machine's online CPUs: every core, not only those the benchmark pinned itself to
/// (`available_parallelism` counts the affinity mask).
pub fn machine_cores() -> usize {
    match sysconf(SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) => usize::try_from(n).unwrap_or(0),
        _ => 0,
    }
}

/// The processes on this machine whose name (`/proc/PID/comm`) is one of `names`.
pub fn pids_named(names: &[&str]) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| names.contains(&comm.trim_end()))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// User plus system CPU time process `pid` has used, microseconds; `None` once it has exited.
fn process_micros(pid: i32) -> Option<u64> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) => u64::try_from(t).unwrap_or(1).max(1),
        _ => 100,
    };
    Some((utime + stime) * 1_000_000 / ticks)
}

/// Reads the CPU time a system under test has used so far.
pub enum Meter {
    /// notadb nodes, each reporting its own process's time.
    Notadb(Vec<Client>),
    /// Local processes with one of these names (the set is listed at every reading, so a
    /// PostgreSQL backend started for a connection is counted).
    Named(&'static [&'static str]),
}

impl Meter {
    /// Microseconds of CPU time so far, or `None` when nothing is there to read.
    pub async fn micros(&self) -> anyhow::Result<Option<u64>> {
        match self {
            Meter::Notadb(nodes) => {
                let mut total = 0;
                for node in nodes {
                    total += node
                        .status()
                        .await
                        .context("reading a node's CPU time")?
                        .cpu_micros;
                }
                Ok(Some(total))
            }
            Meter::Named(names) => {
                let pids = pids_named(names);
                Ok((!pids.is_empty()).then(|| pids.into_iter().filter_map(process_micros).sum()))
            }
        }
    }

    /// The nodes whose CPU time a run against `addr` accounts: every ready member of the
    /// cluster `addr` is in (requests forwarded or routed to other nodes cost there), or just
    /// `addr`.
    pub async fn notadb_at(addr: &str) -> anyhow::Result<Meter> {
        let entry = Client::connect_grpc(addr).await?;
        let members: Vec<String> = match entry.cluster().await {
            Ok(c) if !c.members.is_empty() => c
                .members
                .into_iter()
                .filter(|m| m.ready)
                .map(|m| m.grpc_addr)
                .collect(),
            _ => return Ok(Meter::Notadb(vec![entry])),
        };
        let mut nodes = Vec::new();
        for m in members {
            nodes.push(Client::connect_grpc(&m).await?);
        }
        Ok(Meter::Notadb(nodes))
    }
}

/// A window's CPU reading: call `start` before and `used` after.
pub struct Window<'a> {
    meter: &'a Meter,
    from: Option<u64>,
}

impl<'a> Window<'a> {
    pub async fn start(meter: &'a Meter) -> anyhow::Result<Window<'a>> {
        Ok(Window {
            meter,
            from: meter.micros().await?,
        })
    }

    /// Server CPU microseconds used since `start`.
    pub async fn used(self) -> anyhow::Result<Option<u64>> {
        let to = self.meter.micros().await?;
        Ok(match (self.from, to) {
            (Some(from), Some(to)) => Some(to.saturating_sub(from)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_reject_bad_input() {
        assert_eq!("1".parse::<Cpus>(), Ok(Cpus(vec![1])));
        assert_eq!("0,2-4".parse::<Cpus>(), Ok(Cpus(vec![0, 2, 3, 4])));
        assert!("3-1".parse::<Cpus>().unwrap_err().contains("reversed"));
        assert!("x"
            .parse::<Cpus>()
            .unwrap_err()
            .contains("not a CPU number"));
        assert!("100000".parse::<Cpus>().unwrap_err().contains("beyond"));
    }

    #[test]
    fn this_process_is_found_and_its_cpu_time_grows() {
        let me = std::process::id() as i32;
        let comm = std::fs::read_to_string(format!("/proc/{me}/comm")).expect("comm");
        let name: &'static str = Box::leak(comm.trim_end().to_string().into_boxed_str());
        assert!(pids_named(&[name]).contains(&me));
        let before = process_micros(me).expect("own stat");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = process_micros(me).expect("own stat");
        assert!(after >= before + 100_000, "{before} -> {after}");
    }

    #[test]
    fn pinning_a_process_takes_effect() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .expect("start sleep");
        let pid = child.id() as i32;
        let before = affinity(pid).expect("affinity of a running process");
        pin(pid, &Cpus(vec![0])).expect("pin to CPU 0");
        assert_eq!(affinity(pid), Some(Cpus(vec![0])));
        drop(Pinned(vec![(pid, before.clone())]));
        assert_eq!(affinity(pid), Some(before));
        pin(pid, &Cpus(vec![0])).expect("pin to CPU 0");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let _ = child.kill();
        let _ = child.wait();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list");
        assert_eq!(allowed.trim(), "0");
    }
}
