//! Topic and cluster administration types, and their conversions from the wire messages.

use std::collections::HashMap;

use weir_proto::v1;

use crate::{ModuleAttachment, ModulePath};

/// What to create: a topic's name, partition count, replication factor and configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic name: 1 to 249 characters of `[A-Za-z0-9._-]`, checked by the broker.
    pub name: String,
    /// Number of partitions, at least 1.
    pub partitions: u32,
    /// Replicas per partition; 0 asks for the broker's default (1 on a single node).
    pub replication_factor: u32,
    /// Topic configuration entries, passed to the broker as given.
    pub configs: HashMap<String, String>,
}

impl TopicSpec {
    /// A topic with `partitions` partitions, the broker's default replication factor and no
    /// configuration entries.
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor: 0,
            configs: HashMap::new(),
        }
    }

    /// Sets the replication factor (0 keeps the broker default).
    pub fn with_replication_factor(mut self, replication_factor: u32) -> Self {
        self.replication_factor = replication_factor;
        self
    }

    /// Adds one configuration entry.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// One line of a topic listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    /// The topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
}

/// A topic with the state of each of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic name.
    pub name: String,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// The partitions, in partition order.
    pub partitions: Vec<PartitionInfo>,
    /// The configs set on the topic itself.
    pub configs: HashMap<String, String>,
    /// Every topic config with the value the answering broker applies and where it comes
    /// from, in name order.
    pub effective_configs: Vec<ConfigEntry>,
    /// Modules run on the partition leader over every produce request, in order, before
    /// anything is stored.
    pub produce_chain: Vec<ModuleAttachment>,
    /// Modules run over fetched records, in order, for consumers that name no chain of their
    /// own.
    pub consume_chain: Vec<ModuleAttachment>,
}

/// A topic config's effective value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The config's name (Kafka's: `max.message.bytes`, ...).
    pub name: String,
    /// Its value.
    pub value: String,
    /// Whether the topic sets it (`true`) or a default applies (`false`).
    pub set_on_topic: bool,
}

/// The state of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition index, from 0.
    pub partition: u32,
    /// Node id of the current leader; `None` while an election is in progress.
    pub leader: Option<u64>,
    /// Node ids of the replicas.
    pub replicas: Vec<u64>,
    /// One past the last committed offset: the next offset a consumer will see.
    pub high_watermark: u64,
    /// The first offset consumers may read: records below it were deleted (retention, or
    /// [`Client::delete_records`](crate::Client::delete_records)).
    pub log_start_offset: u64,
    /// The first offset the answering broker's replica still holds on disk (`None`: no batch).
    /// Below `log_start_offset` until that replica has purged what lies under the log start.
    pub first_stored_offset: Option<u64>,
    /// Bytes of the log entries the answering broker's replica stores on disk (`None`: it holds
    /// no replica of the partition).
    pub stored_bytes: Option<u64>,
    /// Each replica's replication state as the leader sees it; empty when the broker that
    /// answered does not lead the partition.
    pub replica_status: Vec<ReplicaStatus>,
    /// Why the answering broker's replica of this partition failed, if it did; it needs a
    /// restart of that broker.
    pub failure: Option<String>,
}

/// A replica's replication state, as its partition's leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The replica's node.
    pub node_id: u64,
    /// Whether it holds every committed record.
    pub in_sync: bool,
    /// Raft log entries it is behind the leader.
    pub lag: u64,
}

/// The nodes of a cluster and its controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The cluster's id.
    pub cluster_id: String,
    /// Node id of the controller's leader; `None` while an election is in progress.
    pub controller: Option<u64>,
    /// The member nodes.
    pub nodes: Vec<NodeInfo>,
    /// Whether the broker answering enforces ACLs.
    pub authorization: bool,
}

/// One node of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's id, never reused.
    pub node_id: u64,
    /// The address clients reach it at.
    pub address: String,
    /// What leaves the node open, as it reported at its start (listening beyond loopback
    /// without TLS or without authorization).
    pub warnings: Vec<String>,
}

impl From<TopicSpec> for v1::CreateTopicRequest {
    fn from(spec: TopicSpec) -> Self {
        Self {
            name: spec.name,
            partitions: spec.partitions,
            replication_factor: spec.replication_factor,
            configs: spec.configs,
        }
    }
}

impl From<v1::TopicSummary> for TopicSummary {
    fn from(summary: v1::TopicSummary) -> Self {
        Self {
            name: summary.name,
            partitions: summary.partitions,
            replication_factor: summary.replication_factor,
        }
    }
}

impl From<v1::TopicDescription> for TopicInfo {
    fn from(topic: v1::TopicDescription) -> Self {
        let mut partitions: Vec<PartitionInfo> = topic
            .partitions
            .into_iter()
            .map(PartitionInfo::from)
            .collect();
        partitions.sort_by_key(|p| p.partition);
        Self {
            name: topic.name,
            replication_factor: topic.replication_factor,
            partitions,
            configs: topic.configs,
            effective_configs: topic
                .effective_configs
                .into_iter()
                .map(|entry| ConfigEntry {
                    set_on_topic: entry.source() == v1::ConfigSource::Topic,
                    name: entry.name,
                    value: entry.value,
                })
                .collect(),
            produce_chain: chain(topic.produce_chain, ModulePath::Produce),
            consume_chain: chain(topic.consume_chain, ModulePath::Consume),
        }
    }
}

