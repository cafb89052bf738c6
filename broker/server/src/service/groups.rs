//! Consumer group RPCs. The controller leader coordinates every group; any other node forwards
//! the request there once, marked so that it is never forwarded again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::{StreamExt, stream};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use weir_proto::v1 as pb;
use weir_proto::v1::broker_client::BrokerClient;
use weir_raft::{LeaderLease, PeerChannel};
use weir_types::{GroupName, PartitionId, TopicName};

use super::{BrokerService, now_ms};
use crate::error::BrokerError;
use crate::groups::{
    Assignor, CommittedOffset, GroupCommand, GroupState, LiveGroup, Member, TopicPartition,
    unknown_member,
};
use crate::metadata::{Command, MAX_COMMIT_METADATA, TopicInfo};
use crate::node::Node;

/// Request metadata marking a request forwarded to the controller leader.
const FORWARDED: &str = "weir-forwarded";
/// Request metadata carrying the client's address through a forward.
const CLIENT_ADDRESS: &str = "weir-client-address";
/// Longest client id accepted.
const MAX_CLIENT_ID: usize = 255;
/// Partition leaders `DescribeGroup` asks for their high watermarks at once.
const DESCRIBE_CONCURRENCY: usize = 16;

/// Where a group request is served.
enum Coordinator {
    /// Here, in this controller term.
    Here(u64),
    /// At the controller leader.
    There(BrokerClient<PeerChannel>),
}

/// Sends `request` on to the controller leader, keeping the client's address.
async fn forward<T, R, Fut>(
    request: Request<T>,
    call: impl FnOnce(Request<T>) -> Fut,
) -> Result<R, BrokerError>
where
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    let address = client_address(&request);
    let mut forwarded = Request::new(request.into_inner());
    let metadata = forwarded.metadata_mut();
    metadata.insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    if let Ok(value) = address.parse() {
        metadata.insert(CLIENT_ADDRESS, value);
    }
    call(forwarded)
        .await
        .map(Response::into_inner)
        .map_err(|status| BrokerError::forwarded("the controller leader", status))
}

/// The address of the client that sent `request`, through a forward.
fn client_address<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(CLIENT_ADDRESS)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.remote_addr().map(|a| a.to_string()))
        .unwrap_or_default()
}

fn to_pb_partitions<'a>(
    partitions: impl IntoIterator<Item = &'a TopicPartition>,
) -> Vec<pb::TopicPartitions> {
    let mut by_topic: BTreeMap<&TopicName, Vec<u32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| pb::TopicPartitions {
            topic: topic.to_string(),
            partitions,
        })
        .collect()
}

fn from_pb_partitions(
    partitions: Vec<pb::TopicPartitions>,
) -> Result<BTreeSet<TopicPartition>, BrokerError> {
    let mut out = BTreeSet::new();
    for entry in partitions {
        let topic = BrokerError::topic_name(&entry.topic)?;
        out.extend(entry.partitions.into_iter().map(|p| (topic.clone(), p)));
    }
    Ok(out)
}

fn to_pb_offset(topic: &TopicName, partition: u32, c: &CommittedOffset) -> pb::CommittedOffset {
    pb::CommittedOffset {
        topic: topic.to_string(),
        partition,
        offset: c.offset,
        metadata: c.metadata.clone(),
        committed_at_ms: c.committed_at_ms,
    }
}

