//! A broker node: its databases, the controller replica, and the partition replicas it hosts.
//!
//! The node keeps the set of running partition replicas equal to what the metadata assigns to
//! it ([`Node::reconcile`]): a replica is started (and, on a fresh group, initialised with its
//! assigned voters) when a topic is created, and stopped and deleted when the topic goes. The
//! same loop runs at start-up, so a restart brings back exactly the assigned partitions and
//! removes data a crash left behind mid-delete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use weir_raft::{
    ControllerReplica, GroupId, LeaderLease, NodeId, PartitionReplica, Peers, ReplicaError,
    SharedByReplicas,
};
use weir_storage::{Closed, LogDb, LogDbOptions, WriteBatch, WriteOp};
use weir_types::{BatchLimits, Offset, PartitionId, TopicName};

use crate::StartError;
use crate::budgets::Budgets;
use crate::config::BrokerConfig;
use crate::disk::DiskSpace;
use crate::error::BrokerError;
use crate::groups::{Coordinator, GroupOffsets};
use crate::metadata::{
    Applied, CONTROLLER_GROUP, ClusterMetadata, Command, ConfigSource, MetadataStore, NodeInfo,
    PartitionInfo, TopicConfig, TopicInfo, decode_reply, effective_configs, encode_command,
};
use crate::modules::ModuleHost;
use crate::storage_failure::StorageFailure;

mod moves;

/// How long a request waits for a partition or the controller to have a leader.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// How long a starting cluster node waits for a quorum of its peers to come up.
const CLUSTER_FORMING_WAIT: Duration = Duration::from_secs(120);

/// A partition this node hosts, as requests see it.
#[derive(Debug, Clone)]
pub(crate) struct HostedPartition {
    pub(crate) topic: TopicName,
    pub(crate) partition: PartitionId,
    pub(crate) replica: PartitionReplica,
}

impl HostedPartition {
    pub(crate) fn group(&self) -> GroupId {
        self.replica.group()
    }
}

/// Producer ids a node takes from the controller at once (Kafka takes blocks of 1,000 too).
const PRODUCER_ID_BLOCK: u32 = 1000;

/// The running node.
pub(crate) struct Node {
    pub(crate) config: BrokerConfig,
    pub(crate) address: String,
    /// What leaves this node open, registered in the metadata for `weir cluster status`.
    warnings: Vec<String>,
    pub(crate) peers: Peers,
    pub(crate) partition_db: LogDb,
    controller_db: LogDb,
    controller: ControllerReplica<MetadataStore>,
    metadata: watch::Receiver<Arc<ClusterMetadata>>,
    group_offsets: watch::Receiver<Arc<GroupOffsets>>,
    /// The next producer id the controller will issue, as this node has applied it.
    next_producer_id: watch::Receiver<i64>,
    /// Producer ids the controller issued to this node and it has not handed out yet. A
    /// restart forgets them (they are never issued again).
    producer_ids: tokio::sync::Mutex<std::ops::Range<i64>>,
    /// Live consumer group membership, used while this node leads the controller.
    pub(crate) coordinator: Coordinator,
    /// The running partition replicas. Never locked together with `failed`: take one, let
    /// it go, then the other. A request that held this one while it read `failed`, and a
    /// reconciliation that held `failed` while it inserted here, could stop each other, and
    /// then every worker thread of the node queued behind them (found by review after a node
    /// of the nemesis went silent for good). Nor is a watch borrowed with it held (a replica's
    /// raft metrics or progress): a borrow takes the watch's own `RwLock`.
    partitions: RwLock<HashMap<GroupId, HostedPartition>>,
    /// Assigned partitions whose replica failed to start, with the reason; retried by the
    /// next reconciliation.
    failed: RwLock<HashMap<GroupId, String>>,
    reconcile_lock: tokio::sync::Mutex<()>,
    /// The partitions a replica move runs for, on this node (their leader).
    moving: Mutex<HashSet<GroupId>>,
    round_robin: AtomicU32,
    /// The modules this node runs.
    pub(crate) modules: ModuleHost,
    /// What requests may hold after their handler answered.
    pub(crate) budgets: Budgets,
    /// The data directory's free space, and its reserve.
    pub(crate) disk: Arc<DiskSpace>,
    /// What this node's partition replicas share: their compaction passes, and the entries
    /// they keep in memory for their state machines.
    pub(crate) shared_by_replicas: SharedByReplicas,
    /// `[topic_defaults]` of the config, checked and normalised.
    topic_defaults: BTreeMap<String, String>,
    pub(crate) shutdown: CancellationToken,
}

