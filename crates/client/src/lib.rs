//! A Rust client for notadb's gRPC API, with typed keys.
//!
//! ```no_run
//! # async fn demo() -> Result<(), notadb_client::ClientError> {
//! use notadb_client::{Client, Element};
//! let client = Client::connect("http://127.0.0.1:7070").await?;
//! let token = client
//!     .put_json("items", &[Element::String("s1".into())], &serde_json::json!({"available": true}))
//!     .await?;
//! let value = client.get("items", &[Element::String("s1".into())], &[token]).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod cache;
mod frame;
mod routing;
mod txn;

pub use cache::{cache_key, cache_tuple_key};
use frame::{FrameClient, FrameError};
use notadb_proto::frame::Method;
use notadb_proto::tuple_from_proto;
pub use notadb_proto::v1 as proto;
use notadb_proto::v1::cache_client::CacheClient;
use notadb_proto::v1::data_client::DataClient;
use notadb_proto::v1::keyspaces_client::KeyspacesClient;
use notadb_proto::v1::node_client::NodeClient;
use notadb_proto::v1::transactions_client::TransactionsClient;
use notadb_proto::{schema_to_proto, token_from_proto, token_to_proto, tuple_to_proto, v1};
pub use notadb_types::{Element, KeyspaceSchema, PartitionId, Token};
use routing::Routing;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
pub use tonic::Code;
use tonic::Request;
pub use txn::txn_key;

/// A failed call: the server's status, or a connection problem.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server's answer (not a `source`: the message already says all of it).
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(tonic::Status),
    /// The client could not connect.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The address it tried.
        addr: String,
        /// Why it failed.
        source: tonic::transport::Error,
    },
    /// The client refused a request or an answer: a malformed address, an answer missing a
    /// part.
    #[error("{0}")]
    Invalid(String),
    /// A dependent transaction's reconnaissance went stale on every attempt.
    #[error("the transaction restarted {attempts} times (the last time because key {key} changed after reconnaissance); giving up")]
    Restarted {
        /// How many times it ran.
        attempts: usize,
        /// The position in the request's keys of the first key that changed, last time.
        key: u32,
    },
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> ClientError {
        ClientError::Status(status)
    }
}

impl ClientError {
    /// The gRPC code, when the server answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

fn code_name(code: tonic::Code) -> String {
    let name = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// A connection to one notadb node. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Client {
    data: DataClient<Channel>,
    cache: CacheClient<Channel>,
    keyspaces: KeyspacesClient<Channel>,
    node: NodeClient<Channel>,
    txn: TransactionsClient<Channel>,
    timeout: Option<Duration>,
    routing: Option<Arc<Routing>>,
    /// The node's frame protocol endpoint, when it offers one: the hot calls go there.
    frame: Option<Arc<FrameClient>>,
}

impl std::fmt::Debug for FrameClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FrameClient({})", self.addr())
    }
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Routing")
    }
}

/// Largest message the client sends or accepts.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// `addr` as a URL: `host:port` gets `http://`.
fn grpc_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Where to reach a node's frame listener: its advertised address, with the host the client
/// used for gRPC when the node listens on every interface.
pub(crate) fn frame_target(grpc_url: &str, advertised: &str) -> Option<String> {
    if advertised.is_empty() {
        return None;
    }
    match advertised.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let authority = grpc_url.split("://").nth(1).unwrap_or(grpc_url);
            let authority = authority.split('/').next().unwrap_or(authority);
            let host = authority
                .rsplit_once(':')
                .map_or(authority, |(host, _)| host);
            Some(format!("{host}:{}", a.port()))
        }
        _ => Some(advertised.to_string()),
    }
}

