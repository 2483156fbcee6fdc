//! One executor driven by hand: outcomes, base values, reconnaissance restarts, misbehaving
//! procedures, remote reads and their duplicates, barriers, and bad feeds.

use std::sync::Arc;

use bytes::Bytes;
use notadb_txn::{
    Abort, Access, Entry, Executor, ExecutorConfig, KeyAccess, MemStore, Outcome, Procedures,
    RemoteReads, Resume, TxnContext, TxnEnv, TxnError, TxnId, TxnInput, TxnKey,
};
use notadb_types::{KeyspaceId, PartitionId, Seq};

fn key(name: &str) -> TxnKey {
    TxnKey::new(KeyspaceId(1), name.as_bytes().to_vec())
}

fn access(name: &str, partition: u16, access: Access) -> KeyAccess {
    KeyAccess {
        key: key(name),
        partition: PartitionId(partition),
        access,
    }
}

fn input(id: u128, procedure: &str, args: &[u8], keys: Vec<KeyAccess>) -> TxnInput {
    let mut i = TxnInput::new(TxnId(id), procedure, args.to_vec(), TxnEnv::default(), keys);
    i.validate(4).expect("valid");
    i
}

fn txn(i: TxnInput, sequenced: Option<u64>) -> Entry {
    Entry::Txn {
        input: Arc::new(i),
        sequenced: sequenced.map(Seq),
    }
}

/// copy(src → dst): dst = src's value. bad: writes an undeclared key. boom: panics.
/// snoop: reads an undeclared key.
fn procedures() -> Procedures {
    let mut p = Procedures::new();
    p.register("copy", |t: &mut TxnContext<'_>| {
        let value = t.read(&key("src"))?.cloned().unwrap_or_default();
        t.put(key("dst"), value.clone())?;
        Ok(value)
    });
    p.register("bad", |t: &mut TxnContext<'_>| {
        t.put(key("elsewhere"), &b"x"[..])?;
        Ok(Bytes::new())
    });
    p.register("boom", |_t: &mut TxnContext<'_>| -> Result<Bytes, Abort> {
        panic!("deliberate")
    });
    p.register("snoop", |t: &mut TxnContext<'_>| {
        t.read(&key("secret"))?;
        Ok(Bytes::new())
    });
    p
}

fn executor(partition: u16) -> Executor {
    Executor::new(
        PartitionId(partition),
        procedures(),
        ExecutorConfig::default(),
        Resume::default(),
    )
}

fn copy_keys(src_partition: u16, dst_partition: u16) -> Vec<KeyAccess> {
    vec![
        access("src", src_partition, Access::Read),
        access("dst", dst_partition, Access::Write),
    ]
}

#[test]
fn base_values_fill_absent_keys_only() {
    let mut ex = executor(0);
    let mut store = MemStore::default();
    let mut i = input(1, "copy", b"", copy_keys(0, 0));
    i.base = vec![(key("src"), Some(Bytes::from_static(b"from-base")))];
    let fx = ex.step(Seq(1), txn(i.clone(), None), &mut store).unwrap();
    assert_eq!(
        fx.finished[0].outcome,
        Some(Outcome::Committed {
            output: Bytes::from_static(b"from-base")
        })
    );
    assert_eq!(store.data[&key("dst")], Bytes::from_static(b"from-base"));
    store
        .data
        .insert(key("src"), Bytes::from_static(b"from-store"));
    let mut j = i;
    j.id = TxnId(2);
    ex.step(Seq(2), txn(j, None), &mut store).unwrap();
    assert_eq!(store.data[&key("dst")], Bytes::from_static(b"from-store"));
    assert_eq!(ex.position().watermark, Seq(2));
}

#[test]
fn a_changed_reconnaissance_value_restarts_without_writing() {
    let mut ex = executor(0);
    let mut store = MemStore::default();
    store.data.insert(key("src"), Bytes::from_static(b"now"));
    let mut i = input(1, "copy", b"", copy_keys(0, 0));
    i.recon = vec![(key("src"), Some(Bytes::from_static(b"then")))];
    let fx = ex.step(Seq(1), txn(i.clone(), None), &mut store).unwrap();
    assert_eq!(
        fx.finished[0].outcome,
        Some(Outcome::Restart { key: key("src") })
    );
    assert!(!store.data.contains_key(&key("dst")));
    // With the value it saw still there, it runs.
    i.id = TxnId(2);
    i.recon = vec![(key("src"), Some(Bytes::from_static(b"now")))];
    let fx = ex.step(Seq(2), txn(i, None), &mut store).unwrap();
    assert!(matches!(
        fx.finished[0].outcome,
        Some(Outcome::Committed { .. })
    ));
}