/// The attachments of one chain of a topic description.
fn chain(attachments: Vec<v1::ModuleAttachment>, path: ModulePath) -> Vec<ModuleAttachment> {
    attachments
        .into_iter()
        .map(|attachment| ModuleAttachment::from_wire(attachment, path))
        .collect()
}

impl From<v1::PartitionDescription> for PartitionInfo {
    fn from(partition: v1::PartitionDescription) -> Self {
        Self {
            partition: partition.partition,
            leader: partition.leader,
            replicas: partition.replicas,
            high_watermark: partition.high_watermark,
            log_start_offset: partition.log_start_offset,
            first_stored_offset: partition.first_stored_offset,
            stored_bytes: partition.stored_bytes,
            replica_status: partition
                .replica_status
                .into_iter()
                .map(|r| ReplicaStatus {
                    node_id: r.node_id,
                    in_sync: r.in_sync,
                    lag: r.lag,
                })
                .collect(),
            failure: partition.failure,
        }
    }
}

impl From<v1::DescribeClusterResponse> for ClusterInfo {
    fn from(cluster: v1::DescribeClusterResponse) -> Self {
        Self {
            cluster_id: cluster.cluster_id,
            controller: cluster.controller,
            nodes: cluster
                .nodes
                .into_iter()
                .map(|node| NodeInfo {
                    node_id: node.node_id,
                    address: node.address,
                    warnings: node.warnings,
                })
                .collect(),
            authorization: cluster.authorization,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_info_lists_partitions_in_order() {
        let partition = |partition, leader| v1::PartitionDescription {
            partition,
            leader,
            replicas: vec![1, 2, 3],
            high_watermark: 10,
            log_start_offset: 2,
            ..Default::default()
        };
        let info = TopicInfo::from(v1::TopicDescription {
            name: "orders".to_owned(),
            replication_factor: 3,
            partitions: vec![partition(1, None), partition(0, Some(2))],
            configs: HashMap::new(),
            produce_chain: Vec::new(),
            consume_chain: Vec::new(),
            effective_configs: vec![v1::ConfigEntry {
                name: "max.message.bytes".to_owned(),
                value: "1000".to_owned(),
                source: v1::ConfigSource::Topic as i32,
            }],
        });
        assert_eq!(
            info.effective_configs,
            [ConfigEntry {
                name: "max.message.bytes".to_owned(),
                value: "1000".to_owned(),
                set_on_topic: true,
            }]
        );
        let order: Vec<u32> = info.partitions.iter().map(|p| p.partition).collect();
        assert_eq!(order, [0, 1]);
        assert_eq!(info.partitions[0].leader, Some(2));
        assert_eq!(info.partitions[1].leader, None);
        assert_eq!(info.partitions[0].log_start_offset, 2);
    }

    #[test]
    fn topic_info_reads_both_chains_in_order() {
        let attachment = |name: &str, version, on_reject: v1::RejectPolicy, dlq: &str| {
            v1::ModuleAttachment {
                module: Some(v1::ModuleRef {
                    name: name.to_owned(),
                    version: Some(version),
                    params: vec![v1::ModuleParam {
                        key: "k".to_owned(),
                        value: "v".to_owned(),
                    }],
                }),
                // The list an attachment is in decides its path.
                path: v1::ModulePath::Unspecified as i32,
                on_reject: on_reject as i32,
                dead_letter_topic: dlq.to_owned(),
            }
        };
        let info = TopicInfo::from(v1::TopicDescription {
            name: "orders".to_owned(),
            produce_chain: vec![
                attachment("validate", 2, v1::RejectPolicy::DeadLetter, "dlq"),
                attachment("stamp", 1, v1::RejectPolicy::Unspecified, ""),
            ],
            consume_chain: vec![attachment("filter", 4, v1::RejectPolicy::Reject, "")],
            ..Default::default()
        });
        assert_eq!(
            info.produce_chain,
            [
                ModuleAttachment {
                    module: crate::ModuleRef::new("validate")
                        .with_version(2)
                        .with_param("k", "v"),
                    path: ModulePath::Produce,
                    on_reject: crate::RejectPolicy::DeadLetter("dlq".to_owned()),
                },
                ModuleAttachment {
                    module: crate::ModuleRef::new("stamp")
                        .with_version(1)
                        .with_param("k", "v"),
                    path: ModulePath::Produce,
                    on_reject: crate::RejectPolicy::Reject,
                },
            ]
        );
        assert_eq!(info.consume_chain.len(), 1);
        assert_eq!(info.consume_chain[0].path, ModulePath::Consume);
        assert_eq!(info.consume_chain[0].module.versioned_name(), "filter@4");
    }

    #[test]
    fn topic_spec_builder_fills_the_request() {
        let request = v1::CreateTopicRequest::from(
            TopicSpec::new("orders", 3)
                .with_replication_factor(2)
                .with_config("retention.ms", "1000"),
        );
        assert_eq!(request.name, "orders");
        assert_eq!(request.partitions, 3);
        assert_eq!(request.replication_factor, 2);
        assert_eq!(
            request.configs.get("retention.ms").map(String::as_str),
            Some("1000")
        );
    }
}
