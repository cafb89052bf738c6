//! The transport between nodes: one pooled gRPC channel per peer carrying every group's raft
//! messages, tagged by group id (DESIGN §4), and the receiving side that routes them to the
//! local group.
//!
//! Raft payloads are openraft's own serde types encoded with postcard (compact, and record
//! batches travel as length-prefixed bytes). A message for a group this node does not run (yet)
//! is answered `NOT_FOUND`, which the sender treats as an unreachable peer and retries with
//! backoff: replicas of a new partition start on their own schedule. So is an AppendEntries
//! with entries that the node's [`EntryGate`] holds back (its disk is below its reserve): the
//! leader backs off and sends them again, and heartbeats still pass, so the replica keeps its
//! leader and catches up once the gate opens.
//!
//! Besides every group's raft messages, each node sends each peer one node-level heartbeat per
//! interval, for all the partitions they share ([`crate::liveness`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, OptionalSend, Raft};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};
use weir_proto::internal::raft_client::RaftClient;
use weir_proto::internal::raft_server::{Raft as RaftService, RaftServer};
use weir_proto::internal::{
    ControllerProposal, ControllerReply, GroupLeadership, NodeHeartbeat, NodeHeartbeatReply,
    RaftRequest, RaftResponse, raft_response,
};
use weir_storage::GroupId;

use crate::config::GroupTimings;
use crate::error::ReplicaError;
use crate::liveness::{GroupTimers, HeartbeatDue, Leadership, Liveness, MAX_LEADS_PER_HEARTBEAT};
use crate::types::{NodeId, Snapshot, SnapshotBytes, SnapshotMeta, TypeConfig, Vote};

/// An AppendEntries without entries (a heartbeat: vote, log ids, commit index) encodes in far
/// fewer bytes than this; a larger one carries entries.
const HEARTBEAT_MAX_BYTES: usize = 1024;

/// Largest message between nodes; AppendEntries are bounded well below it by bytes.
pub const MAX_PEER_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// The request metadata carrying the cluster secret on every request a node sends another.
pub const CLUSTER_SECRET_METADATA: &str = "weir-cluster-secret";

/// A channel to a peer that marks every request with the cluster secret, when the node has
/// one; for the raft service and for the client API alike (requests a node forwards).
pub type PeerChannel = InterceptedService<Channel, ClusterSecret>;

/// Adds the cluster secret to a request's metadata.
#[derive(Clone, Default)]
pub struct ClusterSecret(Option<MetadataValue<Ascii>>);

impl Interceptor for ClusterSecret {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(secret) = &self.0 {
            request
                .metadata_mut()
                .insert(CLUSTER_SECRET_METADATA, secret.clone());
        }
        Ok(request)
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The receiving end of one local group, whatever its state machine.
trait GroupEndpoint: Send + Sync {
    fn append_entries(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> BoxFuture<'_, Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>>;
    fn vote(
        &self,
        rpc: VoteRequest<TypeConfig>,
    ) -> BoxFuture<'_, Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>>;
    fn pre_vote(
        &self,
        rpc: VoteRequest<TypeConfig>,
    ) -> BoxFuture<'_, Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>>;
    fn install_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
    ) -> BoxFuture<'_, Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>>;
    /// Turns the group's raft timer (elections and heartbeats) on or off.
    fn set_ticking(&self, on: bool);
    /// Starts a pre-vote round now, if this node is a voter and does not lead.
    fn campaign(&self) -> BoxFuture<'_, Result<(), Fatal<TypeConfig>>>;
    /// Sends one raft heartbeat to every follower now, if this node leads.
    fn remind(&self) -> BoxFuture<'_, Result<(), Fatal<TypeConfig>>>;
    /// How many of the group's entries this node knows committed: its commit index + 1, 0
    /// when it knows none.
    fn committed(&self) -> u64;
}

impl<SM> GroupEndpoint for Raft<TypeConfig, SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotBytes>,
{
    fn append_entries(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> BoxFuture<'_, Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>> {
        Box::pin(Raft::append_entries(self, rpc))
    }

    fn vote(
        &self,
        rpc: VoteRequest<TypeConfig>,
    ) -> BoxFuture<'_, Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>> {
        Box::pin(Raft::vote(self, rpc))
    }

