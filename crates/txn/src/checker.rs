//! A checker for list-append histories (the workload of Kingsbury and Alvaro's Elle, VLDB 2020).
//!
//! Every transaction appends unique values to lists and reads whole lists. Because a read
//! returns the whole list, the order of appends to a key is visible: the longest read is the
//! key's version order, and every other read must be a prefix of it. From that the checker
//! infers the dependency graph between committed transactions:
//!
//! - **ww**: T1 appended the element just before T2's element in a key's order;
//! - **wr**: T2 read a list whose last element T1 appended;
//! - **rw**: T1 read a list that ends just before T2's element (T2 overwrote what T1 saw);
//! - **rt** (real time, for strict serializability): T1 completed before T2 was invoked.
//!
//! A history is serializable if the graph of ww, wr and rw edges has no cycle, and strictly
//! serializable if adding rt edges leaves none. Cycles are reported with their edges, classified
//! as in Adya's thesis: G0 (ww only), G1c (ww and wr), G2 (with rw), and G-rt when only the
//! real-time edges close the cycle. Non-cycle anomalies are reported too: reads of aborted
//! appends (G1a), reads of intermediate states (G1b), incompatible orders, duplicates, and
//! values nobody appended.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// One operation inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MicroOp {
    /// Append `value` (unique per key across the history) to the list at `key`.
    Append {
        /// The list.
        key: u64,
        /// The appended value.
        value: u64,
    },
    /// Read the list at `key`; `values` is what was seen (unknown if the transaction did not
    /// commit).
    Read {
        /// The list.
        key: u64,
        /// The list read.
        values: Vec<u64>,
    },
}

/// How a transaction ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Committed.
    Ok,
    /// Definitely did not commit.
    Failed,
    /// Unknown (the client gave up waiting): may or may not have committed.
    Unknown,
}

/// One transaction of a history.
#[derive(Clone, Debug)]
pub struct Op {
    /// When the client sent it (any monotonic clock shared by all clients).
    pub invoke: u64,
    /// When the client got the answer (for an unknown outcome: never, `u64::MAX`).
    pub complete: u64,
    /// The outcome.
    pub status: Status,
    /// Its operations, in order.
    pub ops: Vec<MicroOp>,
}

/// A dependency edge kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Edge {
    /// Write-write.
    Ww,
    /// Write-read.
    Wr,
    /// Read-write (anti-dependency).
    Rw,
    /// Real-time order.
    Rt,
}

/// Something the history shows that a strictly serializable system cannot produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// A cycle in the dependency graph: the transactions (indexes into the history) and the
    /// edge from each to the next (the last back to the first).
    Cycle {
        /// G0, G1c, G2 or G-rt.
        class: &'static str,
        /// The transactions around the cycle.
        txns: Vec<usize>,
        /// The edge from each transaction to the next.
        edges: Vec<Edge>,
    },
    /// A committed read saw a value appended by a transaction that failed.
    AbortedRead {
        /// The reader.
        txn: usize,
        /// The key.
        key: u64,
        /// The failed transaction's value.
        value: u64,
    },
    /// A read saw a transaction's append to a key without its later append to the same key.
    IntermediateRead {
        /// The reader.
        txn: usize,
        /// The key.
        key: u64,
    },
    /// Two reads of one key are not prefixes of one order.
    IncompatibleOrder {
        /// The key.
        key: u64,
        /// One read.
        a: Vec<u64>,
        /// The other.
        b: Vec<u64>,
    },
    /// A read holds the same value twice, or a value nobody appended.
    BadValue {
        /// The reader.
        txn: usize,
        /// The key.
        key: u64,
        /// The value.
        value: u64,
    },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::Cycle { class, txns, edges } => {
                write!(f, "{class} cycle:")?;
                for (t, e) in txns.iter().zip(edges) {
                    write!(f, " T{t} -{e:?}->")?;
                }
                write!(f, " T{}", txns[0])
            }
            Anomaly::AbortedRead { txn, key, value } => {
                write!(
                    f,
                    "G1a: T{txn} read {value} in key {key}, appended by a failed transaction"
                )
            }
            Anomaly::IntermediateRead { txn, key } => {
                write!(f, "G1b: T{txn} read an intermediate state of key {key}")
            }
            Anomaly::IncompatibleOrder { key, a, b } => {
                write!(f, "incompatible orders of key {key}: {a:?} and {b:?}")
            }
            Anomaly::BadValue { txn, key, value } => {
                write!(
                    f,
                    "T{txn} read {value} in key {key}: duplicated or never appended"
                )
            }
        }
    }
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Committed transactions in the graph.
    pub txns: usize,
    /// Edges of each kind.
    pub edges: BTreeMap<&'static str, usize>,
    /// Every anomaly found (empty: the history is strictly serializable, or serializable when
    /// real time was not checked).
    pub anomalies: Vec<Anomaly>,
}

