//! A deterministic simulation of the whole protocol: a sequencer log and its forwarder,
//! partition logs, two replicas per partition each with its own executor and store, remote
//! reads appended to receivers' logs after random delays (once per sending replica), and
//! crashes of executors and of the forwarder at random points. A seeded random scheduler
//! interleaves everything, so a failing seed replays exactly.
//!
//! Every run is checked against the serial oracle (each transaction's outcome, the final
//! state), for equal replicas, for the bank invariants, and, for the list-append transactions,
//! by the history checker with real-time order (strict serializability).

mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use notadb_txn::{
    check, replay, Effects, Entry, Executor, ExecutorConfig, MemStore, Op, Outcome, Position,
    RemoteReads, Resume, Status, TxnId, TxnInput, TxnKey,
};
use notadb_types::{PartitionId, Seq};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use workload::{Generator, Shape, INITIAL_BALANCE};

const REPLICAS: usize = 2;

/// What a replica keeps across a crash, written atomically with its data at every step.
#[derive(Default, Clone)]
struct Durable {
    position: Position,
    completed: BTreeSet<Seq>,
    stash: BTreeMap<(TxnId, PartitionId), RemoteReads>,
}

impl Durable {
    fn apply(&mut self, fx: &Effects) {
        self.position = fx.position;
        for &c in &fx.completed {
            self.completed.insert(c);
        }
        let keep = self.completed.split_off(&fx.position.watermark.next());
        self.completed = keep;
        for r in &fx.stashed {
            self.stash.insert((r.txn, r.from), r.clone());
        }
        for t in &fx.unstashed {
            self.stash.retain(|(txn, _), _| txn != t);
        }
    }

    fn resume(&self) -> Resume {
        Resume {
            position: self.position,
            completed: self.completed.clone(),
            stash: self.stash.values().cloned().collect(),
        }
    }
}

struct Replica {
    executor: Executor,
    store: MemStore,
    durable: Durable,
}

struct Settings {
    shape: Shape,
    txns: usize,
    config: ExecutorConfig,
    crash_executors: bool,
    crash_forwarder: bool,
}

#[derive(Default)]
struct Run {
    logs: Vec<Vec<Entry>>,
    stores: Vec<Vec<BTreeMap<TxnKey, Bytes>>>,
    /// Per transaction, every (partition, replica, outcome) reported by an active participant.
    outcomes: BTreeMap<TxnId, Vec<Outcome>>,
    inputs: BTreeMap<TxnId, Arc<TxnInput>>,
    invoked: BTreeMap<TxnId, u64>,
    answered: BTreeMap<TxnId, u64>,
    crashes: usize,
    forwarder_crashes: usize,
    duplicates_forwarded: usize,
}

