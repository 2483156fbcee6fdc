//! gRPC service implementations: thin conversions around `notadb_node::Node`.

mod cache;
mod data;
mod keyspaces;
mod node;
mod txn;

pub use cache::CacheService;
pub use data::DataService;
pub use keyspaces::KeyspacesService;
pub use node::NodeService;
pub use txn::TxnService;

use std::future::Future;
use std::time::Instant;
use tonic::Status;

/// Runs one request and records its count (by method and status code) and latency.
pub(crate) async fn observe<T>(
    method: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = call.await;
    let code = match &result {
        Ok(_) => "Ok".to_string(),
        Err(status) => format!("{:?}", status.code()),
    };
    metrics::counter!("notadb_requests_total", "method" => method, "code" => code).increment(1);
    metrics::histogram!("notadb_request_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    result
}
