//! The list-append checker finds each anomaly class in a small history built to have it, and
//! nothing in histories that have none.

use notadb_txn::{check, Anomaly, MicroOp, Op, Status};

fn op(invoke: u64, complete: u64, ops: Vec<MicroOp>) -> Op {
    Op {
        invoke,
        complete,
        status: Status::Ok,
        ops,
    }
}

fn append(key: u64, value: u64) -> MicroOp {
    MicroOp::Append { key, value }
}

fn read(key: u64, values: &[u64]) -> MicroOp {
    MicroOp::Read {
        key,
        values: values.to_vec(),
    }
}

fn cycle_class(anomalies: &[Anomaly]) -> Option<&'static str> {
    anomalies.iter().find_map(|a| match a {
        Anomaly::Cycle { class, .. } => Some(*class),
        _ => None,
    })
}

#[test]
fn a_serial_history_is_clean() {
    let h = vec![
        op(0, 1, vec![append(1, 1), read(2, &[])]),
        op(2, 3, vec![read(1, &[1]), append(2, 2)]),
        op(4, 5, vec![read(1, &[1]), read(2, &[2]), append(1, 3)]),
        op(6, 7, vec![read(1, &[1, 3])]),
    ];
    let report = check(&h, true);
    assert!(report.anomalies.is_empty(), "{:?}", report.anomalies);
    assert_eq!(report.txns, 4);
    assert!(report.edges["ww"] >= 1 && report.edges["wr"] >= 2 && report.edges["rw"] >= 1);
}

#[test]
fn write_cycles_are_g0() {
    let h = vec![
        op(0, 10, vec![append(1, 1), append(2, 2)]),
        op(0, 10, vec![append(1, 3), append(2, 4)]),
        op(20, 30, vec![read(1, &[1, 3]), read(2, &[4, 2])]),
    ];
    assert_eq!(cycle_class(&check(&h, false).anomalies), Some("G0"));
}

#[test]
fn circular_information_flow_is_g1c() {
    let h = vec![
        op(0, 10, vec![append(1, 1), read(2, &[2])]),
        op(0, 10, vec![append(2, 2), read(1, &[1])]),
    ];
    assert_eq!(cycle_class(&check(&h, false).anomalies), Some("G1c"));
}

#[test]
fn write_skew_is_g2() {
    let h = vec![
        op(0, 10, vec![read(1, &[]), append(2, 1)]),
        op(0, 10, vec![read(2, &[]), append(1, 2)]),
        op(20, 30, vec![read(1, &[2]), read(2, &[1])]),
    ];
    let report = check(&h, false);
    assert_eq!(cycle_class(&report.anomalies), Some("G2"));
    let text = report.anomalies[0].to_string();
    assert!(text.contains("Rw"), "{text}");
}

#[test]
fn a_stale_read_after_completion_breaks_only_strict_serializability() {
    let h = vec![
        op(0, 10, vec![append(1, 1)]),
        // Invoked after the append completed, yet does not see it.
        op(20, 30, vec![read(1, &[])]),
        op(40, 50, vec![read(1, &[1])]),
    ];
    assert!(check(&h, false).anomalies.is_empty());
    assert_eq!(cycle_class(&check(&h, true).anomalies), Some("G-rt"));
}

#[test]
fn non_cycle_anomalies_are_reported() {
    let mut failed = op(0, 10, vec![append(1, 1)]);
    failed.status = Status::Failed;
    let h = vec![failed, op(20, 30, vec![read(1, &[1])])];
    assert!(matches!(
        check(&h, true).anomalies[..],
        [Anomaly::AbortedRead { value: 1, .. }]
    ));

    let h = vec![
        op(0, 10, vec![append(1, 1), append(1, 2)]),
        op(0, 10, vec![read(1, &[1])]),
    ];
    assert!(check(&h, true)
        .anomalies
        .iter()
        .any(|a| matches!(a, Anomaly::IntermediateRead { .. })));

    let h = vec![
        op(0, 10, vec![append(1, 1)]),
        op(0, 10, vec![append(1, 2)]),
        op(20, 30, vec![read(1, &[1, 2])]),
        op(20, 30, vec![read(1, &[2])]),
    ];
    assert!(check(&h, true)
        .anomalies
        .iter()
        .any(|a| matches!(a, Anomaly::IncompatibleOrder { .. })));

    let h = vec![
        op(0, 10, vec![append(1, 1)]),
        op(20, 30, vec![read(1, &[1, 1, 9])]),
    ];
    let bad: Vec<u64> = check(&h, true)
        .anomalies
        .iter()
        .filter_map(|a| match a {
            Anomaly::BadValue { value, .. } => Some(*value),
            _ => None,
        })
        .collect();
    assert_eq!(bad, vec![1, 9]);
}

#[test]
fn unknown_outcomes_count_when_their_writes_are_seen() {
    let mut unknown = op(0, u64::MAX, vec![append(1, 1), append(2, 2)]);
    unknown.status = Status::Unknown;
    let h = vec![
        unknown,
        op(5, 10, vec![read(1, &[1]), read(2, &[])]),
        op(20, 30, vec![read(2, &[2])]),
    ];
    // The reader saw the unknown transaction's append to 1 but not to 2: a cycle through it.
    let report = check(&h, true);
    assert_eq!(report.txns, 3);
    assert_eq!(cycle_class(&report.anomalies), Some("G2"));
}
