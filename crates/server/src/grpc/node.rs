use crate::status::{invalid_argument, to_status, transmitter_status};
use crate::Topology;
use notadb_node::NodeError;
use notadb_proto::v1::node_server::Node as NodeApi;
use notadb_proto::v1::*;
use notadb_types::{PartitionId, Seq, Token};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How long `TransmitterFlush` waits when the request gives no timeout.
const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

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
        observe!("Status", async {
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
                transmitter: self
                    .topology
                    .transmitter
                    .as_ref()
                    .map(crate::transmit::status_to_proto),
                frame_addr: self.topology.frame_addr.clone().unwrap_or_default(),
                cpu_micros: crate::metrics::process_cpu_micros(),
            }))
        })
        .await
    }

    async fn cluster(
        &self,
        _request: Request<ClusterRequest>,
    ) -> Result<Response<ClusterResponse>, Status> {
        observe!("Cluster", async { Ok(Response::new(self.topology.view())) }).await
    }

    async fn transmitter_flush(
        &self,
        request: Request<TransmitterFlushRequest>,
    ) -> Result<Response<TransmitterFlushResponse>, Status> {
        observe!("TransmitterFlush", async {
            let Some(t) = &self.topology.transmitter else {
                return Err(to_status(NodeError::FailedPrecondition(
                    "this node has no transmitter: add a [transmitter] table to its config".into(),
                )));
            };
            let r = request.into_inner();
            let tokens: Vec<Token> = r
                .tokens
                .iter()
                .map(|t| {
                    let partition = u16::try_from(t.partition)
                        .ok()
                        .filter(|p| *p < self.topology.node.partitioner().count())
                        .ok_or_else(|| {
                            invalid_argument(format!(
                                "tokens: partition {} does not exist",
                                t.partition
                            ))
                        })?;
                    Ok(Token {
                        partition: PartitionId(partition),
                        seq: Seq(t.seq),
                    })
                })
                .collect::<Result<_, Status>>()?;
            let timeout = match r.timeout_ms {
                0 => DEFAULT_FLUSH_TIMEOUT,
                ms => Duration::from_millis(ms),
            };
            match t.flush(&tokens, timeout).await {
                Ok(()) => Ok(Response::new(TransmitterFlushResponse {})),
                Err(e) => Err(transmitter_status(e)),
            }
        })
        .await
    }
}
