//! Valid inputs for every check, built with the encoders: the start of the corpus.

use bytes::Bytes;
use notadb_cache::{CacheOp, CacheShard, Change};
use notadb_log::{EmbeddedLog, EmbeddedLogOptions, FsyncPolicy, Log};
use notadb_record::{Op, Record};
use notadb_txn::{
    encode_report, Access, Entry, Finished, KeyAccess, Outcome, RemoteReads, TxnEnv, TxnId,
    TxnInput, TxnKey,
};
use notadb_types::{
    encode_tuple, CacheId, Element, ElementType, KeyElement, KeyspaceId, Order, PartitionId, Seq,
};

/// The seeds of the check named `name` (see [`CHECKS`](crate::CHECKS)).
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "key" => key(),
        "record" => record(),
        "txn_entry" => txn_entry(),
        "txn_report" => txn_report(),
        "cache_rows" => cache_rows(),
        "log_segment" => log_segment(),
        other => panic!("no check is named {other}"),
    }
}

fn key() -> Vec<Vec<u8>> {
    // Schema 2 of the key check: (String asc, String desc); schema 3: (I64 asc, I64 desc, Bool).
    let strings = [
        KeyElement::new("a", ElementType::String, Order::Asc),
        KeyElement::new("b", ElementType::String, Order::Desc),
    ];
    let ints = [
        KeyElement::new("a", ElementType::I64, Order::Asc),
        KeyElement::new("b", ElementType::I64, Order::Desc),
        KeyElement::new("c", ElementType::Bool, Order::Asc),
    ];
    let mut out = Vec::new();
    for (pick, key, values) in [
        (
            2u8,
            &strings[..],
            vec![
                Element::String("store-7".into()),
                Element::String("x\0y".into()),
            ],
        ),
        (
            3,
            &ints[..],
            vec![
                Element::I64(-5),
                Element::I64(i64::MAX),
                Element::Bool(true),
            ],
        ),
        (3, &ints[..], vec![Element::I64(0)]),
    ] {
        let mut bytes = vec![pick];
        encode_tuple(&mut bytes, &key[..values.len()], &values).expect("valid values");
        out.push(bytes);
    }
    out
}

fn record() -> Vec<Vec<u8>> {
    let ks = KeyspaceId(3);
    let cache = CacheId::of("users");
    vec![
        Record::Batch {
            ts_micros: 1_700_000_000_000_000,
            ops: vec![
                Op::Put {
                    keyspace: ks,
                    key: b"k1".to_vec(),
                    stored: vec![0, b'v'],
                },
                Op::Delete {
                    keyspace: ks,
                    key: b"k2".to_vec(),
                },
                Op::DeleteRange {
                    keyspace: ks,
                    start: b"a".to_vec(),
                    end: b"b".to_vec(),
                },
                Op::CacheSet {
                    cache,
                    key: b"u1".to_vec(),
                    capacity: 1 << 20,
                    expires_at: 1_700_000_100_000_000,
                    value: Some(b"{}".to_vec()),
                },
                Op::CacheDelete {
                    cache,
                    key: b"u2".to_vec(),
                },
                Op::CacheTouch {
                    cache,
                    stamps: vec![1, 2, 3],
                },
                Op::CacheClear { cache },
            ],
        }
        .encode(),
        Record::DropKeyspace {
            ts_micros: 5,
            keyspace: ks,
        }
        .encode(),
        Record::Txn {
            ts_micros: 6,
            entry: txn_entry()[0].clone(),
        }
        .encode(),
    ]
}

fn input() -> TxnInput {
    let key = |k: &'static [u8]| TxnKey::new(KeyspaceId(9), Bytes::from_static(k));
    let mut input = TxnInput::new(
        TxnId(42),
        "i64.transfer",
        Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 7]),
        TxnEnv {
            now_micros: 11,
            seed: 12,
        },
        vec![
            KeyAccess {
                key: key(b"alice"),
                partition: PartitionId(0),
                access: Access::ReadWrite,
            },
            KeyAccess {
                key: key(b"bob"),
                partition: PartitionId(1),
                access: Access::Write,
            },
            KeyAccess {
                key: key(b"rate"),
                partition: PartitionId(1),
                access: Access::Read,
            },
        ],
    );
    input.base = vec![
        (key(b"alice"), Some(Bytes::from_static(b"100"))),
        (key(b"bob"), None),
    ];
    input.recon = vec![(key(b"rate"), Some(Bytes::from_static(b"3")))];
    input
}

