//! The Weir broker: gRPC services over the replicated log, the controller, configuration and
//! graceful shutdown.
//!
//! [`Broker::start`] binds the listener, opens the node's databases under the data directory,
//! starts the controller and the partition replicas assigned to the node, and serves
//! `weir.v1.Broker`, gRPC health checking and server reflection (v1 and v1alpha) until
//! [`Broker::shutdown`].

mod admission;
mod beside_tonic;
mod budgets;
mod config;
mod disk;
mod error;
pub mod fault_injection;
mod fetch_answer;
mod groups;
mod memory;
mod metadata;
mod metrics;
mod modules;
mod node;
mod retention;
mod security;
mod service;
mod stall;
mod storage_failure;
mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tracing::Instrument;
use weir_proto::v1::broker_server::BrokerServer;
use weir_raft::Peers;

pub use config::{
    BrokerConfig, ConfigError, DiskSettings, GroupSettings, Limits, ModuleLimits, Peer,
    ProducerSettings, RaftTimings, RetentionSettings, TopicConfigValue,
};
pub use error::{BrokerError, RejectedRecord};
pub use security::{BootstrapUser, SecuritySettings};
pub use tls::{ClientAuth, TlsError, TlsSettings};

use crate::admission::{Admission, AdmissionLayer, AdmissionLimits, MIN_RECORD_BYTES};
use crate::beside_tonic::BesideTonic;
use crate::metrics::{Metrics, RequestMetrics};
use crate::node::Node;
use crate::security::Security;
use crate::service::BrokerService;
use crate::stall::StallWatch;
use crate::storage_failure::StorageFailure;

/// Largest gRPC response sent; above the largest fetch response.
const MAX_RESPONSE_BYTES: usize = 320 * 1024 * 1024;

/// The largest HTTP/2 frame a client or peer may send this node (HTTP/2's default is 16 KiB).
/// A record batch of up to 1 MiB then mostly arrives within one frame, which `Produce` shares
/// rather than copies ([`beside_tonic`]), and peers' AppendEntries come in a few frames rather
/// than one per 16 KiB (broker CPU per record −10 to −13% with 1 MiB batches). A frame of a
/// large request delays other requests on its connection for as long as it takes to arrive.
const MAX_FRAME_BYTES: u32 = 1 << 20;

/// HTTP/2 streams a connection may reset before the server accepted them, after which the
/// connection is closed (GOAWAY `ENHANCE_YOUR_CALM`). h2's default, 20, is a guard against the
/// "rapid reset" attack; but a node that stalls (a pause, a slow disk, a starved host) finds,
/// when it resumes, every request its peers and clients gave up on meanwhile reset in bulk,
/// and closing the connection then fails every request still waiting on it. Resets stay
/// bounded per connection.
const PENDING_RESET_STREAMS: usize = 1024;
/// How long [`Broker::shutdown`] waits for the tasks that still hold a database to let go.
const CLOSE_FILES_WITHIN: Duration = Duration::from_secs(10);

