//! Consumer group types and the group RPCs: membership (join, heartbeat, leave), committed
//! offsets, and their administration. [`crate::Consumer`] drives the membership for
//! applications; the methods here are the protocol underneath, for tools and other runtimes.

use std::collections::BTreeMap;

use weir_proto::v1;

use crate::{Client, ClientError};

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

pub(crate) fn to_wire_partitions<'a>(
    partitions: impl IntoIterator<Item = &'a TopicPartition>,
) -> Vec<v1::TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| v1::TopicPartitions {
            topic: topic.to_owned(),
            partitions,
        })
        .collect()
}

pub(crate) fn from_wire_partitions(partitions: Vec<v1::TopicPartitions>) -> Vec<TopicPartition> {
    partitions
        .into_iter()
        .flat_map(|entry| {
            let topic = entry.topic;
            entry
                .partitions
                .into_iter()
                .map(move |partition| TopicPartition::new(topic.clone(), partition))
        })
        .collect()
}

/// A group's committed position in one partition: the offset of the next record to consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The partition.
    pub partition: TopicPartition,
    /// The offset.
    pub offset: u64,
    /// Text stored with it.
    pub metadata: String,
    /// The coordinator's clock at commit, in milliseconds since the Unix epoch.
    pub committed_at_ms: i64,
}

impl From<v1::CommittedOffset> for CommittedOffset {
    fn from(c: v1::CommittedOffset) -> Self {
        Self {
            partition: TopicPartition::new(c.topic, c.partition),
            offset: c.offset,
            metadata: c.metadata,
            committed_at_ms: c.committed_at_ms,
        }
    }
}

/// What joining a group granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The member id to send with every later request.
    pub member_id: String,
    /// How often to heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u32,
    /// The session timeout granted, in milliseconds.
    pub session_timeout_ms: u32,
    /// The group's assignor.
    pub assignor: String,
}

/// A heartbeat's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The partitions the member may consume now.
    pub assignment: Vec<TopicPartition>,
    /// The group's generation.
    pub generation: u64,
    /// How often to heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u32,
}

/// A group as `list_groups` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// Its name.
    pub group: String,
    /// `stable`, `rebalancing` or `empty`.
    pub state: String,
    /// Live members.
    pub members: u32,
}

/// A live member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberInfo {
    /// Its id.
    pub member_id: String,
    /// What its client calls itself.
    pub client_id: String,
    /// Where it connects from.
    pub client_address: String,
    /// Its subscription.
    pub topics: Vec<String>,
    /// What it owns now.
    pub assignment: Vec<TopicPartition>,
    /// Milliseconds since its last heartbeat.
    pub last_heartbeat_ms_ago: u64,
    /// Its session timeout, in milliseconds.
    pub session_timeout_ms: u32,
}

/// One partition of a group: committed offset, end of the log, lag and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPartitionInfo {
    /// The partition.
    pub partition: TopicPartition,
    /// The group's committed offset, if any.
    pub committed_offset: Option<u64>,
    /// The partition's high watermark, when the coordinator could learn it.
    pub high_watermark: Option<u64>,
    /// Records between the committed offset (or the log start) and the high watermark.
    pub lag: Option<u64>,
    /// The owning member; `None` when no member owns it.
    pub member_id: Option<String>,
}

/// A described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its name.
    pub group: String,
    /// `stable`, `rebalancing` or `empty`.
    pub state: String,
    /// Its assignor (empty without members).
    pub assignor: String,
    /// Its generation.
    pub generation: u64,
    /// Live members.
    pub members: Vec<GroupMemberInfo>,
    /// Partitions it owns or has offsets for.
    pub partitions: Vec<GroupPartitionInfo>,
}

impl From<v1::GroupDescription> for GroupInfo {
    fn from(d: v1::GroupDescription) -> Self {
        Self {
            group: d.group,
            state: d.state,
            assignor: d.assignor,
            generation: d.generation,
            members: d
                .members
                .into_iter()
                .map(|m| GroupMemberInfo {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    client_address: m.client_address,
                    topics: m.topics,
                    assignment: from_wire_partitions(m.assignment),
                    last_heartbeat_ms_ago: m.last_heartbeat_ms_ago,
                    session_timeout_ms: m.session_timeout_ms,
                })
                .collect(),
            partitions: d
                .partitions
                .into_iter()
                .map(|p| GroupPartitionInfo {
                    partition: TopicPartition::new(p.topic, p.partition),
                    committed_offset: p.committed_offset,
                    high_watermark: p.high_watermark,
                    lag: p.lag,
                    member_id: (!p.member_id.is_empty()).then_some(p.member_id),
                })
                .collect(),
        }
    }
}

/// Where [`Client::reset_group_offsets`] moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// Each partition's log start.
    Earliest,
    /// Each partition's high watermark (skip everything stored).
    Latest,
    /// This offset, which must be valid in every partition reset.
    Offset(u64),
    /// The committed offset (or the log start) moved by this many, clamped to the valid range.
    ShiftBy(i64),
    /// The first offset whose timestamp is at least this many milliseconds since the epoch.
    Timestamp(i64),
}

impl From<ResetTo> for v1::reset_group_offsets_request::To {
    fn from(to: ResetTo) -> Self {
        use v1::reset_group_offsets_request::To;
        match to {
            ResetTo::Earliest => To::Earliest(true),
            ResetTo::Latest => To::Latest(true),
            ResetTo::Offset(offset) => To::Offset(offset),
            ResetTo::ShiftBy(shift) => To::ShiftBy(shift),
            ResetTo::Timestamp(ms) => To::TimestampMs(ms),
        }
    }
}

