//! The replicated data model: nodes, topics and their partitions' placement, registered module
//! versions and the chains they are attached to, and read-only queries over them.
//!
//! Changes go through [`Command`](super::command::Command)s, applied in `command`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_raft::{GroupId, NodeId};
use weir_types::scram::ScramCredential;
use weir_types::{PartitionId, TopicName};

use super::base64_bytes;
use crate::security::AclBinding;

/// The controller group's id; partition groups are numbered from 1.
pub const CONTROLLER_GROUP: GroupId = 0;

/// A broker node known to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// Address clients and peers reach it at.
    pub address: String,
    /// What leaves the node open, as it reported at its start (listening beyond loopback
    /// without TLS or without authorization); shown by `weir cluster status`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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

    pub(super) fn chain_mut(&mut self, path: ModulePath) -> &mut Vec<Attachment> {
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
    /// Users by name, with their SCRAM-SHA-256 credentials (never a password).
    #[serde(default)]
    pub users: BTreeMap<String, ScramCredential>,
    /// ACL bindings.
    #[serde(default)]
    pub acls: BTreeSet<AclBinding>,
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
