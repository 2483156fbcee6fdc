//! notadb's deterministic transaction core. No I/O, no clock, no randomness: the node drives
//! it with log entries and makes its effects durable.
//!
//! notadb runs multi-key, multi-partition transactions itself, serializably and without
//! two-phase commit (Calvin, Thomson et al., SIGMOD 2012): the logs decide the order and every
//! replica executes that order deterministically.
//!
//! - [`input`]: a transaction's logged input ([`TxnInput`]): procedure, arguments, declared keys
//!   with their partitions, nondeterministic values fixed at submission, base values, and
//!   reconnaissance values for dependent transactions.
//! - [`entry`]: what a partition log holds for the executor ([`Entry`]), including the reads
//!   participants exchange ([`RemoteReads`]).
//! - [`procedure`]: user procedures ([`Procedure`]), their view ([`TxnContext`]) and outcomes
//!   ([`Outcome`]).
//! - [`scheduler`]: VLL lock counters and queue, with selective contention analysis
//!   ([`Scheduler`]).
//! - [`executor`]: one partition's executor ([`Executor`]), its storage interface
//!   ([`TxnStore`]) and what it asks the driver to do ([`Effects`]).
//! - [`mem_store`]: an in-memory [`TxnStore`] ([`MemStore`]) for simulations and benchmarks.
//! - [`report`]: reports of finished transactions, sent to the node whose client waits
//!   ([`encode_report`]).
//! - [`builtin`]: the procedures every server registers (`i64.transfer`, `i64.add`, `i64.sum`).
//! - [`oracle`]: the serial replay the executor is tested against ([`replay`]).
//! - [`checker`]: a list-append history checker for serializability and strict
//!   serializability ([`check`]).
//!
//! `checker`, `oracle` and `mem_store` are test support: they exist with the `testing`
//! feature (and in this crate's own tests).

#![warn(missing_docs)]

pub mod builtin;
#[cfg(any(test, feature = "testing"))]
pub mod checker;
pub mod entry;
pub mod error;
pub mod executor;
pub mod input;
#[cfg(any(test, feature = "testing"))]
pub mod mem_store;
#[cfg(any(test, feature = "testing"))]
pub mod oracle;
pub mod procedure;
pub mod report;
pub mod scheduler;

#[cfg(any(test, feature = "testing"))]
pub use checker::{check, Anomaly, MicroOp, Op, Report, Status};
pub use entry::{Entry, KeyValues, RemoteReads};
pub use error::{StoreError, TxnError};
pub use executor::{
    Effects, Executor, ExecutorConfig, Finished, Position, Resume, SendReads, TxnStore,
    WriteOrigin, DEFAULT_MAX_BLOCKED,
};
pub use input::{
    Access, KeyAccess, TxnEnv, TxnId, TxnInput, TxnKey, MAX_ARGS_BYTES, MAX_PROCEDURE_NAME,
    MAX_TXN_KEYS,
};
#[cfg(any(test, feature = "testing"))]
pub use mem_store::MemStore;
#[cfg(any(test, feature = "testing"))]
pub use oracle::{replay, Replay};
pub use procedure::{Abort, Outcome, Procedure, Procedures, TxnContext};
pub use report::{decode_report, encode_report};
pub use scheduler::Scheduler;
