//! The serial oracle: replays recorded partition logs one transaction at a time, in an order
//! consistent with every log, on one map. A correct concurrent execution of the same logs has
//! the same outcome for every transaction and the same final state.

use std::collections::BTreeMap;

use bytes::Bytes;
use notadb_types::Seq;

use crate::{Entry, Outcome, Procedures, TxnError, TxnId, TxnKey};

/// What a serial replay produced.
#[derive(Debug, Default)]
pub struct Replay {
    /// Every transaction's outcome.
    pub outcomes: BTreeMap<TxnId, Outcome>,
    /// The final data.
    pub state: BTreeMap<TxnKey, Bytes>,
    /// The transactions in the order they ran.
    pub order: Vec<TxnId>,
}

/// Replays `logs` (one per partition, in log order) serially.
///
/// Multi-partition transactions must appear in the same relative order in every participant's
/// log (after skipping duplicate copies, as the executor does); if they do not, the replay stops
/// with an error naming the partitions that disagree.
pub fn replay(procedures: &Procedures, logs: &[Vec<Entry>]) -> Result<Replay, TxnError> {
    let mut out = Replay::default();
    let mut cursors = vec![0usize; logs.len()];
    let mut max_sequenced = vec![Seq(0); logs.len()];
    loop {
        let mut progressed = false;
        let mut finished = true;
        for p in 0..logs.len() {
            while let Some(entry) = next_entry(logs, p, &mut cursors, &mut max_sequenced) {
                finished = false;
                match entry {
                    Entry::Write(writes) => apply(&mut out.state, writes.iter().cloned()),
                    Entry::Barrier(_) | Entry::Reads(_) => {}
                    Entry::Txn {
                        input,
                        sequenced: Some(s),
                    } => {
                        let participants = input.participants();
                        let ready = participants.iter().all(|q| {
                            let q = usize::from(q.0);
                            matches!(
                                next_entry(logs, q, &mut cursors, &mut max_sequenced),
                                Some(Entry::Txn { sequenced: Some(t), .. }) if t == s
                            )
                        });
                        if !ready {
                            break;
                        }
                        for q in &participants {
                            let q = usize::from(q.0);
                            max_sequenced[q] = *s;
                            cursors[q] += 1;
                        }
                        run(procedures, input, &mut out)?;
                        progressed = true;
                        continue;
                    }
                    Entry::Txn {
                        input,
                        sequenced: None,
                    } => run(procedures, input, &mut out)?,
                }
                cursors[p] += 1;
                progressed = true;
            }
        }
        if finished {
            return Ok(out);
        }
        if !progressed {
            let heads: Vec<String> = (0..logs.len())
                .filter_map(|p| {
                    next_entry(logs, p, &mut cursors, &mut max_sequenced).map(|e| match e {
                        Entry::Txn {
                            sequenced: Some(s), ..
                        } => format!("partition {p} waits at sequencer position {}", s.0),
                        _ => format!("partition {p} is stuck"),
                    })
                })
                .collect();
            return Err(TxnError::Malformed(format!(
                "the logs order multi-partition transactions differently: {}",
                heads.join(", ")
            )));
        }
    }
}

/// The next entry of partition `p` that counts, skipping remote reads and duplicate copies.
fn next_entry<'a>(
    logs: &'a [Vec<Entry>],
    p: usize,
    cursors: &mut [usize],
    max_sequenced: &mut [Seq],
) -> Option<&'a Entry> {
    loop {
        let entry = logs[p].get(cursors[p])?;
        match entry {
            Entry::Reads(_) => {}
            Entry::Txn {
                sequenced: Some(s), ..
            } if *s <= max_sequenced[p] => {}
            _ => return Some(entry),
        }
        cursors[p] += 1;
    }
}

fn run(procedures: &Procedures, input: &crate::TxnInput, out: &mut Replay) -> Result<(), TxnError> {
    let reads: BTreeMap<TxnKey, Option<Bytes>> = input
        .keys
        .iter()
        .filter(|k| k.access.reads())
        .map(|k| {
            let value = match out.state.get(&k.key) {
                Some(v) => Some(v.clone()),
                None => input.base_value(&k.key).cloned().flatten(),
            };
            (k.key.clone(), value)
        })
        .collect();
    let (outcome, writes) = procedures.execute(input, &reads)?;
    apply(&mut out.state, writes);
    out.outcomes.insert(input.id, outcome);
    out.order.push(input.id);
    Ok(())
}

fn apply(
    state: &mut BTreeMap<TxnKey, Bytes>,
    writes: impl IntoIterator<Item = (TxnKey, Option<Bytes>)>,
) {
    for (key, value) in writes {
        match value {
            Some(v) => state.insert(key, v),
            None => state.remove(&key),
        };
    }
}
