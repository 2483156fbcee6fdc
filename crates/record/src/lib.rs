//! The bytes every replica agrees on, and nothing that does I/O: what a log entry says, how a
//! stored value is laid out, what a keyspace is. Every consumer of log entries (the node's
//! apply loop, the transmitter, tools) depends on this crate alone.
//!
//! - [`entry`]: the log entry codec ([`Record`], [`Op`]).
//! - [`value`]: the stored form of a value, an expiry header before the user bytes.
//! - [`keyspace`]: a keyspace's definition ([`KeyspaceDef`]).
//! - [`clock`]: where writers read the append time they stamp on an entry ([`Clock`]).
//!   Applying an entry never reads it.

#![warn(missing_docs)]

pub mod clock;
pub mod entry;
pub mod keyspace;
pub mod value;

pub use clock::{now_micros, Clock, ManualClock, SystemClock};
pub use entry::{DecodeError, Op, Record, BATCH_HEADER};
pub use keyspace::KeyspaceDef;
