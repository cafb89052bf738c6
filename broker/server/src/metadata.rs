//! Cluster metadata: the controller's replicated state and the commands that change it.
//!
//! Pure and deterministic: every controller replica applies the same commands in the same order
//! and must reach the same state, so nothing here reads a clock, a random source or the disk.
//! Placement decisions are taken here, at apply time, from the state alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weir_raft::{GroupId, MetadataState, NodeId};
use weir_types::{PartitionId, TopicName};

use crate::groups::{GroupCommand, GroupOffsets};

/// The controller group's id; partition groups are numbered from 1.
pub const CONTROLLER_GROUP: GroupId = 0;

/// A broker node known to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// Address clients and peers reach it at.
    pub address: String,
}

/// One partition's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// The raft group replicating it; never reused.
    pub group: GroupId,
    /// Nodes holding a replica, the preferred leader first.
    pub replicas: Vec<NodeId>,
    /// The replicas the group was created with: only they initialise it. A replica added later
    /// joins the existing group as a learner instead (initialising would start a second
    /// history).
    #[serde(default)]
    pub initial_replicas: Vec<NodeId>,
}

impl PartitionInfo {
    /// Whether `node` initialises this partition's raft group.
    pub fn initialised_by(&self, node: NodeId) -> bool {
        // Metadata written before initial replicas were recorded: every replica initialises.
        self.initial_replicas.is_empty() || self.initial_replicas.contains(&node)
    }
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Its name.
    pub name: TopicName,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Partitions, indexed by [`PartitionId`].
    pub partitions: Vec<PartitionInfo>,
    /// Free-form topic configuration.
    pub configs: BTreeMap<String, String>,
    /// Modules run over produce requests on the partition leader, in order.
    #[serde(default)]
    pub produce_chain: Vec<Attachment>,
    /// Modules run over fetched records for consumers that name no chain, in order.
    #[serde(default)]
    pub consume_chain: Vec<Attachment>,
}

impl TopicInfo {
    /// The placement of one partition.
    pub fn partition(&self, id: PartitionId) -> Option<&PartitionInfo> {
        self.partitions.get(id.0 as usize)
    }

    /// The chain on `path`.
    pub fn chain(&self, path: ModulePath) -> &[Attachment] {
        match path {
            ModulePath::Produce => &self.produce_chain,
            ModulePath::Consume => &self.consume_chain,
        }
    }

    fn chain_mut(&mut self, path: ModulePath) -> &mut Vec<Attachment> {
        match path {
            ModulePath::Produce => &mut self.produce_chain,
            ModulePath::Consume => &mut self.consume_chain,
        }
    }
}

/// Where a module runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModulePath {
    /// On the partition leader, before records are stored.
    Produce,
    /// Over fetched records, per consumer.
    Consume,
}

impl std::fmt::Display for ModulePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModulePath::Produce => "produce",
            ModulePath::Consume => "consume",
        })
    }
}

/// What happens to records a produce-path module rejects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectPolicy {
    /// The whole request fails; nothing is stored.
    Reject,
    /// The rejected records are dropped, the rest stored.
    Drop,
    /// The rejected records go to this topic, the rest are stored.
    DeadLetter(TopicName),
}

/// A module attached to a topic's chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// Module name.
    pub module: String,
    /// The version, resolved when attached.
    pub version: u32,
    /// Parameters for the module's `init`, in order.
    pub params: Vec<(String, String)>,
    /// What to do with rejected records (meaningful on the produce path).
    pub on_reject: RejectPolicy,
}

/// One registered version of a module. The bytes live in the metadata, so every node (and every
/// node that joins later) can compile the module from its own copy.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleVersionInfo {
    /// The version.
    pub version: u32,
    /// Hex SHA-256 of `wasm`.
    pub sha256: String,
    /// When it was registered, by the proposer's clock.
    pub registered_at_ms: i64,
    /// The module as registered.
    #[serde(with = "base64_bytes")]
    pub wasm: Bytes,
}

impl std::fmt::Debug for ModuleVersionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleVersionInfo")
            .field("version", &self.version)
            .field("sha256", &self.sha256)
            .field("size", &self.wasm.len())
            .finish()
    }
}

