//! Kill -9 while appending: every acknowledged entry survives.
//!
//! The parent test re-executes this test binary to run `crash_child_writer`, which appends
//! from several tasks and prints each acknowledged `(partition, seq)` to stdout. The parent
//! kills it with SIGKILL once enough acknowledgements arrived, reopens the log (which cuts off
//! whatever torn tail the kill left), and checks that every acknowledged seq holds its payload.
//! Three rounds run on the same directory, so recovery after a kill is also recovered from.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use notadb_log::{EmbeddedLog, EmbeddedLogOptions, FsyncPolicy, Log};
use notadb_types::{PartitionId, Seq};

/// Directory of the log the child writes; its presence selects the child mode.
const CHILD_DIR_ENV: &str = "NOTADB_LOG_CRASH_CHILD_DIR";
/// Fsync policy of the child, as `FsyncPolicy::from_str` reads it.
const CHILD_POLICY_ENV: &str = "NOTADB_LOG_CRASH_CHILD_POLICY";
/// Round number, part of every payload.
const CHILD_ROUND_ENV: &str = "NOTADB_LOG_CRASH_CHILD_ROUND";
const PARTITIONS: u16 = 4;
const CHILD_TASKS: u64 = 8;
/// Small segments, so that kills also land around segment rolls.
const SEGMENT_BYTES: u64 = 64 << 10;
/// Acknowledgements the parent waits for before each kill.
const ACKS_PER_ROUND: usize = 1500;
const ROUNDS: u32 = 3;
/// The child exits by itself after this long, so a broken parent cannot leave it running.
const CHILD_LIFETIME: Duration = Duration::from_secs(120);

fn options(policy: FsyncPolicy) -> EmbeddedLogOptions {
    EmbeddedLogOptions {
        fsync: policy,
        segment_bytes: SEGMENT_BYTES,
        ..EmbeddedLogOptions::default()
    }
}

/// The payload of entry `i` of `task` in `round`: 0 to 4 KiB of bytes derived from all three.
fn payload(round: u32, task: u64, i: u64) -> Bytes {
    let len = ((i * 7919 + task * 131) % 4096) as usize;
    let seed = u64::from(round) << 48 ^ task << 32 ^ i;
    Bytes::from(
        (0..len)
            .map(|k| (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (k % 56)) as u8 ^ k as u8)
            .collect::<Vec<u8>>(),
    )
}

#[test]
#[ignore = "the child process of the crash tests, which run it"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let policy: FsyncPolicy = std::env::var(CHILD_POLICY_ENV)
        .expect("policy")
        .parse()
        .expect("valid policy");
    let round: u32 = std::env::var(CHILD_ROUND_ENV)
        .expect("round")
        .parse()
        .expect("valid round");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let log = EmbeddedLog::open(Path::new(&dir), PARTITIONS, options(policy)).expect("open");
        for task in 0..CHILD_TASKS {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let partition = ((task + i) % u64::from(PARTITIONS)) as u16;
                    let seq = log
                        .append(PartitionId(partition), payload(round, task, i))
                        .await
                        .expect("append");
                    println!("ack {partition} {} {task} {i}", seq.0);
                }
            });
        }
        tokio::time::sleep(CHILD_LIFETIME).await;
        std::process::exit(3);
    });
}

/// An acknowledgement the child printed.
struct Ack {
    round: u32,
    task: u64,
    i: u64,
}

/// Runs one child round until `ACKS_PER_ROUND` acknowledgements, kills it, and returns every
/// acknowledgement it printed (including those after the threshold, up to the kill).
fn run_child(dir: &Path, policy: &str, round: u32) -> Vec<(u16, u64, Ack)> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "crash_child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_POLICY_ENV, policy)
        .env(CHILD_ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut acks = Vec::new();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() != 5 || fields[0] != "ack" {
            continue;
        }
        let parsed = (
            fields[1].parse(),
            fields[2].parse(),
            fields[3].parse(),
            fields[4].parse(),
        );
        // A line cut by the kill does not parse; skip it.
        if let (Ok(partition), Ok(seq), Ok(task), Ok(i)) = parsed {
            acks.push((partition, seq, Ack { round, task, i }));
        }
        if !killed && acks.len() >= ACKS_PER_ROUND {
            child.kill().expect("SIGKILL the child");
            killed = true;
        }
    }
    let status = child.wait().expect("wait for the child");
    assert!(
        killed,
        "round {round}: the child exited ({status}) after only {} acknowledgements",
        acks.len()
    );
    acks
}

async fn check_survivors(dir: &Path, policy: FsyncPolicy, acks: &[(u16, u64, Ack)]) {
    let log = EmbeddedLog::open(dir, PARTITIONS, options(policy)).expect("reopen after kill");
    let mut stored: HashMap<(u16, u64), Bytes> = HashMap::new();
    for partition in 0..PARTITIONS {
        let bounds = log.bounds(PartitionId(partition)).await.expect("bounds");
        assert_eq!(bounds.first, Seq(1));
        let mut next = Seq(1);
        while next <= bounds.last {
            let entries = log
                .read(PartitionId(partition), next, 1000, Duration::ZERO)
                .await
                .expect("read");
            assert!(
                !entries.is_empty(),
                "nothing at seq {} of {partition}",
                next.0
            );
            for entry in entries {
                assert_eq!(entry.seq, next, "contiguous seqs in partition {partition}");
                stored.insert((partition, entry.seq.0), entry.payload);
                next = next.next();
            }
        }
    }
    for (partition, seq, ack) in acks {
        let found = stored.get(&(*partition, *seq)).unwrap_or_else(|| {
            panic!(
                "round {}: acknowledged seq {seq} of partition {partition} is lost",
                ack.round
            )
        });
        assert!(
            *found == payload(ack.round, ack.task, ack.i),
            "round {}: seq {seq} of partition {partition} holds the wrong payload",
            ack.round
        );
    }
}

fn acknowledged_entries_survive_sigkill(policy: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let parsed: FsyncPolicy = policy.parse().expect("valid policy");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut all_acks = Vec::new();
    for round in 0..ROUNDS {
        let acks = run_child(dir.path(), policy, round);
        assert!(acks.len() >= ACKS_PER_ROUND);
        all_acks.extend(acks);
        runtime.block_on(check_survivors(dir.path(), parsed, &all_acks));
    }
}

#[test]
fn acknowledged_entries_survive_sigkill_with_fsync_always() {
    acknowledged_entries_survive_sigkill("always");
}

#[test]
fn acknowledged_entries_survive_sigkill_with_fsync_interval() {
    acknowledged_entries_survive_sigkill("interval:100ms");
}
