//! The executor alone, logs preloaded: transactions per second on one core.
//!
//! `cargo bench --bench executor [-- --txns N]` prints a Markdown table. Every transaction is a
//! bank transfer between two accounts (read and write both), over `accounts` accounts per
//! partition, so a transaction collides with a given other one with probability about
//! 2/accounts ("contention 1 in accounts"). Partitions are executed round-robin on this one
//! thread; 256 entries arrive per partition per round; remote reads are appended to their receivers' logs as soon as
//! they are sent, so a multi-partition transaction waits for at most one round. The time
//! counted is executing only: generating the logs and the in-memory store's own cost are
//! outside the executor but inside the loop (a BTreeMap per partition).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use notadb_txn::{
    Abort, Access, Entry, Executor, ExecutorConfig, KeyAccess, MemStore, Procedures, Resume,
    TxnContext, TxnEnv, TxnId, TxnInput, TxnKey,
};
use notadb_types::{KeyspaceId, PartitionId, Seq};

const PARTITIONS: u16 = 4;
const TURN: usize = 256;

fn procedures() -> Procedures {
    let mut p = Procedures::new();
    p.register("transfer", |t: &mut TxnContext<'_>| {
        let (a, b) = (t.key(0)?, t.key(1)?);
        let balance = |v: Option<&Bytes>| -> Result<i64, Abort> {
            Ok(v.map_or(1_000, |v| i64::from_be_bytes(v[..8].try_into().expect("8"))))
        };
        let (x, y) = (balance(t.read(&a)?)?, balance(t.read(&b)?)?);
        if x < 1 {
            return Err(Abort("insufficient funds".into()));
        }
        t.put(a, (x - 1).to_be_bytes().to_vec())?;
        t.put(b, (y + 1).to_be_bytes().to_vec())?;
        Ok(Bytes::new())
    });
    p
}

/// xorshift: the bench needs no crate for randomness.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn logs(txns: usize, accounts: u64, multi: f64, seed: u64) -> Vec<Vec<Entry>> {
    let mut logs = vec![Vec::new(); usize::from(PARTITIONS)];
    let mut s = seed | 1;
    let mut sequenced = 0u64;
    for i in 0..txns {
        let p = (next(&mut s) % u64::from(PARTITIONS)) as u16;
        let cross = (next(&mut s) % 1000) as f64 / 1000.0 < multi;
        let q = if cross {
            (p + 1 + (next(&mut s) % u64::from(PARTITIONS - 1)) as u16) % PARTITIONS
        } else {
            p
        };
        let a = next(&mut s) % accounts;
        let mut b = next(&mut s) % accounts;
        if p == q && a == b {
            b = (a + 1) % accounts;
        }
        let key = |part: u16, n: u64| KeyAccess {
            key: TxnKey::new(
                KeyspaceId(1),
                [part.to_be_bytes().as_slice(), n.to_be_bytes().as_slice()].concat(),
            ),
            partition: PartitionId(part),
            access: Access::ReadWrite,
        };
        let mut input = TxnInput::new(
            TxnId(i as u128 + 1),
            "transfer",
            Bytes::new(),
            TxnEnv::default(),
            vec![key(p, a), key(q, b)],
        );
        input.validate(PARTITIONS).expect("valid");
        let input = Arc::new(input);
        if p == q {
            logs[usize::from(p)].push(Entry::Txn {
                input,
                sequenced: None,
            });
        } else {
            sequenced += 1;
            for part in [p.min(q), p.max(q)] {
                logs[usize::from(part)].push(Entry::Txn {
                    input: Arc::clone(&input),
                    sequenced: Some(Seq(sequenced)),
                });
            }
        }
    }
    logs
}

/// Appends remote reads to their receivers' logs.
fn deliver(logs: &mut [Vec<Entry>], sends: Vec<notadb_txn::SendReads>) {
    for send in sends {
        for to in send.to {
            logs[usize::from(to.0)].push(Entry::Reads(send.reads.clone()));
        }
    }
}

/// Executes the logs; returns transactions per second and the peak blocked count. Entries
/// arrive `TURN` per partition per round (as appends would), and remote reads are appended
/// behind what has arrived, so they wait behind one round of entries, not the whole log.
fn run(preloaded: Vec<Vec<Entry>>, txns: usize, sca: bool) -> (f64, usize) {
    let mut arriving: Vec<std::collections::VecDeque<Entry>> =
        preloaded.into_iter().map(Into::into).collect();
    let mut logs: Vec<Vec<Entry>> = vec![Vec::new(); usize::from(PARTITIONS)];
    let procedures = procedures();
    let mut executors: Vec<Executor> = (0..PARTITIONS)
        .map(|p| {
            Executor::new(
                PartitionId(p),
                procedures.clone(),
                ExecutorConfig {
                    sca,
                    max_blocked: notadb_txn::DEFAULT_MAX_BLOCKED,
                },
                Resume::default(),
            )
        })
        .collect();
    let mut stores: Vec<MemStore> = (0..PARTITIONS).map(|_| MemStore::default()).collect();
    let mut done = vec![false; txns + 1];
    let mut finished = 0usize;
    let mut count = |fx: &notadb_txn::Effects, finished: &mut usize| {
        for f in &fx.finished {
            let slot = &mut done[f.txn.0 as usize];
            if !*slot {
                *slot = true;
                *finished += 1;
            }
        }
    };
    let mut peak = 0usize;
    let started = Instant::now();
    loop {
        let mut progressed = false;
        for (log, arriving) in logs.iter_mut().zip(arriving.iter_mut()) {
            let n = arriving.len().min(TURN);
            log.extend(arriving.drain(..n));
            progressed |= n > 0;
        }
        for p in 0..usize::from(PARTITIONS) {
            let ex = &mut executors[p];
            loop {
                let next = ex.next_seq().0 as usize;
                let Some(entry) = logs[p].get(next - 1).cloned() else {
                    break;
                };
                progressed = true;
                let fx = ex
                    .step(Seq(next as u64), entry, &mut stores[p])
                    .expect("step");
                count(&fx, &mut finished);
                deliver(&mut logs, fx.sends);
            }
            let fx = ex.idle(&mut stores[p]).expect("idle");
            count(&fx, &mut finished);
            deliver(&mut logs, fx.sends);
            peak = peak.max(ex.blocked());
        }
        if !progressed {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(finished, txns, "every transaction ran");
    (txns as f64 / secs, peak)
}

fn main() {
    let mut txns = 200_000usize;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--txns") {
        txns = args[i + 1].parse().expect("--txns N");
    }
    println!("executor alone, {PARTITIONS} partitions on one thread, {txns} transfers per row\n");
    println!("| contention (1 in accounts) | multi-partition share | SCA | transactions/s | peak blocked |");
    println!("|---:|---:|---|---:|---:|");
    for accounts in [10_000u64, 1_000, 100, 10] {
        for sca in [true, false] {
            let logs = logs(txns, accounts, 0.1, accounts);
            let (rate, peak) = run(logs, txns, sca);
            println!(
                "| 1 in {accounts} | 10% | {} | {rate:.0} | {peak} |",
                if sca { "on" } else { "off" }
            );
        }
    }
    for multi in [0.0, 0.25, 0.5, 1.0] {
        let logs = logs(txns, 10_000, multi, 7);
        let (rate, peak) = run(logs, txns, true);
        println!(
            "| 1 in 10000 | {:.0}% | on | {rate:.0} | {peak} |",
            multi * 100.0
        );
    }
}