#[test]
fn misbehaving_procedures_abort_deterministically_and_write_nothing() {
    let mut ex = executor(0);
    let mut store = MemStore::default();
    let cases = [
        ("bad", "not in its write set"),
        ("boom", "panicked"),
        ("snoop", "not in its read set"),
    ];
    for (n, (procedure, expected)) in cases.into_iter().enumerate() {
        let i = input(n as u128 + 1, procedure, b"", copy_keys(0, 0));
        let fx = ex
            .step(Seq(n as u64 + 1), txn(i, None), &mut store)
            .unwrap();
        match &fx.finished[0].outcome {
            Some(Outcome::Aborted { reason }) => {
                assert!(reason.contains(expected), "{reason}")
            }
            other => panic!("{procedure}: {other:?}"),
        }
    }
    assert!(store.data.is_empty());
}

#[test]
fn an_unknown_procedure_or_a_gap_stops_the_replica() {
    let mut ex = executor(0);
    let mut store = MemStore::default();
    let err = ex
        .step(
            Seq(1),
            txn(input(1, "nope", b"", copy_keys(0, 0)), None),
            &mut store,
        )
        .unwrap_err();
    assert_eq!(
        err,
        TxnError::UnknownProcedure {
            name: "nope".into()
        }
    );
    let mut ex = executor(0);
    let err = ex
        .step(Seq(5), Entry::Barrier(Bytes::new()), &mut store)
        .unwrap_err();
    assert!(err.to_string().contains("expected log entry 1"), "{err}");
}

#[test]
fn a_writer_waits_for_remote_reads_and_ignores_their_duplicates() {
    // Partition 1 writes dst from src, which partition 0 owns.
    let mut ex = executor(1);
    let mut store = MemStore::default();
    let i = input(9, "copy", b"", copy_keys(0, 1));
    let fx = ex
        .step(Seq(1), txn(i.clone(), Some(1)), &mut store)
        .unwrap();
    assert!(fx.finished.is_empty() && fx.sends.is_empty());
    // A later write to another key runs although the transaction before it waits.
    let fx = ex
        .step(
            Seq(2),
            Entry::Write(vec![(key("other"), Some(Bytes::from_static(b"o")))]),
            &mut store,
        )
        .unwrap();
    assert_eq!(fx.completed, vec![Seq(2)]);
    assert_eq!(fx.position.watermark, Seq(0), "1 is still waiting");
    // A write to dst waits behind the transaction.
    ex.step(
        Seq(3),
        Entry::Write(vec![(key("dst"), Some(Bytes::from_static(b"late")))]),
        &mut store,
    )
    .unwrap();
    assert_eq!(ex.blocked(), 1);
    let reads = RemoteReads {
        txn: TxnId(9),
        sequenced: Seq(1),
        from: PartitionId(0),
        values: vec![(key("src"), Some(Bytes::from_static(b"remote")))],
    };
    let fx = ex
        .step(Seq(4), Entry::Reads(reads.clone()), &mut store)
        .unwrap();
    assert_eq!(fx.stashed, vec![reads.clone()]);
    assert_eq!(fx.unstashed, vec![TxnId(9)]);
    assert_eq!(
        fx.finished[0].outcome,
        Some(Outcome::Committed {
            output: Bytes::from_static(b"remote")
        })
    );
    // Then the blocked write ran, after it: log order on dst.
    assert_eq!(store.data[&key("dst")], Bytes::from_static(b"late"));
    assert_eq!(fx.position.watermark, Seq(4));
    // A duplicate of the reads, and a duplicate copy of the transaction, change nothing.
    let fx = ex.step(Seq(5), Entry::Reads(reads), &mut store).unwrap();
    assert!(fx.stashed.is_empty() && fx.finished.is_empty());
    let fx = ex.step(Seq(6), txn(i, Some(1)), &mut store).unwrap();
    assert!(fx.finished.is_empty());
    assert_eq!(fx.position.watermark, Seq(6));
    assert_eq!(store.data[&key("dst")], Bytes::from_static(b"late"));
}