/// Module bytes as base64 in the JSON metadata (a JSON array of numbers would quadruple them).
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// The whole replicated metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Set once, by the first command ever applied.
    pub cluster_id: Option<String>,
    /// Known nodes.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Topics by name.
    pub topics: BTreeMap<TopicName, TopicInfo>,
    /// The group id the next partition gets.
    pub next_group: GroupId,
    /// Registered modules by name, then version.
    #[serde(default)]
    pub modules: BTreeMap<String, BTreeMap<u32, ModuleVersionInfo>>,
}

impl ClusterMetadata {
    /// A registered module version; the latest when `version` is `None`.
    pub fn module(&self, name: &str, version: Option<u32>) -> Option<&ModuleVersionInfo> {
        let versions = self.modules.get(name)?;
        match version {
            Some(v) => versions.get(&v),
            None => versions.values().next_back(),
        }
    }

    /// Every attachment of module `name` (any version, or only `version`), as
    /// `(topic, path, version)`.
    pub fn module_uses(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Vec<(TopicName, ModulePath, u32)> {
        let mut uses = Vec::new();
        for topic in self.topics.values() {
            for path in [ModulePath::Produce, ModulePath::Consume] {
                for a in topic.chain(path) {
                    if a.module == name && version.is_none_or(|v| v == a.version) {
                        uses.push((topic.name.clone(), path, a.version));
                    }
                }
            }
        }
        uses
    }
}

/// A change to the metadata, proposed through the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Names the cluster, if it has no name yet.
    Bootstrap {
        /// The proposed id (chosen by the proposer, so apply stays deterministic).
        cluster_id: String,
    },
    /// Adds or updates a node.
    RegisterNode(NodeInfo),
    /// Creates a topic, placing its replicas on the known nodes.
    CreateTopic {
        /// Topic name.
        name: TopicName,
        /// Number of partitions.
        partitions: u32,
        /// Replicas per partition.
        replication_factor: u32,
        /// Topic configuration.
        configs: BTreeMap<String, String>,
    },
    /// Deletes a topic.
    DeleteTopic {
        /// Topic name.
        name: TopicName,
    },
    /// Adds `node` to a partition's replicas (the first step of a replica move).
    AddReplica {
        /// Topic name.
        topic: TopicName,
        /// Partition index.
        partition: u32,
        /// The node gaining a replica.
        node: NodeId,
    },
    /// Removes `node` from a partition's replicas (the last step of a replica move).
    RemoveReplica {
        /// Topic name.
        topic: TopicName,
        /// Partition index.
        partition: u32,
        /// The node losing its replica.
        node: NodeId,
    },
    /// Forgets a node, which must hold no partition replica. Absent nodes are not an error, so
    /// a removal interrupted halfway can be run again.
    RemoveNode {
        /// The node.
        id: NodeId,
    },
    /// Registers a module version, already validated and compiled by the proposer. Without a
    /// version, it becomes one more than the latest.
    RegisterModule {
        /// Module name.
        name: String,
        /// Requested version.
        version: Option<u32>,
        /// Hex SHA-256 of the bytes.
        sha256: String,
        /// Proposer's clock.
        registered_at_ms: i64,
        /// The module.
        #[serde(with = "base64_bytes")]
        wasm: Bytes,
    },
    /// Deletes one version of a module, or all of them; refused while attached.
    DeleteModule {
        /// Module name.
        name: String,
        /// The version; all when `None`.
        version: Option<u32>,
    },
    /// Adds a module at the end of a topic's chain.
    AttachModule {
        /// The topic.
        topic: TopicName,
        /// Which chain.
        path: ModulePath,
        /// The attachment (its version must be registered).
        attachment: Attachment,
    },
    /// Removes a module from a topic's chain.
    DetachModule {
        /// The topic.
        topic: TopicName,
        /// Which chain.
        path: ModulePath,
        /// Module name.
        module: String,
    },
    /// Changes consumer groups' committed offsets, which live beside the cluster metadata
    /// ([`ControllerState`]).
    Group(GroupCommand),
    /// Issues the next producer id to an idempotent producer.
    AllocateProducerId,
}

