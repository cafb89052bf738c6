//! The `weir.v1.Broker` gRPC service: request validation and translation, nothing else.
//!
//! Every handler validates its whole request before changing anything, and fails through
//! [`BrokerError`], which is the only place statuses are built. Every RPC first authenticates
//! its caller and checks the permissions `permissions` lists for it ([`BrokerService::serve`]).
//! This file holds the service, the topic and cluster administration RPCs and the trait's
//! dispatch; each other RPC family has its own file: produce, consume (fetch, subscribe,
//! offsets), groups, modules, security administration (users, ACLs).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::Stream;
use tonic::{Request, Response, Status};
use weir_proto::v1 as pb;
use weir_proto::v1::broker_server::Broker;
use weir_types::{Offset, PartitionId};

use crate::error::BrokerError;
use crate::metadata::{
    ClusterMetadata, Command, ConfigSource, ModulePath, TopicInfo, check_topic_configs,
};
use crate::metrics::RequestMetrics;
use crate::node::{Node, blocking};
use crate::security::{AclOperation, Principal, Resource, Security};
use permissions::Permissions;

mod consume;
mod groups;
mod module_admin;
mod permissions;
mod produce;
mod security_admin;

/// The gRPC service over a [`Node`].
#[derive(Clone)]
pub(crate) struct BrokerService {
    /// Set once the node has started; the service is served earlier, because a starting node
    /// already takes part in elections through the same port.
    node: Arc<OnceLock<Arc<Node>>>,
    metrics: Arc<RequestMetrics>,
    security: Arc<Security>,
}

/// Who made a request, from where, and the metadata (users, ACLs) it was judged against.
pub(crate) struct Caller {
    principal: Principal,
    client: Option<std::net::SocketAddr>,
    metadata: Arc<ClusterMetadata>,
}

/// The permissions a long-lived request needed when it started, checked again against the
/// bindings of the moment: revoking them ends what they allowed.
struct Standing<Req> {
    security: Arc<Security>,
    rpc: &'static str,
    caller: Caller,
    request: Req,
}

impl<Req: Permissions> Standing<Req> {
    /// Refuses, as the request would be refused now, if the caller lost a permission it needs.
    fn check(&self, metadata: &ClusterMetadata) -> Result<(), BrokerError> {
        if !self.security.authorization() {
            return Ok(());
        }
        self.security.authorize(
            self.rpc,
            self.caller.client,
            &self.caller.principal,
            &metadata.acls,
            &self.request.needs(),
        )
    }
}

impl BrokerService {
    pub(crate) fn new(
        node: Arc<OnceLock<Arc<Node>>>,
        metrics: Arc<RequestMetrics>,
        security: Arc<Security>,
    ) -> Self {
        Self {
            node,
            metrics,
            security,
        }
    }

    /// Serves `request` with `handler` once its caller is authenticated and has every
    /// permission it needs, and answers as [`Self::answer`] does.
    async fn serve<Req, T, F, Fut>(
        &self,
        rpc: &'static str,
        request: Request<Req>,
        handler: F,
    ) -> Result<Response<T>, Status>
    where
        Req: Permissions,
        F: FnOnce(Request<Req>, Caller) -> Fut,
        Fut: Future<Output = Result<T, BrokerError>>,
    {
        let result = match self.caller(rpc, &request).await {
            Ok(caller) => handler(request, caller).await,
            Err(e) => Err(e),
        };
        self.answer(rpc, result)
    }

    /// Authenticates the caller of `request` and checks what it needs.
    async fn caller<Req: Permissions>(
        &self,
        rpc: &'static str,
        request: &Request<Req>,
    ) -> Result<Caller, BrokerError> {
        let metadata = self.node()?.metadata();
        let principal = self
            .security
            .authenticate(rpc, request, &metadata.users)
            .await?;
        let client = request.remote_addr();
        if self.security.authorization() {
            let needs = request.get_ref().needs();
            self.security
                .authorize(rpc, client, &principal, &metadata.acls, &needs)?;
        }
        Ok(Caller {
            principal,
            client,
            metadata,
        })
    }

