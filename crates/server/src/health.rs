//! The standard gRPC health service (`grpc.health.v1.Health`), for load balancers and
//! Kubernetes' gRPC probes: `SERVING` while the node is ready (what `/readyz` answers 200
//! for), `NOT_SERVING` while it is catching up, after a partition stopped, and from the start
//! of a shutdown. The overall status (service `""`) and each notadb service report the same.

use notadb_node::Node;
use notadb_proto::v1::cache_server::CacheServer;
use notadb_proto::v1::data_server::DataServer;
use notadb_proto::v1::keyspaces_server::KeyspacesServer;
use notadb_proto::v1::node_server::NodeServer;
use notadb_proto::v1::transactions_server::TransactionsServer;
use std::time::Duration;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// How often readiness is read again.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// The names the health service answers for, besides `""`.
const SERVICES: [&str; 5] = [
    <DataServer<crate::grpc::DataService> as NamedService>::NAME,
    <CacheServer<crate::grpc::CacheService> as NamedService>::NAME,
    <KeyspacesServer<crate::grpc::KeyspacesService> as NamedService>::NAME,
    <TransactionsServer<crate::grpc::TxnService> as NamedService>::NAME,
    <NodeServer<crate::grpc::NodeService> as NamedService>::NAME,
];

async fn set(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICES {
        reporter.set_service_status(name, status).await;
    }
}

/// Keeps the health service's statuses equal to the node's readiness until `stop`.
pub(crate) async fn report(node: Node, reporter: HealthReporter, mut stop: watch::Receiver<bool>) {
    let mut last = None;
    loop {
        let ready = node.is_ready();
        if last != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set(&reporter, status).await;
            last = Some(ready);
        }
        let stopping = tokio::select! {
            // A closed channel means the server is gone: stop too.
            changed = stop.changed() => changed.is_err() || *stop.borrow(),
            _ = tokio::time::sleep(CHECK_EVERY) => false,
        };
        if stopping {
            set(&reporter, ServingStatus::NotServing).await;
            return;
        }
    }
}