#[test]
fn a_reader_sends_its_reads_and_is_done() {
    let mut ex = executor(0);
    let mut store = MemStore::default();
    store.data.insert(key("src"), Bytes::from_static(b"v"));
    let fx = ex
        .step(
            Seq(1),
            txn(input(3, "copy", b"", copy_keys(0, 2)), Some(4)),
            &mut store,
        )
        .unwrap();
    assert_eq!(fx.sends.len(), 1);
    assert_eq!(fx.sends[0].to, vec![PartitionId(2)]);
    assert_eq!(
        fx.sends[0].reads.values,
        vec![(key("src"), Some(Bytes::from_static(b"v")))]
    );
    assert_eq!(fx.finished[0].outcome, None);
    assert_eq!(fx.position.watermark, Seq(1));
    assert_eq!(fx.position.max_sequenced, Seq(4));
}

#[test]
fn barriers_run_alone() {
    let mut ex = executor(1);
    let mut store = MemStore::default();
    ex.step(
        Seq(1),
        txn(input(1, "copy", b"", copy_keys(0, 1)), Some(1)),
        &mut store,
    )
    .unwrap();
    ex.step(Seq(2), Entry::Barrier(Bytes::new()), &mut store)
        .unwrap();
    ex.step(
        Seq(3),
        Entry::Write(vec![(key("x"), Some(Bytes::new()))]),
        &mut store,
    )
    .unwrap();
    assert!(store.barriers.is_empty() && !store.data.contains_key(&key("x")));
    let reads = RemoteReads {
        txn: TxnId(1),
        sequenced: Seq(1),
        from: PartitionId(0),
        values: vec![(key("src"), None)],
    };
    let fx = ex.step(Seq(4), Entry::Reads(reads), &mut store).unwrap();
    assert_eq!(store.barriers, vec![Seq(2)]);
    assert!(store.data.contains_key(&key("x")));
    assert_eq!(fx.completed, vec![Seq(4), Seq(1), Seq(2), Seq(3)]);
}

#[test]
fn the_blocked_cap_holds_later_entries_back_in_order() {
    let mut ex = Executor::new(
        PartitionId(1),
        procedures(),
        ExecutorConfig {
            sca: true,
            max_blocked: 1,
        },
        Resume::default(),
    );
    let mut store = MemStore::default();
    ex.step(
        Seq(1),
        txn(input(1, "copy", b"", copy_keys(0, 1)), Some(1)),
        &mut store,
    )
    .unwrap();
    let w = |v: &'static [u8]| Entry::Write(vec![(key("dst"), Some(Bytes::from_static(v)))]);
    ex.step(Seq(2), w(b"a"), &mut store).unwrap();
    ex.step(Seq(3), w(b"b"), &mut store).unwrap();
    assert_eq!((ex.blocked(), ex.backlog()), (1, 1));
    ex.step(
        Seq(4),
        Entry::Reads(RemoteReads {
            txn: TxnId(1),
            sequenced: Seq(1),
            from: PartitionId(0),
            values: vec![(key("src"), None)],
        }),
        &mut store,
    )
    .unwrap();
    assert_eq!((ex.blocked(), ex.backlog(), ex.in_flight()), (0, 0, 0));
    assert_eq!(store.data[&key("dst")], Bytes::from_static(b"b"));
}

#[test]
fn an_idle_executor_lets_plain_writes_pass_and_a_waiting_transaction_stops_them() {
    let mut ex = executor(1);
    let mut store = MemStore::default();
    // Idle: entries 1 and 2 pass without admission and the watermark follows.
    assert!(ex.pass(Seq(1)));
    assert!(ex.pass(Seq(2)));
    assert!(!ex.pass(Seq(4)), "not the next entry");
    assert_eq!(ex.next_seq(), Seq(3));
    assert_eq!(ex.idle(&mut store).unwrap().position.watermark, Seq(2));
    // A transaction waiting for partition 0's reads: nothing passes until it is done.
    let i = input(9, "copy", b"", copy_keys(0, 1));
    ex.step(Seq(3), txn(i, Some(1)), &mut store).unwrap();
    assert!(!ex.pass(Seq(4)));
    assert_eq!(ex.next_seq(), Seq(4), "a refused pass changes nothing");
    ex.step(
        Seq(4),
        Entry::Write(vec![(key("other"), Some(Bytes::from_static(b"o")))]),
        &mut store,
    )
    .unwrap();
    assert!(!ex.pass(Seq(5)), "entry 3 is not done");
    let reads = RemoteReads {
        txn: TxnId(9),
        sequenced: Seq(1),
        from: PartitionId(0),
        values: vec![(key("src"), Some(Bytes::from_static(b"remote")))],
    };
    let fx = ex.step(Seq(5), Entry::Reads(reads), &mut store).unwrap();
    assert_eq!(fx.position.watermark, Seq(5));
    assert!(ex.pass(Seq(6)));
    assert_eq!(ex.idle(&mut store).unwrap().position.watermark, Seq(6));
}