    /// What `request` needed when `caller` made it, to check again later (a long-lived request:
    /// a subscription, at each read).
    fn standing<Req: Permissions>(
        &self,
        rpc: &'static str,
        caller: Caller,
        request: Req,
    ) -> Standing<Req> {
        Standing {
            security: self.security.clone(),
            rpc,
            caller,
            request,
        }
    }

    /// Whether the caller may do `operation` on `resource` (for lists).
    fn may(&self, caller: &Caller, operation: AclOperation, resource: Resource<'_>) -> bool {
        self.security.allows(
            &caller.principal,
            &caller.metadata.acls,
            operation,
            resource,
        )
    }

    fn node(&self) -> Result<&Arc<Node>, BrokerError> {
        self.node
            .get()
            .ok_or_else(|| BrokerError::Unavailable("this broker is still starting".into()))
    }

    /// Turns a handler's result into the gRPC answer, counting failures by reason.
    fn answer<T>(&self, rpc: &str, result: Result<T, BrokerError>) -> Result<Response<T>, Status> {
        result.map(Response::new).map_err(|e| {
            self.metrics.error(rpc, e.reason());
            if matches!(e, BrokerError::Corrupt { .. } | BrokerError::Internal(_)) {
                tracing::error!(rpc, error = %e, "request failed");
            } else {
                tracing::debug!(rpc, error = %e, "request refused");
            }
            e.to_status()
        })
    }

    async fn topic(&self, name: &str) -> Result<TopicInfo, BrokerError> {
        self.node()?.topic(&BrokerError::topic_name(name)?).await
    }

    /// Describes a topic as this node sees it: replicas from the metadata, leader and offsets
    /// from the local replicas.
    async fn describe(&self, topic: &TopicInfo) -> Result<pb::TopicDescription, BrokerError> {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (index, info) in topic.partitions.iter().enumerate() {
            let mut description = pb::PartitionDescription {
                partition: index as u32,
                replicas: info.replicas.clone(),
                failure: self.node()?.partition_failure(info.group),
                ..Default::default()
            };
            if let Ok(hosted) = self.node()?.hosted(topic, PartitionId(index as u32)) {
                let progress = *hosted.replica.progress().borrow();
                description.leader = hosted.replica.leader();
                description.replica_status = hosted
                    .replica
                    .replica_status()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| pb::ReplicaStatus {
                        node_id: r.node_id,
                        in_sync: r.in_sync,
                        lag: r.lag,
                    })
                    .collect();
                description.high_watermark = progress.high_watermark.0;
                description.log_start_offset = progress.first_readable().0;
                let (db, group) = (self.node()?.partition_db.clone(), hosted.group());
                let (first_stored, stored_bytes) = blocking(move || {
                    Ok::<_, BrokerError>((db.first_offset(group)?, db.log_bytes(group)?))
                })
                .await?;
                description.first_stored_offset = first_stored.map(|o| o.0);
                description.stored_bytes = Some(stored_bytes);
            }
            partitions.push(description);
        }
        Ok(pb::TopicDescription {
            name: topic.name.to_string(),
            replication_factor: topic.replication_factor,
            partitions,
            configs: topic.configs.clone().into_iter().collect(),
            produce_chain: module_admin::attachments(topic, ModulePath::Produce),
            consume_chain: module_admin::attachments(topic, ModulePath::Consume),
            effective_configs: self
                .node()?
                .effective_configs(topic)
                .into_iter()
                .map(|(name, value, source)| pb::ConfigEntry {
                    name: name.to_owned(),
                    value,
                    source: match source {
                        ConfigSource::Topic => pb::ConfigSource::Topic,
                        ConfigSource::Default => pb::ConfigSource::Default,
                    }
                    .into(),
                })
                .collect(),
        })
    }
}