impl Node {
    /// Opens the databases, starts the controller and the assigned partitions.
    pub(crate) async fn start(
        config: BrokerConfig,
        address: String,
        warnings: Vec<String>,
        peers: Peers,
        shutdown: CancellationToken,
        storage_failure: StorageFailure,
    ) -> Result<Arc<Self>, StartError> {
        let usable_memory = crate::memory::usable_memory_bytes();
        let cache_mib = config.storage.cache_mib_for(usable_memory);
        tracing::info!(
            cache_mib,
            configured = config.storage.cache_mib.is_some(),
            usable_memory_mib = usable_memory.map(|bytes| bytes >> 20),
            "partition log page cache"
        );
        let partition_db = LogDb::open(
            config.data_dir.join("partitions.redb"),
            LogDbOptions {
                on_failure: storage_failure.hook("partition log"),
                quick_repair: config.storage.quick_repair,
                cache_bytes: usize::try_from(cache_mib << 20).unwrap_or(usize::MAX),
                ..LogDbOptions::default()
            },
        )?;
        let controller_db = LogDb::open(
            config.data_dir.join("controller.redb"),
            LogDbOptions {
                cache_bytes: 16 * 1024 * 1024,
                on_failure: storage_failure.hook("controller"),
                ..LogDbOptions::default()
            },
        )?;
        // This node's own view of how to reach each peer wins over the addresses in the
        // cluster metadata (which are what each node advertises).
        for peer in config.peers.iter().filter(|p| p.id != config.node_id) {
            peers.set_route(peer.id, peer.address.clone());
        }
        let (store, receivers) = MetadataStore::new();
        let controller = ControllerReplica::start(
            config.node_id,
            CONTROLLER_GROUP,
            controller_db.clone(),
            peers.clone(),
            config.group_timings(),
            store,
        )
        .await?;
        let voters = config.voters(&address);
        let wait = if config.join {
            // A joining node is added by an operator; give them time.
            CLUSTER_FORMING_WAIT
        } else {
            // Every node may initialise the controller with the same voters (openraft accepts
            // that); the first voter stands first (see `ControllerReplica::form`). A restarted
            // node's call is a no-op.
            let preferred = *voters.keys().next().unwrap_or(&config.node_id);
            controller.form(&voters, preferred).await?;
            if voters.len() > 1 {
                CLUSTER_FORMING_WAIT
            } else {
                LEADER_WAIT
            }
        };
        controller.wait_for_leader(wait).await?;
        if config.join {
            // A joining node catches up as a learner first; it is a voter once that is over.
            controller.wait_to_be_voter(config.node_id, wait).await?;
        }
        controller.catch_up(wait).await?;
        let mut actual = controller.voters();
        actual.sort_unstable();
        // Only the ids must agree: nodes may reach each other through different addresses.
        let configured: Vec<NodeId> = voters.keys().copied().collect();
        let checked = !config.join || !config.peers.is_empty();
        if checked && actual != configured {
            return Err(StartError::PeersDisagree {
                configured,
                cluster: actual,
            });
        }

        let modules = ModuleHost::new(
            config.modules.wasm_limits(),
            config.data_dir.join("modules"),
        );
        let budgets = Budgets::new(&config.limits);
        let disk = DiskSpace::new(config.node_id, &config.data_dir, config.disk.min_free_bytes);
        disk.clone().spawn_sampler(
            Duration::from_millis(config.disk.check_interval_ms),
            shutdown.clone(),
        );
        // Below the reserve, this node's partition replicas take no new entries either (their
        // leaders back off and retry); the controller's small entries still land.
        let gate = disk.clone();
        peers.set_entry_gate(Arc::new(move |group| {
            (group != CONTROLLER_GROUP)
                .then(|| gate.shortage())
                .flatten()
        }));
        let topic_defaults = config.topic_defaults()?;
        let node = Arc::new(Self {
            config,
            modules,
            budgets,
            disk,
            shared_by_replicas: SharedByReplicas::default(),
            address,
            warnings,
            peers,
            partition_db,
            controller_db,
            controller,
            metadata: receivers.metadata,
            group_offsets: receivers.groups,
            next_producer_id: receivers.next_producer_id,
            producer_ids: tokio::sync::Mutex::new(0..0),
            coordinator: Coordinator::default(),
            partitions: RwLock::default(),
            failed: RwLock::default(),
            reconcile_lock: tokio::sync::Mutex::new(()),
            moving: Mutex::default(),
            round_robin: AtomicU32::new(0),
            topic_defaults,
            shutdown,
        });
        node.register_while_forming(wait).await?;
        node.reconcile().await?;
        // Every assigned replica runs: the peers' restarted preferred leaders may stand.
        node.peers.set_serving();
        node.settle_lone_replicas().await;
        node.clone().spawn_reconciler();
        crate::groups::expiry::spawn(node.clone());
        crate::retention::spawn(node.clone());
        node.clone().spawn_settler();
        Ok(node)
    }