/// Log events the broker's command line suppressed as repeats (openraft's warnings about an
/// unreachable peer, once per group and heartbeat), exposed as
/// `weir_log_events_suppressed_total`.
pub static SUPPRESSED_LOG_EVENTS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// The broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A TLS file is missing, not PEM, or its key does not match its certificate.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A database could not be opened.
    #[error(transparent)]
    Storage(#[from] weir_storage::OpenError),
    /// A raft group could not be started.
    #[error(transparent)]
    Raft(#[from] weir_raft::StartError),
    /// The controller or a partition did not become available.
    #[error("replication did not become available")]
    Replica(#[source] weir_raft::ReplicaError),
    /// The configured peers are not the cluster's controller voters.
    #[error(
        "configured peers {configured:?} disagree with the cluster's controller voters {cluster:?}; give every node the same --peers list"
    )]
    PeersDisagree {
        /// Node ids in this node's configuration.
        configured: Vec<weir_raft::NodeId>,
        /// Node ids of the controller's membership.
        cluster: Vec<weir_raft::NodeId>,
    },
    /// Registering the node or starting its partitions failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A running broker.
pub struct Broker {
    node: Arc<Node>,
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    metrics_addr: Option<SocketAddr>,
    storage_failure: StorageFailure,
    /// Warns when the runtime runs no task for a while; ends with the broker.
    _stall_watch: StallWatch,
}

impl Broker {
    /// Validates `config`, starts the node and serves gRPC. Returns once the broker accepts
    /// requests and every assigned partition has been recovered.
    pub async fn start(config: BrokerConfig) -> Result<Self, StartError> {
        let span = tracing::info_span!("broker", node_id = config.node_id);
        Self::start_in_span(config).instrument(span).await
    }

    async fn start_in_span(config: BrokerConfig) -> Result<Self, StartError> {
        config.validate()?;
        let runtime_stalls = prometheus_client::metrics::counter::Counter::default();
        let stall_watch = StallWatch::start(runtime_stalls.clone()).map_err(|e| {
            BrokerError::Internal(format!("cannot start the runtime stall watchdog: {e}"))
        })?;
        let tls = config.tls.load()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let address = config.address(local_addr);
        tracing::info!(%local_addr, data_dir = %config.data_dir.display(), tls = tls.is_some(), authorization = config.security.authorization, "starting broker");
        let warnings =
            security::exposure_warnings(local_addr, tls.is_some(), config.security.authorization);
        for warning in &warnings {
            tracing::warn!("{warning} (docs/security.md)");
        }
        let cluster_secret = config
            .security
            .cluster_secret_file
            .as_deref()
            .map(security::read_cluster_secret)
            .transpose()
            .map_err(ConfigError::Invalid)?;
        let security = Arc::new(
            Security::new(&config.security, &config.tls, cluster_secret.clone())
                .map_err(BrokerError::Internal)?,
        );
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

        // Serve before the node is up: a starting node takes part in elections through the
        // same port. Client requests get UNAVAILABLE until the node is ready.
        let shutdown = CancellationToken::new();
        let peers = Peers::new();
        if let Some(peer_tls) = tls.as_ref().and_then(tls::TlsMaterial::peers) {
            peers.set_tls(peer_tls);
        }
        if let Some(secret) = &cluster_secret {
            peers
                .set_cluster_secret(secret)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        let mut server_builder = tonic::transport::Server::builder();
        if let Some(tls) = &tls {
            server_builder = server_builder
                .tls_config(tls.server())
                .map_err(|e| StartError::Tls(TlsError::Config(e)))?;
        }
        let node_cell = Arc::new(OnceLock::new());
        let request_metrics = RequestMetrics::shared();
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_not_serving::<BrokerServer<BrokerService>>()
            .await;
        // Both reflection versions: grpcurl and other current tools speak v1, older grpcurl,
        // Postman and Evans only v1alpha.
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(weir_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| BrokerError::Internal(format!("reflection service: {e}")))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(weir_proto::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| BrokerError::Internal(format!("reflection service: {e}")))?;
        let limits = &config.limits;
        let max_request_bytes = limits.max_request_bytes(&config.modules);
        let admission = Admission::new(AdmissionLimits {
            max_request_bytes,
            max_peer_request_bytes: weir_raft::MAX_PEER_MESSAGE_BYTES,
            node_bytes: limits.max_request_bytes_in_flight,
            connection_bytes: limits.max_connection_bytes_in_flight,
            peer_bytes: 2 * weir_raft::MAX_PEER_MESSAGE_BYTES,
            max_produce_records: limits.max_batch_bytes / MIN_RECORD_BYTES,
        });
        let service = Arc::new(BrokerService::new(
            node_cell.clone(),
            request_metrics.clone(),
            security.clone(),
        ));
        let broker = BesideTonic::new(
            BrokerServer::from_arc(service.clone())
                .max_decoding_message_size(max_request_bytes)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
            service,
            MAX_RESPONSE_BYTES,
        );
        // Small produce requests must not wait for Nagle's algorithm and delayed ACKs: without
        // TCP_NODELAY a ~100 KiB request gained ~40 ms of latency.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let stop = shutdown.clone();
        let server = tokio::spawn(
            server_builder
                .max_frame_size(Some(MAX_FRAME_BYTES))
                .max_concurrent_streams(limits.max_concurrent_requests_per_connection)
                .http2_max_pending_accept_reset_streams(Some(PENDING_RESET_STREAMS))
                .layer(AdmissionLayer::new(admission.clone()))
                .add_service(health_service)
                .add_service(reflection)
                .add_service(reflection_v1alpha)
                .add_service(InterceptedService::new(
                    peers.service(),
                    security.peer_guard(),
                ))
                .add_service(broker)
                .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await }),
        );

        let storage_failure = StorageFailure::default();
        let node = match Node::start(
            config,
            address,
            warnings,
            peers,
            shutdown.clone(),
            storage_failure.clone(),
        )
        .await
        {
            Ok(node) => node,
            Err(e) => {
                shutdown.cancel();
                let _ = server.await;
                return Err(e);
            }
        };
        let _ = node_cell.set(node.clone());
        health.set_serving::<BrokerServer<BrokerService>>().await;
        if let Some(listener) = metrics_listener {
            let metrics = Arc::new(Metrics::new(
                &node,
                &request_metrics,
                &admission,
                security.audit(),
                &runtime_stalls,
            ));
            tokio::spawn(metrics::serve(listener, metrics, shutdown.clone()));
        }
        tracing::info!("broker ready");
        Ok(Self {
            node,
            local_addr,
            shutdown,
            server,
            metrics_addr,
            storage_failure,
            _stall_watch: stall_watch,
        })
    }

    /// Resolves when one of the node's log databases failed to commit (an fsync error, a full
    /// disk); says which and why. From then on the node acknowledges nothing: the caller must
    /// [`Broker::shutdown`] and let the process end, so it restarts from what is durable
    /// (`weir broker` exits with status 1).
    pub async fn storage_failed(&self) -> String {
        self.storage_failure.wait().await
    }

    /// The address the gRPC server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the metrics endpoint is bound to, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting requests, ends streams, stops every raft group and flushes the
    /// databases. Acknowledged data was durable before it was acknowledged; this only makes
    /// the next start faster.
    ///
    /// Returns once the database files are closed, so that they can be opened again at once
    /// (by a broker started in this process, or by another): the tasks that still held them
    /// (raft's state machine workers, the node's background tasks) end on their own shortly
    /// after the raft groups stop. If one has not let go after [`CLOSE_FILES_WITHIN`], this
    /// warns and returns anyway.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        let Self {
            node,
            shutdown,
            server,
            ..
        } = self;
        shutdown.cancel();
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
        }
        let databases = node.databases_closed();
        node.stop().await;
        drop(node);
        let _ = tokio::task::spawn_blocking(move || {
            for (path, closed) in databases {
                if !closed.wait(CLOSE_FILES_WITHIN) {
                    tracing::warn!(
                        path = %path.display(),
                        "the database is still open {}s after the node stopped; a task \
                         holds it",
                        CLOSE_FILES_WITHIN.as_secs()
                    );
                }
            }
        })
        .await;
        tracing::info!("shut down");
    }
}

/// Locks `m`, taking a poisoned lock as it is. For locks whose sections only move whole values
/// in and out (of maps, queues), so that a panic under them cannot leave the state half-updated.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