/// Milliseconds since the Unix epoch by this node's clock.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The stream a server-streaming RPC answers with.
pub(super) type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl BrokerService {
    async fn handle_create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<pb::CreateTopicResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let name = BrokerError::topic_name(&req.name)?;
        let max = node.config.limits.max_partitions_per_topic;
        if req.partitions == 0 || req.partitions > max {
            return Err(BrokerError::InvalidPartitions {
                requested: req.partitions,
                max,
            });
        }
        let replication_factor = match req.replication_factor {
            0 => 1,
            rf => rf,
        };
        let configs = check_topic_configs(&req.configs.into_iter().collect())
            .map_err(BrokerError::InvalidConfig)?;
        let topic = node
            .propose(Command::CreateTopic {
                name,
                partitions: req.partitions,
                replication_factor,
                configs,
            })
            .await?
            .topic()
            .ok_or_else(|| BrokerError::Internal("controller returned no topic".into()))?;
        node.wait_until_ready(&topic).await?;
        tracing::info!(partitions = topic.partitions.len(), "topic created");
        Ok(pb::CreateTopicResponse {
            topic: Some(self.describe(&topic).await?),
        })
    }

    async fn handle_delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<pb::DeleteTopicResponse, BrokerError> {
        let node = self.node()?;
        let name = BrokerError::topic_name(&request.into_inner().name)?;
        node.propose(Command::DeleteTopic { name }).await?;
        node.reconcile().await?;
        tracing::info!("topic deleted");
        Ok(pb::DeleteTopicResponse {})
    }

    async fn handle_list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Result<pb::ListTopicsResponse, BrokerError> {
        let topics = self
            .node()?
            .metadata()
            .topics
            .values()
            .map(|t| pb::TopicSummary {
                name: t.name.to_string(),
                partitions: t.partitions.len() as u32,
                replication_factor: t.replication_factor,
            })
            .collect();
        Ok(pb::ListTopicsResponse { topics })
    }

    async fn handle_describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<pb::DescribeTopicResponse, BrokerError> {
        let topic = self.topic(&request.into_inner().name).await?;
        Ok(pb::DescribeTopicResponse {
            topic: Some(self.describe(&topic).await?),
        })
    }

    async fn handle_alter_topic_configs(
        &self,
        request: Request<pb::AlterTopicConfigsRequest>,
    ) -> Result<pb::DescribeTopicResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let topic = self.topic(&req.topic).await?;
        let set: BTreeMap<String, String> = req.set.into_iter().collect();
        // Checked here too, so a bad request fails before it reaches the controller's log.
        crate::metadata::alter_topic_configs(&topic.configs, &set, &req.delete)
            .map_err(BrokerError::InvalidConfig)?;
        let altered = node
            .propose(Command::AlterTopicConfigs {
                topic: topic.name.clone(),
                set,
                delete: req.delete,
            })
            .await?
            .topic()
            .ok_or_else(|| BrokerError::Internal("controller returned no topic".into()))?;
        tracing::info!(configs = ?altered.configs, "topic configs altered");
        Ok(pb::DescribeTopicResponse {
            topic: Some(self.describe(&altered).await?),
        })
    }

    async fn handle_add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<pb::DescribeClusterResponse, BrokerError> {
        let req = request.into_inner();
        let peer: crate::config::Peer = format!("{}={}", req.node_id, req.address)
            .parse()
            .map_err(BrokerError::InvalidArgument)?;
        self.node()?.add_node(peer.id, peer.address).await?;
        self.handle_describe_cluster(Request::new(pb::DescribeClusterRequest {}))
            .await
    }

    async fn handle_remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<pb::DescribeClusterResponse, BrokerError> {
        self.node()?
            .remove_node(request.into_inner().node_id)
            .await?;
        self.handle_describe_cluster(Request::new(pb::DescribeClusterRequest {}))
            .await
    }

    async fn handle_move_replica(
        &self,
        request: Request<pb::MoveReplicaRequest>,
    ) -> Result<pb::DescribeTopicResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let topic = self.topic(&req.topic).await?;
        let partition = Node::check_partition(&topic, req.partition)?;
        node.move_replica(&topic, partition, req.from_node, req.to_node)
            .await?;
        let topic = self.topic(&req.topic).await?;
        Ok(pb::DescribeTopicResponse {
            topic: Some(self.describe(&topic).await?),
        })
    }

    async fn handle_delete_records(
        &self,
        request: Request<pb::DeleteRecordsRequest>,
    ) -> Result<pb::DeleteRecordsResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let topic = self.topic(&req.topic).await?;
        let partition = Node::check_partition(&topic, req.partition)?;
        let log_start = node
            .delete_records(&topic, partition, Offset(req.before_offset))
            .await?;
        Ok(pb::DeleteRecordsResponse {
            log_start_offset: log_start.0,
        })
    }

    async fn handle_describe_cluster(
        &self,
        _request: Request<pb::DescribeClusterRequest>,
    ) -> Result<pb::DescribeClusterResponse, BrokerError> {
        let node = self.node()?;
        let metadata = node.metadata();
        Ok(pb::DescribeClusterResponse {
            nodes: metadata
                .nodes
                .values()
                .map(|n| pb::NodeDescription {
                    node_id: n.id,
                    address: n.address.clone(),
                    warnings: n.warnings.clone(),
                })
                .collect(),
            controller: node.controller_leader(),
            cluster_id: metadata.cluster_id.clone().unwrap_or_default(),
            authorization: self.security.authorization(),
        })
    }
}

