//! A running server: a node, its gRPC API and its admin HTTP endpoints.

use crate::grpc::{CacheService, DataService, KeyspacesService, NodeService, TxnService};
use crate::route::Router;
use crate::topology::Topology;
use crate::{admin, frame, metrics, ServerConfig};
use notadb_cluster::{Advertised, Cluster, ClusterError};
use notadb_log::LogError;
use notadb_node::{Node, NodeBuilder, NodeError};
use notadb_proto::v1::cache_server::CacheServer;
use notadb_proto::v1::data_server::DataServer;
use notadb_proto::v1::keyspaces_server::KeyspacesServer;
use notadb_proto::v1::node_server::NodeServer;
use notadb_proto::v1::transactions_server::TransactionsServer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

/// Room for framing on top of the largest write a client may send.
const MESSAGE_SLACK: usize = 1 << 20;
/// Largest response (a scan of many large rows).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// A failure to start or stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The node refused to open (storage, log, configuration).
    #[error("{0}")]
    Node(#[from] NodeError),
    /// Joining the cluster failed.
    #[error("{0}")]
    Cluster(#[from] ClusterError),
    /// A listener could not bind its address.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address it was given.
        addr: SocketAddr,
        /// Why the bind failed.
        source: std::io::Error,
    },
    /// A cache loader's statement does not fit its database.
    #[error("{0}")]
    Loader(#[from] crate::pg_loader::LoaderError),
    /// The transmitter's configuration is wrong.
    #[error("transmitter: {0}")]
    Transmitter(String),
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

/// `EX_CONFIG` of sysexits(3): starting again unchanged fails again.
pub const EXIT_CONFIG: i32 = 78;
/// `EX_TEMPFAIL` of sysexits(3): a later start may work (a broker or database not reachable
/// yet, an address still in use).
pub const EXIT_TEMPFAIL: i32 = 75;
/// `EX_SOFTWARE` of sysexits(3): the node failed in a way that is a bug or corruption.
pub const EXIT_SOFTWARE: i32 = 70;

impl ServerError {
    /// The exit status of a server that could not start: [`EXIT_CONFIG`] for a permanent
    /// refusal (configuration, a data directory that does not go with its log, a loader's
    /// statement), [`EXIT_TEMPFAIL`] when a retry may work, [`EXIT_SOFTWARE`] for internal
    /// failures, 1 otherwise. Supervisors restart on the second and alert on the first.
    pub fn exit_code(&self) -> i32 {
        fn node(e: &NodeError) -> i32 {
            match e {
                NodeError::InvalidArgument(_)
                | NodeError::FailedPrecondition(_)
                | NodeError::NotFound(_)
                | NodeError::AlreadyExists(_) => EXIT_CONFIG,
                NodeError::Unavailable(_)
                | NodeError::DeadlineExceeded(_)
                | NodeError::ResourceExhausted(_) => EXIT_TEMPFAIL,
                NodeError::Internal(_) => EXIT_SOFTWARE,
            }
        }
        match self {
            ServerError::Node(e) | ServerError::Cluster(ClusterError::Node(e)) => node(e),
            ServerError::Cluster(ClusterError::Config(_))
            | ServerError::Cluster(ClusterError::Log(
                LogError::InvalidOptions(_) | LogError::PartitionCount { .. },
            )) => EXIT_CONFIG,
            ServerError::Cluster(_) | ServerError::Bind { .. } => EXIT_TEMPFAIL,
            ServerError::Loader(crate::pg_loader::LoaderError::Statement { .. })
            | ServerError::Transmitter(_) => EXIT_CONFIG,
            ServerError::Loader(_) => EXIT_TEMPFAIL,
            ServerError::Other(_) => 1,
        }
    }
}

/// A started server. Dropping it does not stop it: call `shutdown`.
pub struct Server {
    node: Node,
    cluster: Option<Arc<Cluster>>,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    frame_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    frame: Option<JoinHandle<()>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    admin: JoinHandle<std::io::Result<()>>,
    grace: Duration,
    transmitter_stop: watch::Sender<bool>,
    transmitter: Option<JoinHandle<()>>,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Server {
    /// Opens the node (the builder adds the service's keyspaces and handlers) and starts
    /// listening. Port 0 in the config picks a free port; see `grpc_addr`/`admin_addr`.
    pub async fn start(
        config: ServerConfig,
        customize: impl FnOnce(NodeBuilder) -> NodeBuilder,
    ) -> Result<Server, ServerError> {
        metrics::handle();
        let max_request = config.node.limits.max_batch_bytes + MESSAGE_SLACK;
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let grpc_listener = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.grpc_addr,
                source,
            })?;
        let admin_listener = TcpListener::bind(config.admin_addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.admin_addr,
                source,
            })?;
        let frame_listener = match config.frame_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?,
            ),
            None => None,
        };
        let frame_addr = frame_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()
            .map_err(|e| ServerError::Other(e.to_string()))?;
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(|e| ServerError::Other(e.to_string()))?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|e| ServerError::Other(e.to_string()))?;
        let mut loaders = Vec::new();
        for lc in &config.postgres_loaders {
            let loader = crate::pg_loader::PostgresLoader::new(lc.clone());
            loader.check().await?;
            loaders.push((lc.name.clone(), Arc::new(loader)));
        }
        let caches = config.caches.clone();
        let customize = move |mut builder: NodeBuilder| {
            // The built-ins first: a service's own procedure of the same name replaces one.
            builder = customize(builder.procedures(&notadb_node::builtin::procedures()));
            for (name, loader) in loaders {
                builder = builder.loader(name, loader);
            }
            for def in caches {
                builder = builder.cache(def);
            }
            builder
        };
        let (node, cluster) = match config.cluster.clone() {
            None => (customize(NodeBuilder::new(config.node)).open().await?, None),
            Some(cluster) => {
                let advertised = Advertised {
                    grpc_addr: cluster
                        .advertise_grpc_addr
                        .clone()
                        .unwrap_or_else(|| grpc_addr.to_string()),
                    admin_addr: cluster
                        .advertise_admin_addr
                        .clone()
                        .unwrap_or_else(|| admin_addr.to_string()),
                    frame_addr: cluster
                        .advertise_frame_addr
                        .clone()
                        .or_else(|| frame_addr.map(|a| a.to_string())),
                };
                let cluster = Cluster::start(cluster, config.node, advertised, customize).await?;
                (cluster.node().clone(), Some(Arc::new(cluster)))
            }
        };
        let (transmitter_stop, _) = watch::channel(false);
        let transmitter = match config.transmitter {
            Some(tc) => Some(
                crate::transmit::start(tc, &node, cluster.as_ref(), transmitter_stop.subscribe())
                    .await?,
            ),
            None => None,
        };
        let topology = Topology {
            node: node.clone(),
            cluster: cluster.clone(),
            grpc_addr: grpc_addr.to_string(),
            admin_addr: admin_addr.to_string(),
            frame_addr: frame_addr.map(|a| a.to_string()),
            transmitter: transmitter.as_ref().map(|(t, _)| t.clone()),
        };
        let router = Arc::new(Router::new(node.clone(), cluster.clone()));

        let (stop, _) = watch::channel(false);
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(notadb_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServerError::Other(format!("reflection: {e}")))?;
        let (health_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(crate::health::report(
            node.clone(),
            health_reporter,
            stop.subscribe(),
        ));
        let services = Arc::new(frame::Services {
            data: Arc::new(DataService::new(node.clone(), router.clone())),
            cache: Arc::new(CacheService::new(node.clone(), router)),
        });
        let grpc = tonic::transport::Server::builder()
            .timeout(Duration::from_secs(config.request_timeout_secs.max(1)))
            .max_concurrent_streams(Some(config.grpc_max_concurrent_streams.max(1)))
            .add_service(reflection)
            .add_service(health)
            .add_service(
                DataServer::from_arc(services.data.clone())
                    .max_decoding_message_size(max_request)
                    .max_encoding_message_size(MAX_RESPONSE_BYTES),
            )
            .add_service(
                CacheServer::from_arc(services.cache.clone())
                    .max_decoding_message_size(max_request)
                    .max_encoding_message_size(MAX_RESPONSE_BYTES),
            )
            .add_service(KeyspacesServer::new(KeyspacesService::new(node.clone())))
            .add_service(
                TransactionsServer::new(TxnService::new(node.clone()))
                    .max_decoding_message_size(max_request),
            )
            .add_service(NodeServer::new(NodeService::new(topology.clone())))
            .serve_with_incoming_shutdown(
                // Small responses must not wait on Nagle's algorithm (a 40 ms delayed-ACK stall).
                TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                stopped(stop.subscribe()),
            );
        let grpc = tokio::spawn(grpc);
        let frame = frame_listener.map(|listener| {
            let limits = frame::Limits {
                max_frame_bytes: max_request,
                max_in_flight: config.frame_max_in_flight.max(1),
            };
            tokio::spawn(frame::serve(listener, services, limits, stop.subscribe()))
        });
        let digest_every = Duration::from_millis(config.digest_min_interval_ms);
        let admin = axum::serve(admin_listener, admin::router(topology, digest_every))
            .with_graceful_shutdown(stopped(stop.subscribe()));
        let admin = tokio::spawn(async move { admin.await });
        tracing::info!(%grpc_addr, %admin_addr, frame_addr = ?frame_addr, "notadb serving");
        Ok(Server {
            node,
            cluster,
            grpc_addr,
            admin_addr,
            frame_addr,
            stop,
            frame,
            grpc,
            admin,
            grace,
            transmitter_stop,
            transmitter: transmitter.map(|(_, task)| task),
        })
    }

    /// The node behind the server.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The cluster this server's node joined, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Where gRPC listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where the frame protocol listens, when it does.
    pub fn frame_addr(&self) -> Option<SocketAddr> {
        self.frame_addr
    }

    /// Where the admin HTTP endpoints listen.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Stops accepting requests, lets in-flight ones finish (up to the grace period), then
    /// stops the node and makes its log and storage durable.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.stop.send_replace(true);
        let mut grpc = self.grpc;
        match tokio::time::timeout(self.grace, &mut grpc).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server task failed"),
            Err(_) => {
                tracing::warn!("in-flight requests did not finish within the grace period");
                // No request may reach the node after its log is flushed below.
                grpc.abort();
                let _ = grpc.await;
            }
        }
        if let Some(mut frame) = self.frame {
            // Connections answer what they have in flight, then close.
            if tokio::time::timeout(self.grace, &mut frame).await.is_err() {
                tracing::warn!("frame connections did not finish within the grace period");
                frame.abort();
                let _ = frame.await;
            }
        }
        let _ = tokio::time::timeout(self.grace, self.admin).await;
        self.transmitter_stop.send_replace(true);
        if let Some(task) = self.transmitter {
            // A batch in flight either commits or rolls back; its entries are read again.
            let _ = tokio::time::timeout(self.grace, task).await;
        }
        match &self.cluster {
            Some(cluster) => cluster.shutdown().await?,
            None => self.node.shutdown().await?,
        }
        Ok(())
    }

    /// Serves until SIGTERM or Ctrl-C, then shuts down.
    pub async fn run_until_signal(self) -> Result<(), ServerError> {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
