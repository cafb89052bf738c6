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
}

impl TopicInfo {
    /// The placement of one partition.
    pub fn partition(&self, id: PartitionId) -> Option<&PartitionInfo> {
        self.partitions.get(id.0 as usize)
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
    /// The command was malformed.
    #[error("invalid command: {0}")]
    Invalid(String),
}

/// The controller's reply to a command.
pub type CommandReply = Result<Option<TopicInfo>, CommandError>;

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
                Ok(None)
            }
            Command::RegisterNode(node) => {
                self.nodes.insert(node.id, node);
                Ok(None)
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
                };
                self.topics.insert(name, topic.clone());
                Ok(Some(topic))
            }
            Command::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(_) => Ok(None),
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
                Ok(None)
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
                Ok(None)
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
                Ok(None)
            }
        }
    }
}

/// The controller state machine as the raft layer sees it: metadata plus a watch channel that
/// tells the rest of the broker about every change.
pub struct MetadataStore {
    state: ClusterMetadata,
    published: watch::Sender<Arc<ClusterMetadata>>,
}

impl MetadataStore {
    /// An empty store and a receiver of its changes.
    pub fn new() -> (Self, watch::Receiver<Arc<ClusterMetadata>>) {
        let (published, receiver) = watch::channel(Arc::new(ClusterMetadata::default()));
        (
            Self {
                state: ClusterMetadata::default(),
                published,
            },
            receiver,
        )
    }

    fn publish(&self) {
        self.published.send_replace(Arc::new(self.state.clone()));
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
            Ok(command) => self.state.apply(command),
            Err(e) => Err(CommandError::Invalid(e.to_string())),
        };
        self.publish();
        Bytes::from(serde_json::to_vec(&reply).unwrap_or_default())
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(&self.state).unwrap_or_default())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.state = serde_json::from_slice(snapshot).map_err(|e| e.to_string())?;
        self.publish();
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
        let a = m.apply(create("a", 3, 1)).unwrap().unwrap();
        let groups: Vec<_> = a.partitions.iter().map(|p| p.group).collect();
        assert_eq!(groups, vec![1, 2, 3]);
        m.apply(Command::DeleteTopic { name: topic("a") }).unwrap();
        let again = m.apply(create("a", 1, 1)).unwrap().unwrap();
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
        let t = m.apply(create("t", 6, 3)).unwrap().unwrap();
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
        assert_eq!(reply, Ok(None));
        store.apply(&encode_command(&Command::RegisterNode(NodeInfo {
            id: 1,
            address: "a".into(),
        })));
        store.apply(&encode_command(&create("t", 2, 1)));
        assert!(rx.borrow().topics.contains_key(&topic("t")));
        let garbage = decode_reply(&store.apply(b"{not json"));
        assert!(matches!(garbage, Err(CommandError::Invalid(_))));

        let (mut restored, rx2) = MetadataStore::new();
        restored.restore(&store.snapshot()).unwrap();
        assert_eq!(restored.state, store.state);
        assert_eq!(*rx2.borrow().as_ref(), store.state);
        assert!(restored.restore(b"nope").is_err());
    }
}