    fn pre_vote(
        &self,
        rpc: VoteRequest<TypeConfig>,
    ) -> BoxFuture<'_, Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>> {
        Box::pin(Raft::pre_vote(self, rpc))
    }

    fn install_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
    ) -> BoxFuture<'_, Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>> {
        Box::pin(Raft::install_full_snapshot(self, vote, snapshot))
    }

    fn set_ticking(&self, on: bool) {
        self.runtime_config().tick(on);
    }

    fn campaign(&self) -> BoxFuture<'_, Result<(), Fatal<TypeConfig>>> {
        Box::pin(async move { self.trigger().elect(true).await })
    }

    fn remind(&self) -> BoxFuture<'_, Result<(), Fatal<TypeConfig>>> {
        Box::pin(async move { self.trigger().heartbeat().await })
    }

    fn committed(&self) -> u64 {
        self.metrics()
            .borrow_watched()
            .local_committed
            .map_or(0, |committed| committed.index + 1)
    }
}

/// Says, for a group, why this node takes no new log entries for now (`None`: it takes them).
pub type EntryGate = Arc<dyn Fn(GroupId) -> Option<String> + Send + Sync>;

/// Proposes an encoded controller command on this node's controller leader.
pub(crate) type ControllerProposer =
    Arc<dyn Fn(Bytes) -> BoxFuture<'static, Result<Bytes, ReplicaError>> + Send + Sync>;

#[derive(Default)]
struct Shared {
    /// How this node reaches a peer, when it differs from the address in the group membership
    /// (for example through a proxy or a NAT).
    routes: RwLock<HashMap<NodeId, String>>,
    channels: RwLock<HashMap<String, Channel>>,
    groups: RwLock<HashMap<GroupId, Arc<dyn GroupEndpoint>>>,
    controller: RwLock<Option<ControllerProposer>>,
    entry_gate: RwLock<Option<EntryGate>>,
    /// How peers are dialled when the node has TLS: the CA their certificates must chain to and
    /// this node's own certificate, presented as a client certificate.
    tls: RwLock<Option<ClientTlsConfig>>,
    /// The secret shown to peers on every request, if the cluster has one.
    secret: RwLock<ClusterSecret>,
    /// The node-level heartbeats, once this node runs a group.
    liveness: OnceLock<Arc<Liveness>>,
    /// Whether this node has started every partition replica assigned to it (see
    /// [`Peers::set_serving`]); its heartbeats say so.
    serving: AtomicBool,
}

/// A node's transport: outgoing channels to peers (one per address, shared by every group) and
/// the routing of incoming messages to local groups. Cloning shares it.
#[derive(Clone, Default)]
pub struct Peers {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").finish_non_exhaustive()
    }
}

impl Peers {
    /// An empty transport.
    pub fn new() -> Self {
        Self::default()
    }

    /// The gRPC service that receives other nodes' raft messages; serve it beside the client
    /// API.
    pub fn service(&self) -> RaftServer<impl RaftService + use<>> {
        RaftServer::new(Receiver {
            peers: self.clone(),
        })
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
    }

    /// Dials every peer over TLS with `tls` from now on. Set it before the first channel is
    /// made: channels already pooled keep their transport.
    pub fn set_tls(&self, tls: ClientTlsConfig) {
        *write(&self.shared.tls) = Some(tls);
    }