/// Why a command was refused. Refusals change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    /// A topic of that name exists.
    #[error("topic '{0}' already exists")]
    TopicExists(TopicName),
    /// No topic of that name exists.
    #[error("topic '{0}' does not exist")]
    UnknownTopic(TopicName),
    /// The replication factor cannot be met.
    #[error("replication factor {requested} is larger than the {available} live node(s)")]
    NotEnoughNodes {
        /// Requested replicas per partition.
        requested: u32,
        /// Nodes known to the cluster.
        available: usize,
    },
    /// No such node.
    #[error("node {0} is not a member of the cluster")]
    UnknownNode(NodeId),
    /// No such partition.
    #[error("topic '{topic}' has no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: u32,
    },
    /// The node still holds partition replicas.
    #[error("node {node} still holds replicas of {}; move or delete them first", partitions.join(", "))]
    NodeHasReplicas {
        /// The node.
        node: NodeId,
        /// The partitions it holds, as `topic/partition`.
        partitions: Vec<String>,
    },
    /// The module version exists.
    #[error("module '{name}' version {version} is already registered")]
    ModuleExists {
        /// Module name.
        name: String,
        /// The version.
        version: u32,
    },
    /// No such module (version).
    #[error("module '{}' is not registered", module_label(.name, *.version))]
    UnknownModule {
        /// Module name.
        name: String,
        /// The version asked for, if any.
        version: Option<u32>,
    },
    /// The module is attached somewhere.
    #[error("module '{name}' is attached to {}; detach it first", uses.join(", "))]
    ModuleInUse {
        /// Module name.
        name: String,
        /// Its attachments, as `topic (path)`.
        uses: Vec<String>,
    },
    /// The module is already in that chain.
    #[error("module '{module}' is already in the {path} chain of topic '{topic}'")]
    AlreadyAttached {
        /// The topic.
        topic: TopicName,
        /// Which chain.
        path: ModulePath,
        /// Module name.
        module: String,
    },
    /// The module is not in that chain.
    #[error("module '{module}' is not in the {path} chain of topic '{topic}'")]
    NotAttached {
        /// The topic.
        topic: TopicName,
        /// Which chain.
        path: ModulePath,
        /// Module name.
        module: String,
    },
    /// The command was malformed.
    #[error("invalid command: {0}")]
    Invalid(String),
}

fn module_label(name: &str, version: Option<u32>) -> String {
    match version {
        Some(v) => format!("{name}@{v}"),
        None => name.to_owned(),
    }
}

/// What an applied command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Nothing to report.
    Done,
    /// The created topic.
    Topic(TopicInfo),
    /// The registered module version.
    ModuleVersion(u32),
    /// The issued producer id.
    ProducerId(i64),
}

impl Applied {
    /// The created topic, for `CreateTopic`.
    pub fn topic(self) -> Option<TopicInfo> {
        match self {
            Applied::Topic(topic) => Some(topic),
            _ => None,
        }
    }
}

/// The controller's reply to a command.
pub type CommandReply = Result<Applied, CommandError>;