fn txn_entry() -> Vec<Vec<u8>> {
    vec![
        Entry::encode_txn(&input(), None),
        Entry::encode_txn(&input(), Some(Seq(77))),
        Entry::encode_reads(&RemoteReads {
            txn: TxnId(42),
            sequenced: Seq(77),
            from: PartitionId(1),
            values: vec![(TxnKey::new(KeyspaceId(9), Bytes::from_static(b"bob")), None)],
        }),
    ]
}

fn txn_report() -> Vec<Vec<u8>> {
    let finished = [
        Finished {
            seq: Seq(3),
            txn: TxnId(42),
            outcome: Some(Outcome::Committed {
                output: Bytes::from_static(b"ok"),
            }),
        },
        Finished {
            seq: Seq(4),
            txn: TxnId(43),
            outcome: Some(Outcome::Aborted {
                reason: "insufficient funds".into(),
            }),
        },
        Finished {
            seq: Seq(5),
            txn: TxnId(44),
            outcome: None,
        },
    ];
    let refs: Vec<_> = finished.iter().collect();
    vec![encode_report(PartitionId(1), &refs)]
}

/// Rows as the cache check reads them: `key len u8 | key | value len u16 BE | value`.
fn cache_rows() -> Vec<Vec<u8>> {
    let mut shard = CacheShard::new();
    let mut changes = Vec::new();
    for (i, key) in [&b"a"[..], b"bb", b"ccc"].into_iter().enumerate() {
        shard.apply(
            CacheOp::Set {
                key: Bytes::copy_from_slice(key),
                value: (i != 1).then(|| Bytes::from(vec![b'v'; i + 1])),
                expires_at: if i == 2 { 1_000 } else { 0 },
            },
            10,
            1 << 20,
            &mut changes,
        );
    }
    shard.apply(
        CacheOp::Touch { stamps: vec![1] },
        11,
        1 << 20,
        &mut changes,
    );
    let mut rows: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
    for change in changes {
        match change {
            Change::Entry { key, row } => {
                rows.insert(notadb_cache::row::entry_key(&key), row);
            }
            Change::Visited { key, visited: true } => {
                rows.insert(notadb_cache::row::visited_key(&key), Vec::new());
            }
            Change::Header { row } => {
                rows.insert(notadb_cache::row::header_key(), row);
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (key, value) in rows {
        out.push(u8::try_from(key.len()).expect("a short key"));
        out.extend_from_slice(&key);
        out.extend_from_slice(
            &u16::try_from(value.len())
                .expect("a short row")
                .to_be_bytes(),
        );
        out.extend_from_slice(&value);
    }
    vec![out]
}

/// A segment of a log of two partitions holding a few entries of each.
fn log_segment() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = EmbeddedLogOptions {
        fsync: FsyncPolicy::Never,
        ..EmbeddedLogOptions::default()
    };
    let log = EmbeddedLog::open(dir.path(), 2, options).expect("a new log");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        for (p, payload) in [
            (0, &b"first"[..]),
            (1, b"second"),
            (0, b""),
            (1, &[7u8; 300][..]),
        ] {
            log.append(PartitionId(p), Bytes::copy_from_slice(payload))
                .await
                .expect("append");
        }
        log.flush().await.expect("flush");
    });
    drop(log);
    let segment = std::fs::read_dir(dir.path().join("wal"))
        .expect("the segment directory")
        .flatten()
        .map(|e| e.path())
        .next()
        .expect("a segment");
    let mut bytes = std::fs::read(segment).expect("read the segment");
    // The active segment is zero-filled ahead of its frames; the corpus keeps the frames.
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    vec![bytes]
}