    /// Shows `secret` to peers on every request from now on (printable ASCII).
    pub fn set_cluster_secret(&self, secret: &str) -> Result<(), io::Error> {
        let mut value: MetadataValue<Ascii> = secret.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the cluster secret must be printable ASCII",
            )
        })?;
        value.set_sensitive(true);
        *write(&self.shared.secret) = ClusterSecret(Some(value));
        Ok(())
    }

    /// Holds back AppendEntries carrying entries for a group while `gate` gives a reason.
    pub fn set_entry_gate(&self, gate: EntryGate) {
        *write(&self.shared.entry_gate) = Some(gate);
    }

    /// Why entries for `group` are held back now, if they are.
    fn entries_held_back(&self, group: GroupId) -> Option<String> {
        read(&self.shared.entry_gate)
            .as_ref()
            .and_then(|gate| gate(group))
    }

    /// Says in this node's heartbeats from now on that it has started every partition replica
    /// assigned to it at start-up: a restarted peer's preferred leaders wait for that before
    /// they stand for election (see `broker/raft/src/formation.rs`).
    pub fn set_serving(&self) {
        self.shared.serving.store(true, Ordering::Relaxed);
    }

    /// Reaches `node` at `address` instead of the address the cluster metadata gives for it.
    pub fn set_route(&self, node: NodeId, address: String) {
        write(&self.shared.routes).insert(node, address);
    }

    /// The address to reach `node` at: its route if one is set, else `advertised`.
    pub(crate) fn address_of(&self, node: NodeId, advertised: &str) -> String {
        read(&self.shared.routes)
            .get(&node)
            .cloned()
            .unwrap_or_else(|| advertised.to_owned())
    }

    pub(crate) fn for_group(&self, group: GroupId) -> GroupNetwork {
        GroupNetwork {
            group,
            peers: self.clone(),
        }
    }

    pub(crate) fn register<SM>(&self, group: GroupId, raft: Raft<TypeConfig, SM>)
    where
        SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotBytes>,
    {
        write(&self.shared.groups).insert(group, Arc::new(raft));
    }

    pub(crate) fn unregister(&self, group: GroupId) {
        write(&self.shared.groups).remove(&group);
        if let Some(liveness) = self.shared.liveness.get() {
            liveness.remove(group);
        }
    }

    /// The node-level heartbeats (see [`crate::liveness`]), started on first use: this node
    /// heartbeats each peer it shares a partition with every `timings.heartbeat`, for as long as
    /// the transport lives.
    pub(crate) fn liveness(&self, node_id: NodeId, timings: GroupTimings) -> Arc<Liveness> {
        self.shared
            .liveness
            .get_or_init(|| {
                let timers = Arc::new(LocalGroups {
                    shared: Arc::downgrade(&self.shared),
                });
                let liveness = Arc::new(Liveness::new(node_id, timings, timers));
                tokio::spawn(send_heartbeats(
                    Arc::downgrade(&self.shared),
                    node_id,
                    liveness.clone(),
                ));
                liveness
            })
            .clone()
    }

    /// Partition groups on this node whose raft timer runs (the others are quiet: see
    /// `broker/raft/src/liveness.rs`), and each peer heard from with whether it counts as alive.
    pub fn heartbeat_status(&self) -> (usize, Vec<(NodeId, bool)>) {
        self.shared
            .liveness
            .get()
            .map_or((0, Vec::new()), |l| (l.ticking(), l.alive_peers()))
    }

    pub(crate) fn set_controller(&self, proposer: ControllerProposer) {
        *write(&self.shared.controller) = Some(proposer);
    }

    fn endpoint(&self, group: GroupId) -> Result<Arc<dyn GroupEndpoint>, Status> {
        read(&self.shared.groups)
            .get(&group)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!("raft group {group} is not running on this node"))
            })
    }

    /// The pooled client for `addr`, created on first use.
    pub(crate) fn client(&self, addr: &str) -> Result<RaftClient<PeerChannel>, io::Error> {
        self.channel(addr).map(client)
    }

    /// The pooled channel to the node at `addr`, created on first use (it connects lazily),
    /// showing the cluster secret on every request.
    pub fn channel(&self, addr: &str) -> Result<PeerChannel, io::Error> {
        let secret = read(&self.shared.secret).clone();
        self.plain_channel(addr)
            .map(|channel| InterceptedService::new(channel, secret))
    }

    fn plain_channel(&self, addr: &str) -> Result<Channel, io::Error> {
        if let Some(channel) = read(&self.shared.channels).get(addr) {
            return Ok(channel.clone());
        }
        let invalid = |e: &dyn std::fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("peer address {addr}: {e}"),
            )
        };
        let tls = read(&self.shared.tls).clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint =
            Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| invalid(&e))?;
        if let Some(tls) = tls {
            // The peer's certificate is checked against the host of its address: an IP
            // address against the certificate's IP SANs, a name against its DNS SANs.
            endpoint = endpoint
                .tls_config(tls.domain_name(server_name(addr)))
                .map_err(|e| invalid(&e))?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = endpoint.connect_lazy();
        Ok(write(&self.shared.channels)
            .entry(addr.to_owned())
            .or_insert(channel)
            .clone())
    }

    /// Sends a controller command to the node at `addr` to be proposed by its controller.
    pub(crate) async fn forward_controller(
        &self,
        addr: &str,
        command: Bytes,
    ) -> Result<Bytes, Status> {
        let mut client = self
            .client(addr)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let reply = client
            .propose_controller(ControllerProposal { command })
            .await?
            .into_inner();
        Ok(reply.reply)
    }
}

/// The TLS server name of the node at `addr` (`HOST:PORT`): its host, without the brackets of
/// an IPv6 address.
fn server_name(addr: &str) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// The node's registered groups, as the node-level heartbeats drive their timers.
struct LocalGroups {
    shared: Weak<Shared>,
}