impl ClusterMetadata {
    fn partition_mut(
        &mut self,
        topic: &TopicName,
        partition: u32,
    ) -> Result<&mut PartitionInfo, CommandError> {
        let info = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| CommandError::UnknownTopic(topic.clone()))?;
        info.partitions
            .get_mut(partition as usize)
            .ok_or_else(|| CommandError::UnknownPartition {
                topic: topic.clone(),
                partition,
            })
    }

    /// Applies `command`, returning the created topic for `CreateTopic`.
    pub fn apply(&mut self, command: Command) -> CommandReply {
        match command {
            Command::Bootstrap { cluster_id } => {
                self.cluster_id.get_or_insert(cluster_id);
                if self.next_group == 0 {
                    self.next_group = CONTROLLER_GROUP + 1;
                }
                Ok(Applied::Done)
            }
            Command::RegisterNode(node) => {
                self.nodes.insert(node.id, node);
                Ok(Applied::Done)
            }
            Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                if self.topics.contains_key(&name) {
                    return Err(CommandError::TopicExists(name));
                }
                if partitions == 0 || replication_factor == 0 {
                    return Err(CommandError::Invalid(
                        "partitions and replication factor must be at least 1".into(),
                    ));
                }
                if replication_factor as usize > self.nodes.len() {
                    return Err(CommandError::NotEnoughNodes {
                        requested: replication_factor,
                        available: self.nodes.len(),
                    });
                }
                let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
                let first_group = self.next_group.max(CONTROLLER_GROUP + 1);
                // Round-robin placement with a rotating start, so preferred leaders (the first
                // replica) spread evenly over the nodes.
                let offset = self.topics.len();
                let partitions_info = (0..partitions as usize)
                    .map(|p| {
                        let replicas: Vec<NodeId> = (0..replication_factor as usize)
                            .map(|r| nodes[(offset + p + r) % nodes.len()])
                            .collect();
                        PartitionInfo {
                            group: first_group + p as u64,
                            initial_replicas: replicas.clone(),
                            replicas,
                        }
                    })
                    .collect();
                self.next_group = first_group + u64::from(partitions);
                let topic = TopicInfo {
                    name: name.clone(),
                    replication_factor,
                    partitions: partitions_info,
                    configs,
                    produce_chain: Vec::new(),
                    consume_chain: Vec::new(),
                };
                self.topics.insert(name, topic.clone());
                Ok(Applied::Topic(topic))
            }
            Command::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(_) => {
                    // Attachments routing rejects to the deleted topic fall back to failing the
                    // request: records are never silently lost to a missing dead-letter topic.
                    for topic in self.topics.values_mut() {
                        for a in &mut topic.produce_chain {
                            if a.on_reject == RejectPolicy::DeadLetter(name.clone()) {
                                a.on_reject = RejectPolicy::Reject;
                            }
                        }
                    }
                    Ok(Applied::Done)
                }
                None => Err(CommandError::UnknownTopic(name)),
            },
            Command::AddReplica {
                topic,
                partition,
                node,
            } => {
                if !self.nodes.contains_key(&node) {
                    return Err(CommandError::UnknownNode(node));
                }
                let info = self.partition_mut(&topic, partition)?;
                if !info.replicas.contains(&node) {
                    info.replicas.push(node);
                }
                Ok(Applied::Done)
            }
            Command::RemoveReplica {
                topic,
                partition,
                node,
            } => {
                let info = self.partition_mut(&topic, partition)?;
                if info.replicas == [node] {
                    return Err(CommandError::Invalid(format!(
                        "node {node} holds the last replica of {topic}/{partition}"
                    )));
                }
                info.replicas.retain(|r| *r != node);
                Ok(Applied::Done)
            }
            Command::RemoveNode { id } => {
                let partitions: Vec<String> = self
                    .topics
                    .values()
                    .flat_map(|t| {
                        t.partitions
                            .iter()
                            .enumerate()
                            .filter(|(_, p)| p.replicas.contains(&id))
                            .map(move |(i, _)| format!("{}/{i}", t.name))
                    })
                    .collect();
                if !partitions.is_empty() {
                    return Err(CommandError::NodeHasReplicas {
                        node: id,
                        partitions,
                    });
                }
                self.nodes.remove(&id);
                Ok(Applied::Done)
            }
            Command::RegisterModule {
                name,
                version,
                sha256,
                registered_at_ms,
                wasm,
            } => {
                let versions = self.modules.entry(name.clone()).or_default();
                let latest = versions.keys().next_back().copied().unwrap_or(0);
                let version = match version {
                    Some(0) => {
                        return Err(CommandError::Invalid("module versions start at 1".into()));
                    }
                    Some(v) => v,
                    None => latest.checked_add(1).ok_or_else(|| {
                        CommandError::Invalid(format!("module '{name}' has no version left"))
                    })?,
                };
                if versions.contains_key(&version) {
                    return Err(CommandError::ModuleExists { name, version });
                }
                versions.insert(
                    version,
                    ModuleVersionInfo {
                        version,
                        sha256,
                        registered_at_ms,
                        wasm,
                    },
                );
                Ok(Applied::ModuleVersion(version))
            }
            Command::DeleteModule { name, version } => {
                if self.module(&name, version).is_none() {
                    return Err(CommandError::UnknownModule { name, version });
                }
                let uses = self.module_uses(&name, version);
                if !uses.is_empty() {
                    return Err(CommandError::ModuleInUse {
                        name,
                        uses: uses
                            .iter()
                            .map(|(topic, path, v)| format!("{topic} ({path}, version {v})"))
                            .collect(),
                    });
                }
                match version {
                    Some(v) => {
                        let versions = self.modules.entry(name.clone()).or_default();
                        versions.remove(&v);
                        if versions.is_empty() {
                            self.modules.remove(&name);
                        }
                    }
                    None => {
                        self.modules.remove(&name);
                    }
                }
                Ok(Applied::Done)
            }
            Command::AttachModule {
                topic,
                path,
                attachment,
            } => {
                if self
                    .module(&attachment.module, Some(attachment.version))
                    .is_none()
                {
                    return Err(CommandError::UnknownModule {
                        name: attachment.module,
                        version: Some(attachment.version),
                    });
                }
                if let RejectPolicy::DeadLetter(dead_letter) = &attachment.on_reject {
                    if *dead_letter == topic {
                        return Err(CommandError::Invalid(format!(
                            "topic '{topic}' cannot be its own dead-letter topic"
                        )));
                    }
                    if !self.topics.contains_key(dead_letter) {
                        return Err(CommandError::UnknownTopic(dead_letter.clone()));
                    }
                }
                let info = self
                    .topics
                    .get_mut(&topic)
                    .ok_or_else(|| CommandError::UnknownTopic(topic.clone()))?;
                let chain = info.chain_mut(path);
                if chain.iter().any(|a| a.module == attachment.module) {
                    return Err(CommandError::AlreadyAttached {
                        topic,
                        path,
                        module: attachment.module,
                    });
                }
                chain.push(attachment);
                Ok(Applied::Done)
            }
            Command::Group(_) | Command::AllocateProducerId => Err(CommandError::Invalid(
                "consumer group and producer id commands apply to the controller state beside \
                 the cluster metadata"
                    .into(),
            )),
            Command::DetachModule {
                topic,
                path,
                module,
            } => {
                let info = self
                    .topics
                    .get_mut(&topic)
                    .ok_or_else(|| CommandError::UnknownTopic(topic.clone()))?;
                let chain = info.chain_mut(path);
                let before = chain.len();
                chain.retain(|a| a.module != module);
                if chain.len() == before {
                    return Err(CommandError::NotAttached {
                        topic,
                        path,
                        module,
                    });
                }
                Ok(Applied::Done)
            }
        }
    }
}