#[tonic::async_trait]
impl Broker for BrokerService {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        self.serve("CreateTopic", request, |request, _| {
            self.handle_create_topic(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        self.serve("DeleteTopic", request, |request, _| {
            self.handle_delete_topic(request)
        })
        .await
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        self.serve("ListTopics", request, |request, caller| async move {
            let mut listed = self.handle_list_topics(request).await?;
            listed
                .topics
                .retain(|t| self.may(&caller, AclOperation::Describe, Resource::topic(&t.name)));
            Ok(listed)
        })
        .await
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        self.serve("DescribeTopic", request, |request, _| {
            self.handle_describe_topic(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic))]
    async fn alter_topic_configs(
        &self,
        request: Request<pb::AlterTopicConfigsRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        self.serve("AlterTopicConfigs", request, |request, _| {
            self.handle_alter_topic_configs(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, records = request.get_ref().records.len()))]
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        self.serve("Produce", request, |request, _| {
            self.handle_produce(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition, offset = request.get_ref().offset))]
    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        self.serve("Fetch", request, |request, _| self.handle_fetch(request))
            .await
    }

    type SubscribeStream = ResponseStream<pb::SubscribeResponse>;

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.serve("Subscribe", request, |request, caller| {
            self.handle_subscribe(request, caller)
        })
        .await
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        self.serve("ListOffsets", request, |request, _| {
            self.handle_list_offsets(request)
        })
        .await
    }

    async fn init_producer_id(
        &self,
        request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        self.serve("InitProducerId", request, |request, _| {
            self.handle_init_producer_id(request)
        })
        .await
    }

    async fn delete_records(
        &self,
        request: Request<pb::DeleteRecordsRequest>,
    ) -> Result<Response<pb::DeleteRecordsResponse>, Status> {
        self.serve("DeleteRecords", request, |request, _| {
            self.handle_delete_records(request)
        })
        .await
    }

    async fn describe_cluster(
        &self,
        request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        self.serve("DescribeCluster", request, |request, _| {
            self.handle_describe_cluster(request)
        })
        .await
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        self.serve("AddNode", request, |request, _| {
            self.handle_add_node(request)
        })
        .await
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        self.serve("RemoveNode", request, |request, _| {
            self.handle_remove_node(request)
        })
        .await
    }

    async fn move_replica(
        &self,
        request: Request<pb::MoveReplicaRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        self.serve("MoveReplica", request, |request, _| {
            self.handle_move_replica(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(module = %request.get_ref().name, bytes = request.get_ref().wasm.len()))]
    async fn register_module(
        &self,
        request: Request<pb::RegisterModuleRequest>,
    ) -> Result<Response<pb::ModuleDescription>, Status> {
        self.serve("RegisterModule", request, |request, _| {
            self.handle_register_module(request)
        })
        .await
    }

    async fn list_modules(
        &self,
        request: Request<pb::ListModulesRequest>,
    ) -> Result<Response<pb::ListModulesResponse>, Status> {
        self.serve("ListModules", request, |request, caller| async move {
            let mut listed = self.handle_list_modules(request).await?;
            listed
                .modules
                .retain(|m| self.may(&caller, AclOperation::Describe, Resource::module(&m.name)));
            Ok(listed)
        })
        .await
    }

    async fn describe_module(
        &self,
        request: Request<pb::DescribeModuleRequest>,
    ) -> Result<Response<pb::ModuleDescription>, Status> {
        self.serve("DescribeModule", request, |request, _| {
            self.handle_describe_module(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(module = %request.get_ref().name))]
    async fn delete_module(
        &self,
        request: Request<pb::DeleteModuleRequest>,
    ) -> Result<Response<pb::DeleteModuleResponse>, Status> {
        self.serve("DeleteModule", request, |request, _| {
            self.handle_delete_module(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic))]
    async fn attach_module(
        &self,
        request: Request<pb::AttachModuleRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        self.serve("AttachModule", request, |request, _| {
            self.handle_attach_module(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, module = %request.get_ref().name))]
    async fn detach_module(
        &self,
        request: Request<pb::DetachModuleRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        self.serve("DetachModule", request, |request, _| {
            self.handle_detach_module(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::JoinGroupResponse>, Status> {
        self.serve("JoinGroup", request, |request, _| {
            self.handle_join_group(request)
        })
        .await
    }

    async fn group_heartbeat(
        &self,
        request: Request<pb::GroupHeartbeatRequest>,
    ) -> Result<Response<pb::GroupHeartbeatResponse>, Status> {
        self.serve("GroupHeartbeat", request, |request, _| {
            self.handle_group_heartbeat(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        self.serve("LeaveGroup", request, |request, _| {
            self.handle_leave_group(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        self.serve("CommitOffsets", request, |request, _| {
            self.handle_commit_offsets(request)
        })
        .await
    }

    async fn fetch_committed_offsets(
        &self,
        request: Request<pb::FetchCommittedOffsetsRequest>,
    ) -> Result<Response<pb::FetchCommittedOffsetsResponse>, Status> {
        self.serve("FetchCommittedOffsets", request, |request, _| {
            self.handle_fetch_committed_offsets(request)
        })
        .await
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        self.serve("ListGroups", request, |request, caller| async move {
            let mut listed = self.handle_list_groups(request).await?;
            listed
                .groups
                .retain(|g| self.may(&caller, AclOperation::Describe, Resource::group(&g.group)));
            Ok(listed)
        })
        .await
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::GroupDescription>, Status> {
        self.serve("DescribeGroup", request, |request, _| {
            self.handle_describe_group(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn reset_group_offsets(
        &self,
        request: Request<pb::ResetGroupOffsetsRequest>,
    ) -> Result<Response<pb::ResetGroupOffsetsResponse>, Status> {
        self.serve("ResetGroupOffsets", request, |request, _| {
            self.handle_reset_group_offsets(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        self.serve("DeleteGroup", request, |request, _| {
            self.handle_delete_group(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(user = %request.get_ref().name))]
    async fn create_user(
        &self,
        request: Request<pb::UserCredentialRequest>,
    ) -> Result<Response<pb::UserDescription>, Status> {
        self.serve("CreateUser", request, |request, _| {
            self.handle_put_user(request, false)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(user = %request.get_ref().name))]
    async fn set_user_password(
        &self,
        request: Request<pb::UserCredentialRequest>,
    ) -> Result<Response<pb::UserDescription>, Status> {
        self.serve("SetUserPassword", request, |request, _| {
            self.handle_put_user(request, true)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(user = %request.get_ref().name))]
    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        self.serve("DeleteUser", request, |request, _| {
            self.handle_delete_user(request)
        })
        .await
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.serve("ListUsers", request, |request, _| {
            self.handle_list_users(request)
        })
        .await
    }

    async fn create_acls(
        &self,
        request: Request<pb::CreateAclsRequest>,
    ) -> Result<Response<pb::CreateAclsResponse>, Status> {
        self.serve("CreateAcls", request, |request, _| {
            self.handle_create_acls(request)
        })
        .await
    }

    async fn delete_acls(
        &self,
        request: Request<pb::DeleteAclsRequest>,
    ) -> Result<Response<pb::DeleteAclsResponse>, Status> {
        self.serve("DeleteAcls", request, |request, _| {
            self.handle_delete_acls(request)
        })
        .await
    }

    async fn list_acls(
        &self,
        request: Request<pb::ListAclsRequest>,
    ) -> Result<Response<pb::ListAclsResponse>, Status> {
        self.serve("ListAcls", request, |request, _| {
            self.handle_list_acls(request)
        })
        .await
    }
}