impl LocalGroups {
    fn endpoint(&self, group: GroupId) -> Option<Arc<dyn GroupEndpoint>> {
        let shared = self.shared.upgrade()?;
        read(&shared.groups).get(&group).cloned()
    }
}

impl GroupTimers for LocalGroups {
    fn set_ticking(&self, group: GroupId, on: bool) {
        if let Some(endpoint) = self.endpoint(group) {
            endpoint.set_ticking(on);
        }
    }

    fn campaign(&self, group: GroupId) {
        if let Some(endpoint) = self.endpoint(group) {
            tokio::spawn(async move {
                if let Err(e) = endpoint.campaign().await {
                    tracing::debug!(group, error = %e, "cannot stand for election");
                }
            });
        }
    }

    fn committed(&self, group: GroupId) -> Option<u64> {
        Some(self.endpoint(group)?.committed())
    }

    fn remind(&self, group: GroupId) {
        if let Some(endpoint) = self.endpoint(group) {
            tokio::spawn(async move {
                if let Err(e) = endpoint.remind().await {
                    tracing::debug!(group, error = %e, "cannot heartbeat the group's followers");
                }
            });
        }
    }
}

/// Sends this node's heartbeats every interval until the transport is dropped.
async fn send_heartbeats(shared: Weak<Shared>, node_id: NodeId, liveness: Arc<Liveness>) {
    let mut interval = tokio::time::interval(liveness.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let peers = Peers { shared };
        liveness.expire(Instant::now());
        let sends = liveness
            .due()
            .into_iter()
            .map(|due| peers.send_heartbeat(node_id, &liveness, due));
        futures::future::join_all(sends).await;
    }
}

impl Peers {
    /// Sends one heartbeat, and reminds the groups the peer answers it is behind in. A
    /// failure is left to the peer's side to notice (it stops hearing from this node), so it
    /// is logged at debug level only.
    async fn send_heartbeat(&self, from: NodeId, liveness: &Liveness, due: HeartbeatDue) {
        let address = self.address_of(due.node, &due.advertised);
        let mut client = match self.client(&address) {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(node = due.node, error = %e, "cannot heartbeat peer");
                return;
            }
        };
        let leads = due
            .leads
            .into_iter()
            .map(|(group, lead)| GroupLeadership {
                group,
                term: lead.term,
                committed: lead.committed,
            })
            .collect();
        let mut request = tonic::Request::new(NodeHeartbeat {
            from,
            leads,
            incarnation: liveness.incarnation,
            serving: self.shared.serving.load(Ordering::Relaxed),
        });
        request.set_timeout(liveness.interval);
        match client.heartbeat(request).await {
            Ok(reply) => {
                let behind = reply.into_inner().behind;
                if behind.len() <= MAX_LEADS_PER_HEARTBEAT {
                    liveness.remind_behind(due.node, &behind);
                }
            }
            Err(status) => tracing::debug!(node = due.node, %status, "heartbeat to peer failed"),
        }
    }
}

