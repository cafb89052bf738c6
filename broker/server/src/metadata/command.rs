//! Commands: the changes proposed through the controller, why they are refused, what they
//! produce, how they apply to the [`ClusterMetadata`], and their wire encoding.
//!
//! A refused command changes nothing. Placement is decided here, when `CreateTopic` applies.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_raft::NodeId;
use weir_types::TopicName;
use weir_types::scram::ScramCredential;

use super::bounds::{
    self, MAX_ACLS, MAX_CHAIN_STAGES, MAX_MODULE_BYTES, MAX_NODE_WARNINGS, MAX_NODES,
    MAX_PARTITIONS, MAX_PARTITIONS_PER_TOPIC, MAX_STORED_MODULE_BYTES, MAX_USERS,
};
use super::model::{
    Attachment, CONTROLLER_GROUP, ClusterMetadata, ModulePath, ModuleVersionInfo, NodeInfo,
    PartitionInfo, RejectPolicy, TopicInfo,
};
use super::{base64_bytes, topic_config};
use crate::groups::GroupCommand;
use crate::security::{AclBinding, check_user_name};

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
    /// Sets some of a topic's configs and removes others (their defaults apply again).
    AlterTopicConfigs {
        /// Topic name.
        topic: TopicName,
        /// Keys to set, with their values.
        set: BTreeMap<String, String>,
        /// Keys to remove.
        delete: Vec<String>,
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
    /// Creates a user, or with `replace` changes an existing user's credential.
    PutUser {
        /// The user's name.
        name: String,
        /// The SCRAM-SHA-256 credential derived from the password by the client.
        credential: ScramCredential,
        /// Replace an existing user's credential instead of creating a user.
        replace: bool,
    },
    /// Deletes a user.
    DeleteUser {
        /// The user's name.
        name: String,
    },
    /// Adds ACL bindings (those present already change nothing).
    CreateAcls {
        /// The bindings, checked.
        bindings: Vec<AclBinding>,
    },
    /// Removes ACL bindings equal to these.
    DeleteAcls {
        /// The bindings.
        bindings: Vec<AclBinding>,
    },
    /// Changes consumer groups' committed offsets, which live beside the cluster metadata
    /// ([`ControllerState`](super::store::ControllerState)).
    Group(GroupCommand),
    /// Issues the next producer id to an idempotent producer. Written by brokers before
    /// [`Command::AllocateProducerIds`]; still applied when a log holds it.
    AllocateProducerId,
    /// Issues `count` consecutive producer ids to a node, which hands them out one per
    /// `InitProducerId` (Kafka's producer id blocks): one controller write per block.
    AllocateProducerIds {
        /// How many, from 1 to [`MAX_PRODUCER_ID_BLOCK`].
        count: u32,
    },
}

