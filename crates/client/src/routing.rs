//! Client-side routing: the cluster's routing table (partition → shard group → ready
//! replicas) and the keyspace schemas, so a request goes straight to a replica that owns its
//! partition instead of through a forwarding node.

use crate::frame::FrameClient;
use notadb_proto::v1::data_client::DataClient;
use notadb_proto::v1::keyspaces_client::KeyspacesClient;
use notadb_proto::v1::node_client::NodeClient;
use notadb_proto::{schema_from_proto, v1};
use notadb_types::{Element, GroupId, KeyspaceSchema, PartitionId, Partitioner};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How often the routing table and schemas are read again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// What the client knows of the cluster.
#[derive(Default)]
struct Table {
    partitioner: Option<Partitioner>,
    /// `assignment[p]`: the shard group of partition `p`.
    assignment: Vec<GroupId>,
    /// Per group: its ready replicas' gRPC addresses, and where they serve the frame
    /// protocol (when they do).
    replicas: HashMap<GroupId, Vec<(String, Option<String>)>>,
    schemas: HashMap<String, KeyspaceSchema>,
}

/// The routing state shared by a client's clones.
pub(crate) struct Routing {
    table: RwLock<Table>,
    channels: Mutex<HashMap<String, Channel>>,
    frames: Mutex<HashMap<String, Arc<FrameClient>>>,
    next: AtomicUsize,
    max_message_bytes: usize,
}

impl Routing {
    /// Reads the table through `seed` and keeps it fresh in the background while the client
    /// lives.
    pub(crate) async fn start(
        node: NodeClient<Channel>,
        keyspaces: KeyspacesClient<Channel>,
        max_message_bytes: usize,
    ) -> Result<Arc<Routing>, tonic::Status> {
        let routing = Arc::new(Routing {
            table: RwLock::new(Table::default()),
            channels: Mutex::new(HashMap::new()),
            frames: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            max_message_bytes,
        });
        routing.refresh(&node, &keyspaces).await?;
        let weak: Weak<Routing> = Arc::downgrade(&routing);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_INTERVAL).await;
                let Some(routing) = weak.upgrade() else {
                    return;
                };
                // A failed refresh keeps the previous table; routed calls that fail fall back
                // to the seed node.
                let _ = routing.refresh(&node, &keyspaces).await;
            }
        });
        Ok(routing)
    }

    async fn refresh(
        &self,
        node: &NodeClient<Channel>,
        keyspaces: &KeyspacesClient<Channel>,
    ) -> Result<(), tonic::Status> {
        let cluster = node
            .clone()
            .cluster(v1::ClusterRequest {})
            .await?
            .into_inner();
        let list = keyspaces
            .clone()
            .list_keyspaces(v1::ListKeyspacesRequest {})
            .await?
            .into_inner();
        let mut replicas: HashMap<GroupId, Vec<(String, Option<String>)>> = HashMap::new();
        for m in cluster.members.iter().filter(|m| m.ready) {
            // A server never sends a group beyond a u16; such a member is not routed to.
            let Ok(group) = GroupId::try_from(m.group) else {
                continue;
            };
            let frame = crate::frame_target(&m.grpc_addr, &m.frame_addr);
            replicas
                .entry(group)
                .or_default()
                .push((m.grpc_addr.clone(), frame));
        }
        let schemas = list
            .keyspaces
            .iter()
            .filter_map(|k| k.schema.as_ref())
            .filter_map(|s| schema_from_proto(s).ok())
            .map(|s| (s.name.clone(), s))
            .collect();
        let partitioner = u16::try_from(cluster.partition_count)
            .ok()
            .and_then(|c| Partitioner::new(c).ok());
        *self.table.write().expect("routing lock") = Table {
            partitioner,
            // One group beyond a u16 and nothing is routed: requests go to any node.
            assignment: cluster
                .assignment
                .into_iter()
                .map(|g| GroupId::try_from(g).ok())
                .collect::<Option<_>>()
                .unwrap_or_default(),
            replicas,
            schemas,
        };
        Ok(())
    }

    /// The partition of `key` in `keyspace`, when the client knows the keyspace.
    pub(crate) fn key_partition(&self, keyspace: &str, key: &[Element]) -> Option<PartitionId> {
        let table = self.table.read().expect("routing lock");
        let schema = table.schemas.get(keyspace)?;
        let encoded = schema.encode_key(key).ok()?;
        Some(table.partitioner?.partition_of(encoded.partition_key()))
    }

    /// The partition of a partition key (or a longer prefix) of `keyspace`.
    pub(crate) fn prefix_partition(
        &self,
        keyspace: &str,
        prefix: &[Element],
    ) -> Option<PartitionId> {
        let table = self.table.read().expect("routing lock");
        let schema = table.schemas.get(keyspace)?;
        let partition_key = prefix.get(..schema.partition_by)?;
        let encoded = schema.encode_prefix(partition_key).ok()?;
        Some(table.partitioner?.partition_of(&encoded))
    }

    /// The shard group of `p`.
    pub(crate) fn group_of(&self, p: PartitionId) -> Option<GroupId> {
        let table = self.table.read().expect("routing lock");
        table.assignment.get(usize::from(p.0)).copied()
    }

    /// A ready replica of `group` (round-robin), if one is known: its gRPC data client and
    /// its frame connection when it serves the frame protocol.
    pub(crate) fn replica(&self, group: GroupId) -> Option<Owner> {
        let (addr, frame_addr) = {
            let table = self.table.read().expect("routing lock");
            let replicas = table.replicas.get(&group).filter(|r| !r.is_empty())?;
            replicas[self.next.fetch_add(1, Ordering::Relaxed) % replicas.len()].clone()
        };
        let frame = frame_addr.map(|target| {
            let mut frames = self.frames.lock().expect("frame lock");
            frames
                .entry(target.clone())
                .or_insert_with(|| Arc::new(FrameClient::new(target, self.max_message_bytes)))
                .clone()
        });
        let channel = {
            let mut channels = self.channels.lock().expect("channel lock");
            match channels.get(&addr) {
                Some(c) => c.clone(),
                None => {
                    let channel = Endpoint::from_shared(format!("http://{addr}"))
                        .ok()?
                        .tcp_nodelay(true)
                        .connect_timeout(Duration::from_secs(2))
                        .connect_lazy();
                    channels.insert(addr, channel.clone());
                    channel
                }
            }
        };
        Some(Owner {
            data: DataClient::new(channel)
                .max_decoding_message_size(self.max_message_bytes)
                .max_encoding_message_size(self.max_message_bytes),
            frame,
        })
    }
}

/// A replica a routed call goes to.
pub(crate) struct Owner {
    pub(crate) data: DataClient<Channel>,
    pub(crate) frame: Option<Arc<FrameClient>>,
}