/// Everything the controller replicates: the cluster metadata, consumer groups' committed
/// offsets, and the producer id counter. They are published apart, so an offset commit or a
/// new producer does not wake everything that watches topics and placement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerState {
    /// Nodes, topics, placement, modules.
    pub metadata: ClusterMetadata,
    /// Committed offsets by group.
    pub groups: GroupOffsets,
    /// The producer id the controller issues next: every id below it was issued, none above.
    pub next_producer_id: i64,
}

/// The snapshot layout since consumer groups; before, a snapshot was the bare
/// [`ClusterMetadata`], which [`MetadataStore::restore`] still reads.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    metadata: &'a ClusterMetadata,
    groups: &'a GroupOffsets,
    next_producer_id: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    metadata: ClusterMetadata,
    groups: GroupOffsets,
    /// Absent in snapshots taken before idempotent producers (no id was issued then).
    #[serde(default)]
    next_producer_id: i64,
}

impl ControllerState {
    /// Applies a command to the part it changes. Returns the reply and whether the cluster
    /// metadata and the group offsets changed.
    pub fn apply(&mut self, command: Command) -> (CommandReply, bool, bool) {
        match command {
            Command::Group(command) => {
                let topics = &self.metadata.topics;
                let reply = self
                    .groups
                    .apply(command, |topic| {
                        topics.get(topic).map(|t| t.partitions.len() as u32)
                    })
                    .map(|()| Applied::Done)
                    .map_err(CommandError::Invalid);
                let changed = reply.is_ok();
                (reply, false, changed)
            }
            Command::AllocateProducerId => {
                let id = self.next_producer_id;
                self.next_producer_id += 1;
                (Ok(Applied::ProducerId(id)), false, false)
            }
            Command::DeleteTopic { name } => {
                let reply = self
                    .metadata
                    .apply(Command::DeleteTopic { name: name.clone() });
                let changed = reply.is_ok();
                if changed {
                    self.groups.forget_topic(&name);
                }
                (reply, changed, changed)
            }
            other => (self.metadata.apply(other), true, false),
        }
    }
}

