//! Forwarding: a request for partitions this node does not serve goes to a ready replica of
//! the owning shard group; requests over all partitions scatter to every group and merge.

use notadb_cluster::Cluster;
use notadb_node::Node;
use notadb_proto::v1::data_client::DataClient;
use notadb_types::{PartitionId, Token};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

/// Set on forwarded requests: the receiver answers from its own partitions and never
/// forwards again (a stale routing table cannot make a loop).
pub const FORWARDED: &str = "notadb-forwarded";

/// How long connecting to a replica may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Decides where requests run and forwards them.
pub struct Router {
    node: Node,
    cluster: Option<Arc<Cluster>>,
    channels: Mutex<HashMap<String, Channel>>,
}

/// Whether `metadata` marks a forwarded request.
pub fn is_forwarded(metadata: &MetadataMap) -> bool {
    metadata.contains_key(FORWARDED)
}

impl Router {
    /// Routes for `node`, alone or as a member of `cluster`.
    pub fn new(node: Node, cluster: Option<Arc<Cluster>>) -> Router {
        Router {
            node,
            cluster,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The shard group to forward a request on `p` to, or `None` to answer here.
    pub fn remote_group(&self, p: PartitionId, metadata: &MetadataMap) -> Option<u16> {
        let cluster = self.cluster.as_ref()?;
        if is_forwarded(metadata) || self.node.owns(p) {
            return None;
        }
        Some(cluster.routes().doc().group_of(p))
    }

    /// The shard groups other than this node's that a request over all partitions must also
    /// ask (none when forwarded or single-node).
    pub fn other_groups(&self, metadata: &MetadataMap) -> Vec<u16> {
        match &self.cluster {
            Some(c) if !is_forwarded(metadata) => (0..c.routes().doc().groups)
                .filter(|g| *g != c.group())
                .collect(),
            _ => Vec::new(),
        }
    }

    fn client(&self, addr: &str) -> Result<DataClient<Channel>, Status> {
        let mut channels = self.channels.lock().expect("channel lock");
        if let Some(channel) = channels.get(addr) {
            return Ok(DataClient::new(channel.clone()));
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(format!("replica address {addr}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(DataClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// Sends `message` to the best ready replica of `group` (least lagging on `partition`,
    /// having applied `tokens`), trying the next one when a replica is unavailable, all
    /// within `deadline`. Fails with `UNAVAILABLE` naming the group when none answers.
    pub async fn forward<M, T, F, Fut>(
        &self,
        group: u16,
        partition: Option<PartitionId>,
        tokens: &[Token],
        deadline: Option<Instant>,
        message: M,
        call: F,
    ) -> Result<T, Status>
    where
        M: Clone,
        F: Fn(DataClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let cluster = self.cluster.as_ref().expect("forwarding needs a cluster");
        let deadline =
            deadline.unwrap_or_else(|| Instant::now() + self.node.config().limits.max_read_wait());
        let replicas: Vec<_> = cluster
            .routes()
            .replicas(group, partition, tokens)
            .into_iter()
            .filter(|m| m.ready)
            .take(cluster.config().forward_attempts.max(1))
            .collect();
        let on = match partition {
            Some(p) => format!(" (partition {p})"),
            None => String::new(),
        };
        if replicas.is_empty() {
            return Err(Status::unavailable(format!(
                "shard group {group}{on} has no ready replica"
            )));
        }
        let mut failures = Vec::new();
        for replica in replicas {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Status::deadline_exceeded(format!(
                    "the deadline passed while forwarding to shard group {group}{on}"
                )));
            }
            let mut request = Request::new(message.clone());
            request.set_timeout(remaining);
            request.metadata_mut().insert(
                FORWARDED,
                self.node
                    .config()
                    .node_id
                    .parse()
                    .map_err(|_| Status::internal("node_id is not a valid header value"))?,
            );
            let client = self.client(&replica.grpc_addr)?;
            metrics::counter!("notadb_forwarded_requests_total").increment(1);
            match tokio::time::timeout(remaining, call(client, request)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if retry_elsewhere(status.code()) => {
                    failures.push(format!("{}: {}", replica.node_id, status.message()));
                }
                Ok(Err(status)) => return Err(status),
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "replica {} of shard group {group}{on} did not answer before the deadline",
                        replica.node_id
                    )))
                }
            }
        }
        Err(Status::unavailable(format!(
            "no replica of shard group {group}{on} could answer: {}",
            failures.join("; ")
        )))
    }
}

/// Codes after which another replica may answer.
fn retry_elsewhere(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled)
}
