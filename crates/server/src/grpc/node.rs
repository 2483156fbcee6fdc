use super::observe;
use crate::Topology;
use notadb_proto::v1::node_server::Node as NodeApi;
use notadb_proto::v1::*;
use tonic::{Request, Response, Status};

/// The `Node` service: this node's own state and the routing table.
pub struct NodeService {
    topology: Topology,
}

impl NodeService {
    /// Serves the node of `topology`.
    pub fn new(topology: Topology) -> NodeService {
        NodeService { topology }
    }
}

#[tonic::async_trait]
impl NodeApi for NodeService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        observe("Status", async {
            let node = &self.topology.node;
            let s = node.status();
            Ok(Response::new(StatusResponse {
                node_id: s.node_id,
                partition_count: u32::from(node.partitioner().count()),
                ready: s.ready,
                partitions: s
                    .partitions
                    .iter()
                    .map(|p| PartitionStatus {
                        partition: u32::from(p.partition.0),
                        applied_seq: p.applied.0,
                        last_seq: p.last.0,
                        lag_records: p.lag_records,
                        lag_seconds: p.lag_seconds,
                    })
                    .collect(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            }))
        })
        .await
    }

    async fn cluster(
        &self,
        _request: Request<ClusterRequest>,
    ) -> Result<Response<ClusterResponse>, Status> {
        observe("Cluster", async { Ok(Response::new(self.topology.view())) }).await
    }
}