fn client(channel: PeerChannel) -> RaftClient<PeerChannel> {
    RaftClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn encode(value: &impl Serialize) -> Result<Bytes, Status> {
    encode_sized(value, 0)
}

/// `value` encoded into a buffer of `capacity` bytes to start with: a message carrying record
/// batches is written once into a buffer of its size, not copied each time a small one fills.
fn encode_sized(value: &impl Serialize, capacity: usize) -> Result<Bytes, Status> {
    postcard::serialize_with_flavor(value, SizedVec(Vec::with_capacity(capacity)))
        .map(Bytes::from)
        .map_err(|e| Status::internal(format!("cannot encode raft message: {e}")))
}

/// postcard's output into a `Vec` given its capacity up front.
struct SizedVec(Vec<u8>);

impl postcard::ser_flavors::Flavor for SizedVec {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Room for an AppendEntries: its entries' payloads, and a generous allowance for each entry's
/// log id and framing and for the message's own fields.
fn append_entries_capacity(rpc: &AppendEntriesRequest<TypeConfig>) -> usize {
    const PER_ENTRY: usize = 64;
    const MESSAGE: usize = 256;
    let payloads: usize = rpc
        .entries
        .iter()
        .map(|entry| match &entry.payload {
            openraft::EntryPayload::Normal(request) => request.payload_bytes(),
            _ => 0,
        })
        .sum();
    payloads + PER_ENTRY * rpc.entries.len() + MESSAGE
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(bytes)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn answer<T: Serialize>(
    result: Result<T, RaftError<TypeConfig>>,
) -> Result<tonic::Response<RaftResponse>, Status> {
    let result = match result {
        Ok(value) => raft_response::Result::Payload(encode(&value)?),
        Err(error) => raft_response::Result::RaftError(encode(&error)?),
    };
    Ok(tonic::Response::new(RaftResponse {
        result: Some(result),
    }))
}

/// The receiving side of the transport.
struct Receiver {
    peers: Peers,
}

#[tonic::async_trait]
impl RaftService for Receiver {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftResponse>, Status> {
        let request = request.into_inner();
        let endpoint = self.peers.endpoint(request.group)?;
        let held_back = self.peers.entries_held_back(request.group);
        if let Some(reason) = &held_back
            && request.payload.len() > HEARTBEAT_MAX_BYTES
        {
            // Not a heartbeat: refused before it is decoded.
            return Err(Status::resource_exhausted(reason.clone()));
        }
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&request.payload)?;
        if let Some(reason) = held_back
            && !rpc.entries.is_empty()
        {
            return Err(Status::resource_exhausted(reason));
        }
        answer(endpoint.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftResponse>, Status> {
        let request = request.into_inner();
        let endpoint = self.peers.endpoint(request.group)?;
        answer(endpoint.vote(decode(&request.payload)?).await)
    }

    async fn pre_vote(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftResponse>, Status> {
        let request = request.into_inner();
        let endpoint = self.peers.endpoint(request.group)?;
        answer(endpoint.pre_vote(decode(&request.payload)?).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftResponse>, Status> {
        let request = request.into_inner();
        let endpoint = self.peers.endpoint(request.group)?;
        let (vote, meta, snapshot): (Vote, SnapshotMeta, SnapshotBytes) = decode(&request.payload)?;
        let result = endpoint
            .install_snapshot(vote, Snapshot { meta, snapshot })
            .await
            .map_err(RaftError::Fatal);
        answer(result)
    }

    async fn propose_controller(
        &self,
        request: tonic::Request<ControllerProposal>,
    ) -> Result<tonic::Response<ControllerReply>, Status> {
        let proposer = read(&self.peers.shared.controller)
            .clone()
            .ok_or_else(|| Status::unavailable("the controller is not running on this node"))?;
        match proposer(request.into_inner().command).await {
            Ok(reply) => Ok(tonic::Response::new(ControllerReply { reply })),
            Err(ReplicaError::NotLeader { leader, .. }) => Err(Status::failed_precondition(
                format!("not the controller leader; leader is {leader:?}"),
            )),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn heartbeat(
        &self,
        request: tonic::Request<NodeHeartbeat>,
    ) -> Result<tonic::Response<NodeHeartbeatReply>, Status> {
        let heartbeat = request.into_inner();
        if heartbeat.leads.len() > MAX_LEADS_PER_HEARTBEAT {
            return Err(Status::invalid_argument(format!(
                "a heartbeat names {} groups, more than {MAX_LEADS_PER_HEARTBEAT}",
                heartbeat.leads.len()
            )));
        }
        // A node that runs no group yet has nothing a heartbeat could change.
        let behind = match self.peers.shared.liveness.get() {
            Some(liveness) => {
                let leads = heartbeat
                    .leads
                    .iter()
                    .map(|lead| {
                        let claim = Leadership {
                            term: lead.term,
                            committed: lead.committed,
                        };
                        (lead.group, claim)
                    })
                    .collect();
                liveness.serving(heartbeat.from, heartbeat.serving);
                liveness.heard(heartbeat.from, heartbeat.incarnation, leads)
            }
            None => Vec::new(),
        };
        Ok(tonic::Response::new(NodeHeartbeatReply { behind }))
    }
}

/// openraft's network factory for one group.
pub(crate) struct GroupNetwork {
    group: GroupId,
    peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            group: self.group,
            target,
            client: self
                .peers
                .client(&self.peers.address_of(target, &node.addr)),
        }
    }
}

/// A group's client for one peer, over the peer's shared channel.
pub(crate) struct PeerClient {
    group: GroupId,
    target: NodeId,
    client: Result<RaftClient<PeerChannel>, io::Error>,
}

enum Rpc {
    AppendEntries,
    Vote,
    PreVote,
    InstallSnapshot,
}

impl PeerClient {
    /// Encodes `request` (into a buffer of `capacity` bytes to start with), sends it as `rpc`
    /// and decodes the answer.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        capacity: usize,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let payload =
            encode_sized(request, capacity).map_err(|s| CallError::network(s.message()))?;
        let client = self
            .client
            .as_mut()
            .map_err(|e| CallError::Unreachable(io::Error::new(e.kind(), e.to_string())))?;
        let mut request = tonic::Request::new(RaftRequest {
            group: self.group,
            payload,
        });
        request.set_timeout(timeout);
        let response = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::PreVote => client.pre_vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let response = response.map_err(|status| match status.code() {
            // The peer is down, does not run this group yet, or holds entries back (its disk
            // is below its reserve): back off and retry.
            Code::Unavailable
            | Code::NotFound
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted => CallError::Unreachable(io::Error::other(format!(
                "node {} group {}: {}",
                self.target,
                self.group,
                status.message()
            ))),
            _ => CallError::network(&format!(
                "node {} group {}: {status}",
                self.target, self.group
            )),
        })?;
        match response.into_inner().result {
            Some(raft_response::Result::Payload(bytes)) => {
                decode(&bytes).map_err(|s| CallError::network(s.message()))
            }
            // For these RPCs the only raft error is a fatal one: the group there has stopped,
            // which is a peer to back off from.
            Some(raft_response::Result::RaftError(bytes)) => {
                let error: RaftError<TypeConfig> =
                    decode(&bytes).map_err(|s| CallError::network(s.message()))?;
                Err(CallError::Unreachable(io::Error::other(format!(
                    "node {} group {}: {error}",
                    self.target, self.group
                ))))
            }
            None => Err(CallError::network("empty raft response")),
        }
    }
}

/// Why a call to a peer failed.
enum CallError {
    /// Back off before retrying.
    Unreachable(io::Error),
    /// Retry at once.
    Network(io::Error),
}

impl CallError {
    fn network(message: &str) -> Self {
        Self::Network(io::Error::other(message.to_owned()))
    }
}

impl From<CallError> for RPCError<TypeConfig> {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

impl From<CallError> for StreamingError<TypeConfig> {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable(e) => StreamingError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => StreamingError::Network(NetworkError::new(&e)),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotBytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let capacity = append_entries_capacity(&rpc);
        Ok(self
            .call(Rpc::AppendEntries, &rpc, capacity, option.hard_ttl())
            .await?)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.call(Rpc::Vote, &rpc, 0, option.hard_ttl()).await?)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.call(Rpc::PreVote, &rpc, 0, option.hard_ttl()).await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let capacity = snapshot.snapshot.len() + 1024;
        let request = (vote, snapshot.meta, snapshot.snapshot);
        Ok(self
            .call(Rpc::InstallSnapshot, &request, capacity, option.hard_ttl())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_entries_is_encoded_once_into_a_buffer_of_its_size() {
        use openraft::entry::RaftEntry;
        use openraft::testing::common::log_id;

        use crate::types::{Entry, Request};

        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(u64::MAX, u64::MAX),
            prev_log_id: Some(log_id::<TypeConfig>(u64::MAX, u64::MAX, u64::MAX)),
            entries: [0, 1, 300, 1 << 20]
                .into_iter()
                .zip(u64::MAX - 10..)
                .map(|(payload, index)| {
                    Entry::new_normal(
                        log_id::<TypeConfig>(u64::MAX, u64::MAX, index),
                        Request::Controller(Bytes::from(vec![7; payload])),
                    )
                })
                .collect(),
            leader_commit: Some(log_id::<TypeConfig>(u64::MAX, u64::MAX, u64::MAX)),
        };
        let capacity = append_entries_capacity(&rpc);
        let encoded = encode_sized(&rpc, capacity).unwrap();
        assert_eq!(encoded, postcard::to_stdvec(&rpc).unwrap());
        assert!(
            encoded.len() <= capacity,
            "{} bytes encoded into room for {capacity}",
            encoded.len()
        );
        let decoded: AppendEntriesRequest<TypeConfig> = decode(&encoded).unwrap();
        assert_eq!(decoded.entries, rpc.entries);
    }

    #[test]
    fn the_server_name_of_a_peer_is_the_host_of_its_address() {
        assert_eq!(server_name("127.0.0.1:7070"), "127.0.0.1");
        assert_eq!(server_name("node-1.weir:7070"), "node-1.weir");
        assert_eq!(server_name("[::1]:7070"), "::1");
    }
}
