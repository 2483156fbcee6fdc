//! Transactions on a cluster: real `notadb serve` processes (two shard groups of two replicas)
//! on a real `nats-server`, running the built-in `i64.transfer` and `i64.sum` procedures as a
//! bank, through kill -9 of the forwarder and of a replica and a restart of `nats-server`.

mod harness;

use harness::cluster::*;
use notadb_client::{proto, txn_key, Client, Element, Token};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KS: &str = "accounts";
const ACCOUNTS: i64 = 32;
const INITIAL: i64 = 100;
const TOTAL: i64 = ACCOUNTS * INITIAL;
const CLIENTS: usize = 8;

fn account(a: i64, access: proto::Access) -> proto::TxnKey {
    txn_key(KS, &[Element::I64(a)], access)
}

fn transfer(from: i64, to: i64, amount: i64) -> proto::TransactRequest {
    proto::TransactRequest {
        procedure: "i64.transfer".into(),
        args: amount.to_be_bytes().to_vec(),
        keys: vec![
            account(from, proto::Access::ReadWrite),
            account(to, proto::Access::ReadWrite),
        ],
        ..Default::default()
    }
}

fn sum_all() -> proto::TransactRequest {
    proto::TransactRequest {
        procedure: "i64.sum".into(),
        keys: (0..ACCOUNTS)
            .map(|a| account(a, proto::Access::Read))
            .collect(),
        ..Default::default()
    }
}

fn i64_of(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes.try_into().expect("an 8-byte integer"))
}

/// The committed output, or a panic naming the outcome.
fn committed(r: &proto::TransactResponse) -> &[u8] {
    match &r.outcome {
        Some(proto::transact_response::Outcome::Committed(out)) => out,
        other => panic!("expected a commit, got {other:?}"),
    }
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    transfers: AtomicUsize,
    cross_group: AtomicUsize,
    aborted: AtomicUsize,
    audits: Mutex<Vec<i64>>,
    errors: Mutex<BTreeMap<String, (usize, String)>>,
}

impl Seen {
    fn committed(&self) -> usize {
        self.transfers.load(Ordering::SeqCst)
    }
}

/// Waits for `more` committed transfers, `more / 4` of them across shard groups, from now.
async fn wait_transfers(seen: &Seen, more: usize, what: &str) {
    let (at, cross_at) = (seen.committed(), seen.cross_group.load(Ordering::SeqCst));
    wait_until_async(
        &format!("{more} more committed transfers, a quarter across groups ({what})"),
        Duration::from_secs(120),
        || async {
            let (c, x) = (seen.committed(), seen.cross_group.load(Ordering::SeqCst));
            if c >= at + more && x >= cross_at + more / 4 {
                Ok(())
            } else {
                Err((c - at, x - cross_at))
            }
        },
    )
    .await;
}

