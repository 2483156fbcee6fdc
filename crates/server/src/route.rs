//! Forwarding: a request for partitions this node does not serve goes to a ready replica of
//! the owning shard group; requests over all partitions scatter to every group and merge.

use crate::status::to_status;
use notadb_cluster::Cluster;
use notadb_node::{Consistency, Node, NodeError};
use notadb_proto::v1::data_client::DataClient;
use notadb_types::{GroupId, PartitionId};
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

/// Where a request runs.
pub enum Route<'a> {
    /// On this node.
    Here,
    /// On a replica of this shard group, which serves the request's partition.
    Group(Forwarder<'a>, GroupId, PartitionId),
    /// Here and on these other shard groups, merged.
    Everywhere(Forwarder<'a>, Vec<GroupId>),
}

/// This node's way to the other shard groups. Only a node in a cluster has one
/// ([`Router::forwarder`]), so a single node cannot be asked to forward.
#[derive(Clone, Copy)]
pub struct Forwarder<'a> {
    router: &'a Router,
    cluster: &'a Arc<Cluster>,
}

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

    /// Where a request runs. `partition` (the one partition the request falls in, or `None`
    /// for all of them) is only computed when the node is in a cluster and the request was not
    /// forwarded to it: a single node answers everything itself.
    pub fn route(
        &self,
        metadata: &MetadataMap,
        partition: impl FnOnce() -> Result<Option<PartitionId>, NodeError>,
    ) -> Result<Route<'_>, Status> {
        let Some(forwarder) = self.scattering(metadata) else {
            return Ok(Route::Here);
        };
        let cluster = forwarder.cluster;
        Ok(match partition().map_err(to_status)? {
            Some(p) if self.node.owns(p) => Route::Here,
            Some(p) => Route::Group(forwarder, cluster.routes().doc().group_of(p), p),
            None => {
                let others: Vec<GroupId> = (0..cluster.routes().doc().groups)
                    .map(GroupId)
                    .filter(|g| *g != cluster.group())
                    .collect();
                if others.is_empty() {
                    Route::Here
                } else {
                    Route::Everywhere(forwarder, others)
                }
            }
        })
    }

    /// The way to other groups, when requests may go there (not single-node, not forwarded).
    pub fn scattering(&self, metadata: &MetadataMap) -> Option<Forwarder<'_>> {
        self.forwarder().filter(|_| !is_forwarded(metadata))
    }

    /// The way to other groups, when this node is in a cluster.
    pub fn forwarder(&self) -> Option<Forwarder<'_>> {
        self.cluster.as_ref().map(|cluster| Forwarder {
            router: self,
            cluster,
        })
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().expect("channel lock");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| to_status(NodeError::Internal(format!("replica address {addr}: {e}"))))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

impl<'a> Forwarder<'a> {
    /// The cluster this node is in.
    pub fn cluster(self) -> &'a Arc<Cluster> {
        self.cluster
    }

    /// The shard group serving `p`, or `None` when this node does (multi-get's split).
    pub fn remote_group(self, p: PartitionId) -> Option<GroupId> {
        (!self.router.node.owns(p)).then(|| self.cluster.routes().doc().group_of(p))
    }

    /// Sends `message` to the best ready replica of `group` (least lagging on `partition`,
    /// having applied the request's tokens), trying the next one when a replica is
    /// unavailable, all within the request's deadline. Fails with `UNAVAILABLE` naming the group when none answers.
    pub async fn forward<M, T, F, Fut>(
        self,
        group: GroupId,
        partition: Option<PartitionId>,
        consistency: &Consistency,
        message: M,
        call: F,
    ) -> Result<T, Status>
    where
        M: Clone,
        F: Fn(DataClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let replicas: Vec<_> = self
            .cluster
            .routes()
            .replicas(group, partition, &consistency.tokens)
            .into_iter()
            .filter(|m| m.ready)
            .collect();
        self.forward_to(
            replicas,
            group,
            partition,
            consistency,
            &[],
            message,
            |c, r| {
                call(
                    DataClient::new(c)
                        .max_decoding_message_size(usize::MAX)
                        .max_encoding_message_size(usize::MAX),
                    r,
                )
            },
        )
        .await
    }

    /// Sends `message` to the first of `replicas` that answers (at most `forward_attempts` of
    /// them), within the request's deadline, with the forwarded mark and `headers`.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward_to<M, T, F, Fut>(
        self,
        replicas: Vec<notadb_cluster::Member>,
        group: GroupId,
        partition: Option<PartitionId>,
        consistency: &Consistency,
        headers: &[&'static str],
        message: M,
        call: F,
    ) -> Result<T, Status>
    where
        M: Clone,
        F: Fn(Channel, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let node = &self.router.node;
        let deadline = consistency
            .deadline
            .unwrap_or_else(|| Instant::now() + node.config().limits.max_read_wait());
        let replicas: Vec<_> = replicas
            .into_iter()
            .take(self.cluster.config().forward_attempts.max(1))
            .collect();
        let on = match partition {
            Some(p) => format!(" (partition {p})"),
            None => String::new(),
        };
        if replicas.is_empty() {
            return Err(to_status(NodeError::Unavailable(format!(
                "shard group {group}{on} has no ready replica"
            ))));
        }
        let mut failures = Vec::new();
        for replica in replicas {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(to_status(NodeError::DeadlineExceeded(format!(
                    "the deadline passed while forwarding to shard group {group}{on}"
                ))));
            }
            let mut request = Request::new(message.clone());
            request.set_timeout(remaining);
            request.metadata_mut().insert(
                FORWARDED,
                node.config().node_id.parse().map_err(|_| {
                    to_status(NodeError::Internal(
                        "node_id is not a valid header value".into(),
                    ))
                })?,
            );
            for header in headers {
                request
                    .metadata_mut()
                    .insert(*header, tonic::metadata::MetadataValue::from_static("1"));
            }
            let client = self.router.channel(&replica.grpc_addr)?;
            metrics::counter!("notadb_forwarded_requests_total").increment(1);
            match tokio::time::timeout(remaining, call(client, request)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if retry_elsewhere(status.code()) => {
                    failures.push((replica.node_id.clone(), status));
                }
                Ok(Err(status)) => return Err(status),
                Err(_) => {
                    return Err(to_status(NodeError::DeadlineExceeded(format!(
                        "replica {} of shard group {group}{on} did not answer before the deadline",
                        replica.node_id
                    ))))
                }
            }
        }
        // What each replica said stays in this node's log: transport errors name addresses
        // and hosts, which are the operator's to see, not the client's.
        for (replica, status) in &failures {
            tracing::warn!(
                %group, replica = %replica, code = ?status.code(), message = %status.message(),
                "forwarding failed"
            );
        }
        Err(to_status(NodeError::Unavailable(format!(
            "no replica of shard group {group}{on} could answer ({} tried); retry later",
            failures.len()
        ))))
    }
}

/// Codes after which another replica may answer.
fn retry_elsewhere(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled)
}
