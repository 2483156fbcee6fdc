//! Transaction procedures: deterministic Rust functions registered by name, run by every
//! participant that writes, on the transaction's full read set.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;

use crate::{TxnError, TxnInput, TxnKey};

/// A procedure's decision not to commit. It must depend only on the input and the values read,
/// so that every participant reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abort(pub String);

impl<T: Into<String>> From<T> for Abort {
    fn from(reason: T) -> Self {
        Abort(reason.into())
    }
}

/// How a transaction ended. Every participant that runs the procedure reaches the same one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its writes were applied; `output` is what the procedure returned.
    Committed {
        /// The procedure's output.
        output: Bytes,
    },
    /// The procedure aborted (or misbehaved: wrote an undeclared key, panicked); nothing was
    /// written.
    Aborted {
        /// Why.
        reason: String,
    },
    /// A reconnaissance value changed between submission and execution; nothing was written and
    /// the submitter runs reconnaissance again.
    Restart {
        /// The first key whose value differed.
        key: TxnKey,
    },
}

/// A deterministic transaction procedure. `run` must read nothing but the context (no clock,
/// no randomness but [`TxnContext::seed`], no I/O) and must write only declared keys.
pub trait Procedure: Send + Sync + 'static {
    /// Runs the transaction; the writes recorded in `txn` are applied if it returns `Ok`.
    fn run(&self, txn: &mut TxnContext<'_>) -> Result<Bytes, Abort>;
}

impl<F> Procedure for F
where
    F: Fn(&mut TxnContext<'_>) -> Result<Bytes, Abort> + Send + Sync + 'static,
{
    fn run(&self, txn: &mut TxnContext<'_>) -> Result<Bytes, Abort> {
        self(txn)
    }
}

/// What a procedure sees: its input and the values of its read set, and where it records its
/// writes.
pub struct TxnContext<'a> {
    input: &'a TxnInput,
    reads: &'a BTreeMap<TxnKey, Option<Bytes>>,
    writes: BTreeMap<TxnKey, Option<Bytes>>,
}

impl<'a> TxnContext<'a> {
    /// A context over `reads` (every read key of `input`, None for absent).
    pub fn new(input: &'a TxnInput, reads: &'a BTreeMap<TxnKey, Option<Bytes>>) -> Self {
        TxnContext {
            input,
            reads,
            writes: BTreeMap::new(),
        }
    }

    /// The procedure's argument bytes.
    pub fn args(&self) -> &Bytes {
        &self.input.args
    }

    /// The transaction's input.
    pub fn input(&self) -> &TxnInput {
        self.input
    }

    /// The key declared at position `i` of the request, or an abort naming the position.
    pub fn key(&self, i: usize) -> Result<TxnKey, Abort> {
        self.input
            .declared(i)
            .map(|k| k.key.clone())
            .ok_or_else(|| Abort(format!("the transaction declares no key at position {i}")))
    }

    /// "Now" as fixed at submission, in microseconds since the Unix epoch.
    pub fn now_micros(&self) -> i64 {
        self.input.env.now_micros
    }

    /// The random seed fixed at submission.
    pub fn seed(&self) -> u64 {
        self.input.env.seed
    }

    /// The value of a declared read key as of the transaction's position in the log (its own
    /// earlier writes are not visible here), or an abort if the key is not in the read set.
    pub fn read(&self, key: &TxnKey) -> Result<Option<&Bytes>, Abort> {
        match self.reads.get(key) {
            Some(value) => Ok(value.as_ref()),
            None => Err(Abort(format!(
                "procedure {} read key {:?} of keyspace {}, which is not in its read set",
                self.input.procedure, key.key, key.keyspace.0
            ))),
        }
    }

    /// Sets a declared write key to `value`.
    pub fn put(&mut self, key: TxnKey, value: impl Into<Bytes>) -> Result<(), Abort> {
        self.write(key, Some(value.into()))
    }

    /// Deletes a declared write key.
    pub fn delete(&mut self, key: TxnKey) -> Result<(), Abort> {
        self.write(key, None)
    }

    fn write(&mut self, key: TxnKey, value: Option<Bytes>) -> Result<(), Abort> {
        if !self.input.access(&key).is_some_and(|a| a.writes()) {
            return Err(Abort(format!(
                "procedure {} wrote key {:?} of keyspace {}, which is not in its write set",
                self.input.procedure, key.key, key.keyspace.0
            )));
        }
        self.writes.insert(key, value);
        Ok(())
    }
}

/// The registered procedures, by name.
#[derive(Clone, Default)]
pub struct Procedures {
    by_name: BTreeMap<String, Arc<dyn Procedure>>,
}

impl Procedures {
    /// No procedures.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `procedure` as `name`, replacing any earlier one.
    pub fn register(&mut self, name: impl Into<String>, procedure: impl Procedure) -> &mut Self {
        self.by_name.insert(name.into(), Arc::new(procedure));
        self
    }

    /// Registers every procedure of `other`, replacing same-named ones.
    pub fn extend(&mut self, other: &Procedures) -> &mut Self {
        for (name, p) in &other.by_name {
            self.by_name.insert(name.clone(), Arc::clone(p));
        }
        self
    }

    /// The procedure named `name`.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn Procedure>, TxnError> {
        self.by_name
            .get(name)
            .ok_or_else(|| TxnError::UnknownProcedure { name: name.into() })
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Runs `input` on its full read set: the outcome and, when committed, every write the
    /// procedure made (the caller keeps its own partition's). Reconnaissance values are checked
    /// first. A panic in the procedure is an abort, as deterministic as the procedure is.
    pub fn execute(
        &self,
        input: &TxnInput,
        reads: &BTreeMap<TxnKey, Option<Bytes>>,
    ) -> Result<(Outcome, BTreeMap<TxnKey, Option<Bytes>>), TxnError> {
        let procedure = self.get(&input.procedure)?;
        for (key, seen) in &input.recon {
            if reads.get(key) != Some(seen) {
                return Ok((Outcome::Restart { key: key.clone() }, BTreeMap::new()));
            }
        }
        let mut ctx = TxnContext::new(input, reads);
        let result = catch_unwind(AssertUnwindSafe(|| procedure.run(&mut ctx)));
        Ok(match result {
            Ok(Ok(output)) => (Outcome::Committed { output }, ctx.writes),
            Ok(Err(Abort(reason))) => (Outcome::Aborted { reason }, BTreeMap::new()),
            Err(_) => (
                Outcome::Aborted {
                    reason: format!("procedure {} panicked", input.procedure),
                },
                BTreeMap::new(),
            ),
        })
    }
}
