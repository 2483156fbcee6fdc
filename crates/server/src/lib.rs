//! notadb's server: the gRPC API (tonic, with server reflection), the admin HTTP endpoints
//! (health, readiness, Prometheus metrics, a status page) and the configuration file.
//! Error-to-status mapping lives in one place: `status`.

#![warn(missing_docs)]

mod admin;
mod config;
mod convert;
mod encode;
mod frame;
mod grpc;
mod health;
pub mod metrics;
mod pg_loader;
pub mod route;
mod server;
mod status;
mod topology;
mod transmit;

pub use config::{
    parse_frame_addr, ServerConfig, DEFAULT_ADMIN_ADDR, DEFAULT_FRAME_ADDR, DEFAULT_GRPC_ADDR,
};
pub use pg_loader::{LoaderError, PostgresLoader, PostgresLoaderConfig};
pub use server::{wait_for_signal, Server, ServerError, EXIT_CONFIG, EXIT_SOFTWARE, EXIT_TEMPFAIL};
pub use status::to_status;
pub use topology::Topology;