fn simulate(seed: u64, s: &Settings) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let procedures = workload::procedures();
    let parts = usize::from(s.shape.partitions);
    let mut generator = Generator::new(s.shape);
    let mut run = Run {
        logs: vec![Vec::new(); parts],
        ..Run::default()
    };
    let new_replica = |p: usize, d: Durable| Replica {
        executor: Executor::new(
            PartitionId(p as u16),
            procedures.clone(),
            s.config,
            d.resume(),
        ),
        store: MemStore::default(),
        durable: d,
    };
    let mut replicas: Vec<Vec<Replica>> = (0..parts)
        .map(|p| {
            (0..REPLICAS)
                .map(|_| new_replica(p, Durable::default()))
                .collect()
        })
        .collect();
    let mut sequencer: Vec<Arc<TxnInput>> = Vec::new();
    // The forwarder: its durable position (every entry up to it copied everywhere) and its
    // progress within the next entry.
    let mut forwarded = 0usize;
    let mut copied_of_next = 0usize;
    let mut network: Vec<(PartitionId, RemoteReads)> = Vec::new();
    // Participants (partition, replica) that finished each transaction.
    let mut finished_by: BTreeMap<TxnId, BTreeSet<(usize, usize)>> = BTreeMap::new();
    let mut clock = 0u64;
    let mut submitted = 0usize;
    let mut stuck = 0usize;
    loop {
        clock += 1;
        let roll = rng.random_range(0..1000);
        let mut acted = false;
        if roll < 150 && submitted < s.txns {
            let input = Arc::new(generator.next(&mut rng));
            run.inputs.insert(input.id, Arc::clone(&input));
            run.invoked.insert(input.id, clock);
            submitted += 1;
            if input.is_multi_partition() {
                sequencer.push(input);
            } else {
                let p = usize::from(input.keys[0].partition.0);
                run.logs[p].push(Entry::Txn {
                    input,
                    sequenced: None,
                });
            }
            acted = true;
        } else if (150..300).contains(&roll) && forwarded < sequencer.len() {
            let input = &sequencer[forwarded];
            let participants = input.participants();
            let p = participants[copied_of_next];
            run.logs[usize::from(p.0)].push(Entry::Txn {
                input: Arc::clone(input),
                sequenced: Some(Seq(forwarded as u64 + 1)),
            });
            copied_of_next += 1;
            if copied_of_next == participants.len() {
                forwarded += 1;
                copied_of_next = 0;
            }
            acted = true;
        } else if (300..310).contains(&roll) && s.crash_forwarder && copied_of_next > 0 {
            // Lost its progress within the entry: the restarted forwarder copies it again.
            run.forwarder_crashes += 1;
            run.duplicates_forwarded += copied_of_next;
            copied_of_next = 0;
            acted = true;
        } else if (310..450).contains(&roll) && !network.is_empty() {
            let i = rng.random_range(0..network.len());
            let (to, reads) = network.swap_remove(i);
            run.logs[usize::from(to.0)].push(Entry::Reads(reads));
            acted = true;
        } else if (450..453).contains(&roll) && s.crash_executors {
            let p = rng.random_range(0..parts);
            let r = rng.random_range(0..REPLICAS);
            let d = replicas[p][r].durable.clone();
            let store = std::mem::take(&mut replicas[p][r].store);
            replicas[p][r] = new_replica(p, d);
            replicas[p][r].store = store;
            run.crashes += 1;
            acted = true;
        } else {
            let p = rng.random_range(0..parts);
            let r = rng.random_range(0..REPLICAS);
            let replica = &mut replicas[p][r];
            let next = replica.executor.next_seq();
            let fx = if let Some(entry) = run.logs[p].get(next.0 as usize - 1) {
                acted = true;
                replica
                    .executor
                    .step(next, entry.clone(), &mut replica.store)
                    .expect("step")
            } else {
                replica.executor.idle(&mut replica.store).expect("idle")
            };
            replica.durable.apply(&fx);
            for send in fx.sends {
                for to in send.to {
                    network.push((to, send.reads.clone()));
                }
            }
            for f in fx.finished {
                acted = true;
                if let Some(o) = f.outcome {
                    run.outcomes.entry(f.txn).or_default().push(o);
                }
                let by = finished_by.entry(f.txn).or_default();
                by.insert((p, r));
                let input = &run.inputs[&f.txn];
                let participants = input.participants().len();
                // The client's answer: once a replica of every participant has finished.
                let partitions: BTreeSet<usize> = by.iter().map(|(p, _)| *p).collect();
                if partitions.len() == participants && !run.answered.contains_key(&f.txn) {
                    run.answered.insert(f.txn, clock);
                }
            }
        }
        let quiet = submitted == s.txns
            && forwarded == sequencer.len()
            && network.is_empty()
            && replicas.iter().enumerate().all(|(p, rs)| {
                rs.iter().all(|r| {
                    r.executor.next_seq().0 as usize == run.logs[p].len() + 1
                        && r.executor.in_flight() == 0
                        && r.executor.backlog() == 0
                })
            });
        if quiet {
            break;
        }
        stuck = if acted { 0 } else { stuck + 1 };
        assert!(
            stuck < 100_000,
            "seed {seed}: no progress; in flight: {:#?}",
            replicas
                .iter()
                .map(|rs| rs.iter().map(|r| r.executor.describe()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        );
    }
    run.stores = replicas
        .into_iter()
        .map(|rs| rs.into_iter().map(|r| r.store.data).collect())
        .collect();
    run
}

fn verify(seed: u64, s: &Settings, run: &Run) {
    let procedures = workload::procedures();
    let serial = replay(&procedures, &run.logs).expect("the logs are consistently ordered");
    // Every transaction ran, and every participant that ran the procedure agrees with the
    // serial replay.
    assert_eq!(serial.outcomes.len(), s.txns, "seed {seed}");
    for (id, expected) in &serial.outcomes {
        let seen = run
            .outcomes
            .get(id)
            .unwrap_or_else(|| panic!("seed {seed}: {id} has no outcome"));
        for o in seen {
            assert_eq!(
                o, expected,
                "seed {seed}: {id} differs from the serial replay"
            );
        }
    }
    // Replicas are equal, and their union is the serial state.
    let mut union = BTreeMap::new();
    for (p, replicas) in run.stores.iter().enumerate() {
        for r in 1..replicas.len() {
            assert_eq!(
                replicas[0], replicas[r],
                "seed {seed}: partition {p} diverged"
            );
        }
        union.extend(replicas[0].clone());
    }
    assert_eq!(union, serial.state, "seed {seed}: final state differs");
    // Bank: audits and the final state see the initial total; no balance is negative.
    let total = INITIAL_BALANCE * i64::from(s.shape.accounts);
    let mut final_sum = 0;
    for a in 0..s.shape.accounts {
        let b = union
            .get(&workload::account(a))
            .map(|v| i64::from_be_bytes(v[..].try_into().expect("8")))
            .unwrap_or(INITIAL_BALANCE);
        assert!(b >= 0, "seed {seed}: account {a} is at {b}");
        final_sum += b;
    }
    assert_eq!(final_sum, total, "seed {seed}");
    let mut audits = 0;
    for (id, outcome) in &serial.outcomes {
        if run.inputs[id].procedure == "audit" {
            audits += 1;
            let Outcome::Committed { output } = outcome else {
                panic!("seed {seed}: audit {id} did not commit: {outcome:?}")
            };
            let sum = i64::from_be_bytes(output[..].try_into().expect("8"));
            assert_eq!(sum, total, "seed {seed}: audit {id} saw {sum}");
        }
    }
    assert!(
        s.shape.audit_share == 0.0 || audits > 0,
        "seed {seed}: no audit ran"
    );
    // List appends: strictly serializable, with real time as the simulation clock.
    let history: Vec<Op> = run
        .inputs
        .values()
        .filter(|i| i.procedure == "append")
        .map(|i| {
            let outcome = &serial.outcomes[&i.id];
            let output = match outcome {
                Outcome::Committed { output } => Some(output),
                _ => None,
            };
            Op {
                invoke: run.invoked[&i.id],
                complete: run.answered[&i.id],
                status: if output.is_some() {
                    Status::Ok
                } else {
                    Status::Failed
                },
                ops: workload::append_history(i, output),
            }
        })
        .collect();
    let report = check(&history, true);
    assert!(report.anomalies.is_empty(), "seed {seed}: {}", report);
}

fn shape(partitions: u16, hot: u32, hot_share: f64, multi_share: f64) -> Shape {
    Shape {
        partitions,
        accounts: 64,
        hot,
        hot_share,
        multi_share,
        audit_share: 0.05,
        append_share: 0.25,
        lists: 8,
    }
}

fn fuzz(seeds: std::ops::Range<u64>, make: impl Fn(u64) -> Settings) -> (usize, usize, usize) {
    let (mut crashes, mut fcrashes, mut dups) = (0, 0, 0);
    for seed in seeds {
        let settings = make(seed);
        let run = simulate(seed, &settings);
        verify(seed, &settings, &run);
        crashes += run.crashes;
        fcrashes += run.forwarder_crashes;
        dups += run.duplicates_forwarded;
    }
    (crashes, fcrashes, dups)
}

#[test]
fn concurrent_execution_matches_the_serial_oracle_across_contention_and_sca() {
    fuzz(0..48, |seed| {
        let contention = [(0, 0.0), (8, 0.5), (2, 0.9)][(seed % 3) as usize];
        let multi = [0.0, 0.3, 1.0][((seed / 3) % 3) as usize];
        Settings {
            shape: shape(4, contention.0, contention.1, multi),
            txns: 300,
            config: ExecutorConfig {
                sca: seed % 2 == 0,
                max_blocked: 4096,
            },
            crash_executors: false,
            crash_forwarder: false,
        }
    });
}

#[test]
fn crashes_of_executors_and_the_forwarder_change_nothing() {
    let (crashes, fcrashes, dups) = fuzz(100..124, |seed| Settings {
        shape: shape(3, 4, 0.6, 0.5),
        txns: 250,
        config: ExecutorConfig {
            sca: seed % 2 == 0,
            max_blocked: 4096,
        },
        crash_executors: true,
        crash_forwarder: true,
    });
    assert!(crashes > 50, "{crashes} executor crashes");
    assert!(
        fcrashes > 10 && dups > 10,
        "{fcrashes} forwarder crashes, {dups} duplicates"
    );
}

#[test]
fn a_small_blocked_cap_only_delays() {
    fuzz(200..212, |seed| Settings {
        shape: shape(2, 2, 0.8, 0.5),
        txns: 200,
        config: ExecutorConfig {
            sca: seed % 2 == 0,
            max_blocked: 2,
        },
        crash_executors: seed % 3 == 0,
        crash_forwarder: false,
    });
}

#[test]
fn a_reordered_log_is_caught_by_the_oracle() {
    let settings = Settings {
        shape: shape(2, 0, 0.0, 1.0),
        txns: 60,
        config: ExecutorConfig::default(),
        crash_executors: false,
        crash_forwarder: false,
    };
    let mut run = simulate(7, &settings);
    // Swap two multi-partition transactions in one log only: invariant 6 broken.
    let log = &mut run.logs[0];
    let multi: Vec<usize> = (0..log.len())
        .filter(|&i| {
            matches!(
                log[i],
                Entry::Txn {
                    sequenced: Some(_),
                    ..
                }
            )
        })
        .collect();
    assert!(multi.len() >= 2);
    log.swap(multi[0], multi[1]);
    let err = replay(&workload::procedures(), &run.logs).unwrap_err();
    assert!(err.to_string().contains("differently"), "{err}");
}