/// One client: transfers (half of the picks on the hot accounts 0 and 1) and, every tenth
/// transaction, an audit of every balance, through the nodes in turn.
async fn bank_client(
    c: usize,
    clients: Arc<Mutex<Vec<Client>>>,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let client = {
            let clients = clients.lock().expect("clients");
            clients[(c + i) % clients.len()].clone()
        };
        let pick = |r: u64, any: u64| {
            if r.is_multiple_of(2) {
                (r / 2) % 2
            } else {
                any
            }
        };
        let audit = i.is_multiple_of(10);
        let request = if audit {
            sum_all()
        } else {
            let from = pick(next(1000), next(ACCOUNTS as u64)) as i64;
            let mut to = pick(next(1000), next(ACCOUNTS as u64)) as i64;
            if to == from {
                to = (from + 1 + next(ACCOUNTS as u64 - 1) as i64) % ACCOUNTS;
            }
            transfer(from, to, 1 + next(30) as i64)
        };
        match client.transact(request).await {
            Ok(r) => match &r.outcome {
                Some(proto::transact_response::Outcome::Committed(out)) if audit => {
                    seen.audits.lock().expect("audits").push(i64_of(out));
                }
                Some(proto::transact_response::Outcome::Committed(_)) => {
                    let groups: std::collections::BTreeSet<u32> =
                        r.participants.iter().map(|p| p % 2).collect();
                    if groups.len() == 2 {
                        seen.cross_group.fetch_add(1, Ordering::SeqCst);
                    }
                    seen.transfers.fetch_add(1, Ordering::SeqCst);
                }
                Some(proto::transact_response::Outcome::Aborted(reason)) => {
                    assert!(
                        reason.contains("insufficient funds") && !audit,
                        "an abort other than the procedure's own: {reason}"
                    );
                    seen.aborted.fetch_add(1, Ordering::SeqCst);
                }
                other => panic!("unexpected outcome {other:?}"),
            },
            Err(e) => {
                {
                    let mut errors = seen.errors.lock().expect("errors");
                    let entry = errors
                        .entry(format!("{:?}", e.code()))
                        .or_insert((0, e.to_string()));
                    entry.0 += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Two shard groups of two replicas run a bank with transfers within and across groups and
/// concurrent audits. Under load, the node forwarding the sequencer log and a replica of the
/// other group are killed with SIGKILL and restarted, and `nats-server` is restarted. Every
/// committed audit sees the initial total; afterwards the total holds, no balance is negative,
/// and each group's replicas reach equal digests at equal positions.
#[test]
fn bank_across_groups_survives_kill_9_of_the_forwarder_and_a_replica_and_a_nats_restart() {
    bank_on(BrokerKind::Nats);
}

/// The same on Kafka (a tansu broker): the sequencer, forwarder lease and reports on Kafka.
#[test]
fn kafka_bank_across_groups_survives_kill_9_of_the_forwarder_and_a_replica_and_a_broker_restart() {
    bank_on(BrokerKind::Kafka);
}

fn bank_on(kind: BrokerKind) {
    serial(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut broker = TestBroker::start(kind, dir.path());
        let mut nodes = start_two_by_two(&broker, "t_txn_bank", dir.path());
        let all: Vec<&ClusterNode> = nodes.iter().collect();
        wait_members(&all, 4).await;
        let client = nodes[0].client().await;
        client
            .create_keyspace(&i64_bytes_keyspace(KS), false)
            .await
            .expect("create keyspace");
        wait_keyspace(&all, KS).await;
        let names = client.list_procedures().await.expect("list procedures");
        for name in ["i64.transfer", "i64.add", "i64.sum"] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        let seeded = client
            .transact(proto::TransactRequest {
                procedure: "i64.add".into(),
                args: (0..ACCOUNTS).flat_map(|_| INITIAL.to_be_bytes()).collect(),
                keys: (0..ACCOUNTS)
                    .map(|a| account(a, proto::Access::ReadWrite))
                    .collect(),
                ..Default::default()
            })
            .await
            .expect("seed the accounts");
        assert_eq!(committed(&seeded).len(), ACCOUNTS as usize * 8);
        assert_eq!(seeded.participants.len(), PARTITIONS as usize);
        // Through a node of the other group, too.
        let audit = nodes[3]
            .client()
            .await
            .transact(sum_all())
            .await
            .expect("audit");
        assert_eq!(i64_of(committed(&audit)), TOTAL);

        let mut clients = Vec::new();
        for node in &nodes {
            clients.push(node.client().await.with_timeout(Duration::from_secs(5)));
        }
        let clients = Arc::new(Mutex::new(clients));
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|c| tokio::spawn(bank_client(c, clients.clone(), seen.clone(), stop.clone())))
            .collect();

        wait_transfers(&seen, 300, "before the first kill").await;
        let forwarder = wait_until_async(
            "one node forwards the sequencer log",
            Duration::from_secs(30),
            || {
                let active: Vec<usize> = (0..nodes.len())
                    .filter(|&i| nodes[i].metric("notadb_txn_forwarder_active") == 1.0)
                    .collect();
                async move {
                    if active.len() == 1 {
                        Ok(active[0])
                    } else {
                        Err(active)
                    }
                }
            },
        )
        .await;
        eprintln!("killing the forwarder {}", nodes[forwarder].spec.node_id);
        nodes[forwarder].kill9();
        wait_transfers(&seen, 200, "after killing the forwarder").await;
        blocking(|| nodes[forwarder].restart());
        let other = if nodes[forwarder].spec.group == 0 {
            3
        } else {
            1
        };
        eprintln!("killing the replica {}", nodes[other].spec.node_id);
        nodes[other].kill9();
        wait_transfers(&seen, 200, "after killing a replica").await;
        blocking(|| nodes[other].restart());
        clients.lock().expect("clients")[forwarder] = nodes[forwarder]
            .client()
            .await
            .with_timeout(Duration::from_secs(5));
        clients.lock().expect("clients")[other] = nodes[other]
            .client()
            .await
            .with_timeout(Duration::from_secs(5));
        wait_transfers(&seen, 200, "with every node back").await;
        blocking(|| broker.stop()).expect("stop the broker");
        tokio::time::sleep(Duration::from_secs(2)).await;
        blocking(|| broker.restart()).expect("restart the broker");
        wait_transfers(&seen, 300, "after the broker restart").await;
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.expect("client task");
        }

        let audits = seen.audits.lock().expect("audits").clone();
        eprintln!(
            "cluster bank: {} transfers committed ({} across groups), {} aborted for funds, {} audits; errors by code {:?}",
            seen.committed(),
            seen.cross_group.load(Ordering::SeqCst),
            seen.aborted.load(Ordering::SeqCst),
            audits.len(),
            seen.errors.lock().expect("errors")
        );
        assert!(!audits.is_empty(), "no audit committed");
        assert!(
            audits.iter().all(|&s| s == TOTAL),
            "audits that did not see {TOTAL}: {:?}",
            audits.iter().filter(|&&s| s != TOTAL).collect::<Vec<_>>()
        );
        assert!(seen.cross_group.load(Ordering::SeqCst) > 0);
        for (code, (_, message)) in seen.errors.lock().expect("errors").iter() {
            assert!(
                code.contains("Unavailable")
                    || code.contains("DeadlineExceeded")
                    || code.contains("Cancelled")
                    || code.contains("Unknown"),
                "a transaction failed with {code}: {message}"
            );
        }

        // Every node answers the final audit with the total, and no balance is negative.
        let mut audit_tokens = Vec::new();
        for node in &nodes {
            let client = node.client().await.with_timeout(Duration::from_secs(10));
            let sum = wait_until_async(
                &format!("an audit through {}", node.spec.node_id),
                Duration::from_secs(60),
                || {
                    let client = client.clone();
                    async move { client.transact(sum_all()).await }
                },
            )
            .await;
            assert_eq!(
                i64_of(committed(&sum)),
                TOTAL,
                "the final audit through {}",
                node.spec.node_id
            );
            audit_tokens = sum.tokens;
        }
        let audit_tokens: Vec<Token> = audit_tokens
            .iter()
            .map(|t| notadb_proto::token_from_proto(t).expect("a token"))
            .collect();
        // Plain gets after the last audit (its tokens) see the state it summed.
        let balances = client_balances(&nodes[2].client().await, &audit_tokens).await;
        assert!(
            balances.iter().all(|&b| b >= 0),
            "a negative balance: {balances:?}"
        );
        assert_eq!(balances.iter().sum::<i64>(), TOTAL);

        // Each group's replicas converge to equal digests at equal positions.
        for group in [0, 1] {
            let members: Vec<&ClusterNode> =
                nodes.iter().filter(|n| n.spec.group == group).collect();
            let status = members[0].client().await.status().await.expect("status");
            let tokens: Vec<Token> = status
                .partitions
                .iter()
                .map(|p| Token {
                    partition: notadb_types::PartitionId(p.partition as u16),
                    seq: notadb_types::Seq(p.last_seq),
                })
                .collect();
            blocking(|| wait_converged(&members, &tokens, Duration::from_secs(90)));
        }
    });
}

/// Every balance, by plain gets once the load has stopped. Right after the faults a group
/// may have no replica its peers see as ready yet (a restarted one still catching up): a
/// get then fails with `UNAVAILABLE`, and is tried again, as the audits are.
async fn client_balances(client: &Client, tokens: &[Token]) -> Vec<i64> {
    let mut out = Vec::new();
    for a in 0..ACCOUNTS {
        let value = wait_until_async(
            &format!("a get of account {a}"),
            Duration::from_secs(60),
            || async move { client.get(KS, &[Element::I64(a)], tokens).await },
        )
        .await
        .unwrap_or_else(|| panic!("account {a} has no balance"));
        out.push(i64_of(notadb_client::value_bytes(&value)));
    }
    out
}

/// `bytes.append` over lists of 8-byte items: per micro-op, the key (list), whether it
/// appends, and the item.
fn list_request(micro: &[(u64, bool, u64)]) -> proto::TransactRequest {
    let mut args = Vec::new();
    let mut keys = Vec::new();
    for &(key, append, item) in micro {
        let chunk: Vec<u8> = if append {
            item.to_be_bytes().to_vec()
        } else {
            Vec::new()
        };
        args.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        args.extend_from_slice(&chunk);
        let access = if append {
            proto::Access::ReadWrite
        } else {
            proto::Access::Read
        };
        keys.push(txn_key("lists", &[Element::I64(key as i64)], access));
    }
    proto::TransactRequest {
        procedure: "bytes.append".into(),
        args,
        keys,
        ..Default::default()
    }
}

/// The checker's micro-ops of a committed `bytes.append`: reads see the list before.
fn list_ops(micro: &[(u64, bool, u64)], output: &[u8]) -> Vec<notadb_txn::MicroOp> {
    let mut at = 0;
    micro
        .iter()
        .map(|&(key, append, value)| {
            let n = u32::from_be_bytes(output[at..at + 4].try_into().expect("4 bytes")) as usize;
            let list = &output[at + 4..at + 4 + n];
            at += 4 + n;
            if append {
                notadb_txn::MicroOp::Append { key, value }
            } else {
                let values = list
                    .chunks(8)
                    .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                notadb_txn::MicroOp::Read { key, values }
            }
        })
        .collect()
}

/// List-append histories from 8 clients through both nodes of a two-group cluster (the lists
/// spread over both groups), with a restart of `nats-server` in the middle, are strictly
/// serializable: the checker finds no cycle with the clients' real-time order. Calls that
/// failed count as unknown outcomes.
#[test]
fn list_append_histories_across_groups_are_strictly_serializable() {
    const LISTS: u64 = 8;
    const PER_CLIENT: u64 = 40;
    serial(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nats = start_nats(dir.path());
        let spec = |group, id| NodeSpec::new(&nats.url(), "t_txn_lists", 2, group, id, dir.path());
        let nodes = start_nodes(vec![spec(0, "g0"), spec(1, "g1")]);
        let all: Vec<&ClusterNode> = nodes.iter().collect();
        wait_members(&all, 2).await;
        let schema = i64_bytes_keyspace("lists");
        nodes[0]
            .client()
            .await
            .create_keyspace(&schema, false)
            .await
            .expect("create keyspace");
        wait_keyspace(&all, "lists").await;
        let mut clients = Vec::new();
        for node in &nodes {
            clients.push(node.client().await.with_timeout(Duration::from_secs(5)));
        }
        let started = Instant::now();
        let done = Arc::new(AtomicUsize::new(0));
        let unexpected: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS as u64 {
            let client = clients[c as usize % clients.len()].clone();
            let (done, unexpected) = (done.clone(), unexpected.clone());
            tasks.push(tokio::spawn(async move {
                let mut history = Vec::new();
                for i in 0..PER_CLIENT {
                    let x = (c * 1_000_003 + i * 7_777).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 7;
                    let mut micro: Vec<(u64, bool, u64)> = Vec::new();
                    for j in 0..(1 + x % 3) {
                        let key = (x / 11 + j * 3) % LISTS;
                        if micro.iter().all(|m| m.0 != key) {
                            micro.push((key, (x >> j) % 2 == 0, c * 100_000 + i * 10 + j + 1));
                        }
                    }
                    let invoke = started.elapsed().as_nanos() as u64;
                    let op = match client.transact(list_request(&micro)).await {
                        Ok(r) => match r.outcome {
                            Some(proto::transact_response::Outcome::Committed(out)) => {
                                notadb_txn::Op {
                                    invoke,
                                    complete: started.elapsed().as_nanos() as u64,
                                    status: notadb_txn::Status::Ok,
                                    ops: list_ops(&micro, &out),
                                }
                            }
                            other => {
                                unexpected.lock().expect("lock").push(format!("{other:?}"));
                                continue;
                            }
                        },
                        Err(_) => notadb_txn::Op {
                            invoke,
                            complete: u64::MAX,
                            status: notadb_txn::Status::Unknown,
                            ops: micro
                                .iter()
                                .map(|&(key, append, value)| {
                                    if append {
                                        notadb_txn::MicroOp::Append { key, value }
                                    } else {
                                        notadb_txn::MicroOp::Read {
                                            key,
                                            values: Vec::new(),
                                        }
                                    }
                                })
                                .collect(),
                        },
                    };
                    history.push(op);
                    done.fetch_add(1, Ordering::SeqCst);
                }
                history
            }));
        }
        let total = CLIENTS * PER_CLIENT as usize;
        let wait = |n: usize| {
            let (done, unexpected) = (done.clone(), unexpected.clone());
            async move {
                wait_until_async(
                    &format!("{n} list transactions"),
                    Duration::from_secs(120),
                    || {
                        let d = done.load(Ordering::SeqCst);
                        let bad = unexpected.lock().expect("lock").clone();
                        assert!(bad.is_empty(), "bytes.append did not commit: {bad:?}");
                        async move {
                            if d >= n {
                                Ok(())
                            } else {
                                Err(d)
                            }
                        }
                    },
                )
                .await
            }
        };
        wait(total / 3).await;
        blocking(|| nats.stop()).expect("stop nats-server");
        tokio::time::sleep(Duration::from_secs(1)).await;
        blocking(|| nats.restart()).expect("restart nats-server");
        wait(total).await;
        let mut history = Vec::new();
        for t in tasks {
            history.extend(t.await.expect("client task"));
        }
        let unknown = history
            .iter()
            .filter(|o| o.status == notadb_txn::Status::Unknown)
            .count();
        let report = notadb_txn::check(&history, true);
        eprintln!(
            "cluster list-append: {} transactions, {unknown} with unknown outcomes; edges {:?}",
            history.len(),
            report.edges
        );
        assert!(report.anomalies.is_empty(), "{report}");
        assert!(
            report.txns > total / 2,
            "{} committed in the graph",
            report.txns
        );
        assert!(unknown < total / 2, "{unknown} of {total} outcomes unknown");
        assert!(
            report.edges.get("rw").copied().unwrap_or(0) > 0,
            "{:?}",
            report.edges
        );
    });
}
