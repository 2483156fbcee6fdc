use super::observe;
use notadb_node::Node;
use notadb_proto::v1::node_server::Node as NodeApi;
use notadb_proto::v1::*;
use tonic::{Request, Response, Status};

/// The `Node` service: this node's own state.
pub struct NodeService {
    node: Node,
}

impl NodeService {
    /// Serves `node`.
    pub fn new(node: Node) -> NodeService {
        NodeService { node }
    }
}

#[tonic::async_trait]
impl NodeApi for NodeService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        observe("Status", async {
            let s = self.node.status();
            Ok(Response::new(StatusResponse {
                node_id: s.node_id,
                partition_count: s.partitions.len() as u32,
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
}