impl Client {
    /// Connects to `addr` (`http://host:port` or `host:port`). When the node serves the frame
    /// protocol (its `Status` says where), the hot calls (reads, writes, cache calls) use it
    /// and everything else uses gRPC; `connect_grpc` uses gRPC alone.
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        let mut client = Client::connect_grpc(addr).await?;
        let status = client
            .node
            .clone()
            .status(client.request(v1::StatusRequest {}))
            .await?
            .into_inner();
        let url = grpc_url(addr);
        client.frame = frame_target(&url, &status.frame_addr)
            .map(|target| Arc::new(FrameClient::new(target, MAX_MESSAGE_BYTES)));
        Ok(client)
    }

    /// Connects to `addr` and speaks gRPC only (the portable API every language has).
    pub async fn connect_grpc(addr: &str) -> Result<Client, ClientError> {
        let url = grpc_url(addr);
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| ClientError::Invalid(format!("address `{addr}`: {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect { addr: url, source })?;
        Ok(Client {
            data: DataClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            cache: CacheClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            keyspaces: KeyspacesClient::new(channel.clone()),
            txn: TransactionsClient::new(channel.clone())
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            node: NodeClient::new(channel),
            timeout: None,
            routing: None,
            frame: None,
        })
    }

    /// The transport of the hot calls: `"frame"` or `"grpc"`.
    pub fn transport(&self) -> &'static str {
        if self.frame.is_some() {
            "frame"
        } else {
            "grpc"
        }
    }

    /// Sends a hot call over the frame protocol when the node offers it (and it can be
    /// reached), else over gRPC with `grpc`.
    pub(crate) async fn hot<M, T, F, Fut>(
        &self,
        method: Method,
        message: M,
        grpc: F,
    ) -> Result<T, ClientError>
    where
        M: prost::Message,
        T: prost::Message + Default,
        F: FnOnce(Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        Ok(self
            .over(self.frame.as_deref(), method, message, grpc)
            .await?)
    }

    /// Sends a call over `frame` when there is one and it is connected, else over gRPC.
    async fn over<M, T, F, Fut>(
        &self,
        frame: Option<&FrameClient>,
        method: Method,
        message: M,
        grpc: F,
    ) -> Result<T, tonic::Status>
    where
        M: prost::Message,
        T: prost::Message + Default,
        F: FnOnce(Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        if let Some(frame) = frame {
            match frame.call(method, &message, self.timeout).await {
                Ok(answer) => return Ok(answer),
                Err(FrameError::Call(status)) => return Err(status),
                Err(FrameError::NotConnected) => {}
            }
        }
        Ok(grpc(self.request(message)).await?.into_inner())
    }

    /// Connects to `addr` and routes reads straight to a ready replica of the shard group
    /// that owns their partition, from the cluster's routing table (read through `addr`, and
    /// again every two seconds). Writes, requests over many groups, and routed calls that
    /// find their replica unavailable go to `addr`, which forwards them.
    pub async fn connect_routed(addr: &str) -> Result<Client, ClientError> {
        let mut client = Client::connect(addr).await?;
        let routing = Routing::start(
            client.node.clone(),
            client.keyspaces.clone(),
            MAX_MESSAGE_BYTES,
        )
        .await?;
        client.routing = Some(routing);
        Ok(client)
    }

    /// Whether reads are routed to owner replicas (`connect_routed`).
    pub fn is_routed(&self) -> bool {
        self.routing.is_some()
    }

    /// A ready replica owning `p`, when routing knows one.
    fn owner(&self, p: Option<PartitionId>) -> Option<routing::Owner> {
        let routing = self.routing.as_ref()?;
        routing.replica(routing.group_of(p?)?)
    }

    /// Sends `message` to an owner replica of `partition` when routed, else (or when that
    /// replica is unavailable) to the node the client connected to.
    async fn call<M, T, F, Fut>(
        &self,
        method: Method,
        partition: Option<PartitionId>,
        message: M,
        send: F,
    ) -> Result<T, ClientError>
    where
        M: Clone + prost::Message,
        T: prost::Message + Default,
        F: Fn(DataClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        if let Some(owner) = self.owner(partition) {
            // An unavailable replica sends the call to `addr`.
            let data = owner.data;
            match self
                .over(owner.frame.as_deref(), method, message.clone(), |r| {
                    send(data, r)
                })
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(status) if status.code() == Code::Unavailable => {}
                Err(status) => return Err(status.into()),
            }
        }
        self.hot(method, message, |r| send(self.data.clone(), r))
            .await
    }

    fn key_partition(&self, keyspace: &str, key: &[Element]) -> Option<PartitionId> {
        self.routing.as_ref()?.key_partition(keyspace, key)
    }

    fn prefix_partition(&self, keyspace: &str, prefix: Option<&v1::Tuple>) -> Option<PartitionId> {
        let routing = self.routing.as_ref()?;
        let prefix = tuple_from_proto(prefix, "prefix").ok()?;
        routing.prefix_partition(keyspace, &prefix)
    }

    /// Sets a deadline on every call (sent as `grpc-timeout`).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(t) = self.timeout {
            request.set_timeout(t);
        }
        request
    }

    /// Creates a keyspace.
    pub async fn create_keyspace(
        &self,
        schema: &KeyspaceSchema,
        if_not_exists: bool,
    ) -> Result<v1::KeyspaceInfo, ClientError> {
        let r = self
            .keyspaces
            .clone()
            .create_keyspace(self.request(v1::CreateKeyspaceRequest {
                schema: Some(schema_to_proto(schema)),
                if_not_exists,
            }))
            .await?;
        r.into_inner()
            .keyspace
            .ok_or_else(|| ClientError::Invalid("server returned no keyspace".into()))
    }

    /// Lists keyspaces.
    pub async fn list_keyspaces(&self) -> Result<Vec<v1::KeyspaceInfo>, ClientError> {
        Ok(self
            .keyspaces
            .clone()
            .list_keyspaces(self.request(v1::ListKeyspacesRequest {}))
            .await?
            .into_inner()
            .keyspaces)
    }

    /// Describes one keyspace.
    pub async fn describe_keyspace(&self, name: &str) -> Result<v1::KeyspaceInfo, ClientError> {
        let r = self
            .keyspaces
            .clone()
            .describe_keyspace(self.request(v1::DescribeKeyspaceRequest { name: name.into() }))
            .await?;
        r.into_inner()
            .keyspace
            .ok_or_else(|| ClientError::Invalid("server returned no keyspace".into()))
    }

    /// Drops a keyspace.
    pub async fn drop_keyspace(&self, name: &str) -> Result<(), ClientError> {
        self.keyspaces
            .clone()
            .drop_keyspace(self.request(v1::DropKeyspaceRequest { name: name.into() }))
            .await?;
        Ok(())
    }

    fn token(response: v1::WriteResponse) -> Result<Token, ClientError> {
        let token = response
            .token
            .ok_or_else(|| ClientError::Invalid("server returned no token".into()))?;
        token_from_proto(&token).map_err(|e| ClientError::Invalid(e.0))
    }

    /// Puts a value (bytes or JSON text, see `proto::Value`).
    pub async fn put(
        &self,
        keyspace: &str,
        key: &[Element],
        value: v1::Value,
    ) -> Result<Token, ClientError> {
        let request = v1::PutRequest {
            keyspace: keyspace.into(),
            key: Some(tuple_to_proto(key)),
            value: Some(value),
        };
        let mut data = self.data.clone();
        Self::token(
            self.hot(Method::Put, request, |r| async move { data.put(r).await })
                .await?,
        )
    }

    /// Puts a JSON value.
    pub async fn put_json(
        &self,
        keyspace: &str,
        key: &[Element],
        value: &serde_json::Value,
    ) -> Result<Token, ClientError> {
        self.put(keyspace, key, json_value(value)).await
    }

    /// Deletes a key.
    pub async fn delete(&self, keyspace: &str, key: &[Element]) -> Result<Token, ClientError> {
        let request = v1::DeleteRequest {
            keyspace: keyspace.into(),
            key: Some(tuple_to_proto(key)),
        };
        let mut data = self.data.clone();
        Self::token(
            self.hot(
                Method::Delete,
                request,
                |r| async move { data.delete(r).await },
            )
            .await?,
        )
    }

    /// Deletes a range inside one partition key.
    pub async fn delete_range(
        &self,
        keyspace: &str,
        range: v1::Range,
    ) -> Result<Token, ClientError> {
        let request = v1::DeleteRangeRequest {
            keyspace: keyspace.into(),
            range: Some(range),
        };
        let mut data = self.data.clone();
        Self::token(
            self.hot(Method::DeleteRange, request, |r| async move {
                data.delete_range(r).await
            })
            .await?,
        )
    }

    /// An atomic batch of mutations in one partition.
    pub async fn write(&self, mutations: Vec<v1::Mutation>) -> Result<Token, ClientError> {
        let mut data = self.data.clone();
        let request = v1::WriteRequest { mutations };
        Self::token(
            self.hot(
                Method::Write,
                request,
                |r| async move { data.write(r).await },
            )
            .await?,
        )
    }

    /// The value of a key, after the given writes.
    pub async fn get(
        &self,
        keyspace: &str,
        key: &[Element],
        tokens: &[Token],
    ) -> Result<Option<v1::Value>, ClientError> {
        let request = v1::GetRequest {
            keyspace: keyspace.into(),
            key: Some(tuple_to_proto(key)),
            tokens: tokens.iter().copied().map(token_to_proto).collect(),
        };
        let p = self.key_partition(keyspace, key);
        let r = self
            .call(
                Method::Get,
                p,
                request,
                |mut c, r| async move { c.get(r).await },
            )
            .await?;
        Ok(if r.found { r.value } else { None })
    }

    /// The values of many keys, in order.
    pub async fn multi_get(
        &self,
        keyspace: &str,
        keys: &[Vec<Element>],
        tokens: &[Token],
    ) -> Result<Vec<Option<v1::Value>>, ClientError> {
        let request = v1::MultiGetRequest {
            keyspace: keyspace.into(),
            keys: keys.iter().map(|k| tuple_to_proto(k)).collect(),
            tokens: tokens.iter().copied().map(token_to_proto).collect(),
        };
        // Routed only when every key falls in one shard group.
        let groups: Option<Vec<notadb_types::GroupId>> = keys
            .iter()
            .map(|k| {
                let routing = self.routing.as_ref()?;
                routing.group_of(routing.key_partition(keyspace, k)?)
            })
            .collect();
        let p = match groups.as_deref() {
            Some([g, rest @ ..]) if rest.iter().all(|x| x == g) => {
                self.key_partition(keyspace, &keys[0])
            }
            _ => None,
        };
        let r = self
            .call(Method::MultiGet, p, request, |mut c, r| async move {
                c.multi_get(r).await
            })
            .await?;
        Ok(r.results
            .into_iter()
            .map(|g| if g.found { g.value } else { None })
            .collect())
    }

    /// A scan.
    pub async fn scan(&self, request: v1::ScanRequest) -> Result<v1::ScanResponse, ClientError> {
        let prefix = request.range.as_ref().and_then(|r| r.prefix.as_ref());
        let p = self.prefix_partition(&request.keyspace, prefix);
        self.call(Method::Scan, p, request, |mut c, r| async move {
            c.scan(r).await
        })
        .await
    }

    /// An aggregate.
    pub async fn aggregate(
        &self,
        request: v1::AggregateRequest,
    ) -> Result<v1::AggregateResponse, ClientError> {
        let prefix = request.range.as_ref().and_then(|r| r.prefix.as_ref());
        let p = self.prefix_partition(&request.keyspace, prefix);
        self.call(Method::Aggregate, p, request, |mut c, r| async move {
            c.aggregate(r).await
        })
        .await
    }

    /// Calls a registered query handler.
    pub async fn query(
        &self,
        name: &str,
        keyspace: &str,
        partition_key: &[Element],
        args: &serde_json::Value,
        tokens: &[Token],
    ) -> Result<serde_json::Value, ClientError> {
        let text = self
            .query_text(name, keyspace, partition_key, args, tokens)
            .await?;
        serde_json::from_str(&text).map_err(|e| ClientError::Invalid(format!("result_json: {e}")))
    }

    /// `query`'s answer as the JSON text the node sent (one JSON value), unparsed: for a
    /// caller that passes it on, or reads it into its own types.
    pub async fn query_text(
        &self,
        name: &str,
        keyspace: &str,
        partition_key: &[Element],
        args: &serde_json::Value,
        tokens: &[Token],
    ) -> Result<String, ClientError> {
        let request = v1::QueryRequest {
            name: name.into(),
            keyspace: keyspace.into(),
            partition_key: Some(tuple_to_proto(partition_key)),
            args_json: args.to_string(),
            tokens: tokens.iter().copied().map(token_to_proto).collect(),
        };
        let p = self
            .routing
            .as_ref()
            .and_then(|r| r.prefix_partition(keyspace, partition_key));
        let r = self
            .call(Method::Query, p, request, |mut c, r| async move {
                c.query(r).await
            })
            .await?;
        Ok(r.result_json)
    }

    /// The routing table as the connected node sees it.
    pub async fn cluster(&self) -> Result<v1::ClusterResponse, ClientError> {
        Ok(self
            .node
            .clone()
            .cluster(self.request(v1::ClusterRequest {}))
            .await?
            .into_inner())
    }

    /// Waits until every token's write is in PostgreSQL (the node's transmitter committed
    /// past it), or `timeout` passes (`DEADLINE_EXCEEDED`).
    pub async fn transmitter_flush(
        &self,
        tokens: &[Token],
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let request = v1::TransmitterFlushRequest {
            tokens: tokens.iter().map(|t| token_to_proto(*t)).collect(),
            timeout_ms: timeout.as_millis().max(1) as u64,
        };
        let mut request = self.request(request);
        request.set_timeout(timeout + Duration::from_secs(5));
        self.node.clone().transmitter_flush(request).await?;
        Ok(())
    }

    /// The node's status.
    pub async fn status(&self) -> Result<v1::StatusResponse, ClientError> {
        Ok(self
            .node
            .clone()
            .status(self.request(v1::StatusRequest {}))
            .await?
            .into_inner())
    }
}

/// A JSON value message.
pub fn json_value(value: &serde_json::Value) -> v1::Value {
    v1::Value {
        kind: Some(v1::value::Kind::Json(value.to_string())),
    }
}

/// A tuple message from typed elements.
pub fn tuple(elements: &[Element]) -> v1::Tuple {
    tuple_to_proto(elements)
}

/// A range message: keys starting with `prefix`.
pub fn prefix_range(prefix: &[Element]) -> v1::Range {
    v1::Range {
        prefix: Some(tuple_to_proto(prefix)),
        start: None,
        end: None,
    }
}

/// The value's bytes (JSON text for JSON keyspaces).
pub fn value_bytes(value: &v1::Value) -> &[u8] {
    match &value.kind {
        Some(v1::value::Kind::Bytes(b)) => b,
        Some(v1::value::Kind::Json(s)) => s.as_bytes(),
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_print_like_grpc() {
        let e = ClientError::Status(tonic::Status::invalid_argument("key: bad"));
        assert_eq!(e.to_string(), "INVALID_ARGUMENT: key: bad");
        assert_eq!(
            code_name(tonic::Code::DeadlineExceeded),
            "DEADLINE_EXCEEDED"
        );
    }
}