/// A member id: the client id's safe characters (at most 64) and a random suffix.
fn new_member_id(client_id: &str) -> String {
    let prefix: String = client_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    let prefix = if prefix.is_empty() { "member" } else { &prefix };
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// The controller term this node coordinates groups in, given its lease as leader; a leader
/// not confirmed by a quorum (elected a moment ago, or cut off) is refused, retriably.
fn coordinating_term(lease: LeaderLease) -> Result<u64, BrokerError> {
    match lease {
        LeaderLease::Held { term } => Ok(term),
        LeaderLease::Unconfirmed { .. } => Err(BrokerError::Unavailable(
            "this node was elected controller leader a moment ago and no quorum of voters has \
             acknowledged it yet"
                .into(),
        )),
        LeaderLease::Over { .. } => Err(BrokerError::Unavailable(
            "this node leads the controller, but its lease is over (no quorum of voters \
             acknowledged it within the longest election timeout): it may be cut off, and \
             another node may coordinate consumer groups now"
                .into(),
        )),
    }
}

/// Locks a group's `live` state of controller term `term`. A request may wait for that lock
/// behind another (a commit holds it until its raft write applies, which on a cut-off leader
/// takes until it hears of the new one): once it has it, this node must still coordinate in
/// `term`, with its lease, or the request is refused as [`BrokerService::coordinator`] would.
async fn lock_live(
    node: &Node,
    term: u64,
    live: Arc<tokio::sync::Mutex<LiveGroup>>,
) -> Result<OwnedMutexGuard<LiveGroup>, BrokerError> {
    let live = live.lock_owned().await;
    match node.controller_lease().map(coordinating_term) {
        Some(Ok(now)) if now == term => Ok(live),
        Some(Err(refused)) => Err(refused),
        Some(Ok(_)) | None => Err(BrokerError::Unavailable(
            "this node stopped coordinating consumer groups (its controller term ended) while \
             the request waited"
                .into(),
        )),
    }
}

/// Removes expired members, saying so in the log.
fn expire(group: &GroupName, live: &mut LiveGroup, now: Instant) {
    for member in live.expire(now) {
        tracing::info!(%group, %member, "consumer group member's session expired");
    }
}

impl BrokerService {
    /// Where `request` is served: here when this node leads the controller, else at the
    /// leader (unless it was forwarded already, which means leadership is moving).
    ///
    /// A leader whose lease is over coordinates nothing: cut off from the other voters, it
    /// believes it leads until it hears of a newer term, while they may have elected another
    /// leader whose coordinator hands the same partitions to other members. Group membership
    /// lives only in the coordinator's memory, so no raft write would stop it otherwise. The
    /// others refuse their votes for as long after the last heartbeat they acknowledged, so
    /// they elect another leader only after this lease is over (unless one of them restarted
    /// meanwhile: openraft starts a voter without a lease). A request that waited for a
    /// group's lock checks again once it has it ([`lock_live`]).
    async fn coordinator<T>(&self, request: &Request<T>) -> Result<Coordinator, BrokerError> {
        let node = self.node()?;
        if let Some(lease) = node.confirmed_controller_lease().await {
            return coordinating_term(lease).map(Coordinator::Here);
        }
        if request.metadata().contains_key(FORWARDED) {
            return Err(BrokerError::Unavailable(
                "the controller leader is changing; retry".into(),
            ));
        }
        Ok(Coordinator::There(node.controller_leader_client()?))
    }

    /// `ListOffsets` answered by the partition's leader: this node's replica if it leads,
    /// else the leader's. Used to check commits against the newest high watermark.
    async fn offsets_at_leader(
        &self,
        topic: &TopicInfo,
        partition: u32,
        spec: pb::list_offsets_request::Spec,
    ) -> Result<pb::ListOffsetsResponse, BrokerError> {
        let node = self.node()?;
        let request = pb::ListOffsetsRequest {
            topic: topic.name.to_string(),
            partition,
            spec: Some(spec),
        };
        let leader = match node.hosted(topic, PartitionId(partition)) {
            Ok(hosted) if hosted.replica.is_leader() => None,
            Ok(hosted) => hosted.replica.leader(),
            Err(BrokerError::NotLeader { leader, .. }) => leader,
            Err(e) => return Err(e),
        };
        match leader {
            Some(id) if id != node.config.node_id => node
                .node_client(id)?
                .list_offsets(request)
                .await
                .map(Response::into_inner)
                .map_err(|status| BrokerError::forwarded(format_args!("node {id}"), status)),
            _ => self.handle_list_offsets(Request::new(request)).await,
        }
    }

    pub(super) async fn handle_join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<pb::JoinGroupResponse, BrokerError> {
        let term = match self.coordinator(&request).await? {
            Coordinator::Here(term) => term,
            Coordinator::There(mut leader) => {
                return forward(request, |r| async move { leader.join_group(r).await }).await;
            }
        };
        let node = self.node()?;
        let client_address = client_address(&request);
        let req = request.into_inner();
        let group = BrokerError::group_name(&req.group)?;
        if req.topics.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "a member must subscribe to at least one topic".into(),
            ));
        }
        let mut topics = BTreeSet::new();
        for name in &req.topics {
            let topic = BrokerError::topic_name(name)?;
            node.topic(&topic).await?;
            topics.insert(topic);
        }
        let assignor: Assignor = req.assignor.parse().map_err(BrokerError::InvalidArgument)?;
        if req.client_id.len() > MAX_CLIENT_ID {
            return Err(BrokerError::InvalidArgument(format!(
                "client id is {} bytes long; the limit is {MAX_CLIENT_ID}",
                req.client_id.len()
            )));
        }
        let now = Instant::now();
        let member_id = new_member_id(&req.client_id);
        let member = Member {
            client_id: req.client_id,
            client_address,
            topics,
            session_timeout: node.config.groups.session_timeout(req.session_timeout_ms),
            last_seen: now,
            holding: BTreeSet::new(),
        };
        let response = pb::JoinGroupResponse {
            member_id: member_id.clone(),
            heartbeat_interval_ms: member.heartbeat_interval().as_millis() as u32,
            session_timeout_ms: member.session_timeout.as_millis() as u32,
            assignor: assignor.to_string(),
        };
        let mut live = lock_live(node, term, node.coordinator.group(term, &group)).await?;
        expire(&group, &mut live, now);
        let limits = &node.config.groups;
        if live.members().len() >= limits.max_members_per_group {
            return Err(BrokerError::GroupMaxSizeReached(format!(
                "group '{group}' has {} members, the most a group may have (groups.max_members_per_group)",
                live.members().len()
            )));
        }
        let members = node.coordinator.member_count();
        if members >= limits.max_members {
            return Err(BrokerError::Overloaded(format!(
                "this coordinator holds {members} consumer group members, its limit (groups.max_members); try again once members leave or expire"
            )));
        }
        tracing::info!(%group, member = %member_id, topics = ?member.topics, "consumer group member joined");
        live.join(&group, member_id, member, assignor)?;
        Ok(response)
    }

    pub(super) async fn handle_group_heartbeat(
        &self,
        request: Request<pb::GroupHeartbeatRequest>,
    ) -> Result<pb::GroupHeartbeatResponse, BrokerError> {
        let term = match self.coordinator(&request).await? {
            Coordinator::Here(term) => term,
            Coordinator::There(mut leader) => {
                return forward(request, |r| async move { leader.group_heartbeat(r).await }).await;
            }
        };
        let node = self.node()?;
        let req = request.into_inner();
        let group = BrokerError::group_name(&req.group)?;
        let owned = from_pb_partitions(req.owned)?;
        let live = node
            .coordinator
            .existing(term, &group)
            .ok_or_else(|| unknown_member(&group, &req.member_id))?;
        let mut live = lock_live(node, term, live).await?;
        let now = Instant::now();
        expire(&group, &mut live, now);
        let metadata = node.metadata();
        let assignment = live.heartbeat(&group, &req.member_id, &owned, now, |topic| {
            metadata
                .topics
                .get(topic)
                .map(|t| t.partitions.len() as u32)
        })?;
        let interval = live
            .heartbeat_interval_of(&req.member_id)
            .map_or(0, |interval| interval.as_millis() as u32);
        Ok(pb::GroupHeartbeatResponse {
            assignment: to_pb_partitions(&assignment),
            generation: live.generation(),
            heartbeat_interval_ms: interval,
        })
    }

    pub(super) async fn handle_leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<pb::LeaveGroupResponse, BrokerError> {
        let term = match self.coordinator(&request).await? {
            Coordinator::Here(term) => term,
            Coordinator::There(mut leader) => {
                return forward(request, |r| async move { leader.leave_group(r).await }).await;
            }
        };
        let node = self.node()?;
        let req = request.into_inner();
        let group = BrokerError::group_name(&req.group)?;
        let live = node
            .coordinator
            .existing(term, &group)
            .ok_or_else(|| unknown_member(&group, &req.member_id))?;
        let mut live = lock_live(node, term, live).await?;
        expire(&group, &mut live, Instant::now());
        live.leave(&group, &req.member_id)?;
        tracing::info!(%group, member = %req.member_id, "consumer group member left");
        Ok(pb::LeaveGroupResponse {})
    }

    pub(super) async fn handle_commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<pb::CommitOffsetsResponse, BrokerError> {
        let term = match self.coordinator(&request).await? {
            Coordinator::Here(term) => term,
            Coordinator::There(mut leader) => {
                return forward(request, |r| async move { leader.commit_offsets(r).await }).await;
            }
        };
        let node = self.node()?;
        let req = request.into_inner();
        let group = BrokerError::group_name(&req.group)?;
        let committed_at_ms = now_ms();
        let mut offsets: BTreeMap<TopicPartition, CommittedOffset> = BTreeMap::new();
        let mut topics: BTreeMap<TopicName, TopicInfo> = BTreeMap::new();
        for commit in req.offsets {
            let name = BrokerError::topic_name(&commit.topic)?;
            if !topics.contains_key(&name) {
                topics.insert(name.clone(), node.topic(&name).await?);
            }
            Node::check_partition(&topics[&name], commit.partition)?;
            if commit.metadata.len() > MAX_COMMIT_METADATA {
                return Err(BrokerError::InvalidArgument(format!(
                    "metadata of the offset for {name}/{} is {} bytes long; the limit is {MAX_COMMIT_METADATA}",
                    commit.partition,
                    commit.metadata.len()
                )));
            }
            let tp = (name, commit.partition);
            if offsets.contains_key(&tp) {
                return Err(BrokerError::InvalidArgument(format!(
                    "{}/{} appears twice in the commit",
                    tp.0, tp.1
                )));
            }
            offsets.insert(
                tp,
                CommittedOffset {
                    offset: commit.offset,
                    metadata: commit.metadata,
                    committed_at_ms,
                },
            );
        }
        if offsets.is_empty() {
            return Ok(pb::CommitOffsetsResponse {});
        }
        // Held until the commit is applied: a partition moving to another member is granted
        // only after this commit is visible to its new owner.
        let mut live = lock_live(node, term, node.coordinator.group(term, &group)).await?;
        expire(&group, &mut live, Instant::now());
        live.check_commit(&group, &req.member_id, offsets.keys())?;
        for ((topic, partition), committed) in &offsets {
            let at_leader = self
                .offsets_at_leader(
                    &topics[topic],
                    *partition,
                    pb::list_offsets_request::Spec::Latest(true),
                )
                .await?;
            if committed.offset > at_leader.high_watermark {
                return Err(BrokerError::OffsetOutOfRange {
                    topic: topic.clone(),
                    partition: PartitionId(*partition),
                    requested: i64::try_from(committed.offset).unwrap_or(i64::MAX),
                    log_start: weir_types::Offset(at_leader.log_start_offset),
                    high_watermark: weir_types::Offset(at_leader.high_watermark),
                });
            }
        }
        node.propose(Command::Group(GroupCommand::Commit {
            group,
            offsets: offsets
                .into_iter()
                .map(|((topic, partition), committed)| (topic, partition, committed))
                .collect(),
        }))
        .await?;
        Ok(pb::CommitOffsetsResponse {})
    }

    pub(super) async fn handle_fetch_committed_offsets(
        &self,
        request: Request<pb::FetchCommittedOffsetsRequest>,
    ) -> Result<pb::FetchCommittedOffsetsResponse, BrokerError> {
        if let Coordinator::There(mut leader) = self.coordinator(&request).await? {
            return forward(request, |r| async move {
                leader.fetch_committed_offsets(r).await
            })
            .await;
        }
        let node = self.node()?;
        let req = request.into_inner();
        let group = BrokerError::group_name(&req.group)?;
        let wanted = from_pb_partitions(req.partitions)?;
        let all = node.confirmed_group_offsets().await?;
        let offsets = all
            .group(&group)
            .map(|committed| {
                committed
                    .iter()
                    .flat_map(|(topic, partitions)| {
                        partitions.iter().map(move |(p, c)| (topic, *p, c))
                    })
                    .filter(|(topic, p, _)| {
                        wanted.is_empty() || wanted.contains(&((*topic).clone(), *p))
                    })
                    .map(|(topic, p, c)| to_pb_offset(topic, p, c))
                    .collect()
            })
            .unwrap_or_default();
        Ok(pb::FetchCommittedOffsetsResponse { offsets })
    }

    pub(super) async fn handle_list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<pb::ListGroupsResponse, BrokerError> {
        let term = match self.coordinator(&request).await? {
            Coordinator::Here(term) => term,
            Coordinator::There(mut leader) => {
                return forward(request, |r| async move { leader.list_groups(r).await }).await;
            }
        };
        let node = self.node()?;
        let mut summaries: BTreeMap<GroupName, pb::GroupSummary> = node
            .group_offsets()
            .names()
            .map(|name| {
                let summary = pb::GroupSummary {
                    group: name.to_string(),
                    state: GroupState::Empty.as_str().into(),
                    members: 0,
                };
                (name.clone(), summary)
            })
            .collect();
        let now = Instant::now();
        for (name, live) in node.coordinator.groups(term) {
            let mut live = lock_live(node, term, live).await?;
            expire(&name, &mut live, now);
            if live.members().is_empty() {
                continue;
            }
            summaries.insert(
                name.clone(),
                pb::GroupSummary {
                    group: name.to_string(),
                    state: live.state().as_str().into(),
                    members: live.members().len() as u32,
                },
            );
        }
        Ok(pb::ListGroupsResponse {
            groups: summaries.into_values().collect(),
        })
    }

    pub(super) async fn handle_describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<pb::GroupDescription, BrokerError> {
        let term = match self.coordinator(&request).await? {
            Coordinator::Here(term) => term,
            Coordinator::There(mut leader) => {
                return forward(request, |r| async move { leader.describe_group(r).await }).await;
            }
        };
        let node = self.node()?;
        let group = BrokerError::group_name(&request.into_inner().group)?;
        let committed = node.group_offsets().group(&group).cloned();
        let mut description = pb::GroupDescription {
            group: group.to_string(),
            state: GroupState::Empty.as_str().into(),
            ..Default::default()
        };
        let mut owners: BTreeMap<TopicPartition, String> = BTreeMap::new();
        if let Some(live) = node.coordinator.existing(term, &group) {
            let mut live = lock_live(node, term, live).await?;
            let now = Instant::now();
            expire(&group, &mut live, now);
            if !live.members().is_empty() {
                description.state = live.state().as_str().into();
                description.assignor = live.assignor().to_string();
                description.generation = live.generation();
            }
            for (tp, member) in live.owners() {
                owners.insert(tp.clone(), member.to_owned());
            }
            description.members = live
                .members()
                .iter()
                .map(|(id, m)| pb::GroupMember {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    client_address: m.client_address.clone(),
                    topics: m.topics.iter().map(ToString::to_string).collect(),
                    assignment: to_pb_partitions(&m.holding),
                    last_heartbeat_ms_ago: now.saturating_duration_since(m.last_seen).as_millis()
                        as u64,
                    session_timeout_ms: m.session_timeout.as_millis() as u32,
                })
                .collect();
        }
        if description.members.is_empty() && committed.is_none() {
            return Err(BrokerError::UnknownGroup(group.to_string()));
        }
        let mut partitions: BTreeSet<TopicPartition> = owners.keys().cloned().collect();
        if let Some(committed) = &committed {
            for (topic, offsets) in committed.iter() {
                partitions.extend(offsets.keys().map(|p| (topic.clone(), *p)));
            }
        }
        // Each partition's end comes from its leader, possibly another node: ask up to
        // DESCRIBE_CONCURRENCY of them at once, keeping the partitions' order.
        let metadata = node.metadata();
        let lookups: Vec<_> = partitions
            .iter()
            .map(|(topic, partition)| {
                let info = metadata.topics.get(topic);
                let partition = *partition;
                async move {
                    self.offsets_at_leader(
                        info?,
                        partition,
                        pb::list_offsets_request::Spec::Latest(true),
                    )
                    .await
                    .ok()
                }
            })
            .collect();
        let ends: Vec<Option<pb::ListOffsetsResponse>> = stream::iter(lookups)
            .buffered(DESCRIBE_CONCURRENCY)
            .collect()
            .await;
        for (tp, ends) in partitions.into_iter().zip(ends) {
            let (topic, partition) = &tp;
            let committed_offset = committed
                .as_ref()
                .and_then(|c| c.get(topic)?.get(partition))
                .map(|c| c.offset);
            description.partitions.push(pb::GroupPartition {
                topic: topic.to_string(),
                partition: *partition,
                committed_offset,
                high_watermark: ends.as_ref().map(|e| e.high_watermark),
                lag: ends.as_ref().map(|e| {
                    e.high_watermark
                        .saturating_sub(committed_offset.unwrap_or(e.log_start_offset))
                }),
                member_id: owners.get(&tp).cloned().unwrap_or_default(),
            });
        }
        Ok(description)
    }

    pub(super) async fn handle_reset_group_offsets(
        &self,
        request: Request<pb::ResetGroupOffsetsRequest>,
    ) -> Result<pb::ResetGroupOffsetsResponse, BrokerError> {
        use pb::list_offsets_request::Spec;
        use pb::reset_group_offsets_request::To;

        let term = match self.coordinator(&request).await? {
            Coordinator::Here(term) => term,
            Coordinator::There(mut leader) => {
                return forward(
                    request,
                    |r| async move { leader.reset_group_offsets(r).await },
                )
                .await;
            }
        };
        let node = self.node()?;
        let req = request.into_inner();
        let group = BrokerError::group_name(&req.group)?;
        let topic = node.topic(&BrokerError::topic_name(&req.topic)?).await?;
        let to = req.to.ok_or_else(|| {
            BrokerError::InvalidArgument(
                "say where to reset to: earliest, latest, offset, shift_by or timestamp_ms".into(),
            )
        })?;
        let partitions: Vec<u32> = if req.partitions.is_empty() {
            (0..topic.partitions.len() as u32).collect()
        } else {
            for &p in &req.partitions {
                Node::check_partition(&topic, p)?;
            }
            req.partitions.clone()
        };
        let mut live = lock_live(node, term, node.coordinator.group(term, &group)).await?;
        expire(&group, &mut live, Instant::now());
        if !live.members().is_empty() {
            return Err(BrokerError::GroupNotEmpty(format!(
                "group '{group}' has {} live member(s); stop them before resetting its offsets",
                live.members().len()
            )));
        }
        let current = node.group_offsets();
        let committed_at_ms = now_ms();
        let mut reset = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let ends = self
                .offsets_at_leader(&topic, partition, Spec::Latest(true))
                .await?;
            let (log_start, high_watermark) = (ends.log_start_offset, ends.high_watermark);
            let offset = match to {
                To::Earliest(_) => log_start,
                To::Latest(_) => high_watermark,
                To::Offset(offset) => {
                    if !(log_start..=high_watermark).contains(&offset) {
                        return Err(BrokerError::OffsetOutOfRange {
                            topic: topic.name.clone(),
                            partition: PartitionId(partition),
                            requested: i64::try_from(offset).unwrap_or(i64::MAX),
                            log_start: weir_types::Offset(log_start),
                            high_watermark: weir_types::Offset(high_watermark),
                        });
                    }
                    offset
                }
                To::ShiftBy(shift) => {
                    let base = current
                        .offset(&group, &topic.name, partition)
                        .map_or(log_start, |c| c.offset);
                    let shifted = i128::from(base) + i128::from(shift);
                    shifted.clamp(i128::from(log_start), i128::from(high_watermark)) as u64
                }
                To::TimestampMs(timestamp_ms) => self
                    .offsets_at_leader(&topic, partition, Spec::TimestampMs(timestamp_ms))
                    .await?
                    .offset
                    .unwrap_or(high_watermark),
            };
            reset.push((
                topic.name.clone(),
                partition,
                CommittedOffset {
                    offset,
                    metadata: String::new(),
                    committed_at_ms,
                },
            ));
        }
        let offsets = reset
            .iter()
            .map(|(topic, partition, c)| to_pb_offset(topic, *partition, c))
            .collect();
        if !req.dry_run {
            tracing::info!(%group, topic = %topic.name, "resetting committed offsets");
            node.propose(Command::Group(GroupCommand::Commit {
                group,
                offsets: reset,
            }))
            .await?;
        }
        Ok(pb::ResetGroupOffsetsResponse { offsets })
    }

    pub(super) async fn handle_delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<pb::DeleteGroupResponse, BrokerError> {
        let term = match self.coordinator(&request).await? {
            Coordinator::Here(term) => term,
            Coordinator::There(mut leader) => {
                return forward(request, |r| async move { leader.delete_group(r).await }).await;
            }
        };
        let node = self.node()?;
        let group = BrokerError::group_name(&request.into_inner().group)?;
        let mut live = lock_live(node, term, node.coordinator.group(term, &group)).await?;
        expire(&group, &mut live, Instant::now());
        if !live.members().is_empty() {
            return Err(BrokerError::GroupNotEmpty(format!(
                "group '{group}' has {} live member(s); stop them before deleting it",
                live.members().len()
            )));
        }
        if node.group_offsets().group(&group).is_none() {
            return Err(BrokerError::UnknownGroup(group.to_string()));
        }
        tracing::info!(%group, "deleting consumer group");
        node.propose(Command::Group(GroupCommand::Delete { group }))
            .await?;
        Ok(pb::DeleteGroupResponse {})
    }
}