impl fmt::Display for Report {
    /// The anomalies, `; `-separated (empty when there are none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.anomalies.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// Checks `history`; with `real_time`, for strict serializability, else for serializability.
pub fn check(history: &[Op], real_time: bool) -> Report {
    let mut report = Report::default();
    // Who appended what, and each transaction's last append per key.
    let mut writer: HashMap<(u64, u64), usize> = HashMap::new();
    let mut last_append: HashMap<(usize, u64), u64> = HashMap::new();
    for (t, op) in history.iter().enumerate() {
        for m in &op.ops {
            if let MicroOp::Append { key, value } = m {
                writer.insert((*key, *value), t);
                last_append.insert((t, *key), *value);
            }
        }
    }
    // Committed reads, and unknown transactions whose appends were seen (so they committed).
    let mut committed: BTreeSet<usize> = BTreeSet::new();
    let mut reads: Vec<(usize, u64, &Vec<u64>)> = Vec::new();
    for (t, op) in history.iter().enumerate() {
        if op.status != Status::Ok {
            continue;
        }
        committed.insert(t);
        for m in &op.ops {
            if let MicroOp::Read { key, values } = m {
                reads.push((t, *key, values));
            }
        }
    }
    for &(t, key, values) in &reads {
        let mut seen = BTreeSet::new();
        for &v in values.iter() {
            match writer.get(&(key, v)) {
                None => report.anomalies.push(Anomaly::BadValue {
                    txn: t,
                    key,
                    value: v,
                }),
                Some(_) if !seen.insert(v) => report.anomalies.push(Anomaly::BadValue {
                    txn: t,
                    key,
                    value: v,
                }),
                Some(&w) => match history[w].status {
                    Status::Failed => report.anomalies.push(Anomaly::AbortedRead {
                        txn: t,
                        key,
                        value: v,
                    }),
                    Status::Unknown => {
                        committed.insert(w);
                    }
                    Status::Ok => {}
                },
            }
        }
        if let Some(&last) = values.last() {
            if let Some(&w) = writer.get(&(key, last)) {
                if w != t && last_append.get(&(w, key)) != Some(&last) {
                    report
                        .anomalies
                        .push(Anomaly::IntermediateRead { txn: t, key });
                }
            }
        }
    }
    // Version order per key: the longest read; every read must be a prefix of it.
    let mut order: BTreeMap<u64, &Vec<u64>> = BTreeMap::new();
    for &(_, key, values) in &reads {
        let longest = order.entry(key).or_insert(values);
        if values.len() > longest.len() {
            *longest = values;
        }
    }
    for &(_, key, values) in &reads {
        let longest = order[&key];
        if longest[..values.len()] != values[..] {
            report.anomalies.push(Anomaly::IncompatibleOrder {
                key,
                a: values.clone(),
                b: longest.clone(),
            });
        }
    }
    // The graph.
    let mut graph: BTreeMap<usize, BTreeMap<usize, BTreeSet<Edge>>> = BTreeMap::new();
    let mut add = |from: usize, to: usize, e: Edge| {
        if from != to && committed.contains(&from) && committed.contains(&to) {
            graph
                .entry(from)
                .or_default()
                .entry(to)
                .or_default()
                .insert(e);
        }
    };
    for (&key, values) in &order {
        for pair in values.windows(2) {
            if let (Some(&a), Some(&b)) = (writer.get(&(key, pair[0])), writer.get(&(key, pair[1])))
            {
                add(a, b, Edge::Ww);
            }
        }
    }
    for &(t, key, values) in &reads {
        if let Some(&w) = values.last().and_then(|v| writer.get(&(key, *v))) {
            add(w, t, Edge::Wr);
        }
        if let Some(&next) = order[&key].get(values.len()) {
            if let Some(&w) = writer.get(&(key, next)) {
                add(t, w, Edge::Rw);
            }
        }
    }
    if real_time {
        // T1 -> T2 when T1 completed before T2 was invoked, keeping only edges no other such
        // pair implies (T1 is implied if some T' with T1 -> T' -> T2 exists).
        let mut by_complete: Vec<usize> = committed.iter().copied().collect();
        by_complete.sort_by_key(|&t| history[t].complete);
        let mut max_invoke = Vec::with_capacity(by_complete.len());
        let mut m = 0;
        for &t in &by_complete {
            m = m.max(history[t].invoke);
            max_invoke.push(m);
        }
        for &t2 in &committed {
            let invoke = history[t2].invoke;
            let n = by_complete.partition_point(|&t| history[t].complete < invoke);
            if n == 0 {
                continue;
            }
            let bound = max_invoke[n - 1];
            for &t1 in by_complete[..n].iter().rev() {
                if history[t1].complete < bound {
                    break;
                }
                add(t1, t2, Edge::Rt);
            }
        }
    }
    report.txns = committed.len();
    for targets in graph.values() {
        for kinds in targets.values() {
            for e in kinds {
                *report.edges.entry(edge_name(*e)).or_default() += 1;
            }
        }
    }
    // Cycles, weakest class first: a cycle found with fewer edge kinds is reported as such.
    let classes: [(&'static str, &[Edge]); 4] = [
        ("G0", &[Edge::Ww]),
        ("G1c", &[Edge::Ww, Edge::Wr]),
        ("G2", &[Edge::Ww, Edge::Wr, Edge::Rw]),
        ("G-rt", &[Edge::Ww, Edge::Wr, Edge::Rw, Edge::Rt]),
    ];
    for (class, kinds) in classes {
        if class == "G-rt" && !real_time {
            continue;
        }
        if let Some((txns, edges)) = find_cycle(&graph, kinds) {
            report.anomalies.push(Anomaly::Cycle { class, txns, edges });
            break;
        }
    }
    report
}

fn edge_name(e: Edge) -> &'static str {
    match e {
        Edge::Ww => "ww",
        Edge::Wr => "wr",
        Edge::Rw => "rw",
        Edge::Rt => "rt",
    }
}

type Graph = BTreeMap<usize, BTreeMap<usize, BTreeSet<Edge>>>;

/// A search frame: a node, its successors, and the next successor to visit.
type Frame = (usize, Vec<(usize, Edge)>, usize);

/// A cycle using only edges of `kinds`, by an iterative depth-first search.
fn find_cycle(graph: &Graph, kinds: &[Edge]) -> Option<(Vec<usize>, Vec<Edge>)> {
    let next = |n: usize| -> Vec<(usize, Edge)> {
        graph
            .get(&n)
            .map(|targets| {
                targets
                    .iter()
                    .filter_map(|(&to, es)| es.iter().find(|e| kinds.contains(e)).map(|&e| (to, e)))
                    .collect()
            })
            .unwrap_or_default()
    };
    // 0: unvisited, 1: on the stack, 2: done.
    let mut state: HashMap<usize, u8> = HashMap::new();
    for &root in graph.keys() {
        if state.get(&root).copied().unwrap_or(0) != 0 {
            continue;
        }
        let mut stack: Vec<Frame> = vec![(root, next(root), 0)];
        let mut path_edges: Vec<Edge> = Vec::new();
        state.insert(root, 1);
        while let Some(top) = stack.last_mut() {
            if top.2 == top.1.len() {
                state.insert(top.0, 2);
                stack.pop();
                path_edges.pop();
                continue;
            }
            let (to, e) = top.1[top.2];
            top.2 += 1;
            match state.get(&to).copied().unwrap_or(0) {
                0 => {
                    state.insert(to, 1);
                    path_edges.push(e);
                    stack.push((to, next(to), 0));
                }
                1 => {
                    let start = stack
                        .iter()
                        .position(|(n, _, _)| *n == to)
                        .expect("on stack");
                    let txns: Vec<usize> = stack[start..].iter().map(|(n, _, _)| *n).collect();
                    let mut edges: Vec<Edge> = path_edges[start..].to_vec();
                    edges.push(e);
                    return Some((txns, edges));
                }
                _ => {}
            }
        }
    }
    None
}
