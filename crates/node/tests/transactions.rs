//! Transactions on one node with eight partitions and the embedded logs: bank transfers
//! within and across partitions with concurrent audits, through a restart that stops the node
//! while transactions are in flight; list-append histories checked for strict
//! serializability; bad requests refused with nothing logged.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use notadb_node::{
    Abort, Access, Node, NodeBuilder, NodeError, Outcome, TxnContext, TxnKeyRequest, TxnRequest,
};
use notadb_txn::{check, MicroOp, Op, Procedures, Status};
use notadb_types::{Element, ElementType, KeyspaceSchema, Order, PartitionId, ValueFormat};

const ACCOUNTS: i64 = 24;
const INITIAL: i64 = 100;
const TIMEOUT: Duration = Duration::from_secs(20);

fn schema(name: &str) -> KeyspaceSchema {
    KeyspaceSchema {
        name: name.into(),
        key: vec![common::el("id", ElementType::I64, Order::Asc)],
        partition_by: 1,
        value_format: ValueFormat::Bytes,
        ttl: None,
    }
}

fn i64_of(v: Option<&Bytes>) -> Result<i64, Abort> {
    let v = v.ok_or("no value")?;
    Ok(i64::from_be_bytes(
        v[..].try_into().map_err(|_| "not 8 bytes")?,
    ))
}

/// transfer: keys [from, to], args amount; audit: reads every declared key, outputs the sum;
/// append: keys are lists, args one op per key (1 append, 2 read) and a value per key.
fn procedures() -> Procedures {
    let mut p = Procedures::new();
    p.register("transfer", |t: &mut TxnContext<'_>| {
        let amount = i64::from_be_bytes(t.args()[..8].try_into().expect("8 bytes"));
        let (from, to) = (t.key(0)?, t.key(1)?);
        let (fb, tb) = (i64_of(t.read(&from)?)?, i64_of(t.read(&to)?)?);
        if fb < amount {
            return Err(Abort(format!("insufficient funds: {fb} < {amount}")));
        }
        t.put(from, (fb - amount).to_be_bytes().to_vec())?;
        t.put(to, (tb + amount).to_be_bytes().to_vec())?;
        Ok(Bytes::from([fb.to_be_bytes(), tb.to_be_bytes()].concat()))
    });
    p.register("incr2", |t: &mut TxnContext<'_>| {
        for i in 0..2 {
            let k = t.key(i)?;
            let v = t.read(&k)?.map_or(Ok(0), |v| i64_of(Some(v)))?;
            t.put(k, (v + 1).to_be_bytes().to_vec())?;
        }
        Ok(Bytes::new())
    });
    p.register("balances", |t: &mut TxnContext<'_>| {
        let mut out = Vec::new();
        for i in 0..t.input().keys.len() {
            out.extend_from_slice(&i64_of(t.read(&t.key(i)?)?)?.to_be_bytes());
        }
        Ok(Bytes::from(out))
    });
    p.register("audit", |t: &mut TxnContext<'_>| {
        let mut sum = 0;
        for i in 0..t.input().keys.len() {
            sum += i64_of(t.read(&t.key(i)?)?)?;
        }
        Ok(Bytes::from(sum.to_be_bytes().to_vec()))
    });
    p.register("append", |t: &mut TxnContext<'_>| {
        let args = t.args().clone();
        let mut out = Vec::new();
        for (i, op) in args.chunks_exact(9).enumerate() {
            let key = t.key(i)?;
            let mut list = t.read(&key)?.map(|v| v.to_vec()).unwrap_or_default();
            if op[0] == 1 {
                list.extend_from_slice(&op[1..9]);
                t.put(key, list)?;
            } else {
                out.extend_from_slice(&(list.len() as u32 / 8).to_be_bytes());
                out.extend_from_slice(&list);
            }
        }
        Ok(Bytes::from(out))
    });
    p
}

async fn open(dir: &std::path::Path) -> Node {
    NodeBuilder::new(common::config(dir))
        .keyspace(schema("accounts"))
        .keyspace(schema("lists"))
        .keyspace(common::activity())
        .procedures(&procedures())
        .open()
        .await
        .expect("node opens")
}