    /// Waits until the partitions this node alone replicates lead again with everything they
    /// stored applied, so that once the node reports ready it serves every record it
    /// acknowledged before a restart. A partition that does not settle in time is reported and
    /// left to settle on its own.
    async fn settle_lone_replicas(&self) {
        let hosted: Vec<(GroupId, PartitionReplica)> = self
            .partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(group, hosted)| (*group, hosted.replica.clone()))
            .collect();
        let settled = futures::future::join_all(
            hosted
                .iter()
                .map(|(_, replica)| replica.settle_lone_voter(LEADER_WAIT)),
        )
        .await;
        for ((group, _), result) in hosted.iter().zip(settled) {
            if let Err(e) = result {
                tracing::warn!(group, error = %e, "partition not leading yet at start-up");
            }
        }
    }

    /// [`Self::register`], retried while the controller changes leaders (also when a change
    /// left a write's outcome unknown) or the leader is not reachable yet, for at most `wait`:
    /// nodes of a forming cluster start in any order.
    async fn register_while_forming(&self, wait: Duration) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.register().await {
                Ok(()) => return Ok(()),
                // Every registration step may run twice (naming the cluster sets a name only
                // once, registering the node again changes nothing, a user that exists is
                // left alone), so a write whose outcome a leader change made unknown is tried
                // again like one that never reached a leader.
                Err(
                    e @ (BrokerError::NotLeader { .. }
                    | BrokerError::Unavailable(_)
                    | BrokerError::Indeterminate(_)),
                ) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::info!(error = %e, "controller not ready for registration; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    if self.controller.leader().is_none() {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        self.controller.wait_for_leader(left).await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Names the cluster (first start), records this node's address and warnings, and creates
    /// the bootstrap user if it is missing.
    async fn register(&self) -> Result<(), BrokerError> {
        let metadata = self.metadata();
        if metadata.cluster_id.is_none() {
            let cluster_id = format!("weir-{:016x}", rand::random::<u64>());
            self.propose(Command::Bootstrap { cluster_id }).await?;
        }
        let me = NodeInfo {
            id: self.config.node_id,
            address: self.address.clone(),
            warnings: self.warnings.clone(),
        };
        if self.metadata().nodes.get(&me.id) != Some(&me) {
            self.propose(Command::RegisterNode(me)).await?;
        }
        if let Some(user) = &self.config.security.bootstrap_user
            && !self.metadata().users.contains_key(&user.name)
        {
            let credential = crate::security::derive_credential(&user.password)
                .map_err(BrokerError::InvalidArgument)?;
            match self
                .propose(Command::PutUser {
                    name: user.name.clone(),
                    credential,
                    replace: false,
                })
                .await
            {
                Ok(_) => tracing::info!(user = %user.name, "bootstrap user created"),
                // Another node of a forming cluster created it first.
                Err(BrokerError::UserExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The latest applied metadata.
    pub(crate) fn metadata(&self) -> Arc<ClusterMetadata> {
        self.metadata.borrow().clone()
    }

    /// Consumer groups' committed offsets as this node has applied them.
    pub(crate) fn group_offsets(&self) -> Arc<GroupOffsets> {
        self.group_offsets.borrow().clone()
    }

    /// Consumer groups' committed offsets as the controller leader knows them once a quorum
    /// confirmed its leadership: never an older state than a commit already acknowledged,
    /// even on a leader cut off from the others (which still believes it leads).
    pub(crate) async fn confirmed_group_offsets(&self) -> Result<Arc<GroupOffsets>, BrokerError> {
        self.controller.read_barrier(LEADER_WAIT).await?;
        Ok(self.group_offsets())
    }

    /// The controller term this node leads in, when it does: only then does it coordinate
    /// consumer groups.
    pub(crate) fn controller_term(&self) -> Option<u64> {
        self.controller.leader_term()
    }

    /// This node's leadership of the controller and its lease; `None` when it does not lead.
    pub(crate) fn controller_lease(&self) -> Option<LeaderLease> {
        self.controller.leader_lease()
    }

    /// The same, a leader elected a moment ago given a little time for a quorum to confirm it.
    pub(crate) async fn confirmed_controller_lease(&self) -> Option<LeaderLease> {
        self.controller.confirmed_leader_lease().await
    }

    /// The controller leader this node knows of.
    pub(crate) fn controller_leader(&self) -> Option<NodeId> {
        self.controller.leader()
    }

    /// Proposes a metadata command and returns its reply once applied.
    pub(crate) async fn propose(&self, command: Command) -> Result<Applied, BrokerError> {
        let reply = self.controller.propose(encode_command(&command)).await?;
        Ok(decode_reply(&reply)?)
    }

    /// A producer id no producer was given before, from this node's block; an empty block
    /// takes the next one from the controller, one write for [`PRODUCER_ID_BLOCK`] producers.
    /// Concurrent callers wait for that one write rather than each making their own.
    pub(crate) async fn init_producer_id(&self) -> Result<i64, BrokerError> {
        let mut block = self.producer_ids.lock().await;
        if block.is_empty() {
            let count = PRODUCER_ID_BLOCK;
            *block = match self.propose(Command::AllocateProducerIds { count }).await? {
                Applied::ProducerIds { first, count } => first..first + i64::from(count),
                other => {
                    return Err(BrokerError::Internal(format!(
                        "the controller answered {other:?} to a producer id request"
                    )));
                }
            };
        }
        let id = block.start;
        block.start += 1;
        Ok(id)
    }

    /// Checks that the controller issued `producer_id`. A node's controller state trails the
    /// leader's by up to a heartbeat, so an id just issued elsewhere waits for it to catch up.
    pub(crate) async fn check_producer_issued(&self, producer_id: i64) -> Result<(), BrokerError> {
        if producer_id < *self.next_producer_id.borrow() {
            return Ok(());
        }
        if !self.controller.is_leader() {
            if let Err(e) = self.controller.catch_up(LEADER_WAIT).await {
                tracing::debug!(error = %e, "controller did not catch up while checking a producer id");
            }
            let catch_up = self.config.group_timings().heartbeat * 2;
            let mut issued = self.next_producer_id.clone();
            if tokio::time::timeout(catch_up, issued.wait_for(|next| producer_id < *next))
                .await
                .is_ok_and(|r| r.is_ok())
            {
                return Ok(());
            }
        }
        Err(BrokerError::UnknownProducerId(format!(
            "producer id {producer_id} was never issued by this cluster (InitProducerId issues them)"
        )))
    }

    /// Adds a node to the cluster (controller voter and placement target). Runs on the
    /// controller leader; a follower forwards the request there.
    pub(crate) async fn add_node(&self, id: NodeId, address: String) -> Result<(), BrokerError> {
        if self.controller.voters().contains(&id) || self.metadata().nodes.contains_key(&id) {
            return Err(BrokerError::NodeExists(id));
        }
        if !self.controller.is_leader() {
            let mut leader = self.controller_leader_client()?;
            leader
                .add_node(weir_proto::v1::AddNodeRequest {
                    node_id: id,
                    address,
                })
                .await
                .map_err(forwarded)?;
            return Ok(());
        }
        tracing::info!(node = id, %address, "adding node to the cluster");
        self.controller.add_voter(id, address).await?;
        // The node registers itself (with the address it advertises) once it has caught up.
        Ok(())
    }

    /// Removes a node that holds no replicas: from the metadata first (which refuses while it
    /// holds replicas), then from the controller's voters.
    pub(crate) async fn remove_node(&self, id: NodeId) -> Result<(), BrokerError> {
        if !self.controller.voters().contains(&id) && !self.metadata().nodes.contains_key(&id) {
            return Err(BrokerError::UnknownNode(id));
        }
        if !self.controller.is_leader() {
            let mut leader = self.controller_leader_client()?;
            leader
                .remove_node(weir_proto::v1::RemoveNodeRequest { node_id: id })
                .await
                .map_err(forwarded)?;
            return Ok(());
        }
        tracing::info!(node = id, "removing node from the cluster");
        self.propose(Command::RemoveNode { id }).await?;
        self.controller.remove_voter(id).await?;
        Ok(())
    }

    /// Moves the log start of `topic`/`partition` up to `before` (Kafka's DeleteRecords), on the
    /// partition's leader; returns the log start after it. Past the high watermark is
    /// `OFFSET_OUT_OF_RANGE`.
    pub(crate) async fn delete_records(
        &self,
        topic: &TopicInfo,
        partition: PartitionId,
        before: Offset,
    ) -> Result<Offset, BrokerError> {
        let hosted = self.leader_of(topic, partition).await?;
        let progress = *hosted.replica.progress().borrow();
        if before > progress.high_watermark {
            return Err(BrokerError::OffsetOutOfRange {
                topic: topic.name.clone(),
                partition,
                requested: i64::try_from(before.0).unwrap_or(i64::MAX),
                log_start: progress.first_readable(),
                high_watermark: progress.high_watermark,
            });
        }
        let log_start = hosted
            .replica
            .trim(before)
            .await
            .map_err(|e| self.replica_error(e))?;
        tracing::info!(topic = %topic.name, %partition, %log_start, "records deleted below the log start");
        Ok(log_start)
    }

    /// Waits (at most [`LEADER_WAIT`]) until this node's metadata satisfies `done`.
    pub(crate) async fn wait_for_metadata(&self, done: impl Fn(&ClusterMetadata) -> bool) {
        let mut changes = self.metadata.clone();
        if tokio::time::timeout(LEADER_WAIT, changes.wait_for(|m| done(m)))
            .await
            .is_err()
        {
            tracing::warn!("metadata did not reach this node within {LEADER_WAIT:?}");
        }
    }

    /// Produces `records` to `topic` through the public API of the leader of the partition
    /// they hash to (this node's own port when it leads it), so they go through that topic's
    /// produce path like any client's. Used for dead-letter records.
    pub(crate) async fn produce_to(
        &self,
        topic: &TopicInfo,
        records: Vec<weir_proto::v1::Record>,
    ) -> Result<(), BrokerError> {
        let partitions = topic.partitions.len() as u32;
        let partition = match records.first().and_then(|r| r.key.as_ref()) {
            Some(key) => weir_types::partition_for_key(key, partitions),
            None => self.next_round_robin(partitions),
        };
        let address = match self.leader_of(topic, partition).await {
            Ok(_) => self.address.clone(),
            Err(BrokerError::NotLeader {
                leader: Some(leader),
                ..
            }) => self
                .controller
                .route_to(leader)
                .ok_or_else(|| BrokerError::Unavailable(format!("no address for node {leader}")))?,
            Err(e) => return Err(e),
        };
        let channel = self
            .peers
            .channel(&address)
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        weir_proto::v1::broker_client::BrokerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
            .produce(weir_proto::v1::ProduceRequest {
                topic: topic.name.to_string(),
                partition: Some(partition.0),
                records,
                acks: weir_proto::v1::Acks::All as i32,
                ..Default::default()
            })
            .await
            .map_err(|status| {
                BrokerError::Unavailable(format!(
                    "producing to topic '{}' failed: {}",
                    topic.name,
                    status.message()
                ))
            })?;
        Ok(())
    }

    /// A client of the public API on node `id`.
    pub(crate) fn node_client(
        &self,
        id: NodeId,
    ) -> Result<weir_proto::v1::broker_client::BrokerClient<weir_raft::PeerChannel>, BrokerError>
    {
        let address = self
            .controller
            .route_to(id)
            .or_else(|| self.metadata().nodes.get(&id).map(|n| n.address.clone()))
            .ok_or_else(|| BrokerError::Unavailable(format!("no address for node {id}")))?;
        let channel = self
            .peers
            .channel(&address)
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        Ok(weir_proto::v1::broker_client::BrokerClient::new(channel))
    }

    /// A client of the public API on the controller leader, for admin requests that must run
    /// there.
    pub(crate) fn controller_leader_client(
        &self,
    ) -> Result<weir_proto::v1::broker_client::BrokerClient<weir_raft::PeerChannel>, BrokerError>
    {
        let leader = self
            .controller
            .leader()
            .ok_or_else(|| BrokerError::Unavailable("the controller has no leader".into()))?;
        let address = self.controller.route_to(leader).ok_or_else(|| {
            BrokerError::Unavailable(format!("no address for controller leader {leader}"))
        })?;
        let channel = self
            .peers
            .channel(&address)
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        Ok(weir_proto::v1::broker_client::BrokerClient::new(channel))
    }

    /// A topic by name. A follower's metadata trails the controller leader's by up to a
    /// heartbeat, so on a follower an unknown name waits that long for the metadata to catch
    /// up: a topic created through one node is then visible through every node.
    pub(crate) async fn topic(&self, name: &TopicName) -> Result<TopicInfo, BrokerError> {
        if let Some(topic) = self.metadata().topics.get(name) {
            return Ok(topic.clone());
        }
        if self.controller.is_leader() {
            return Err(BrokerError::UnknownTopic(name.to_string()));
        }
        // Catch up with what the leader reported, then give one more heartbeat for a commit
        // made just before this request.
        if let Err(e) = self.controller.catch_up(LEADER_WAIT).await {
            tracing::debug!(error = %e, "controller did not catch up while looking up a topic");
        }
        let catch_up = self.config.group_timings().heartbeat * 2;
        let mut changes = self.metadata.clone();
        match tokio::time::timeout(catch_up, changes.wait_for(|m| m.topics.contains_key(name)))
            .await
        {
            Ok(Ok(metadata)) => metadata
                .topics
                .get(name)
                .cloned()
                .ok_or_else(|| BrokerError::UnknownTopic(name.to_string())),
            _ => Err(BrokerError::UnknownTopic(name.to_string())),
        }
    }

    /// What `topic`'s configs come to on this node.
    pub(crate) fn topic_config(&self, topic: &TopicInfo) -> TopicConfig {
        TopicConfig::resolve(
            &topic.configs,
            &self.topic_defaults,
            self.config.limits.max_batch_bytes,
        )
    }

    /// Every topic config of `topic` with the value this node applies and where it comes from.
    pub(crate) fn effective_configs(
        &self,
        topic: &TopicInfo,
    ) -> Vec<(&'static str, String, ConfigSource)> {
        effective_configs(
            &topic.configs,
            &self.topic_defaults,
            self.config.limits.max_batch_bytes,
        )
    }

    /// The limits of a batch produced to a topic of `config`: the node's, narrowed by its
    /// `max.message.bytes`.
    pub(crate) fn batch_limits_for(&self, config: &TopicConfig) -> BatchLimits {
        let max_batch_bytes = config.max_message_bytes;
        BatchLimits {
            max_record_bytes: self.config.limits.max_record_bytes.min(max_batch_bytes),
            max_batch_bytes,
        }
    }

    /// Checks that `partition` exists in `topic`.
    pub(crate) fn check_partition(
        topic: &TopicInfo,
        partition: u32,
    ) -> Result<PartitionId, BrokerError> {
        let count = topic.partitions.len() as u32;
        if partition >= count {
            return Err(BrokerError::UnknownPartition {
                topic: topic.name.clone(),
                partition,
                count,
            });
        }
        Ok(PartitionId(partition))
    }

    /// The next partition for a record without a key.
    pub(crate) fn next_round_robin(&self, partitions: u32) -> PartitionId {
        PartitionId(self.round_robin.fetch_add(1, Ordering::Relaxed) % partitions.max(1))
    }

    /// The local replica of a partition, if it is running.
    pub(crate) fn hosted(
        &self,
        topic: &TopicInfo,
        partition: PartitionId,
    ) -> Result<HostedPartition, BrokerError> {
        let hosted = self.hosted_for_reads(topic, partition)?;
        match hosted.replica.failure() {
            Some(reason) => Err(BrokerError::Unavailable(format!(
                "{}/{} stopped on this node after a failure and needs a restart: {reason}",
                topic.name, partition
            ))),
            None => Ok(hosted),
        }
    }

    /// The local replica of a partition, also when it stopped after a failure: what it applied
    /// before stopping is committed data, which a reader may still be served (and a damaged
    /// batch among it is reported as such, not as an unavailable partition).
    pub(crate) fn hosted_for_reads(
        &self,
        topic: &TopicInfo,
        partition: PartitionId,
    ) -> Result<HostedPartition, BrokerError> {
        let info = partition_info(topic, partition)?;
        let hosted = self
            .partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&info.group)
            .cloned();
        match hosted {
            Some(hosted) => Ok(hosted),
            None if let Some(reason) = self.start_failure(info.group) => {
                Err(BrokerError::Unavailable(format!(
                    "{}/{} failed to start on this node: {reason}",
                    topic.name, partition
                )))
            }
            None if info.replicas.contains(&self.config.node_id) => {
                Err(BrokerError::Unavailable(format!(
                    "{}/{} is still starting on this node",
                    topic.name, partition
                )))
            }
            None => Err(self.not_leader(
                format!("{}/{}", topic.name, partition),
                info.replicas.first().copied(),
            )),
        }
    }

    /// The local replica of a partition if this node leads it; otherwise `NOT_LEADER` naming
    /// the leader, once there is one, and a live one if its predecessor died
    /// ([`PartitionReplica::leader_for_writes`](weir_raft::PartitionReplica::leader_for_writes)).
    pub(crate) async fn leader_of(
        &self,
        topic: &TopicInfo,
        partition: PartitionId,
    ) -> Result<HostedPartition, BrokerError> {
        let hosted = self.hosted(topic, partition)?;
        if hosted.replica.is_leader() {
            return Ok(hosted);
        }
        let leader = hosted.replica.leader_for_writes(LEADER_WAIT).await?;
        if leader == self.config.node_id && hosted.replica.is_leader() {
            Ok(hosted)
        } else {
            Err(self.not_leader(format!("{}/{}", topic.name, partition), Some(leader)))
        }
    }

    /// A replication error for a request, with the leader's address filled in for NOT_LEADER.
    pub(crate) fn replica_error(&self, e: ReplicaError) -> BrokerError {
        match e {
            ReplicaError::NotLeader { group, leader } => {
                self.not_leader(format!("raft group {group}"), leader)
            }
            other => BrokerError::from(other),
        }
    }

    /// A NOT_LEADER error carrying the leader's id and address, for clients to follow.
    pub(crate) fn not_leader(&self, what: String, leader: Option<NodeId>) -> BrokerError {
        let leader_address =
            leader.and_then(|id| self.metadata().nodes.get(&id).map(|n| n.address.clone()));
        BrokerError::NotLeader {
            what,
            leader,
            leader_address,
        }
    }

    /// Starts the replicas assigned to this node and stops (and deletes) the others.
    pub(crate) async fn reconcile(&self) -> Result<(), BrokerError> {
        let _serialised = self.reconcile_lock.lock().await;
        let metadata = self.metadata();
        let me = self.config.node_id;
        let mut wanted: HashMap<GroupId, (TopicName, PartitionId, PartitionInfo)> = HashMap::new();
        for topic in metadata.topics.values() {
            for (index, p) in topic.partitions.iter().enumerate() {
                if p.replicas.contains(&me) {
                    wanted.insert(
                        p.group,
                        (topic.name.clone(), PartitionId(index as u32), p.clone()),
                    );
                }
            }
        }
        let running: Vec<GroupId> = self
            .partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        for group in running.iter().filter(|g| !wanted.contains_key(g)) {
            let hosted = self
                .partitions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(group);
            if let Some(hosted) = hosted {
                tracing::info!(group, topic = %hosted.topic, partition = %hosted.partition, "stopping and deleting partition replica");
                hosted.replica.shutdown().await;
            }
            self.delete_group(*group).await?;
        }
        // Groups on disk that no topic owns: a crash between a topic's deletion and the removal
        // of its data. Only groups below the next unassigned id are considered, so a group
        // being created concurrently is never touched.
        let db = self.partition_db.clone();
        let stored = blocking(move || db.groups().map_err(BrokerError::from)).await?;
        for group in stored {
            if !wanted.contains_key(&group) && group < metadata.next_group {
                tracing::info!(group, "deleting data of a partition no topic owns");
                self.delete_group(group).await?;
            }
        }
        for (group, (topic, partition, info)) in wanted {
            if self
                .partitions
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&group)
            {
                continue;
            }
            let span = tracing::info_span!("start_partition", group, topic = %topic, partition = %partition);
            let started = self
                .start_replica(group, &info, &metadata)
                .instrument(span)
                .await;
            match started {
                Ok(replica) => {
                    // Until the replica is inserted below, requests find it still starting.
                    self.failed
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&group);
                    // Supervision: a group that dies is logged once, loudly; requests and
                    // metrics report it from then on (it needs a restart of the node).
                    let watched = replica.clone();
                    let topic_name = topic.clone();
                    tokio::spawn(async move {
                        if let Some(reason) = watched.stopped().await {
                            tracing::error!(
                                group,
                                topic = %topic_name,
                                partition = %partition,
                                %reason,
                                "partition replica stopped after a failure; restart the node"
                            );
                        }
                    });
                    self.partitions
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(
                            group,
                            HostedPartition {
                                topic,
                                partition,
                                replica,
                            },
                        );
                }
                Err(e) => {
                    // One damaged partition must not take the node down: report it and serve
                    // the others.
                    tracing::error!(group, topic = %topic, partition = %partition, error = %e, "partition replica failed to start");
                    self.failed
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(group, e.to_string());
                }
            }
        }
        Ok(())
    }

    async fn start_replica(
        &self,
        group: GroupId,
        info: &PartitionInfo,
        metadata: &ClusterMetadata,
    ) -> Result<PartitionReplica, BrokerError> {
        let me = self.config.node_id;
        let replica = PartitionReplica::start(
            me,
            group,
            self.partition_db.clone(),
            self.peers.clone(),
            self.config.group_timings(),
            self.config.producers.limits(),
            self.shared_by_replicas.clone(),
        )
        .await?;
        let voters: BTreeMap<NodeId, String> = info
            .replicas
            .iter()
            .map(|id| {
                (
                    *id,
                    metadata
                        .nodes
                        .get(id)
                        .map(|n| n.address.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        // Every initial replica may initialise the group with the same voters (openraft allows
        // that), so a partition gets a leader even when its preferred leader is down at
        // creation; the preferred leader stands first (see `PartitionReplica::form`). On a
        // group that already has a membership this is a no-op. A replica added later by a move
        // joins as a learner instead: initialising it would start a second history.
        if info.initialised_by(me) {
            let preferred = info.replicas.first().copied().unwrap_or(me);
            replica.form(&voters, preferred).await?;
        }
        Ok(replica)
    }

    async fn delete_group(&self, group: GroupId) -> Result<(), BrokerError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.partition_db
            .submit(WriteBatch::one(WriteOp::DeleteGroup { group }), move |r| {
                let _ = tx.send(r);
            });
        rx.await
            .map_err(|_| BrokerError::ShuttingDown)?
            .map_err(|e| BrokerError::Internal(crate::error::error_chain(&e)))
    }

    /// Reconciles whenever the metadata changes, until shutdown.
    fn spawn_reconciler(self: Arc<Self>) {
        let mut changes = self.metadata.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => break,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        if let Err(e) = self.reconcile().await {
                            tracing::error!(error = %e, "reconciling partition replicas failed");
                        }
                    }
                }
            }
        });
    }

    /// Waits until every local replica of `topic` knows its leader.
    pub(crate) async fn wait_until_ready(&self, topic: &TopicInfo) -> Result<(), BrokerError> {
        self.reconcile().await?;
        for index in 0..topic.partitions.len() {
            let hosted = self.hosted(topic, PartitionId(index as u32));
            if let Ok(hosted) = hosted {
                hosted.replica.wait_for_leader(LEADER_WAIT).await?;
            }
        }
        Ok(())
    }

    /// Stops every replica and flushes the databases.
    pub(crate) async fn stop(&self) {
        let replicas: Vec<HostedPartition> = self
            .partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for hosted in replicas {
            hosted.replica.shutdown().await;
        }
        self.controller.shutdown().await;
        let (partition_db, controller_db) = (self.partition_db.clone(), self.controller_db.clone());
        let _ = tokio::task::spawn_blocking(move || {
            partition_db.shutdown();
            controller_db.shutdown();
        })
        .await;
    }

    /// Tells when each of the node's database files is closed (see [`Closed`]): once the node
    /// and every task still holding one of its databases are gone.
    pub(crate) fn databases_closed(&self) -> [(PathBuf, Closed); 2] {
        [&self.partition_db, &self.controller_db].map(|db| (db.path().to_owned(), db.closed()))
    }

    /// Why this node's replica of `group` failed to start, if it did.
    fn start_failure(&self, group: GroupId) -> Option<String> {
        self.failed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .cloned()
    }

    /// Why this node's replica of `group` failed, if it did (failed to start, or stopped).
    pub(crate) fn partition_failure(&self, group: GroupId) -> Option<String> {
        if let Some(reason) = self.start_failure(group) {
            return Some(reason);
        }
        // Cloned out first: the failure is read from the replica's raft metrics watch, which
        // is not borrowed with `partitions` held.
        let hosted = self
            .partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .cloned();
        hosted.and_then(|h| h.replica.failure())
    }

    /// How many assigned partitions failed to start or stopped after a failure.
    pub(crate) fn failed_partitions(&self) -> usize {
        let stopped = self
            .hosted_partitions()
            .iter()
            .filter(|h| h.replica.failure().is_some())
            .count();
        self.failed.read().unwrap_or_else(|p| p.into_inner()).len() + stopped
    }

    /// Running partition replicas, for status and metrics.
    pub(crate) fn hosted_partitions(&self) -> Vec<HostedPartition> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

impl From<ReplicaError> for StartError {
    fn from(e: ReplicaError) -> Self {
        StartError::Replica(e)
    }
}

/// The placement of `partition` in `topic`.
fn partition_info(
    topic: &TopicInfo,
    partition: PartitionId,
) -> Result<&PartitionInfo, BrokerError> {
    topic
        .partition(partition)
        .ok_or_else(|| BrokerError::UnknownPartition {
            topic: topic.name.clone(),
            partition: partition.0,
            count: topic.partitions.len() as u32,
        })
}

/// The controller leader's answer to a forwarded admin request, as this node's error.
fn forwarded(status: tonic::Status) -> BrokerError {
    let reason = weir_proto::error::reason_of(&status).unwrap_or_default();
    let message = status.message().to_owned();
    match reason.as_str() {
        "NODE_HAS_REPLICAS" => BrokerError::NodeHasReplicas(message),
        "INVALID_ARGUMENT" => BrokerError::InvalidArgument(message),
        _ => BrokerError::Unavailable(format!("controller leader: {message}")),
    }
}

/// Runs blocking storage work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BrokerError> + Send + 'static,
) -> Result<T, BrokerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BrokerError::Internal(format!("storage task failed: {e}")))?
}
