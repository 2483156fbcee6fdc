//! gRPC service implementations: thin conversions around `notadb_node::Node`.

/// Runs one request of `method` and records its count and latency (see `observe`), with the
/// method's metric handles registered once per call site, not looked up per request.
macro_rules! observe {
    ($method:literal, $call:expr) => {{
        static METRICS: std::sync::OnceLock<$crate::grpc::MethodMetrics> =
            std::sync::OnceLock::new();
        $crate::grpc::observe(
            METRICS.get_or_init(|| $crate::grpc::MethodMetrics::new($method)),
            $call,
        )
    }};
}

mod cache;
mod data;
mod keyspaces;
mod node;
mod txn;

pub use cache::CacheService;
pub use data::DataService;
pub(crate) use data::ScanAnswer;
pub use keyspaces::KeyspacesService;
pub use node::NodeService;
pub use txn::TxnService;

use std::future::Future;
use std::time::Instant;
use tonic::Status;

/// The metric handles of one method.
pub(crate) struct MethodMetrics {
    method: &'static str,
    ok: metrics::Counter,
    latency: metrics::Histogram,
}

impl MethodMetrics {
    pub(crate) fn new(method: &'static str) -> MethodMetrics {
        MethodMetrics {
            method,
            ok: metrics::counter!("notadb_requests_total", "method" => method, "code" => "Ok"),
            latency: metrics::histogram!("notadb_request_duration_seconds", "method" => method),
        }
    }
}

/// Runs one request and records its count (by method and status code) and latency. The
/// labels of an error's counter are only built for an error.
pub(crate) async fn observe<T>(
    metrics: &MethodMetrics,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = call.await;
    match &result {
        Ok(_) => metrics.ok.increment(1),
        Err(status) => metrics::counter!(
            "notadb_requests_total",
            "method" => metrics.method,
            "code" => format!("{:?}", status.code())
        )
        .increment(1),
    }
    metrics.latency.record(started.elapsed().as_secs_f64());
    result
}