/// The controller state machine as the raft layer sees it: the replicated state plus watch
/// channels that tell the rest of the broker about every change.
pub struct MetadataStore {
    state: ControllerState,
    published: watch::Sender<Arc<ClusterMetadata>>,
    published_groups: watch::Sender<Arc<GroupOffsets>>,
    published_producer_ids: watch::Sender<i64>,
}

/// Receivers of the controller state's changes.
pub struct MetadataReceivers {
    /// The cluster metadata.
    pub metadata: watch::Receiver<Arc<ClusterMetadata>>,
    /// Consumer groups' committed offsets.
    pub groups: watch::Receiver<Arc<GroupOffsets>>,
    /// The next producer id the controller will issue.
    pub next_producer_id: watch::Receiver<i64>,
}

impl MetadataStore {
    /// An empty store and receivers of its changes.
    pub fn new() -> (Self, MetadataReceivers) {
        let (published, metadata) = watch::channel(Arc::new(ClusterMetadata::default()));
        let (published_groups, groups) = watch::channel(Arc::new(GroupOffsets::default()));
        let (published_producer_ids, next_producer_id) = watch::channel(0);
        (
            Self {
                state: ControllerState::default(),
                published,
                published_groups,
                published_producer_ids,
            },
            MetadataReceivers {
                metadata,
                groups,
                next_producer_id,
            },
        )
    }

    fn publish(&self, metadata: bool, groups: bool) {
        let next_producer_id = self.state.next_producer_id;
        self.published_producer_ids.send_if_modified(|published| {
            let changed = *published != next_producer_id;
            *published = next_producer_id;
            changed
        });
        if metadata {
            self.published
                .send_replace(Arc::new(self.state.metadata.clone()));
        }
        if groups {
            self.published_groups
                .send_replace(Arc::new(self.state.groups.clone()));
        }
    }
}

/// Encodes a command for [`weir_raft::ControllerReplica::propose`].
pub fn encode_command(command: &Command) -> Bytes {
    // Serialising a plain enum of strings and integers cannot fail.
    Bytes::from(serde_json::to_vec(command).unwrap_or_default())
}

/// Decodes the reply of [`MetadataState::apply`].
pub fn decode_reply(bytes: &[u8]) -> CommandReply {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| Err(CommandError::Invalid(format!("undecodable reply: {e}"))))
}

impl MetadataState for MetadataStore {
    fn apply(&mut self, command: &[u8]) -> Bytes {
        let reply: CommandReply = match serde_json::from_slice::<Command>(command) {
            Ok(command) => {
                let (reply, metadata, groups) = self.state.apply(command);
                self.publish(metadata, groups);
                reply
            }
            Err(e) => Err(CommandError::Invalid(e.to_string())),
        };
        Bytes::from(serde_json::to_vec(&reply).unwrap_or_default())
    }

