//! The cluster as this node sees it, for the `Cluster` RPC, `notadb status` and the status
//! page. A single node is a cluster of one group holding every partition.

use notadb_cluster::{Cluster, Member};
use notadb_node::Node;
use notadb_proto::v1;
use notadb_types::GroupId;
use std::sync::Arc;

/// This node, its addresses, and its cluster if it is in one.
#[derive(Clone)]
pub struct Topology {
    /// This node.
    pub node: Node,
    /// The cluster it joined; `None` on a single node.
    pub cluster: Option<Arc<Cluster>>,
    /// Where it serves gRPC, as clients reach it.
    pub grpc_addr: String,
    /// Where it serves admin HTTP, as clients reach it.
    pub admin_addr: String,
    /// Where the frame protocol listens, if it does.
    pub frame_addr: Option<String>,
    /// The node's transmitter, if one is configured.
    pub transmitter: Option<notadb_transmitter::Transmitter>,
}

fn member_to_proto(m: &Member, age_ms: u64) -> v1::Member {
    v1::Member {
        node_id: m.node_id.clone(),
        group: u32::from(m.group),
        grpc_addr: m.grpc_addr.clone(),
        admin_addr: m.admin_addr.clone(),
        frame_addr: m.frame_addr.clone(),
        ready: m.ready,
        partitions: m
            .partitions
            .iter()
            .map(|p| v1::PartitionStatus {
                partition: u32::from(p.partition),
                applied_seq: p.applied,
                last_seq: p.last,
                lag_records: p.last.saturating_sub(p.applied),
                lag_seconds: p.lag_seconds,
            })
            .collect(),
        heartbeat_age_ms: age_ms,
    }
}

impl Topology {
    /// The routing table; members by group, then node id.
    pub fn view(&self) -> v1::ClusterResponse {
        let partitions = self.node.partitioner().count();
        match &self.cluster {
            Some(cluster) => {
                let routes = cluster.routes();
                let doc = routes.doc();
                v1::ClusterResponse {
                    node_id: self.node.config().node_id.clone(),
                    partition_count: u32::from(partitions),
                    group_count: u32::from(doc.groups),
                    assignment: doc.assignment.iter().map(|g| u32::from(*g)).collect(),
                    members: {
                        let mut live = routes.live();
                        live.sort_by(|a, b| {
                            (a.member.group, &a.member.node_id)
                                .cmp(&(b.member.group, &b.member.node_id))
                        });
                        live.iter()
                            .map(|s| member_to_proto(&s.member, s.age.as_millis() as u64))
                            .collect()
                    },
                    log: cluster.config().log.to_string(),
                }
            }
            None => {
                let me = notadb_cluster::Member::of_node(
                    &self.node,
                    GroupId(0),
                    &notadb_cluster::Advertised {
                        grpc_addr: self.grpc_addr.clone(),
                        admin_addr: self.admin_addr.clone(),
                        frame_addr: self.frame_addr.clone(),
                    },
                );
                v1::ClusterResponse {
                    node_id: self.node.config().node_id.clone(),
                    partition_count: u32::from(partitions),
                    group_count: 1,
                    assignment: vec![0; usize::from(partitions)],
                    members: vec![member_to_proto(&me, 0)],
                    log: "embedded".into(),
                }
            }
        }
    }
}