fn account(a: i64, access: Access) -> TxnKeyRequest {
    TxnKeyRequest {
        keyspace: "accounts".into(),
        key: vec![Element::I64(a)],
        access,
    }
}

fn with_base(mut r: TxnRequest) -> TxnRequest {
    r.base = (0..r.keys.len())
        .map(|i| (i, Some(INITIAL.to_be_bytes().to_vec())))
        .collect();
    r
}

fn transfer(from: i64, to: i64, amount: i64) -> TxnRequest {
    with_base(TxnRequest {
        procedure: "transfer".into(),
        args: amount.to_be_bytes().to_vec(),
        keys: vec![
            account(from, Access::ReadWrite),
            account(to, Access::ReadWrite),
        ],
        ..TxnRequest::default()
    })
}

fn audit() -> TxnRequest {
    with_base(TxnRequest {
        procedure: "audit".into(),
        keys: (0..ACCOUNTS).map(|a| account(a, Access::Read)).collect(),
        ..TxnRequest::default()
    })
}

async fn audited_sum(node: &Node) -> i64 {
    let r = node.transact(audit(), TIMEOUT).await.expect("audit");
    match r.outcome {
        Outcome::Committed { output } => {
            i64::from_be_bytes(output[..].try_into().expect("an i64 output"))
        }
        other => panic!("audit: {other:?}"),
    }
}

/// Runs `clients` tasks of transfers (every fourth an audit) until each did `each`, or until
/// stopped; returns (committed, aborted by the procedure, audits that saw the total).
async fn bank_load(node: &Node, clients: u64, each: u64) -> (u64, u64, u64) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut aborted, mut audits) = (0, 0, 0);
            for i in 0..each {
                let x = c * 7919 + i * 104_729;
                if i % 4 == 3 {
                    let sum = match node.transact(audit(), TIMEOUT).await {
                        Ok(r) => match r.outcome {
                            Outcome::Committed { output } => {
                                i64::from_be_bytes(output[..].try_into().expect("an i64 output"))
                            }
                            other => panic!("audit: {other:?}"),
                        },
                        Err(_) => break,
                    };
                    assert_eq!(
                        sum,
                        ACCOUNTS * INITIAL,
                        "an audit saw money appear or vanish"
                    );
                    audits += 1;
                    continue;
                }
                // Hot accounts 0 and 1 take half of the picks, as payers and as payees.
                let pick = |y: u64| {
                    if y.is_multiple_of(2) {
                        (y / 2 % 2) as i64
                    } else {
                        (y / 2 % ACCOUNTS as u64) as i64
                    }
                };
                let (from, to) = (pick(x), pick(x / 5 + 3));
                if from == to {
                    continue;
                }
                match node
                    .transact(transfer(from, to, (x % 10) as i64 + 1), TIMEOUT)
                    .await
                {
                    Ok(r) => match r.outcome {
                        Outcome::Committed { .. } => ok += 1,
                        Outcome::Aborted { reason } => {
                            assert!(reason.contains("insufficient"), "{reason}");
                            aborted += 1
                        }
                        other => panic!("transfer: {other:?}"),
                    },
                    // The node is stopping under us.
                    Err(_) => break,
                }
            }
            (ok, aborted, audits)
        }));
    }
    let mut total = (0, 0, 0);
    for t in tasks {
        let (a, b, c) = t.await.expect("client task");
        total = (total.0 + a, total.1 + b, total.2 + c);
    }
    total
}

/// The values of `ids` (absent ones read as `base`), read by one transaction: one
/// consistent cut.
async fn read_all(node: &Node, ids: impl Iterator<Item = i64>, base: i64) -> Vec<i64> {
    let keys: Vec<TxnKeyRequest> = ids.map(|a| account(a, Access::Read)).collect();
    let base = (0..keys.len())
        .map(|i| (i, Some(base.to_be_bytes().to_vec())))
        .collect();
    let r = node
        .transact(
            TxnRequest {
                procedure: "balances".into(),
                keys,
                base,
                ..TxnRequest::default()
            },
            TIMEOUT,
        )
        .await
        .expect("balances");
    match r.outcome {
        Outcome::Committed { output } => output
            .chunks_exact(8)
            .map(|c| i64::from_be_bytes(c.try_into().expect("an i64 value")))
            .collect(),
        other => panic!("{other:?}"),
    }
}

