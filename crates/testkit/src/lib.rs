//! Support for notadb's tests, benchmarks and local clusters; nothing a node runs in
//! production depends on it.
//!
//! - [`ChildServer`]: a server child process on a loopback port, started and waited for,
//!   stopped, killed and restarted; [`NatsServer`] (JetStream) and [`TansuServer`] (a Kafka
//!   protocol broker, with the `kafka` feature) are two of them.
//! - [`process`]: finding a binary, a free loopback port, stopping a child, the end of its
//!   log.
//! - [`load`]: an append load on any [`Log`](notadb_log::Log).

#![warn(missing_docs)]

mod child;
pub mod load;
mod nats;
pub mod process;
#[cfg(feature = "kafka")]
mod tansu;

pub use child::{ChildServer, ReadyCheck, ServerSpec};
pub use nats::{NatsServer, NATS_MAX_PAYLOAD_BYTES, NATS_SERVER_ENV};
#[cfg(feature = "kafka")]
pub use tansu::{TansuServer, TANSU_ENV};