    fn snapshot(&self) -> Bytes {
        let snapshot = SnapshotRef {
            metadata: &self.state.metadata,
            groups: &self.state.groups,
            next_producer_id: self.state.next_producer_id,
        };
        Bytes::from(serde_json::to_vec(&snapshot).unwrap_or_default())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.state = match serde_json::from_slice::<Snapshot>(snapshot) {
            Ok(Snapshot {
                metadata,
                groups,
                next_producer_id,
            }) => ControllerState {
                metadata,
                groups,
                next_producer_id,
            },
            Err(e) => match serde_json::from_slice::<ClusterMetadata>(snapshot) {
                Ok(metadata) => ControllerState {
                    metadata,
                    groups: GroupOffsets::default(),
                    next_producer_id: 0,
                },
                Err(_) => return Err(e.to_string()),
            },
        };
        self.publish(true, true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicName {
        name.parse().unwrap()
    }

    fn cluster(nodes: u64) -> ClusterMetadata {
        let mut m = ClusterMetadata::default();
        m.apply(Command::Bootstrap {
            cluster_id: "c".into(),
        })
        .unwrap();
        for id in 1..=nodes {
            m.apply(Command::RegisterNode(NodeInfo {
                id,
                address: format!("127.0.0.1:{id}"),
            }))
            .unwrap();
        }
        m
    }

    fn create(name: &str, partitions: u32, rf: u32) -> Command {
        Command::CreateTopic {
            name: topic(name),
            partitions,
            replication_factor: rf,
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn groups_are_unique_and_never_reused() {
        let mut m = cluster(1);
        let a = m.apply(create("a", 3, 1)).unwrap().topic().unwrap();
        let groups: Vec<_> = a.partitions.iter().map(|p| p.group).collect();
        assert_eq!(groups, vec![1, 2, 3]);
        m.apply(Command::DeleteTopic { name: topic("a") }).unwrap();
        let again = m.apply(create("a", 1, 1)).unwrap().topic().unwrap();
        assert_eq!(again.partitions[0].group, 4);
    }

    #[test]
    fn refusals_change_nothing() {
        let mut m = cluster(1);
        m.apply(create("a", 2, 1)).unwrap();
        let before = m.clone();
        assert_eq!(
            m.apply(create("a", 5, 1)),
            Err(CommandError::TopicExists(topic("a")))
        );
        assert_eq!(
            m.apply(create("b", 1, 3)),
            Err(CommandError::NotEnoughNodes {
                requested: 3,
                available: 1
            })
        );
        assert!(matches!(
            m.apply(create("b", 0, 1)),
            Err(CommandError::Invalid(_))
        ));
        assert_eq!(
            m.apply(Command::DeleteTopic { name: topic("zz") }),
            Err(CommandError::UnknownTopic(topic("zz")))
        );
        assert_eq!(m, before);
    }

    #[test]
    fn a_node_with_replicas_cannot_be_removed() {
        let mut m = cluster(3);
        m.apply(create("t", 1, 3)).unwrap();
        let before = m.clone();
        assert!(matches!(
            m.apply(Command::RemoveNode { id: 2 }),
            Err(CommandError::NodeHasReplicas { node: 2, .. })
        ));
        assert_eq!(m, before);
        m.apply(Command::DeleteTopic { name: topic("t") }).unwrap();
        m.apply(Command::RemoveNode { id: 2 }).unwrap();
        assert!(!m.nodes.contains_key(&2));
        // Removing again is not an error: an interrupted removal can be re-run.
        m.apply(Command::RemoveNode { id: 2 }).unwrap();
        assert_eq!(
            m.apply(create("u", 1, 3)),
            Err(CommandError::NotEnoughNodes {
                requested: 3,
                available: 2
            })
        );
    }

    #[test]
    fn replicas_move_one_step_at_a_time_and_the_last_one_stays() {
        let mut m = cluster(3);
        m.apply(create("t", 1, 1)).unwrap();
        let first = m.topics[&topic("t")].partitions[0].replicas[0];
        let other = if first == 1 { 2 } else { 1 };
        let add = |node| Command::AddReplica {
            topic: topic("t"),
            partition: 0,
            node,
        };
        let remove = |node| Command::RemoveReplica {
            topic: topic("t"),
            partition: 0,
            node,
        };
        assert!(matches!(
            m.apply(remove(first)),
            Err(CommandError::Invalid(_))
        ));
        assert_eq!(m.apply(add(9)), Err(CommandError::UnknownNode(9)));
        m.apply(add(other)).unwrap();
        m.apply(remove(first)).unwrap();
        let p = &m.topics[&topic("t")].partitions[0];
        assert_eq!(p.replicas, vec![other]);
        assert!(p.initialised_by(first) && !p.initialised_by(other));
        assert!(matches!(
            m.apply(Command::AddReplica {
                topic: topic("t"),
                partition: 5,
                node: other
            }),
            Err(CommandError::UnknownPartition { .. })
        ));
    }

    #[test]
    fn replicas_are_distinct_and_leaders_spread() {
        let mut m = cluster(3);
        let t = m.apply(create("t", 6, 3)).unwrap().topic().unwrap();
        let mut leaders = BTreeMap::new();
        for p in &t.partitions {
            let mut r = p.replicas.clone();
            r.sort();
            r.dedup();
            assert_eq!(r.len(), 3, "replicas of {p:?} are distinct");
            *leaders.entry(p.replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    }

    #[test]
    fn store_round_trips_through_snapshot_and_garbage_is_refused() {
        let (mut store, rx) = MetadataStore::new();
        let reply = decode_reply(&store.apply(&encode_command(&Command::Bootstrap {
            cluster_id: "x".into(),
        })));
        assert_eq!(reply, Ok(Applied::Done));
        store.apply(&encode_command(&Command::RegisterNode(NodeInfo {
            id: 1,
            address: "a".into(),
        })));
        store.apply(&encode_command(&create("t", 2, 1)));
        assert!(rx.metadata.borrow().topics.contains_key(&topic("t")));
        let commit = Command::Group(GroupCommand::Commit {
            group: "g".parse().unwrap(),
            offsets: vec![(
                topic("t"),
                1,
                crate::groups::CommittedOffset {
                    offset: 7,
                    metadata: String::new(),
                    committed_at_ms: 1,
                },
            )],
        });
        assert_eq!(
            decode_reply(&store.apply(&encode_command(&commit))),
            Ok(Applied::Done)
        );
        assert_eq!(
            rx.groups
                .borrow()
                .offset(&"g".parse().unwrap(), &topic("t"), 1)
                .map(|c| c.offset),
            Some(7)
        );
        let garbage = decode_reply(&store.apply(b"{not json"));
        assert!(matches!(garbage, Err(CommandError::Invalid(_))));

        let (mut restored, rx2) = MetadataStore::new();
        restored.restore(&store.snapshot()).unwrap();
        assert_eq!(restored.state, store.state);
        assert_eq!(*rx2.metadata.borrow().as_ref(), store.state.metadata);
        assert_eq!(*rx2.groups.borrow().as_ref(), store.state.groups);
        assert!(restored.restore(b"nope").is_err());
    }

    #[test]
    fn a_snapshot_written_before_consumer_groups_still_restores() {
        let mut metadata = cluster(1);
        metadata.apply(create("t", 1, 1)).unwrap();
        let old = serde_json::to_vec(&metadata).unwrap();
        let (mut store, _rx) = MetadataStore::new();
        store.restore(&old).unwrap();
        assert_eq!(store.state.metadata, metadata);
        assert_eq!(store.state.groups, GroupOffsets::default());
    }

    #[test]
    fn producer_ids_are_issued_once_and_survive_a_snapshot() {
        let (mut store, receivers) = MetadataStore::new();
        let allocate = encode_command(&Command::AllocateProducerId);
        let ids: Vec<CommandReply> = (0..3)
            .map(|_| decode_reply(&store.apply(&allocate)))
            .collect();
        assert_eq!(
            ids,
            [
                Ok(Applied::ProducerId(0)),
                Ok(Applied::ProducerId(1)),
                Ok(Applied::ProducerId(2))
            ]
        );
        assert_eq!(*receivers.next_producer_id.borrow(), 3);
        let snapshot = store.snapshot();
        let (mut restored, restored_receivers) = MetadataStore::new();
        restored.restore(&snapshot).unwrap();
        assert_eq!(*restored_receivers.next_producer_id.borrow(), 3);
        assert_eq!(
            decode_reply(&restored.apply(&allocate)),
            Ok(Applied::ProducerId(3)),
            "never reused after a restore"
        );
    }

    #[test]
    fn deleting_a_topic_drops_group_offsets_for_it() {
        let mut state = ControllerState {
            metadata: cluster(1),
            groups: GroupOffsets::default(),
            next_producer_id: 0,
        };
        state.apply(create("t", 1, 1)).0.unwrap();
        let offset = crate::groups::CommittedOffset {
            offset: 1,
            metadata: String::new(),
            committed_at_ms: 1,
        };
        let commit = |t: &str| {
            Command::Group(GroupCommand::Commit {
                group: "g".parse().unwrap(),
                offsets: vec![(topic(t), 0, offset.clone())],
            })
        };
        let (reply, metadata_changed, groups_changed) = state.apply(commit("t"));
        assert_eq!(
            (reply, metadata_changed, groups_changed),
            (Ok(Applied::Done), false, true)
        );
        // A commit for a topic that does not exist stores nothing.
        assert!(state.apply(commit("nope")).0.is_err());
        state
            .apply(Command::DeleteTopic { name: topic("t") })
            .0
            .unwrap();
        assert!(state.groups.group(&"g".parse().unwrap()).is_none());
    }
}