/// Most producer ids one [`Command::AllocateProducerIds`] may take.
pub const MAX_PRODUCER_ID_BLOCK: u32 = 1 << 20;

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
    /// A user of that name exists.
    #[error("user '{0}' already exists")]
    UserExists(String),
    /// No user of that name exists.
    #[error("user '{0}' does not exist")]
    UnknownUser(String),
    /// The command was malformed.
    #[error("invalid command: {0}")]
    Invalid(String),
    /// A topic config key or value the broker does not take.
    #[error("{0}")]
    InvalidConfig(String),
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
    /// The issued producer ids: `first` and the `count - 1` after it.
    ProducerIds {
        /// The first id of the block.
        first: i64,
        /// How many.
        count: u32,
    },
    /// How many things the command removed.
    Removed(u32),
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
                bounds::check_address("the cluster id", &cluster_id)
                    .map_err(CommandError::Invalid)?;
                self.cluster_id.get_or_insert(cluster_id);
                if self.next_group == 0 {
                    self.next_group = CONTROLLER_GROUP + 1;
                }
                Ok(Applied::Done)
            }
            Command::RegisterNode(node) => {
                bounds::check_address("a node's address", &node.address)
                    .map_err(CommandError::Invalid)?;
                let (most, longest) = MAX_NODE_WARNINGS;
                if node.warnings.len() > most || node.warnings.iter().any(|w| w.len() > longest) {
                    return Err(CommandError::Invalid(format!(
                        "a node registers at most {most} warnings of at most {longest} bytes"
                    )));
                }
                if !self.nodes.contains_key(&node.id) && self.nodes.len() >= MAX_NODES {
                    return Err(CommandError::Invalid(format!(
                        "the cluster has {MAX_NODES} nodes, the most it may have"
                    )));
                }
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
                if partitions > MAX_PARTITIONS_PER_TOPIC {
                    return Err(CommandError::Invalid(format!(
                        "{partitions} partitions requested; a topic may have at most {MAX_PARTITIONS_PER_TOPIC}"
                    )));
                }
                let existing: usize = self.topics.values().map(|t| t.partitions.len()).sum();
                if existing + partitions as usize > MAX_PARTITIONS {
                    return Err(CommandError::Invalid(format!(
                        "the cluster has {existing} partitions; {partitions} more would pass the limit of {MAX_PARTITIONS}"
                    )));
                }
                let configs = topic_config::check_topic_configs(&configs)
                    .map_err(CommandError::InvalidConfig)?;
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
            Command::AlterTopicConfigs { topic, set, delete } => {
                let info = self
                    .topics
                    .get_mut(&topic)
                    .ok_or_else(|| CommandError::UnknownTopic(topic.clone()))?;
                info.configs = topic_config::alter_topic_configs(&info.configs, &set, &delete)
                    .map_err(CommandError::InvalidConfig)?;
                Ok(Applied::Topic(info.clone()))
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
                bounds::check_module_name(&name).map_err(CommandError::Invalid)?;
                if wasm.len() > MAX_MODULE_BYTES {
                    return Err(CommandError::Invalid(format!(
                        "module '{name}' is {} bytes; a module may have at most {MAX_MODULE_BYTES}",
                        wasm.len()
                    )));
                }
                if sha256 != weir_wasm::sha256_hex(&wasm) {
                    return Err(CommandError::Invalid(format!(
                        "module '{name}': the SHA-256 given does not match its bytes"
                    )));
                }
                let stored: usize = self
                    .modules
                    .values()
                    .flat_map(|versions| versions.values())
                    .map(|v| v.wasm.len())
                    .sum();
                if stored + wasm.len() > MAX_STORED_MODULE_BYTES {
                    return Err(CommandError::Invalid(format!(
                        "the registered modules hold {stored} bytes; {} more would pass the limit of {MAX_STORED_MODULE_BYTES}: delete versions no longer used",
                        wasm.len()
                    )));
                }
                let versions = self.modules.get(&name);
                let latest = versions
                    .and_then(|v| v.keys().next_back().copied())
                    .unwrap_or(0);
                let version = match version {
                    Some(0) => {
                        return Err(CommandError::Invalid("module versions start at 1".into()));
                    }
                    Some(v) => v,
                    None => latest.checked_add(1).ok_or_else(|| {
                        CommandError::Invalid(format!("module '{name}' has no version left"))
                    })?,
                };
                if versions.is_some_and(|v| v.contains_key(&version)) {
                    return Err(CommandError::ModuleExists { name, version });
                }
                self.modules.entry(name).or_default().insert(
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
                bounds::check_attachment(&attachment).map_err(CommandError::Invalid)?;
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
                if chain.len() >= MAX_CHAIN_STAGES {
                    return Err(CommandError::Invalid(format!(
                        "the {path} chain of topic '{topic}' already has {MAX_CHAIN_STAGES} modules"
                    )));
                }
                chain.push(attachment);
                Ok(Applied::Done)
            }
            Command::PutUser {
                name,
                credential,
                replace,
            } => {
                check_user_name(&name).map_err(CommandError::Invalid)?;
                credential
                    .check()
                    .map_err(|e| CommandError::Invalid(e.to_string()))?;
                match (self.users.contains_key(&name), replace) {
                    (true, false) => return Err(CommandError::UserExists(name)),
                    (false, true) => return Err(CommandError::UnknownUser(name)),
                    (false, false) if self.users.len() >= MAX_USERS => {
                        return Err(CommandError::Invalid(format!(
                            "the cluster has {MAX_USERS} users, the most it may have"
                        )));
                    }
                    _ => {}
                }
                self.users.insert(name, credential);
                Ok(Applied::Done)
            }
            Command::DeleteUser { name } => match self.users.remove(&name) {
                Some(_) => Ok(Applied::Done),
                None => Err(CommandError::UnknownUser(name)),
            },
            Command::CreateAcls { bindings } => {
                for binding in &bindings {
                    binding.check().map_err(CommandError::Invalid)?;
                }
                let new = bindings.iter().filter(|b| !self.acls.contains(b)).count();
                if self.acls.len() + new > MAX_ACLS {
                    return Err(CommandError::Invalid(format!(
                        "the cluster has {} ACL bindings; {new} more would pass the limit of {MAX_ACLS}",
                        self.acls.len()
                    )));
                }
                self.acls.extend(bindings);
                Ok(Applied::Done)
            }
            Command::DeleteAcls { bindings } => {
                let removed = bindings.iter().filter(|b| self.acls.remove(b)).count();
                Ok(Applied::Removed(removed as u32))
            }
            Command::Group(_)
            | Command::AllocateProducerId
            | Command::AllocateProducerIds { .. } => Err(CommandError::Invalid(
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

/// Encodes a command for [`weir_raft::ControllerReplica::propose`].
pub fn encode_command(command: &Command) -> Bytes {
    // Serialising a plain enum of strings and integers cannot fail.
    Bytes::from(serde_json::to_vec(command).unwrap_or_default())
}

/// Decodes the reply of [`MetadataState::apply`](weir_raft::MetadataState::apply).
pub fn decode_reply(bytes: &[u8]) -> CommandReply {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| Err(CommandError::Invalid(format!("undecodable reply: {e}"))))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::metadata) fn topic(name: &str) -> TopicName {
        name.parse().unwrap()
    }

    pub(in crate::metadata) fn cluster(nodes: u64) -> ClusterMetadata {
        let mut m = ClusterMetadata::default();
        m.apply(Command::Bootstrap {
            cluster_id: "c".into(),
        })
        .unwrap();
        for id in 1..=nodes {
            m.apply(Command::RegisterNode(NodeInfo {
                id,
                address: format!("127.0.0.1:{id}"),
                warnings: Vec::new(),
            }))
            .unwrap();
        }
        m
    }

    pub(in crate::metadata) fn create(name: &str, partitions: u32, rf: u32) -> Command {
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

    fn register(name: &str, wasm: &'static [u8], sha256: Option<&str>) -> Command {
        Command::RegisterModule {
            name: name.into(),
            version: None,
            sha256: sha256.map_or_else(|| weir_wasm::sha256_hex(wasm), str::to_owned),
            registered_at_ms: 1,
            wasm: Bytes::from_static(wasm),
        }
    }

    fn refusal(reply: CommandReply) -> String {
        match reply {
            Err(CommandError::Invalid(reason) | CommandError::InvalidConfig(reason)) => reason,
            other => panic!("expected an invalid-command refusal, got {other:?}"),
        }
    }

    #[test]
    fn commands_outside_the_cluster_bounds_are_refused_where_they_apply() {
        let mut m = cluster(1);
        m.apply(create("a", 2, 1)).unwrap();
        m.apply(register("m", b"\0asm", None)).unwrap();
        let before = m.clone();

        // What `ProposeController` let anyone commit: every node would run out of memory
        // applying it, on every start.
        let reason = refusal(m.apply(create("huge", u32::MAX, 1)));
        assert!(reason.contains("at most 65536"), "{reason}");
        // Within the per-topic bound, but not the cluster's.
        for i in 0..3 {
            m.apply(create(&format!("t{i}"), MAX_PARTITIONS_PER_TOPIC, 1))
                .unwrap();
        }
        let full = m.clone();
        let reason = refusal(m.apply(create("last", MAX_PARTITIONS_PER_TOPIC, 1)));
        assert!(reason.contains("limit of 262144"), "{reason}");
        assert_eq!(m, full);
        let mut m = before.clone();

        let with_config = Command::CreateTopic {
            name: topic("c"),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::from([("retention.ms".into(), "-7".into())]),
        };
        assert!(refusal(m.apply(with_config)).starts_with("retention.ms"));
        let unknown = Command::CreateTopic {
            name: topic("c"),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::from([("k".repeat(10_000), "v".into())]),
        };
        let reason = refusal(m.apply(unknown));
        assert!(
            reason.len() < 400 && reason.contains("unknown topic config"),
            "{reason}"
        );
        let reason = refusal(m.apply(register("m", b"\0asm", Some("00"))));
        assert!(reason.contains("does not match"), "{reason}");
        assert!(
            refusal(m.apply(register("bad name", b"\0asm", None))).contains("invalid module name")
        );
        assert!(refusal(m.apply(register("new", b"\0asm", Some("00")))).contains("does not match"));
        let attach = |params: Vec<(String, String)>| Command::AttachModule {
            topic: topic("a"),
            path: ModulePath::Produce,
            attachment: Attachment {
                module: "m".into(),
                version: 1,
                params,
                on_reject: RejectPolicy::Reject,
            },
        };
        let empty_key = refusal(m.apply(attach(vec![(String::new(), "v".into())])));
        assert!(empty_key.contains("empty name"), "{empty_key}");
        let long = vec![("k".into(), "v".repeat(bounds::MAX_PARAM_BYTES + 1))];
        assert!(refusal(m.apply(attach(long))).contains("longer than"));
        assert!(
            refusal(m.apply(Command::RegisterNode(NodeInfo {
                id: 9,
                address: "x".repeat(bounds::MAX_ADDRESS_BYTES + 1),
                warnings: Vec::new(),
            })))
            .contains("address")
        );
        assert_eq!(m, before);
        assert_eq!(m.apply(attach(Vec::new())), Ok(Applied::Done));
    }

    #[test]
    fn a_refused_registration_of_a_new_module_leaves_no_trace() {
        let mut m = cluster(1);
        let before = m.clone();
        let mut zero = register("fresh", b"\0asm", None);
        if let Command::RegisterModule { version, .. } = &mut zero {
            *version = Some(0);
        }
        assert!(refusal(m.apply(zero)).contains("start at 1"));
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
}