impl Client {
    /// Joins `group` as a new member consuming `topics`. Prefer [`crate::Consumer`], which
    /// joins, heartbeats and follows the assignment for you.
    ///
    /// Broker reasons: `INVALID_GROUP_NAME`, `UNKNOWN_TOPIC`, `INCONSISTENT_GROUP_PROTOCOL`,
    /// `INVALID_ARGUMENT` (no topics, unknown assignor).
    pub async fn join_group(
        &self,
        group: &str,
        topics: &[String],
        assignor: &str,
        session_timeout_ms: u32,
        client_id: &str,
    ) -> Result<Joined, ClientError> {
        let response = self
            .coordinator()
            .join_group(v1::JoinGroupRequest {
                group: group.to_owned(),
                topics: topics.to_vec(),
                assignor: assignor.to_owned(),
                session_timeout_ms,
                client_id: client_id.to_owned(),
            })
            .await?
            .into_inner();
        Ok(Joined {
            member_id: response.member_id,
            heartbeat_interval_ms: response.heartbeat_interval_ms,
            session_timeout_ms: response.session_timeout_ms,
            assignor: response.assignor,
        })
    }

    /// Heartbeats as `member_id`, reporting the partitions it consumes; returns those it may
    /// consume now. Broker reasons: `UNKNOWN_MEMBER` (join again).
    pub async fn group_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        owned: &[TopicPartition],
    ) -> Result<Heartbeat, ClientError> {
        let response = self
            .coordinator()
            .group_heartbeat(v1::GroupHeartbeatRequest {
                group: group.to_owned(),
                member_id: member_id.to_owned(),
                owned: to_wire_partitions(owned),
            })
            .await?
            .into_inner();
        Ok(Heartbeat {
            assignment: from_wire_partitions(response.assignment),
            generation: response.generation,
            heartbeat_interval_ms: response.heartbeat_interval_ms,
        })
    }

    /// Leaves `group` at once. Broker reasons: `UNKNOWN_MEMBER`.
    pub async fn leave_group(&self, group: &str, member_id: &str) -> Result<(), ClientError> {
        self.coordinator()
            .leave_group(v1::LeaveGroupRequest {
                group: group.to_owned(),
                member_id: member_id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Commits `offsets` (partition, next offset to consume) for `group`, all or none.
    /// `member_id` is the committing member, or empty for a consumer outside the group's
    /// membership (allowed only while the group has no members).
    ///
    /// Broker reasons: `OFFSET_OUT_OF_RANGE` (past the high watermark), `NOT_ASSIGNED`,
    /// `UNKNOWN_MEMBER`, `GROUP_NOT_EMPTY`, `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`,
    /// `INVALID_GROUP_NAME`.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<(), ClientError> {
        self.coordinator()
            .commit_offsets(v1::CommitOffsetsRequest {
                group: group.to_owned(),
                member_id: member_id.to_owned(),
                offsets: offsets
                    .iter()
                    .map(|(tp, offset)| v1::OffsetCommit {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset: *offset,
                        metadata: String::new(),
                    })
                    .collect(),
            })
            .await?;
        Ok(())
    }

    /// The committed offsets of `group` for `partitions` (all it has when empty); partitions
    /// without one are absent. An unknown group has none.
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let response = self
            .coordinator()
            .fetch_committed_offsets(v1::FetchCommittedOffsetsRequest {
                group: group.to_owned(),
                partitions: to_wire_partitions(partitions),
            })
            .await?
            .into_inner();
        Ok(response.offsets.into_iter().map(Into::into).collect())
    }

    /// Groups with members or committed offsets.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>, ClientError> {
        let response = self
            .coordinator()
            .list_groups(v1::ListGroupsRequest {})
            .await?
            .into_inner();
        Ok(response
            .groups
            .into_iter()
            .map(|g| GroupSummary {
                group: g.group,
                state: g.state,
                members: g.members,
            })
            .collect())
    }

    /// Describes a group: members, assignment, committed offsets and lag.
    /// Broker reasons: `UNKNOWN_GROUP`, `INVALID_GROUP_NAME`.
    pub async fn describe_group(&self, group: &str) -> Result<GroupInfo, ClientError> {
        let response = self
            .coordinator()
            .describe_group(v1::DescribeGroupRequest {
                group: group.to_owned(),
            })
            .await?
            .into_inner();
        Ok(GroupInfo::from(response))
    }

    /// Moves `group`'s committed offsets for `topic` (every partition when `partitions` is
    /// empty) and returns them; with `dry_run`, only computes them. The group must have no
    /// members. Broker reasons: `GROUP_NOT_EMPTY`, `OFFSET_OUT_OF_RANGE` (for
    /// [`ResetTo::Offset`]), `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`.
    pub async fn reset_group_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[u32],
        to: ResetTo,
        dry_run: bool,
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let response = self
            .coordinator()
            .reset_group_offsets(v1::ResetGroupOffsetsRequest {
                group: group.to_owned(),
                topic: topic.to_owned(),
                partitions: partitions.to_vec(),
                to: Some(to.into()),
                dry_run,
            })
            .await?
            .into_inner();
        Ok(response.offsets.into_iter().map(Into::into).collect())
    }

    /// Deletes a group without members and its committed offsets.
    /// Broker reasons: `UNKNOWN_GROUP`, `GROUP_NOT_EMPTY`.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        self.coordinator()
            .delete_group(v1::DeleteGroupRequest {
                group: group.to_owned(),
            })
            .await?;
        Ok(())
    }
}