async fn balances(node: &Node) -> Vec<i64> {
    read_all(node, 0..ACCOUNTS, INITIAL).await
}

/// The node's logs replayed serially give the balances the node has.
async fn assert_matches_serial_replay(node: &Node, b: &[i64]) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The logs replayed serially give the node's state.
    let serial = {
        let log = node.log();
        let mut logs = Vec::new();
        for p in 0..8u16 {
            let p = PartitionId(p);
            let end = log.bounds(p).await.expect("log bounds").last;
            let mut entries = Vec::new();
            let mut next = notadb_types::Seq(1);
            while next <= end {
                let got = log
                    .read(p, next, 1000, Duration::from_millis(10))
                    .await
                    .expect("log read");
                next = notadb_types::Seq(got.last().expect("a read returns entries").seq.0 + 1);
                entries.extend(got.iter().map(|e| {
                    notadb_node::apply::executor_entry(&e.payload).expect("a known entry format")
                }));
            }
            logs.push(entries);
        }
        notadb_txn::replay(&procedures(), &logs).expect("logs replay")
    };
    let accounts_id = node
        .describe_keyspace("accounts")
        .expect("the accounts keyspace")
        .def
        .id;
    let expected: Vec<i64> = (0..ACCOUNTS)
        .map(|a| {
            serial
                .state
                .iter()
                .find(|(k, _)| {
                    k.keyspace == accounts_id && k.key[..] == ((a as u64) ^ (1 << 63)).to_be_bytes()
                })
                .map_or(INITIAL, |(_, v)| {
                    i64::from_be_bytes(v[..].try_into().expect("an i64 value"))
                })
        })
        .collect();
    assert_eq!(b, &expected[..], "node state vs serial replay of its logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_keep_the_total_across_partitions_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    let (ok, aborted, audits) = bank_load(&node, 12, 60).await;
    eprintln!("{ok} committed, {aborted} aborted, {audits} audits");
    assert!(
        ok > 50 && ok + aborted > 300 && audits > 100,
        "{ok} committed, {aborted} aborted, {audits} audits"
    );
    assert_eq!(audited_sum(&node).await, ACCOUNTS * INITIAL);

    // Stop the node while clients are mid-flight, then open it again on the same directory.
    // Beside the transfers, counters are incremented in pairs (1000 + 2i, 1001 + 2i), mostly
    // in two partitions: after the restart each pair is equal, and at least the increments
    // acknowledged before the stop are there.
    let load = {
        let node = node.clone();
        tokio::spawn(async move { bank_load(&node, 12, 1000).await })
    };
    let counters = {
        let node = node.clone();
        tokio::spawn(async move {
            let mut acked = [0i64; 8];
            for n in 0.. {
                let i = n % 8;
                let r = node
                    .transact(
                        TxnRequest {
                            procedure: "incr2".into(),
                            keys: vec![
                                account(1000 + 2 * i as i64, Access::ReadWrite),
                                account(1001 + 2 * i as i64, Access::ReadWrite),
                            ],
                            ..TxnRequest::default()
                        },
                        TIMEOUT,
                    )
                    .await;
                match r {
                    Ok(r) => {
                        assert!(matches!(r.outcome, Outcome::Committed { .. }));
                        acked[i] += 1;
                    }
                    Err(_) => break,
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    node.shutdown().await.expect("shutdown");
    let _ = load.await;
    let acked = counters.await.expect("counter task");
    assert!(acked.iter().sum::<i64>() > 8, "{acked:?}");
    drop(node);
    let node = open(dir.path()).await;
    let b = balances(&node).await;
    assert_matches_serial_replay(&node, &b).await;
    for (i, &acked) in acked.iter().enumerate() {
        let pair = read_all(
            &node,
            [1000 + 2 * i as i64, 1001 + 2 * i as i64].into_iter(),
            0,
        )
        .await;
        assert_eq!(
            pair[0], pair[1],
            "counter pair {i} was incremented on one side only"
        );
        assert!(
            pair[0] >= acked,
            "pair {i}: {} < {acked} acknowledged increments",
            pair[0]
        );
    }
    let b = balances(&node).await;
    assert!(b.iter().all(|&x| x >= 0), "{b:?}");
    assert_eq!(b.iter().sum::<i64>(), ACCOUNTS * INITIAL, "{b:?}");
    let (ok, aborted, _) = bank_load(&node, 8, 40).await;
    assert!(
        ok > 20 && ok + aborted > 150,
        "{ok} committed, {aborted} aborted"
    );
    assert_eq!(audited_sum(&node).await, ACCOUNTS * INITIAL);
    // Every partition's executor drains: its watermark reaches the end of its log (late
    // copies of reads and of sequencer entries included).
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.status().partitions.iter().any(|p| p.lag_records > 0) {
        assert!(Instant::now() < deadline, "{:?}", node.status().partitions);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_append_histories_are_strictly_serializable() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..8u64 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut ops = Vec::new();
            for i in 0..50u64 {
                let x = c * 1_000_003 + i * 7_777;
                let mut keys = Vec::new();
                let mut args = Vec::new();
                let mut micro = Vec::new();
                for j in 0..(1 + x % 3) {
                    let key = (x / 7 + j * 3) % 6;
                    if keys
                        .iter()
                        .any(|k: &TxnKeyRequest| k.key[0] == Element::I64(key as i64))
                    {
                        continue;
                    }
                    let value = c * 100_000 + i * 10 + j + 1;
                    let append = (x >> j) % 2 == 0;
                    keys.push(TxnKeyRequest {
                        keyspace: "lists".into(),
                        key: vec![Element::I64(key as i64)],
                        access: if append {
                            Access::ReadWrite
                        } else {
                            Access::Read
                        },
                    });
                    args.push(if append { 1 } else { 2 });
                    args.extend_from_slice(&value.to_be_bytes());
                    micro.push((append, key, value));
                }
                let invoke = started.elapsed().as_nanos() as u64;
                let r = node
                    .transact(
                        TxnRequest {
                            procedure: "append".into(),
                            args,
                            keys,
                            ..TxnRequest::default()
                        },
                        TIMEOUT,
                    )
                    .await
                    .expect("transaction");
                let complete = started.elapsed().as_nanos() as u64;
                let Outcome::Committed { output } = r.outcome else {
                    panic!("{:?}", r.outcome)
                };
                let mut pos = 0;
                let ops_of = micro
                    .into_iter()
                    .map(|(append, key, value)| {
                        if append {
                            MicroOp::Append { key, value }
                        } else {
                            let n = u32::from_be_bytes(output[pos..pos + 4].try_into().unwrap())
                                as usize;
                            pos += 4;
                            let values = (0..n)
                                .map(|k| {
                                    u64::from_be_bytes(
                                        output[pos + k * 8..pos + k * 8 + 8].try_into().unwrap(),
                                    )
                                })
                                .collect();
                            pos += n * 8;
                            MicroOp::Read { key, values }
                        }
                    })
                    .collect();
                ops.push(Op {
                    invoke,
                    complete,
                    status: Status::Ok,
                    ops: ops_of,
                });
            }
            ops
        }));
    }
    let mut history = Vec::new();
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    let report = check(&history, true);
    assert!(report.anomalies.is_empty(), "{}", report);
    assert_eq!(report.txns, 400);
    assert!(
        report.edges.get("rw").copied().unwrap_or(0) > 0,
        "{:?}",
        report.edges
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transactions_are_refused_and_log_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    let ends = |node: &Node| {
        node.status()
            .partitions
            .iter()
            .map(|p| p.last)
            .collect::<Vec<_>>()
    };
    let before = ends(&node);
    let cases: Vec<(TxnRequest, &str)> = vec![
        (
            TxnRequest {
                procedure: "nope".into(),
                keys: vec![account(1, Access::Read)],
                ..TxnRequest::default()
            },
            "no procedure named `nope`",
        ),
        (
            TxnRequest {
                procedure: "audit".into(),
                keys: vec![TxnKeyRequest {
                    keyspace: "ghosts".into(),
                    key: vec![Element::I64(1)],
                    access: Access::Read,
                }],
                ..TxnRequest::default()
            },
            "ghosts",
        ),
        (
            TxnRequest {
                procedure: "audit".into(),
                keys: vec![TxnKeyRequest {
                    keyspace: "accounts".into(),
                    key: vec![Element::String("one".into())],
                    access: Access::Read,
                }],
                ..TxnRequest::default()
            },
            "keys[0].key",
        ),
        (
            TxnRequest {
                procedure: "audit".into(),
                keys: vec![TxnKeyRequest {
                    keyspace: "activity".into(),
                    key: vec![],
                    access: Access::Read,
                }],
                ..TxnRequest::default()
            },
            "has a TTL",
        ),
        (
            TxnRequest {
                procedure: "audit".into(),
                keys: vec![account(1, Access::Read), account(1, Access::Write)],
                ..TxnRequest::default()
            },
            "declared twice",
        ),
        (
            TxnRequest {
                procedure: "audit".into(),
                keys: vec![account(1, Access::Read)],
                base: vec![(3, None)],
                ..TxnRequest::default()
            },
            "key index 3",
        ),
        (
            TxnRequest {
                procedure: "audit".into(),
                keys: vec![account(1, Access::Write)],
                base: vec![(0, None)],
                ..TxnRequest::default()
            },
            "not in the read set",
        ),
        (
            TxnRequest {
                procedure: "audit".into(),
                ..TxnRequest::default()
            },
            "at least one key",
        ),
    ];
    for (request, expected) in cases {
        let err = node.transact(request, TIMEOUT).await.unwrap_err();
        assert!(
            matches!(err, NodeError::InvalidArgument(_) | NodeError::NotFound(_)),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(expected),
            "{err} should say {expected}"
        );
    }
    assert_eq!(ends(&node), before, "nothing was appended");
    // A procedure's own abort is an outcome, not an error, and writes nothing.
    let r = node.transact(transfer(1, 2, 1_000), TIMEOUT).await.unwrap();
    assert!(
        matches!(r.outcome, Outcome::Aborted { .. }),
        "{:?}",
        r.outcome
    );
    assert!(r.participants.iter().all(|p| *p < PartitionId(8)));
    node.shutdown().await.unwrap();
}

/// A participant whose read values do not fit in one log entry cannot send them: its
/// partition stops with an error naming the limit (the node reports unhealthy) instead of
/// retrying forever, and the client's wait ends at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_reads_over_the_log_entry_limit_stop_the_partition_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(common::config(dir.path()))
        .keyspace(schema("accounts"))
        .procedures(&notadb_node::builtin::procedures())
        .open()
        .await
        .expect("node opens");
    let part = |id: i64| {
        node.partition_of_key("accounts", &[Element::I64(id)], "key")
            .unwrap()
    };
    let p = part(0);
    let readers: Vec<i64> = (0..).filter(|&i| part(i) == p).take(10).collect();
    let writer = (0..).find(|&i| part(i) != p).unwrap();
    // Ten values of 1 MiB each (the value limit) in one partition: 10 MiB of reads, over the
    // embedded log's entry limit (max_batch_bytes + 64 KiB).
    for &id in &readers {
        node.write(vec![notadb_node::Mutation::Put {
            keyspace: "accounts".into(),
            key: vec![Element::I64(id)],
            value: notadb_node::ValueInput::Bytes(vec![7; 1 << 20]),
        }])
        .await
        .expect("put");
    }
    let mut args = Vec::new();
    let mut keys = Vec::new();
    for &id in &readers {
        args.extend_from_slice(&0u32.to_be_bytes());
        keys.push(account(id, Access::Read));
    }
    args.extend_from_slice(&1u32.to_be_bytes());
    args.push(1);
    keys.push(account(writer, Access::ReadWrite));
    let r = node
        .transact(
            TxnRequest {
                procedure: "bytes.append".into(),
                args,
                keys,
                ..TxnRequest::default()
            },
            Duration::from_secs(3),
        )
        .await;
    assert!(matches!(r, Err(NodeError::DeadlineExceeded(_))), "{r:?}");
    let failed: Vec<PartitionId> = node
        .status()
        .partitions
        .iter()
        .filter(|s| s.failed)
        .map(|s| s.partition)
        .collect();
    assert_eq!(failed, vec![p]);
    assert!(!node.is_healthy());
    node.shutdown().await.unwrap();
}
